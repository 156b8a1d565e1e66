"""The platform-side verifier: feed it what arrived on ``tiyi/v1/{region}/{gw}/#``, get a report.

Pure and order-independent (a manifest may arrive before its records; duplicates arrive after
reconnects): ``feed`` only collects and never raises on bad input — a malformed payload is a finding —
and ``report`` runs every check over what was collected. It trusts nothing it did not verify: which key may sign
for a gateway comes from the caller's ``TrustPolicy``, and which block an anchor is in comes from the chain, never
from a receipt. No number inside a message sizes an allocation: gaps are counted, not listed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.errors import AnchoringError, ReceiptError
from anchoring.receipt import AnchorReceipt
from anchoring.trust import KeySource, TrustPolicy
from anchoring.verify_anchor import AnchorChecker
from edge import cbor
from edge.errors import CodecError, EdgeError
from edge.head import SignedHead
from edge.manifest import GENESIS_PREV, Manifest, SignedManifest
from edge.merkle import merkle_root
from edge.record import Record, decode_data_message
from edge.rollup import Rollup
from edge.sm3 import sm3
from edge.topics import parse_topic

MAX_PROBLEMS_PER_REASON = 50  # a flood of one failure must not hide the others in the summary
ANCHOR_STATES = ("pending", "signed", "submitted", "included", "final", "failed")


class Reason(StrEnum):
    MALFORMED = "malformed"
    WRONG_TOPIC = "wrong_topic"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    MISSING_RECORD = "missing_record"
    UNBATCHED = "unbatched"
    UNTRUSTED_KEY = "untrusted_key"
    BAD_SIGNATURE = "bad_signature"
    MISSING_BATCH = "missing_batch"
    CONFLICTING_BATCH = "conflicting_batch"
    BATCH_GAP = "batch_gap"
    BROKEN_CHAIN = "broken_chain"
    ROOT_MISMATCH = "root_mismatch"
    MISSING_ANCHOR = "missing_anchor"
    ANCHOR_MISMATCH = "anchor_mismatch"
    ANCHOR_NOT_ON_CHAIN = "anchor_not_on_chain"
    ROLLUP_MISMATCH = "rollup_mismatch"
    MISSING_ROLLUP = "missing_rollup"
    TRUNCATED = "truncated"
    HEAD_MISMATCH = "head_mismatch"


class Outcome(IntEnum):
    """What a report amounts to; the value is ``tiyi verify``'s exit code."""

    VERIFIED = 0  # every record proven, signed under a pinned or registered key, anchored as checked
    PROBLEMS = 1  # something failed a check: see the problems
    PENDING = 3  # nothing failed and every check ran, but some records are not in a batch yet
    UNCHECKED = 4  # nothing failed, but a check could not run: no chain, trust on first use, no signed head ...


@dataclass(frozen=True, slots=True)
class Problem:
    reason: Reason
    message: str
    gw: str | None = None
    seq: int | None = None
    batch: int | None = None


@dataclass
class GatewayReport:
    gw: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    batches_verified: int = 0
    records_in_verified_batches: int = 0
    anchors_verified: int = 0
    anchors_checked_on_chain: bool = False
    unbatched: int = 0
    key_sources: set[KeySource] = field(default_factory=set)
    key_ids: set[str] = field(default_factory=set)
    operators: set[bytes] = field(default_factory=set)  # registry operators that vouched for the keys used
    head: tuple[int, int] | None = None  # (batch, issued ms) of the newest verified signed head
    chain_latest: int | None = None  # the newest batch the chain holds from the gateway's anchoring account(s)
    problems: list[Problem] = field(default_factory=list)
    # target → (roll-ups verified, batches they cover)
    rollups: dict[str, tuple[int, int]] = field(default_factory=dict)
    rollups_unchecked: set[str] = field(default_factory=set)  # targets whose roll-ups no chain confirmed

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def key_source(self) -> str:
        if not self.key_sources:
            return "none"
        by = "".join(f", operator 0x{o.hex()}" for o in sorted(self.operators))
        return ", ".join(f"{k} ({s}{by})" for k in sorted(self.key_ids) for s in sorted(self.key_sources))

    def unchecked(self) -> list[str]:
        """What could not be checked for this gateway (empty when everything was)."""
        out = []
        if KeySource.TOFU in self.key_sources:
            out.append("its key was trusted on first use")
        if self.batches_verified and not self.anchors_checked_on_chain:
            out.append("anchors were not checked on a chain")
        if self.head is None:
            out.append("no signed head arrived, so a dropped tail cannot be ruled out")
        out.extend(f"roll-ups on {t} were not checked on that chain" for t in sorted(self.rollups_unchecked))
        return out


