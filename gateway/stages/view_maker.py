"""The views an audience gets, made off the event loop: built by :func:`edge.view.build_view` from a source batch's
records, the consent ledger and the audience's key, then signed.

Kept apart from the :class:`~gateway.stages.audiences.Audiences` stage, which decides *when* a view is built,
rebuilt and published: this class only answers *what* the view is, for a consent head and key, so that a first
build, a rebuild after a restart and a rebuild at a later consent head all go through one path and come out
byte-identical where the inputs are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from edge.errors import EdgeError
from edge.record import Record
from edge.signing import Signer
from edge.view import AudienceSpec, SignedView, ViewManifest, ViewRule, build_view, derive_view_salt, sign_view
from gateway.audience_config import AudienceConfig
from gateway.audience_keys import AudienceKeyring
from gateway.consent import ConsentLedger
from gateway.errors import GatewayError
from gateway.journal import SourceBatch, ViewRow

log = logging.getLogger("tiyi.gateway")


@dataclass(frozen=True)
class AudienceSetup:
    """What the stage needs besides the journal: the consent ledger, the site secret (view salts) and where
    the audiences' keys live."""

    ledger: ConsentLedger
    site_secret: bytes
    keyrings: dict[str, AudienceKeyring]


def audience_spec(a: AudienceConfig, key: tuple[str, bytes] | None) -> AudienceSpec:
    rules = {
        kind: ViewRule(drop_raw=r.drop_raw, time_s=r.time_s, round_digits=r.round, aggregate=r.aggregate)
        for kind, r in a.minimise
    }
    return AudienceSpec(
        aud=a.id,
        purpose=a.purpose,
        rules=rules,
        unbound=a.unbound,
        jurisdiction=a.jurisdiction,  # type: ignore[arg-type]  # AudienceSpec converts and checks it
        legal_basis=a.legal_basis or "none",  # type: ignore[arg-type]
        key=key,
        legal_basis_ref=a.legal_basis_ref,
        min_n=a.min_n,
    )


class ViewMaker:
    """Makes and signs the views of a gateway's audiences; reads the consent ledger, never the journal."""

    def __init__(self, gw: str, region: str, setup: AudienceSetup, signer: Signer) -> None:
        self._gw, self._region, self._setup, self._signer = gw, region, setup, signer
        self.since: dict[str, int] = {}  # each audience's first source batch, filled from the journal at start

    def new(
        self, a: AudienceConfig, src: SourceBatch, raw: list[bytes]
    ) -> tuple[list[bytes], ViewManifest, SignedView, int]:
        """Off the loop: read the consent ledger as it stands now, the current key, build and sign."""
        ledger = self._setup.ledger
        ledger.reload()
        consent_n = ledger.head
        ring = self._setup.keyrings.get(a.id)
        key = None
        if a.encrypt:
            if ring is None:
                raise GatewayError(f"audience {a.id} encrypts but has no keyring")
            current = ring.current()
            key = (current.kid, current.key)
        records, manifest = self._make(a, src, raw, ledger.allows_at(consent_n), consent_n, key)
        return records, manifest, sign_view(manifest, self._signer), consent_n

    def _make(
        self,
        a: AudienceConfig,
        src: SourceBatch,
        raw: list[bytes],
        allows: Callable[[str | None, str], bool],
        consent_n: int,
        key: tuple[str, bytes] | None,
    ) -> tuple[list[bytes], ViewManifest]:
        secret, aud, gw = self._setup.site_secret, a.id, self._gw
        consent_count = len(self._setup.ledger.events_for(a.purpose, 0, consent_n))
        return build_view(
            [Record.from_bytes(b) for b in raw],
            src.n,
            src.root,
            audience_spec(a, key),
            self._region,
            allows,
            consent_n,
            lambda seq: derive_view_salt(secret, aud, gw, seq),
            consent_count=consent_count,
            since=self.since[aud],
        )

    def rebuild(self, a: AudienceConfig, row: ViewRow, src: SourceBatch, raw: list[bytes]) -> list[bytes] | None:
        """Off the loop: the records of a journaled view, rebuilt with the consent head and key it names; None
        when they no longer come out identical (the audience's rules changed since, or its key is gone)."""
        signed = SignedView.from_bytes(row.signed)
        m = signed.manifest
        try:
            key = self._key(a, m.kid)
            self._setup.ledger.reload()
            records, again = self._make(a, src, raw, self._setup.ledger.allows_at(row.consent_n), row.consent_n, key)
        except (GatewayError, EdgeError) as exc:
            log.error("audience %s, batch %d: the view cannot be rebuilt (%s)", a.id, row.n, exc)
            return None
        if bytes(again) != signed.body:
            log.error(
                "audience %s, batch %d: the rebuilt view differs from the signed one (its rules changed since it "
                "was built?); the manifest is published without its records",
                a.id,
                row.n,
            )
            return None
        return records

    def _key(self, a: AudienceConfig, kid: str) -> tuple[str, bytes] | None:
        """The audience key a view names (None: a view in clear)."""
        if not kid:
            return None
        ring = self._setup.keyrings.get(a.id)
        if ring is None:
            raise GatewayError(f"audience {a.id} has no keyring for key {kid}")
        return (kid, ring.by_kid(kid))

    def at_head(
        self, a: AudienceConfig, row: ViewRow, src: SourceBatch, raw: list[bytes]
    ) -> tuple[list[bytes], SignedView, int] | None:
        """Off the loop: the view rebuilt at the consent ledger's current head with the key it names, signed; None
        when that is not possible (its key is gone). The records of members still consenting come out
        byte-identical to the first build (salts and IVs are derived), so any already sent stay valid."""
        try:
            key = self._key(a, SignedView.from_bytes(row.signed).manifest.kid)
            ledger = self._setup.ledger
            ledger.reload()
            consent_n = ledger.head
            records, manifest = self._make(a, src, raw, ledger.allows_at(consent_n), consent_n, key)
        except (GatewayError, EdgeError) as exc:
            log.error("audience %s, batch %d: the view cannot be rebuilt at the current consent (%s)", a.id, row.n, exc)
            return None
        return records, sign_view(manifest, self._signer), consent_n

    def withdrawn_in(self, row: ViewRow, records: list[bytes]) -> int:
        """Off the loop: how many members with a record in the view withdrew from its purpose after the consent
        head it was built at."""
        if not records:
            return 0
        ledger = self._setup.ledger
        ledger.reload()
        withdrawn = ledger.withdrawn_after(SignedView.from_bytes(row.signed).manifest.purpose, row.consent_n)
        return len(withdrawn & {Record.from_bytes(b).sub for b in records}) if withdrawn else 0
