"""The gateway's consent ledger: members' consent per purpose, kept locally as the signed event chain.

Staff (the CLI now, the admin API later) record a grant or a withdrawal; the ledger signs it as the next
:class:`edge.consent.ConsentEvent` and keeps every signed event in ``consent.json`` (0600, replaced
atomically). ``allows`` answers from the newest event per (subject, purpose): with no event, no consent.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edge.consent import PURPOSES, ConsentEvent, SignedConsent, check_consent_chain, sign_consent
from edge.errors import CodecError
from edge.manifest import GENESIS_PREV
from edge.signing import Signer
from gateway.errors import GatewayError

CONSENT_FILE = "consent.json"


class ConsentError(GatewayError, ValueError):
    """A consent request names an unknown purpose or subject, or the ledger on disk does not verify."""


class ConsentLedger:
    def __init__(self, state_dir: Path, gw: str, signer: Signer) -> None:
        self.path = state_dir / CONSENT_FILE
        self._gw, self._signer = gw, signer
        self._events: list[bytes] = self._load()
        try:
            self._state = check_consent_chain(self._events, gw, signer)
        except CodecError as exc:
            raise ConsentError(f"{self.path} does not verify ({exc}); restore it from backup") from None

    def record(self, sub: str, purpose: str, granted: bool, now_ms: int) -> SignedConsent:
        """Sign and keep the next consent event; it takes effect for ``allows`` at once."""
        if purpose not in PURPOSES:
            raise ConsentError(f"unknown purpose {purpose!r}; one of: {', '.join(PURPOSES)}")
        prev = SignedConsent.from_bytes(self._events[-1]).event.digest if self._events else GENESIS_PREV
        try:
            event = ConsentEvent(self._gw, len(self._events) + 1, now_ms, sub, purpose, granted, prev)
        except CodecError as exc:
            raise ConsentError(str(exc)) from None
        signed = sign_consent(event, self._signer)
        self._write([*self._events, bytes(signed)])
        self._events.append(bytes(signed))
        self._state[(sub, purpose)] = granted
        return signed

    def allows(self, sub: str | None, purpose: str) -> bool:
        """Whether ``sub`` currently consents to ``purpose`` (no subject or no event: no)."""
        return sub is not None and self._state.get((sub, purpose), False)

    def signed_events(self, after_n: int = 0) -> list[bytes]:
        """Signed events after number ``after_n``, in order (what a platform has not yet received)."""
        return self._events[after_n:]

    def _load(self) -> list[bytes]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [bytes.fromhex(x) for x in data]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:
            raise ConsentError(f"{self.path} is not a consent ledger ({exc}); restore it from backup") from None

    def _write(self, events: list[bytes]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".consent-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump([e.hex() for e in events], fh, indent=0)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