@dataclass
class VerificationReport:
    gateways: dict[str, GatewayReport]
    stray: list[Problem]
    chains: dict[str, bool] = field(default_factory=dict)  # chain name → consulted

    @property
    def ok(self) -> bool:
        """No check failed (see ``outcome`` for whether every check could run)."""
        return bool(self.gateways) and not self.stray and all(g.ok for g in self.gateways.values())

    @property
    def outcome(self) -> Outcome:
        if not self.ok:
            return Outcome.PROBLEMS
        if any(g.unchecked() for g in self.gateways.values()):
            return Outcome.UNCHECKED
        if any(g.unbatched for g in self.gateways.values()):
            return Outcome.PENDING
        return Outcome.VERIFIED

    @property
    def problems(self) -> list[Problem]:
        return [*self.stray, *(p for g in self.gateways.values() for p in g.problems)]

    def summary(self) -> str:
        lines: list[str] = []
        if not self.gateways:
            lines.append("nothing to verify: no gateway messages were received")
        for g in self.gateways.values():
            span = f"seq {g.first_seq}..{g.last_seq}" if g.first_seq is not None else "no records"
            lines.append(f"gateway {g.gw}: {'OK' if g.ok else 'FAILED'}")
            lines.append(f"  records   {g.records} unique ({span}), {g.records_in_verified_batches} proven in "
                         f"{g.batches_verified} signed batches" + (f", {g.unbatched} not yet batched" if g.unbatched
                                                                     else ""))
            chain = "checked on the chain" if g.anchors_checked_on_chain else "NOT checked on a chain"
            lines.append(f"  anchors   {g.anchors_verified} of {g.batches_verified} batches ({chain})")
            for target, (n, covered) in sorted(g.rollups.items()):
                how = "NOT checked on that chain" if target in g.rollups_unchecked else "checked on that chain"
                lines.append(f"  roll-ups  {n} on {target}, covering {covered} batches ({how})")
            head = "none received" if g.head is None else f"batch {g.head[0]}, signed {_utc(g.head[1])}"
            if g.chain_latest is not None:
                head += f"; the chain's latest anchored batch is {g.chain_latest}"
            lines.append(f"  head      {head}")
            lines.append(f"  key       {g.key_source}")
            lines.extend(_problem_lines(g.problems))
            lines.extend(f"  NOT CHECKED: {u}" for u in g.unchecked())
        lines.extend(_problem_lines(self.stray))
        if self.chains:
            lines.append("chains    " + ", ".join(f"{n} ({'consulted' if c else 'NOT consulted'})"
                                                 for n, c in self.chains.items()))
        verdict = {
            Outcome.VERIFIED: "every record verified",
            Outcome.PROBLEMS: f"{len(self.problems)} problem(s)",
            Outcome.PENDING: "no problems, but some records are not in a signed batch yet (pending)",
            Outcome.UNCHECKED: "no problems found, but not everything could be checked (see NOT CHECKED)",
        }[self.outcome]
        lines.append("RESULT: " + verdict)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "outcome": self.outcome.name.lower(),
            "exit_code": int(self.outcome),
            "chains": self.chains,
            "gateways": {gw: {
                "ok": g.ok, "records": g.records, "first_seq": g.first_seq, "last_seq": g.last_seq,
                "batches_verified": g.batches_verified, "records_in_verified_batches": g.records_in_verified_batches,
                "anchors_verified": g.anchors_verified, "anchors_checked_on_chain": g.anchors_checked_on_chain,
                "unbatched": g.unbatched, "key_source": g.key_source,
                "head": None if g.head is None else {"batch": g.head[0], "issued": g.head[1]},
                "chain_latest_batch": g.chain_latest,
                "rollups": {t: {"verified": n, "batches": c, "checked_on_chain": t not in g.rollups_unchecked}
                            for t, (n, c) in g.rollups.items()},
                "not_checked": g.unchecked(),
                "problems": [_problem_json(p) for p in g.problems]} for gw, g in self.gateways.items()},
            "stray": [_problem_json(p) for p in self.stray],
        }


