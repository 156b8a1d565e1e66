"""An audience's verifier: what a platform that receives a **view** (contract 1.3) can prove about it.

Feed it what arrived on ``tiyi/v1/{region}/{gw}/#`` under the audience's account: its own ``aud/{aud}/data``,
``aud/{aud}/view`` and ``aud/{aud}/consent`` messages and the public proof topics (``batch``, ``anchor``,
``head``, ``key``). Everything else is ignored (the audience cannot read ``data/``). ``report`` then checks, per
view manifest:

- its SM2 signature under the caller's ``TrustPolicy`` (the gateway key, as for batches; with the registry,
  judged at the block where the chain recorded the source batch's anchor) -- first: a view whose signature
  fails is reported and nothing else is done with it, so a forger's views cost one signature check each;
- that it names the signed source batch exactly (``src_root``, ``first``, ``last``), whose manifest signature
  verifies and whose anchor the chain confirms (the existing ``AnchorChecker``; without one: not checked);
- the Merkle root over the view records received, in seq order, and the count;
- completeness: every source seq in ``first..last`` is a view record's seq or in one withheld range, exactly
  once; aggregates account for the seqs marked ``aggregated``; the views run from the signed ``since`` (or the
  caller's declared start, reported as such) without a gap;
- sealing: with the audience's keys, every view must be sealed (unless the caller accepts clear views) and each
  sealed record must open with its tag verified (without keys: reported as not checked, never as verified);
- consent: at least the view's signed ``consent_count`` events of the purpose numbered <= ``consent_n`` were
  received (else a withdrawal may have been dropped: no ``sub`` of that view counts as consented), and each
  view record with a ``sub`` has a received, signature-valid grant for (sub, purpose) that no received
  withdrawal numbered at or before ``consent_n`` overrides.

The audience, its purpose, the gateways to verify, whether clear views are acceptable and a late start come
from the caller (``tiyi verify --audience AUD --audience-purpose P``), never from a message: a view claiming
another purpose is a finding. Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.engine import Untrusted
from anchoring.findings import (
    MAX_PROBLEMS_PER_REASON,
    Problem,
    Reason,
    Report,
    _problem_json,
    _problem_lines,
    _span,
)
from anchoring.messages import (
    AudConsentMessage,
    AudDataMessage,
    HeadMessage,
    KeyMessage,
    ManifestMessage,
    MessageError,
    ReceiptMessage,
    ViewMessage,
    decode_message,
)
from anchoring.receipt import AnchorReceipt
from anchoring.trust import KeySource, TrustedKey, TrustPolicy
from anchoring.verify_anchor import AnchorChecker
from edge.consent import PURPOSES, SignedConsent
from edge.errors import CodecError, EdgeError
from edge.head import SignedHead
from edge.manifest import SignedManifest
from edge.merkle import MerkleTree
from edge.record import Record, check_id
from edge.sealing import SM4_KEY_BYTES
from edge.view import AGG_SUFFIX, AGGREGATED, WITHHELD_REASONS, SignedView, ViewManifest, open_view_record


class _Signed(Protocol):
    @property
    def key_id(self) -> str: ...

    def verify(self, verifier: Any) -> bool: ...


def parse_audience_keys(text: str) -> dict[str, bytes]:
    """Audience keys as ``tiyi keys audience export`` prints them: one ``kid hex`` per line (``#`` comments)."""
    keys: dict[str, bytes] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CodecError(f"line {i}: expected 'kid hex'")
        kid, hexkey = parts
        check_id(kid, f"line {i}: key id")
        try:
            key = bytes.fromhex(hexkey)
        except ValueError:
            raise CodecError(f"line {i}: the key is not hex") from None
        if len(key) != SM4_KEY_BYTES:
            raise CodecError(f"line {i}: an SM4 key is {SM4_KEY_BYTES} bytes ({2 * SM4_KEY_BYTES} hex digits)")
        if keys.get(kid, key) != key:
            raise CodecError(f"line {i}: key id {kid} given twice with different keys")
        keys[kid] = key
    return keys


@dataclass
class _Gw:
    records: dict[int, tuple[bytes, Record]] = field(default_factory=dict)
    views: dict[int, tuple[bytes, SignedView]] = field(default_factory=dict)
    sources: dict[int, tuple[bytes, SignedManifest]] = field(default_factory=dict)
    receipts: dict[int, list[AnchorReceipt]] = field(default_factory=dict)
    consents: dict[int, tuple[bytes, SignedConsent]] = field(default_factory=dict)
    heads: dict[bytes, SignedHead] = field(default_factory=dict)
    key_pem: str | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class AudienceGatewayReport:
    gw: str
    joined_at: tuple[int, int] | None = None  # (since, declared start): views since..start-1 were not checked
    views: int = 0
    views_verified: int = 0
    records: int = 0  # view records received
    records_in_verified_views: int = 0
    aggregates: int = 0
    opened: int = 0  # sealed records decrypted with their tag verified
    sealed_unchecked: int = 0  # sealed records whose content could not be checked (no key given)
    withheld: dict[str, int] = field(default_factory=dict)  # reason → source records withheld
    consent_events: int = 0  # signature-valid consent events for the purpose
    anchors_verified: int = 0
    anchors_checked_on_chain: bool = False
    outside_views: int = 0  # view records in no view manifest received (yet)
    head: int | None = None  # the newest verified signed head's batch
    key_sources: set[KeySource] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def unchecked(self) -> list[str]:
        out = []
        if KeySource.TOFU in self.key_sources:
            out.append("the gateway's key was trusted on first use")
        if self.views and not self.anchors_checked_on_chain:
            out.append("the source batches' anchors were not checked on a chain")
        if self.sealed_unchecked:
            out.append(
                f"{self.sealed_unchecked} sealed record(s): content and SM4-GCM tag not checked (no audience key)"
            )
        if self.head is None:
            out.append("no signed head arrived, so a dropped tail of views cannot be ruled out")
        if self.joined_at is not None:
            since, start = self.joined_at
            out.append(f"views {since}..{start - 1} of the stream were not checked (joined at batch {start})")
        return out


@dataclass
class AudienceReport(Report[AudienceGatewayReport]):
    aud: str
    purpose: str
    seen: list[str] = field(default_factory=list)  # every gateway id a message named (sorted, bounded)
    ignored: list[str] = field(default_factory=list)  # seen, but not among the gateways asked for (--gateway)

    VERIFIED = "every view verified"
    PENDING = "no problems, but some view records are in no view manifest yet (pending)"

    def _pending(self, g: AudienceGatewayReport) -> bool:
        return bool(g.outside_views)

    def summary(self) -> str:
        lines = [f"audience {self.aud} (purpose {self.purpose})"]
        lines.append(f"gateways seen: {', '.join(self.seen) or 'none'}")
        if self.ignored:
            lines.append(f"  not verified (not asked for with --gateway): {', '.join(self.ignored)}")
        if not self.gateways:
            lines.append("nothing to verify: no view of this audience was received")
        for g in self.gateways.values():
            lines.append(f"gateway {g.gw}: {'OK' if g.ok else 'FAILED'}")
            lines.append(
                f"  views     {g.views_verified} of {g.views} verified, {g.records_in_verified_views} view records "
                f"proven ({g.aggregates} aggregates)"
                + (f", {g.outside_views} in no view yet" if g.outside_views else "")
            )
            withheld = ", ".join(f"{r} {g.withheld[r]}" for r in WITHHELD_REASONS if g.withheld.get(r))
            lines.append(f"  withheld  {withheld or 'none'}")
            lines.append(f"  sealed    {g.opened} opened and authenticated, {g.sealed_unchecked} not checked")
            lines.append(f"  consent   {g.consent_events} signed event(s) for {self.purpose}")
            chain = "checked on the chain" if g.anchors_checked_on_chain else "NOT checked on a chain"
            lines.append(f"  anchors   {g.anchors_verified} of {g.views} source batches ({chain})")
            lines.append(f"  head      {'none received' if g.head is None else f'batch {g.head}'}")
            lines.extend(_problem_lines(g.problems))
            lines.extend(f"  NOT CHECKED: {u}" for u in g.unchecked())
        lines.extend(_problem_lines(self.stray))
        lines.append(self.result_line())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.json_head(),
            "audience": self.aud,
            "purpose": self.purpose,
            "gateways_seen": self.seen,
            "gateways_ignored": self.ignored,
            "gateways": {
                gw: {
                    "ok": g.ok,
                    "views": g.views,
                    "views_verified": g.views_verified,
                    "records": g.records,
                    "records_in_verified_views": g.records_in_verified_views,
                    "aggregates": g.aggregates,
                    "sealed_opened": g.opened,
                    "sealed_not_checked": g.sealed_unchecked,
                    "withheld": g.withheld,
                    "consent_events": g.consent_events,
                    "anchors_verified": g.anchors_verified,
                    "anchors_checked_on_chain": g.anchors_checked_on_chain,
                    "outside_views": g.outside_views,
                    "head": g.head,
                    "joined_at": list(g.joined_at) if g.joined_at else None,
                    "not_checked": g.unchecked(),
                    "problems": [_problem_json(p) for p in g.problems],
                }
                for gw, g in self.gateways.items()
            },
            "stray": [_problem_json(p) for p in self.stray],
        }


