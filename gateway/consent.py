"""The gateway's consent ledger: members' consent per purpose, kept locally as the signed event chain.

Staff (the CLI now, the admin API later) record a grant or a withdrawal; the ledger signs it as the next
:class:`edge.consent.ConsentEvent` and keeps every signed event in ``consent.json`` (0600, replaced
atomically). ``allows`` answers from the newest event per (subject, purpose): with no event, no consent.

A running gateway re-reads the file when another process (``tiyi members grant|withdraw``) replaced it
(:meth:`ConsentLedger.reload`), so a withdrawal recorded before a batch closes applies to that batch's views.
A file that no longer verifies is an error, never an empty ledger: views wait until it is restored.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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
        self._stamp = self._file_stamp()
        self._events: list[bytes] = self._load()
        self._state = self._check(self._events)

    def _check(self, events: list[bytes]) -> dict[tuple[str, str], bool]:
        try:
            return check_consent_chain(events, self._gw, self._signer)
        except CodecError as exc:
            raise ConsentError(f"{self.path} does not verify ({exc}); restore it from backup") from None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def reload(self) -> bool:
        """Re-read the file if another process replaced it; whether it changed. A file that does not verify,
        or that dropped or rewrote events this ledger already holds, raises ConsentError (nothing changes)."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        events = self._load()
        state = self._check(events)
        if events[: len(self._events)] != self._events:
            raise ConsentError(f"{self.path} no longer holds the consent events already in force; restore it")
        self._events, self._state, self._stamp = events, state, stamp
        return True

    @property
    def head(self) -> int:
        """The number of the newest event (0: none)."""
        return len(self._events)

    def allows_at(self, n: int) -> Callable[[str | None, str], bool]:
        """``allows`` as it answered when the ledger's head was event ``n`` (a view is rebuilt with the consent
        it was built with)."""
        if not 0 <= n <= len(self._events):
            raise ConsentError(f"the consent ledger has {len(self._events)} events, not {n}")
        if n == len(self._events):
            state = dict(self._state)
        else:
            state = {}
            for data in self._events[:n]:
                e = SignedConsent.from_bytes(data).event
                state[(e.sub, e.purpose)] = e.granted
        return lambda sub, purpose: sub is not None and state.get((sub, purpose), False)

    def events_for(self, purpose: str, after_n: int, through_n: int) -> list[tuple[int, bytes]]:
        """(number, signed event) of ``purpose``'s events numbered ``after_n`` + 1 .. ``through_n``."""
        out = []
        for i, data in enumerate(self._events[after_n:through_n], after_n + 1):
            if SignedConsent.from_bytes(data).event.purpose == purpose:
                out.append((i, data))
        return out

    def withdrawn_after(self, purpose: str, n: int) -> set[str]:
        """Subjects with a withdrawal from ``purpose`` numbered after ``n`` (a view built at head ``n`` must not
        transfer their readings any more, even if they granted again since)."""
        out = set()
        for _, data in self.events_for(purpose, n, len(self._events)):
            e = SignedConsent.from_bytes(data).event
            if not e.granted:
                out.add(e.sub)
        return out

    def record(self, sub: str, purpose: str, granted: bool, now_ms: int) -> SignedConsent:
        """Sign and keep the next consent event; it takes effect for ``allows`` at once."""
        if purpose not in PURPOSES:
            raise ConsentError(f"unknown purpose {purpose!r}; one of: {', '.join(PURPOSES)}")
        self.reload()  # continue what another process (the CLI, the gateway) may have added meanwhile
        prev = SignedConsent.from_bytes(self._events[-1]).event.digest if self._events else GENESIS_PREV
        try:
            event = ConsentEvent(self._gw, len(self._events) + 1, now_ms, sub, purpose, granted, prev)
        except CodecError as exc:
            raise ConsentError(str(exc)) from None
        signed = sign_consent(event, self._signer)
        self._write([*self._events, bytes(signed)])
        self._events.append(bytes(signed))
        self._state[(sub, purpose)] = granted
        self._stamp = self._file_stamp()
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