def _utc(ms: int) -> str:
    """A head's wall time for people (it is the gateway's claim, shown as it said it)."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"at {ms} ms"


def _problem_json(p: Problem) -> dict[str, Any]:
    return {"reason": str(p.reason), "message": p.message, "gw": p.gw, "seq": p.seq, "batch": p.batch}


def _problem_lines(problems: list[Problem]) -> list[str]:
    out: list[str] = []
    counts: dict[Reason, int] = {}
    for p in problems:
        counts[p.reason] = counts.get(p.reason, 0) + 1
        if counts[p.reason] <= 10:
            out.append(f"  PROBLEM {p.reason}: {p.message}")
    for reason, n in counts.items():
        if n > 10:
            out.append(f"  ... and {n - 10} more {reason}")
    return out


def missing_ranges(present: list[int], first: int, last: int) -> list[tuple[int, int]]:
    """The runs of ``first..last`` absent from the sorted ``present``: work and memory grow with what was received,
    never with the span (a forged seq of 10^12 costs nothing)."""
    out: list[tuple[int, int]] = []
    expect = first
    for s in present[bisect.bisect_left(present, first):bisect.bisect_right(present, last)]:
        if s > expect:
            out.append((expect, s - 1))
        expect = s + 1
    if expect <= last:
        out.append((expect, last))
    return out


def _span(a: int, b: int) -> str:
    return f"seq {a}" if a == b else f"seq {a}..{b} ({b - a + 1} records)"


@dataclass
class _GatewayState:
    records: dict[int, bytes] = field(default_factory=dict)
    batches: dict[int, bytes] = field(default_factory=dict)  # batch number → signed manifest bytes
    receipts: dict[int, list[AnchorReceipt]] = field(default_factory=dict)
    rollups: dict[tuple[str, int], tuple[Rollup, AnchorReceipt]] = field(default_factory=dict)
    heads: set[bytes] = field(default_factory=set)
    key_pem: str | None = None
    key_id: str | None = None
    problems: list[Problem] = field(default_factory=list)


class StreamVerifier:
    def __init__(self, trust: TrustPolicy) -> None:
        self.trust = trust
        self._gws: dict[str, _GatewayState] = {}
        self._stray: list[Problem] = []
        self.messages = 0

    def _gw(self, gw: str) -> _GatewayState:
        return self._gws.setdefault(gw, _GatewayState())

    def _note(self, st: _GatewayState, reason: Reason, message: str, gw: str, **kw: Any) -> None:
        if sum(1 for p in st.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
            st.problems.append(Problem(reason, message, gw, **kw))

    # ---------------------------------------------------------------- intake
    def feed(self, topic: str, payload: bytes, retained: bool = False) -> None:
        self.messages += 1
        try:
            t = parse_topic(topic)
        except EdgeError as exc:
            if len(self._stray) < MAX_PROBLEMS_PER_REASON:
                self._stray.append(Problem(Reason.WRONG_TOPIC, f"{topic!r}: {exc}"))
            return
        st = self._gw(t.gw)
        try:
            if t.channel == "data":
                self._feed_data(st, t.gw, t.dev or "", payload)
            elif t.channel == "batch":
                self._feed_batch(st, t.gw, payload)
            elif t.channel == "anchor":
                r = AnchorReceipt.from_bytes(payload)
                if r.gw != t.gw or r.kind is not AnchorKind.BATCH:
                    self._note(st, Reason.WRONG_TOPIC, f"{r.kind.label} receipt for {r.gw} on {topic}", t.gw,
                               batch=r.number)
                    return
                known = st.receipts.setdefault(r.number, [])
                if r not in known and len(known) < MAX_PROBLEMS_PER_REASON:
                    known.append(r)
            elif t.channel == "anchor_state":  # progress reports: not part of any proof, but well formed
                m = cbor.loads(payload)
                if not isinstance(m, dict) or m.get("state") not in ANCHOR_STATES:
                    raise CodecError("anchor state message must be a map with a known state")
            elif t.channel == "rollup":
                self._feed_rollup(st, t.gw, t.target or "", payload)
            elif t.channel == "head":
                head = SignedHead.from_bytes(payload).head
                if head.gw != t.gw:
                    self._note(st, Reason.WRONG_TOPIC, f"head of {head.gw} published under {t.gw}", t.gw)
                    return
                if len(st.heads) < MAX_PROBLEMS_PER_REASON:
                    st.heads.add(payload)
            elif t.channel == "key":
                m = cbor.expect_map(cbor.loads(payload), "key message", {"key_id", "pem"})
                st.key_id = cbor.field(m, "key_id", str, "key")
                st.key_pem = cbor.field(m, "pem", str, "key")
            elif t.channel == "devices":  # operations data: not part of the proof, but must be well formed
                if not isinstance(cbor.loads(payload), dict):
                    raise CodecError("device state must be a CBOR map")
            else:  # status: informational, but it must still be well formed
                m = cbor.loads(payload)
                if not isinstance(m, dict) or m.get("state") not in ("online", "offline"):
                    raise CodecError("status message must be a map with state online|offline")
        except (EdgeError, ReceiptError) as exc:
            self._note(st, Reason.MALFORMED, f"{topic}: {exc}", t.gw)

    def _feed_data(self, st: _GatewayState, gw: str, dev: str, payload: bytes) -> None:
        for data in decode_data_message(payload):
            try:
                rec = Record.from_bytes(data)
            except EdgeError as exc:
                self._note(st, Reason.MALFORMED, f"record on data/{dev}: {exc}", gw)
                continue
            if rec.gw != gw or rec.dev != dev:
                self._note(st, Reason.WRONG_TOPIC, f"record seq {rec.seq} of {rec.gw}/{rec.dev} arrived on "
                           f"{gw}/data/{dev}", gw, seq=rec.seq)
                continue
            old = st.records.get(rec.seq)
            if old is None:
                st.records[rec.seq] = data
            elif old != data:
                self._note(st, Reason.CONFLICTING_DUPLICATE, f"two different records claim seq {rec.seq}", gw,
                           seq=rec.seq)

    def _feed_rollup(self, st: _GatewayState, gw: str, target: str, payload: bytes) -> None:
        m = cbor.expect_map(cbor.loads(payload), "rollup message", {"rollup", "receipt"})
        rollup = Rollup.from_bytes(cbor.field(m, "rollup", bytes, "rollup message"))
        receipt = AnchorReceipt.from_bytes(cbor.field(m, "receipt", bytes, "rollup message"))
        if rollup.gw != gw or rollup.target != target:
            self._note(st, Reason.WRONG_TOPIC, f"roll-up of {rollup.gw} for {rollup.target} published under "
                       f"{gw}/rollup/{target}", gw)
            return
        key = (target, rollup.number)
        old = st.rollups.get(key)
        if old is not None and old != (rollup, receipt):
            self._note(st, Reason.ROLLUP_MISMATCH, f"two different roll-ups claim {target} #{rollup.number}", gw)
            return
        st.rollups[key] = (rollup, receipt)

    def _feed_batch(self, st: _GatewayState, gw: str, payload: bytes) -> None:
        sm = SignedManifest.from_bytes(payload)
        m = sm.manifest
        if m.gw != gw:
            self._note(st, Reason.WRONG_TOPIC, f"manifest of {m.gw} published under {gw}", gw, batch=m.batch)
            return
        old = st.batches.get(m.batch)
        if old is None:
            st.batches[m.batch] = payload
        elif old != payload:
            self._note(st, Reason.CONFLICTING_BATCH, f"two different manifests claim batch {m.batch}", gw,
                       batch=m.batch)

    # ---------------------------------------------------------------- checks
    def report(self, chain: AnchorChecker | None = None, require_complete: bool = False,
               rollup_targets: Collection[str] = (),
               rollup_chains: Mapping[str, AnchorChecker] | None = None) -> VerificationReport:
        """``chain``: the batches' chain; ``rollup_chains``: each roll-up target's chain; ``rollup_targets``:
        chains every batch must be rolled up to (checked with ``require_complete``)."""
        if self.trust.uses_registry and chain is None:
            raise ValueError("registry trust needs the chain: a key's validity is judged at its anchor's block")
        rollup_chains = dict(rollup_chains or {})
        report = VerificationReport({gw: self._check(gw, st, chain, require_complete, rollup_targets, rollup_chains)
                                     for gw, st in self._gws.items()}, list(self._stray))
        if chain is not None:
            report.chains[chain.name] = True
        for target in sorted({t for st in self._gws.values() for t, _ in st.rollups} | set(rollup_targets)):
            report.chains[target] = target in rollup_chains
        return report

    def _check(self, gw: str, st: _GatewayState, chain: AnchorChecker | None, require_complete: bool,
               rollup_targets: Collection[str], rollup_chains: Mapping[str, AnchorChecker]) -> GatewayReport:
        rep = GatewayReport(gw=gw, problems=list(st.problems), anchors_checked_on_chain=chain is not None)

        def problem(reason: Reason, message: str, **kw: Any) -> None:
            if sum(1 for p in rep.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
                rep.problems.append(Problem(reason, message, gw, **kw))

        seqs = sorted(st.records)
        rep.records = len(seqs)
        if seqs:
            rep.first_seq, rep.last_seq = seqs[0], seqs[-1]
        # Batches: numbering, adjacency, prev chain, signature, root, anchor.
        covered_to = 0
        prev_digest: bytes | None = GENESIS_PREV
        numbers = sorted(st.batches)
        roots: dict[int, bytes] = {}  # batch number → the root its (received) manifest signs
        digests: dict[int, bytes] = {}
        anchorers: set[bytes] = set()  # accounts the chain says anchored this gateway's batches
        expected = 1
        for n in numbers:
            if n != expected:
                problem(Reason.MISSING_BATCH, f"batches {expected}..{n - 1} were never received", batch=expected)
                prev_digest = None  # the chain cannot be checked across a missing batch
            expected = n + 1
            sm = SignedManifest.from_bytes(st.batches[n])
            m = sm.manifest
            roots[n] = m.root
            digests[n] = sm3(sm.manifest_bytes)
            anchor = self._confirmed_anchor(n, m, st, chain, problem)
            if anchor is not None:
                anchorers.add(anchor.anchorer)
            ok = self._check_signature(gw, st, rep, sm, anchor, problem)
            if prev_digest is not None and m.prev != prev_digest:
                problem(Reason.BROKEN_CHAIN, f"batch {n}: prev does not match the previous manifest's SM3", batch=n)
                ok = False
            if (covered_to and m.first_seq != covered_to + 1) or (n == 1 and m.first_seq != 1):
                problem(Reason.BATCH_GAP, f"batch {n} starts at seq {m.first_seq}, expected {covered_to + 1}",
                        batch=n)
                ok = False
            if ok and self._check_root(m, st, seqs, problem):
                rep.batches_verified += 1
                rep.records_in_verified_batches += m.count
                if anchor is not None or (chain is None and self._has_receipt(n, m, st, problem)):
                    rep.anchors_verified += 1
            prev_digest = digests[n]
            covered_to = m.last_seq
        self._check_rollups(gw, st, roots, rep, problem, require_complete, rollup_targets, rollup_chains)
        self._check_tail(gw, st, rep, numbers, digests, anchorers, chain, problem)
        # Records: gaps (counted in runs, never listed one by one) and coverage.
        if seqs:
            top = max(seqs[-1], covered_to)
            reported = {p.seq for p in rep.problems if p.reason == Reason.MISSING_RECORD}
            for a, b in missing_ranges(seqs, 1, top):
                if a not in reported:
                    problem(Reason.MISSING_RECORD, f"{_span(a, b)} never received", seq=a)
            rep.unbatched = len(seqs) - bisect.bisect_right(seqs, covered_to)
            if rep.unbatched and require_complete:
                problem(Reason.UNBATCHED, f"{rep.unbatched} record(s) after seq {covered_to} are in no batch",
                        seq=covered_to + 1)
        return rep

    def _check_signature(self, gw: str, st: _GatewayState, rep: GatewayReport, sm: SignedManifest,
                         anchor: AnchorInfo | None, problem: Callable[..., None]) -> bool:
        n = sm.manifest.batch
        trusted = self.trust.key_for(gw, sm.key_id, anchor, len(self._gws), st.key_pem)
        if isinstance(trusted, str):
            problem(Reason.UNTRUSTED_KEY, f"batch {n} is signed by key {sm.key_id}: {trusted}", batch=n)
            return False
        if not sm.verify(trusted.verifier):
            problem(Reason.BAD_SIGNATURE, f"batch {n}: SM2 signature does not verify under {sm.key_id}", batch=n)
            return False
        rep.key_sources.add(trusted.source)
        rep.key_ids.add(sm.key_id)
        if trusted.operator is not None:
            rep.operators.add(trusted.operator)
        return True

    def _confirmed_anchor(self, n: int, m: Manifest, st: _GatewayState, chain: AnchorChecker | None,
                          problem: Callable[..., None]) -> AnchorInfo | None:
        """The chain's record of batch ``n``'s anchor (found through its receipts), or None (a problem is noted
        when there is a chain to ask). Without a chain nothing is confirmed."""
        if chain is None:
            return None
        if not self._has_receipt(n, m, st, problem):
            return None
        good = [r for r in st.receipts[n] if r.root == m.root]
        reasons: list[str] = []
        confirmed: list[AnchorInfo] = []
        for r in good:
            got = chain.confirm(r)
            if isinstance(got, str):
                reasons.append(got)
            elif (got.gw, got.number, got.count, got.kind) == (m.gw, m.batch, m.count, AnchorKind.BATCH):
                confirmed.append(got)
            else:
                reasons.append(f"the chain's anchor is for {got.gw} #{got.number} ({got.count} records)")
        if not confirmed:
            problem(Reason.ANCHOR_NOT_ON_CHAIN, f"batch {n}: {reasons[0]}", batch=n)
            return None
        # Several accounts may have anchored the root; the registry decides which one counts, so offer the
        # registered one first, else the earliest.
        registered = self.trust.anchorers(m.gw)
        confirmed.sort(key=lambda a: (a.anchorer not in registered, a.block_number))
        return confirmed[0]

    @staticmethod
    def _has_receipt(n: int, m: Manifest, st: _GatewayState, problem: Callable[..., None]) -> bool:
        receipts = st.receipts.get(n, [])
        if not receipts:
            problem(Reason.MISSING_ANCHOR, f"batch {n} has no anchor receipt", batch=n)
            return False
        if not any(r.root == m.root and r.count == m.count for r in receipts):
            problem(Reason.ANCHOR_MISMATCH, f"batch {n}: the anchor receipt names another root or count", batch=n)
            return False
        return True

    def _check_tail(self, gw: str, st: _GatewayState, rep: GatewayReport, numbers: list[int],
                    digests: Mapping[int, bytes], anchorers: set[bytes], chain: AnchorChecker | None,
                    problem: Callable[..., None]) -> None:
        """Truncation: the newest signed head and (with a chain) the newest anchor must not lie beyond the last
        batch received."""
        last = numbers[-1] if numbers else 0
        best: tuple[int, int] | None = None
        for payload in sorted(st.heads):
            sh = SignedHead.from_bytes(payload)
            h = sh.head
            trusted = self.trust.key_for(gw, sh.key_id, None, len(self._gws), st.key_pem)
            if isinstance(trusted, str):
                problem(Reason.UNTRUSTED_KEY, f"signed head (batch {h.batch}) is signed by key {sh.key_id}: "
                        f"{trusted}")
                continue
            if not sh.verify(trusted.verifier):
                problem(Reason.BAD_SIGNATURE, f"signed head (batch {h.batch}): SM2 signature does not verify")
                continue
            if h.batch > last:
                problem(Reason.TRUNCATED, f"the gateway's signed head names batch {h.batch} (up to seq {h.last_seq}), "
                        f"but the stream ends at batch {last}: the tail was dropped", batch=last + 1)
            elif h.batch and digests.get(h.batch) != h.manifest:
                problem(Reason.HEAD_MISMATCH, f"the signed head's manifest digest for batch {h.batch} does not match "
                        "the manifest received", batch=h.batch)
            if best is None or (h.batch, h.issued) > best:
                best = (h.batch, h.issued)
        rep.head = best
        if chain is None:
            return
        accounts = anchorers | self.trust.anchorers(gw)
        for account in sorted(accounts):
            try:
                latest = chain.latest(account, AnchorKind.BATCH, gw)
            except AnchoringError as exc:
                problem(Reason.ANCHOR_NOT_ON_CHAIN, f"could not ask {chain.name} for {gw}'s latest anchor: {exc}")
                continue
            if latest is None:
                continue
            rep.chain_latest = max(rep.chain_latest or 0, latest[0])
            if latest[0] > last:
                problem(Reason.TRUNCATED, f"the chain holds batch {latest[0]} anchored for {gw} by 0x{account.hex()} "
                        f"(block {latest[1]}), but the stream ends at batch {last}: the tail was dropped",
                        batch=last + 1)

    def _check_rollups(self, gw: str, st: _GatewayState, roots: Mapping[int, bytes], rep: GatewayReport,
                       problem: Callable[..., None], require_complete: bool, rollup_targets: Collection[str],
                       rollup_chains: Mapping[str, AnchorChecker]) -> None:
        """Each roll-up: its receipt anchors its root as a roll-up of this gateway; its leaves are exactly the roots
        of the signed batches it names; the target's chain (when given) confirms it, from an account the registry
        names for the gateway when keys come from the registry."""
        covered: dict[str, set[tuple[int, int]]] = {}
        registered = self.trust.anchorers(gw)
        for (target, number), (rollup, receipt) in sorted(st.rollups.items()):
            ok = (receipt.kind is AnchorKind.ROLLUP and receipt.root == rollup.root and receipt.gw == gw
                  and receipt.number == number and receipt.count == len(rollup.roots))
            if not ok:
                problem(Reason.ROLLUP_MISMATCH, f"roll-up {number} for {target}: its receipt does not anchor its root "
                        "as this gateway's roll-up")
                continue
            for i, root in enumerate(rollup.roots):
                n = rollup.first_batch + i
                if roots.get(n) != root:
                    problem(Reason.ROLLUP_MISMATCH, f"roll-up {number} for {target}: leaf {i} is not the root of "
                            f"signed batch {n}", batch=n)
                    ok = False
                    break
            checker = rollup_chains.get(target)
            if ok and checker is not None:
                got = checker.confirm(receipt)
                if isinstance(got, str):
                    problem(Reason.ANCHOR_NOT_ON_CHAIN, f"roll-up {number} on {target}: {got}")
                    ok = False
                elif self.trust.uses_registry and got.anchorer not in registered:
                    problem(Reason.UNTRUSTED_KEY, f"roll-up {number} on {target} was anchored by 0x{got.anchorer.hex()}"
                            f", an account the registry does not name for {gw}")
                    ok = False
            elif ok:
                rep.rollups_unchecked.add(target)
            if ok:
                n_ok, n_batches = rep.rollups.get(target, (0, 0))
                rep.rollups[target] = (n_ok + 1, n_batches + len(rollup.roots))
                covered.setdefault(target, set()).add((rollup.first_batch, rollup.last_batch))
        if require_complete:
            for target in rollup_targets:
                spans = _merge(covered.get(target, set()))
                missing = [n for n in sorted(st.batches) if not _in_spans(spans, n)]
                if missing:
                    problem(Reason.MISSING_ROLLUP, f"batches {missing[0]}..{missing[-1]} ({len(missing)}) are in no "
                            f"verified roll-up on {target}", batch=missing[0])

    @staticmethod
    def _check_root(m: Manifest, st: _GatewayState, seqs: list[int], problem: Callable[..., None]) -> bool:
        gaps = missing_ranges(seqs, m.first_seq, m.last_seq)
        if gaps:
            for a, b in gaps[:MAX_PROBLEMS_PER_REASON]:
                problem(Reason.MISSING_RECORD, f"{_span(a, b)} (in batch {m.batch}) never received", seq=a,
                        batch=m.batch)
            return False
        root = merkle_root([st.records[s] for s in range(m.first_seq, m.last_seq + 1)])
        if root != m.root:
            problem(Reason.ROOT_MISMATCH, f"batch {m.batch}: the Merkle root over seq {m.first_seq}..{m.last_seq} "
                    "does not match the signed manifest (a record was altered or reordered)", batch=m.batch)
            return False
        return True


def _merge(spans: Collection[tuple[int, int]]) -> list[tuple[int, int]]:
    """Disjoint, sorted intervals covering the same numbers as ``spans``."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _in_spans(spans: list[tuple[int, int]], n: int) -> bool:
    """Is ``n`` in one of the disjoint sorted ``spans``?"""
    i = bisect.bisect_right(spans, (n, 1 << 64)) - 1
    return i >= 0 and spans[i][0] <= n <= spans[i][1]