@dataclass
class _Ctx:
    """What one gateway's checks share while ``report`` runs."""

    gw: str
    st: _Gw
    rep: AudienceGatewayReport
    seqs: list[int]  # view records received, sorted
    consent: dict[str, list[tuple[int, bool]]]  # sub → (event n, granted), sorted by n
    problem: Callable[..., None]
    consent_ns: list[int] = field(default_factory=list)  # numbers of the valid events of the purpose, sorted
    signed: dict[int, ViewManifest] = field(default_factory=dict)  # views whose signature verified


MAX_SEEN_GATEWAYS = 1000  # gateway ids remembered for the report (each message can name a new one)


class AudienceVerifier:
    """Collect one audience's stream, then report (``tiyi verify --audience``).

    ``clear``: the platform accepts views in clear although it holds keys (``--audience-clear``); ``start``: the
    platform joined the stream at this source batch (``--audience-from``), so views before it are reported as
    not checked instead of missing; ``gateways``: verify only these gateways (``--gateway``), the others are
    listed as seen and ignored.
    """

    def __init__(
        self,
        trust: TrustPolicy,
        aud: str,
        purpose: str,
        keys: Mapping[str, bytes] | None = None,
        *,
        clear: bool = False,
        start: int | None = None,
        gateways: frozenset[str] | None = None,
    ) -> None:
        check_id(aud, "audience id")
        if purpose not in PURPOSES:
            raise ValueError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
        if start is not None and (type(start) is not int or start < 1):
            raise ValueError(f"the declared start of the stream is a batch number >= 1, not {start!r}")
        for gw in gateways or ():
            check_id(gw, "gateway id")
        self.trust, self.aud, self.purpose = trust, aud, purpose
        self.keys = dict(keys) if keys is not None else None
        self.clear, self.start, self.gateways = clear, start, gateways
        self._gws: dict[str, _Gw] = {}
        self._stray: list[Problem] = []
        self._seen: set[str] = set()
        self.messages = 0

    def _gw(self, gw: str) -> _Gw:
        return self._gws.setdefault(gw, _Gw())

    def _wanted(self, gw: str) -> bool:
        """Remember the gateway id; only the gateways asked for (all when none were named) are verified."""
        if len(self._seen) < MAX_SEEN_GATEWAYS:
            self._seen.add(gw)
        return self.gateways is None or gw in self.gateways

    def _note(self, st: _Gw, reason: Reason, message: str, gw: str, **kw: Any) -> None:
        if sum(1 for p in st.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
            st.problems.append(Problem(reason, message, gw, **kw))

    def _stray_problem(self, reason: Reason, message: str) -> None:
        if len(self._stray) < MAX_PROBLEMS_PER_REASON:
            self._stray.append(Problem(reason, message))

    # ---------------------------------------------------------------- intake
    def feed(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """Take one message; never raises on bad input (a malformed payload is a finding)."""
        self.messages += 1
        parts = topic.split("/")
        if len(parts) > 3 and parts[3] and not self._wanted(parts[3]):
            return  # another gateway than the ones asked for: listed as seen, never judged or trusted
        try:
            msg = decode_message(topic, payload)
        except MessageError as exc:
            if not exc.topic_ok:
                self._stray_problem(Reason.WRONG_TOPIC, str(exc))
            elif len(parts) > 5 and parts[4] == "aud" and parts[5] != self.aud:
                return  # another audience's message: not ours to judge
            elif len(parts) > 4 and parts[4] in ("aud", "batch", "anchor", "head", "key"):
                self._note(self._gw(parts[3]), Reason.MALFORMED, str(exc), parts[3])
            return
        if isinstance(msg, AudDataMessage | ViewMessage | AudConsentMessage):
            if msg.aud != self.aud:
                return
            st = self._gw(msg.gw)
            if isinstance(msg, AudDataMessage):
                self._feed_records(st, msg)
            elif isinstance(msg, ViewMessage):
                self._feed_view(st, msg)
            else:
                self._feed_consent(st, msg)
            return
        if isinstance(msg, ManifestMessage | ReceiptMessage | HeadMessage | KeyMessage):
            self._feed_proof(self._gw(msg.gw), msg)

    def _feed_records(self, st: _Gw, msg: AudDataMessage) -> None:
        gw = msg.gw
        for data in msg.raw:
            try:
                rec = Record.from_bytes(data)
            except EdgeError as exc:
                self._note(st, Reason.MALFORMED, f"view record on aud/{self.aud}/data/{msg.dev}: {exc}", gw)
                continue
            if rec.gw != gw or rec.dev != msg.dev:
                self._note(st, Reason.WRONG_TOPIC, f"view record seq {rec.seq} arrived on another device's topic", gw)
                continue
            old = st.records.get(rec.seq)
            if old is None:
                st.records[rec.seq] = (data, rec)
            elif old[0] != data:
                self._note(
                    st, Reason.CONFLICTING_DUPLICATE, f"two different view records claim seq {rec.seq}", gw, seq=rec.seq
                )

    def _feed_view(self, st: _Gw, msg: ViewMessage) -> None:
        m = msg.signed.manifest
        if m.gw != msg.gw or m.aud != self.aud:
            self._note(st, Reason.WRONG_TOPIC, f"view of {m.gw}/{m.aud} published under {msg.gw}/{self.aud}", msg.gw)
            return
        old = st.views.get(m.n)
        if old is None:
            st.views[m.n] = (msg.payload, msg.signed)
        elif old[0] != msg.payload:
            self._note(st, Reason.CONFLICTING_BATCH, f"two different views claim batch {m.n}", msg.gw, batch=m.n)

    def _feed_consent(self, st: _Gw, msg: AudConsentMessage) -> None:
        e = msg.signed.event
        if e.gw != msg.gw:
            self._note(st, Reason.WRONG_TOPIC, f"consent event {e.n} of {e.gw} published under {msg.gw}", msg.gw)
            return
        old = st.consents.get(e.n)
        if old is None:
            st.consents[e.n] = (msg.payload, msg.signed)
        elif old[0] != msg.payload:
            self._note(st, Reason.CONFLICTING_DUPLICATE, f"two different consent events claim number {e.n}", msg.gw)

    def _feed_proof(self, st: _Gw, msg: ManifestMessage | ReceiptMessage | HeadMessage | KeyMessage) -> None:
        if isinstance(msg, ManifestMessage):
            n = msg.signed.manifest.batch
            old = st.sources.get(n)
            if old is None:
                st.sources[n] = (msg.payload, msg.signed)
            elif old[0] != msg.payload:
                self._note(st, Reason.CONFLICTING_BATCH, f"two different manifests claim batch {n}", msg.gw, batch=n)
        elif isinstance(msg, ReceiptMessage):
            r = msg.receipt
            if r.gw == msg.gw and r.kind is AnchorKind.BATCH:
                known = st.receipts.setdefault(r.number, [])
                if r not in known and len(known) < MAX_PROBLEMS_PER_REASON:
                    known.append(r)
        elif isinstance(msg, HeadMessage):
            if msg.signed.head.gw == msg.gw and len(st.heads) < MAX_PROBLEMS_PER_REASON:
                st.heads[msg.payload] = msg.signed
        else:
            st.key_pem = msg.pem

    # ---------------------------------------------------------------- checks
    def _trusted(self, gw: str, st: _Gw, signed: _Signed, anchor: AnchorInfo | None) -> TrustedKey | Untrusted:
        got = self.trust.key_for(gw, signed.key_id, anchor, len(self._gws), st.key_pem)
        if isinstance(got, str):
            return Untrusted(got)
        if not signed.verify(got.verifier):
            return Untrusted(f"SM2 signature does not verify under {signed.key_id}", bad_signature=True)
        return got

    def _signature_ok(self, c: _Ctx, signed: _Signed, anchor: AnchorInfo | None, what: str, n: int | None) -> bool:
        got = self._trusted(c.gw, c.st, signed, anchor)
        if isinstance(got, Untrusted):
            if got.bad_signature:
                c.problem(Reason.BAD_SIGNATURE, f"{what}: {got.why}", batch=n)
            else:
                c.problem(Reason.UNTRUSTED_KEY, f"{what} is signed by key {signed.key_id}: {got.why}", batch=n)
            return False
        c.rep.key_sources.add(got.source)
        return True

    def report(self, chain: AnchorChecker | None = None) -> AudienceReport:
        if self.trust.uses_registry and chain is None:
            raise ValueError("registry trust needs the chain: a key's validity is judged at its anchor's block")
        gws = {gw: self._check(gw, st, chain) for gw, st in self._gws.items() if st.views or st.records}
        seen = sorted(self._seen)
        ignored = [gw for gw in seen if self.gateways is not None and gw not in self.gateways]
        return AudienceReport(gws, list(self._stray), aud=self.aud, purpose=self.purpose, seen=seen, ignored=ignored)

    def _check(self, gw: str, st: _Gw, chain: AnchorChecker | None) -> AudienceGatewayReport:
        rep = AudienceGatewayReport(
            gw, views=len(st.views), records=len(st.records), anchors_checked_on_chain=chain is not None
        )
        rep.problems = list(st.problems)

        def problem(reason: Reason, message: str, **kw: Any) -> None:
            if sum(1 for p in rep.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
                rep.problems.append(Problem(reason, message, gw, **kw))

        c = _Ctx(gw, st, rep, sorted(st.records), {}, problem)
        self._consent_state(c)
        for n in sorted(st.views):
            self._check_view(c, n, chain)
        self._check_numbering(c)
        self._check_head(c)
        inside = 0
        for m in c.signed.values():  # a view whose signature failed accounts for nothing
            inside += bisect.bisect_right(c.seqs, m.last) - bisect.bisect_left(c.seqs, m.first)
        rep.outside_views = max(0, len(c.seqs) - inside)  # overlapping views are a problem of their own
        return rep

    def _consent_state(self, c: _Ctx) -> None:
        """Signature-valid consent events for the configured purpose, per subject, in number order."""
        for n in sorted(c.st.consents):
            _, sc = c.st.consents[n]
            e = sc.event
            if not self._signature_ok(c, sc, None, f"consent event {n}", None):
                continue
            if e.purpose != self.purpose:
                c.problem(
                    Reason.PURPOSE_MISMATCH,
                    f"consent event {n} is for {e.purpose}, published to an audience of {self.purpose}",
                )
                continue
            c.rep.consent_events += 1
            c.consent_ns.append(n)
            c.consent.setdefault(e.sub, []).append((n, e.granted))

    def _granted(self, c: _Ctx, sub: str, consent_n: int) -> bool:
        events = c.consent.get(sub, [])
        i = bisect.bisect_right(events, (consent_n, True)) - 1
        return i >= 0 and events[i][1]

    def _check_view(self, c: _Ctx, n: int, chain: AnchorChecker | None) -> None:
        """The signature first: a view that fails it is reported and nothing else is done with it (no Merkle,
        coverage or decryption work over its range: a forger's views cost one signature check each)."""
        _, sv = c.st.views[n]
        m = sv.manifest
        if self.trust.uses_registry:  # the key is judged at the source anchor's block: find that first
            anchor, source_ok = self._check_source(c, m, chain)
            if not self._signature_ok(c, sv, anchor, f"view {n}", n):
                return
        else:
            if not self._signature_ok(c, sv, None, f"view {n}", n):
                return
            anchor, source_ok = self._check_source(c, m, chain)
        c.signed[n] = m
        ok = source_ok
        if m.purpose != self.purpose:
            c.problem(Reason.PURPOSE_MISMATCH, f"view {n} claims purpose {m.purpose}, not {self.purpose}", batch=n)
            ok = False
        if self.keys is not None and not m.kid and not self.clear:
            c.problem(
                Reason.NOT_SEALED,
                f'view {n} is in clear (kid ""), but this platform holds audience keys: sealing is expected '
                "(--audience-clear accepts clear views)",
                batch=n,
            )
            ok = False
        lo, hi = bisect.bisect_left(c.seqs, m.first), bisect.bisect_right(c.seqs, m.last)
        seqs = c.seqs[lo:hi]
        for reason, a, b in m.withheld:
            c.rep.withheld[reason] = c.rep.withheld.get(reason, 0) + b - a + 1
        ok = self._check_coverage(c, m, seqs) and ok
        ok = self._check_root(c, m, seqs) and ok
        ok = self._check_content(c, m, seqs) and ok
        if ok:
            c.rep.views_verified += 1
            c.rep.records_in_verified_views += m.count

    def _check_source(self, c: _Ctx, m: ViewManifest, chain: AnchorChecker | None) -> tuple[AnchorInfo | None, bool]:
        """The signed source batch the view names, and the chain's record of its anchor."""
        n = m.n
        got = c.st.sources.get(n)
        if got is None:
            c.problem(
                Reason.VIEW_SOURCE_MISMATCH, f"view {n}: source batch {n}'s signed manifest never arrived", batch=n
            )
            return None, False
        sm = got[1].manifest
        if (sm.gw, sm.root, sm.first_seq, sm.last_seq) != (m.gw, m.src_root, m.first, m.last):
            c.problem(
                Reason.VIEW_SOURCE_MISMATCH,
                f"view {n} names root/seq range other than source batch {n}'s signed manifest",
                batch=n,
            )
            return None, False
        receipts = [r for r in c.st.receipts.get(n, []) if r.root == sm.root and r.count == sm.count]
        anchor: AnchorInfo | None = None
        if not receipts:
            c.problem(Reason.MISSING_ANCHOR, f"view {n}: source batch {n} has no matching anchor receipt", batch=n)
            ok = False
        elif chain is None:
            c.rep.anchors_verified += 1  # a receipt only: reported as not checked on a chain
            ok = True
        else:
            why = ""
            for r in receipts:
                info = chain.confirm(r)
                if isinstance(info, str):
                    why = info
                elif (info.gw, info.number, info.count, info.kind) == (sm.gw, n, sm.count, AnchorKind.BATCH):
                    anchor = info
                    break
                else:
                    why = f"the chain's anchor is for {info.gw} #{info.number} ({info.count} records)"
            if anchor is None:
                c.problem(Reason.ANCHOR_NOT_ON_CHAIN, f"view {n}: source batch {n}: {why}", batch=n)
                ok = False
            else:
                c.rep.anchors_verified += 1
                ok = True
        ok = self._signature_ok(c, got[1], anchor, f"source batch {n}", n) and ok
        return anchor, ok

    def _check_coverage(self, c: _Ctx, m: ViewManifest, seqs: list[int]) -> bool:
        """Every seq of first..last exactly once: a view record's seq or in one withheld range."""
        spans = sorted([(s, s) for s in seqs] + [(a, b) for _, a, b in m.withheld])
        gaps: list[tuple[int, int]] = []
        twice: list[tuple[int, int]] = []
        expect = m.first
        for a, b in spans:
            if a > expect:
                gaps.append((expect, a - 1))
            elif a < expect:
                twice.append((a, min(b, expect - 1)))
            expect = max(expect, b + 1)
        if expect <= m.last:
            gaps.append((expect, m.last))
        ok = True
        for a, b in twice[:MAX_PROBLEMS_PER_REASON]:
            c.problem(Reason.VIEW_OVERLAP, f"view {m.n}: {_span(a, b)} both sent and withheld", seq=a, batch=m.n)
            ok = False
        if gaps and len(seqs) >= m.count:  # fewer records than counted: the root check names the missing ones
            for a, b in gaps[:MAX_PROBLEMS_PER_REASON]:
                c.problem(
                    Reason.VIEW_INCOMPLETE, f"view {m.n}: {_span(a, b)} neither sent nor withheld", seq=a, batch=m.n
                )
            ok = False
        return ok

    def _check_root(self, c: _Ctx, m: ViewManifest, seqs: list[int]) -> bool:
        if len(seqs) < m.count:
            c.problem(
                Reason.MISSING_RECORD,
                f"view {m.n}: {m.count - len(seqs)} of its {m.count} view records never received",
                batch=m.n,
            )
            return False
        root = MerkleTree([c.st.records[s][0] for s in seqs]).root
        if len(seqs) > m.count or root != m.root:
            c.problem(
                Reason.ROOT_MISMATCH,
                f"view {m.n}: the Merkle root over the {len(seqs)} view records received does not match the "
                f"signed view ({m.count} records)",
                batch=m.n,
            )
            return False
        return True

    def _check_content(self, c: _Ctx, m: ViewManifest, seqs: list[int]) -> bool:
        """Sealing as declared and authentic, consent for each subject, aggregates that add up."""
        ok = True
        received = bisect.bisect_right(c.consent_ns, m.consent_n)
        consent_complete = received >= m.consent_count
        if not consent_complete:
            c.problem(
                Reason.CONSENT_INCOMPLETE,
                f"view {m.n}: {received} consent event(s) of {self.purpose} numbered <= {m.consent_n} received, the "
                f"view counts {m.consent_count} (a withdrawal may be missing: no subject of this view counts as "
                "consented)",
                batch=m.n,
            )
            ok = False
        aggregates: list[tuple[Record, Mapping[str, Any] | None]] = []
        for s in seqs:
            rec = c.st.records[s][1]
            val = self._open(c, m, rec)
            if val is False:
                ok = False
                val = None
            if rec.sub is not None and not (consent_complete and self._granted(c, rec.sub, m.consent_n)):
                c.problem(
                    Reason.NO_CONSENT,
                    f"view {m.n}: seq {s} belongs to a subject without a grant for {self.purpose} in force at "
                    f"consent event {m.consent_n}",
                    seq=s,
                    batch=m.n,
                )
                ok = False
            if rec.kind.endswith(AGG_SUFFIX):
                aggregates.append((rec, val if isinstance(val, dict) else None))
        c.rep.aggregates += len(aggregates)
        return self._check_aggregates(c, m, aggregates) and ok

    def _open(self, c: _Ctx, m: ViewManifest, rec: Record) -> dict[str, Any] | bool | None:
        """The record's readable val (None: sealed and not checked; False: a problem was noted)."""
        where = f"view {m.n}: seq {rec.seq}"
        if rec.enc is None:
            if m.kid:
                c.problem(Reason.SEAL_BROKEN, f"{where} is in clear in a view sealed under {m.kid}", seq=rec.seq)
                return False
            return dict(rec.val)
        if not m.kid:
            c.problem(Reason.SEAL_BROKEN, f"{where} is sealed in a view that declares no key", seq=rec.seq)
            return False
        kid = rec.enc["kid"]
        if kid != m.kid:
            c.problem(Reason.WRONG_KEY_ID, f"{where} is sealed under {kid}, its view under {m.kid}", seq=rec.seq)
            return False
        if self.keys is None:
            c.rep.sealed_unchecked += 1
            return None
        if kid not in self.keys:
            c.problem(Reason.WRONG_KEY_ID, f"{where} is sealed under {kid}, a key id not in the audience key file")
            return False
        try:
            val, _raw = open_view_record(rec, self.keys)
        except EdgeError as exc:
            c.problem(Reason.SEAL_BROKEN, f"{where}: {exc}", seq=rec.seq)
            return False
        c.rep.opened += 1
        return val

    @staticmethod
    def _check_aggregates(c: _Ctx, m: ViewManifest, aggregates: list[tuple[Record, Mapping[str, Any] | None]]) -> bool:
        """Aggregates account exactly for the seqs marked ``aggregated`` (each aggregate's own seq is a record)."""
        marked = [(a, b) for reason, a, b in m.withheld if reason == AGGREGATED]
        total = sum(b - a + 1 for a, b in marked)
        if total and not aggregates:
            c.problem(Reason.BAD_AGGREGATE, f"view {m.n}: {total} seq(s) marked aggregated, no aggregate record")
            return False
        if any(val is None for _, val in aggregates):
            return True  # sealed and not opened: the sums cannot be checked (reported as not checked)
        folded = 0
        for rec, val in aggregates:
            assert val is not None
            n, last = val.get("n"), val.get("last_seq")
            if not _aggregate_ok(rec.seq, n, last, m.last, marked):
                c.problem(Reason.BAD_AGGREGATE, f"view {m.n}: aggregate at seq {rec.seq} has a bad n or last_seq")
                return False
            assert isinstance(n, int)
            folded += n - 1
        if folded != total:
            c.problem(
                Reason.BAD_AGGREGATE,
                f"view {m.n}: aggregates fold {folded} reading(s) beyond their own, {total} are marked aggregated",
            )
            return False
        return True

    def _check_numbering(self, c: _Ctx) -> None:
        """One signed view per source batch from the stream's signed start (``since``) on, adjoining ranges."""
        numbers = sorted(c.signed)
        if not numbers:
            return
        starts = {m.since for m in c.signed.values()}
        since = min(starts)
        if len(starts) > 1:
            c.problem(Reason.MISSING_VIEW, f"the views name different starts of the stream: {sorted(starts)[:5]}")
        begin = since
        if self.start is not None and self.start > since:
            begin = self.start  # a late joiner, by the caller's declaration: reported as not checked
            c.rep.joined_at = (since, self.start)
        # Gaps as ranges between the numbers received: a forged view number of 10^12 costs nothing.
        gaps = [(begin, numbers[0] - 1)] if numbers[0] > begin else []
        gaps += [(a + 1, b - 1) for a, b in itertools.pairwise(numbers) if b > a + 1]
        gaps += [(n, n) for n in sorted(c.st.sources) if n > numbers[-1]]
        if gaps:
            count = sum(b - a + 1 for a, b in gaps)
            c.problem(
                Reason.MISSING_VIEW,
                f"no view received for {count} source batch(es), from batch {gaps[0][0]}",
                batch=gaps[0][0],
            )
        for a, b in itertools.pairwise(numbers):
            ma, mb = c.signed[a], c.signed[b]
            if mb.consent_n < ma.consent_n:  # consent as of an older ledger head: a withdrawal could be undone
                c.problem(
                    Reason.NO_CONSENT,
                    f"view {b} was built at consent event {mb.consent_n}, before view {a}'s {ma.consent_n}",
                    batch=b,
                )
            if b == a + 1 and mb.first != ma.last + 1:
                reason = Reason.VIEW_OVERLAP if mb.first <= ma.last else Reason.BATCH_GAP
                c.problem(reason, f"view {b} starts at seq {mb.first}, view {a} ends at {ma.last}", batch=b)

    def _check_head(self, c: _Ctx) -> None:
        """The newest verified signed head must not name a batch beyond the last view received."""
        last = max(c.signed) if c.signed else 0
        best: int | None = None
        for sh in c.st.heads.values():
            h = sh.head
            got = self._trusted(c.gw, c.st, sh, None)
            if isinstance(got, Untrusted):
                c.problem(got.reason, f"signed head (batch {h.batch}): {got.why}")
                continue
            best = h.batch if best is None else max(best, h.batch)
        c.rep.head = best
        if best is not None and best > last:
            c.problem(
                Reason.TRUNCATED,
                f"the gateway's signed head names batch {best}, but the views end at batch {last}",
                batch=last + 1,
            )


def _aggregate_ok(seq: int, n: object, last: object, view_last: int, marked: list[tuple[int, int]]) -> bool:
    """An aggregate's ``n`` and ``last_seq``: it covers its own seq and, when n > 1, ends in an aggregated range."""
    if type(n) is not int or type(last) is not int or n < 1 or not seq <= last <= view_last:
        return False
    if (n == 1) != (last == seq):
        return False
    return n == 1 or any(a <= last <= b for a, b in marked)
