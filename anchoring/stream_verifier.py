"""The platform-side verifier: feed it what arrived on ``tiyi/v1/{region}/{gw}/#``, get a report.

Pure and order-independent (a manifest may arrive before its records; duplicates arrive after
reconnects): ``feed`` only collects and never raises on bad input — a malformed payload is a finding —
and ``report`` runs every check over what was collected. It trusts nothing it did not verify: keys are
pinned by the caller or, failing that, taken from the retained key topic and reported as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from anchoring.chain import KeyPeriod
from anchoring.errors import ReceiptError
from anchoring.receipt import AnchorReceipt
from edge import cbor
from edge.errors import CodecError, EdgeError
from edge.manifest import GENESIS_PREV, Manifest, SignedManifest
from edge.merkle import merkle_root
from edge.record import Record, decode_data_message
from edge.rollup import Rollup, rollup_gw
from edge.signing import Verifier
from edge.sm3 import sm3
from edge.topics import parse_topic

MAX_PROBLEMS_PER_REASON = 50  # a flood of one failure must not hide the others in the summary


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
    key_source: str = "none"
    problems: list[Problem] = field(default_factory=list)
    # target → (roll-ups verified, batches they cover); checked on the target's chain if a checker was given
    rollups: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerificationReport:
    gateways: dict[str, GatewayReport]
    stray: list[Problem]

    @property
    def ok(self) -> bool:
        return bool(self.gateways) and not self.stray and all(g.ok for g in self.gateways.values())

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
            chain = "checked on the chain" if g.anchors_checked_on_chain else "not checked on a chain"
            lines.append(f"  anchors   {g.anchors_verified} of {g.batches_verified} batches ({chain})")
            for target, (n, covered) in sorted(g.rollups.items()):
                lines.append(f"  roll-ups  {n} on {target}, covering {covered} batches")
            lines.append(f"  key       {g.key_source}")
            lines.extend(_problem_lines(g.problems))
        lines.extend(_problem_lines(self.stray))
        lines.append("RESULT: " + ("every record verified" if self.ok else f"{len(self.problems)} problem(s)"))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "gateways": {gw: {
                "ok": g.ok, "records": g.records, "first_seq": g.first_seq, "last_seq": g.last_seq,
                "batches_verified": g.batches_verified, "records_in_verified_batches": g.records_in_verified_batches,
                "anchors_verified": g.anchors_verified, "anchors_checked_on_chain": g.anchors_checked_on_chain,
                "unbatched": g.unbatched, "key_source": g.key_source,
                "rollups": {t: {"verified": n, "batches": c} for t, (n, c) in g.rollups.items()},
                "problems": [_problem_json(p) for p in g.problems]} for gw, g in self.gateways.items()},
            "stray": [_problem_json(p) for p in self.stray],
        }


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


@dataclass
class _GatewayState:
    records: dict[int, bytes] = field(default_factory=dict)
    batches: dict[int, bytes] = field(default_factory=dict)  # batch number → signed manifest bytes
    receipts: dict[int, list[AnchorReceipt]] = field(default_factory=dict)
    rollups: dict[tuple[str, int], tuple[Rollup, AnchorReceipt]] = field(default_factory=dict)
    key_pem: str | None = None
    key_id: str | None = None
    problems: list[Problem] = field(default_factory=list)


class StreamVerifier:
    def __init__(self, trusted_keys: Mapping[str, Verifier] | None = None,
                 load_key: Callable[[str], Verifier] | None = None,
                 key_history: Callable[[str], list[tuple[Verifier, KeyPeriod]]] | None = None) -> None:
        """Keys, strongest first: ``key_history`` (the on-chain registry: each key a gateway's operator
        vouched for, with the blocks it covers), pinned ``trusted_keys``, then ``load_key`` on the retained
        key topic (trust on first use, reported as such).

        With a key history a batch's key must have been vouched for at the block its anchor is in (so
        batches signed before a rotation still verify, and nothing anchored after a revocation does);
        a batch without an anchor is judged by the keys valid now."""
        self.trusted = dict(trusted_keys or {})
        self.load_key = load_key
        self.key_history = key_history
        self._registry_cache: dict[str, list[tuple[Verifier, KeyPeriod]]] = {}
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
                if r.gw != t.gw:
                    self._note(st, Reason.WRONG_TOPIC, f"receipt for {r.gw} on {topic}", t.gw, batch=r.batch)
                    return
                known = st.receipts.setdefault(r.batch, [])
                if r not in known:
                    known.append(r)
            elif t.channel == "anchor_state":  # progress reports: not part of any proof, but well formed
                m = cbor.loads(payload)
                if not isinstance(m, dict) or m.get("state") not in ("pending", "signed", "submitted", "included",
                                                                     "final"):
                    raise CodecError("anchor state message must be a map with a known state")
            elif t.channel == "rollup":
                self._feed_rollup(st, t.gw, t.target or "", payload)
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
    def _verifier_for(self, st: _GatewayState, rep: GatewayReport, key_id: str,
                      anchored_block: int | None = None) -> Verifier | None:
        if self.key_history is not None:
            if rep.gw not in self._registry_cache:
                self._registry_cache[rep.gw] = self.key_history(rep.gw)
            for v, period in self._registry_cache[rep.gw]:
                now_valid = period.until is None
                if v.key_id == key_id and (period.covers(anchored_block) if anchored_block is not None
                                           else now_valid):
                    rep.key_source = f"{key_id} (from the on-chain gateway registry)"
                    return v
            return None
        if key_id in self.trusted:
            rep.key_source = f"{key_id} (pinned)"
            return self.trusted[key_id]
        if self.trusted:
            return None
        if self.load_key is not None and st.key_pem is not None:
            try:
                v = self.load_key(st.key_pem)
            except (EdgeError, ValueError):
                return None
            if v.key_id != key_id or (st.key_id is not None and st.key_id != v.key_id):
                return None
            rep.key_source = f"{key_id} (from the retained key topic: trust on first use)"
            return v
        return None

    def report(self, check_anchor: Callable[[AnchorReceipt], str | None] | None = None,
               require_complete: bool = False, rollup_targets: Collection[str] = (),
               check_rollup: Callable[[str, AnchorReceipt], str | None] | None = None) -> VerificationReport:
        """``rollup_targets``: chains every batch must be rolled up to (checked with ``require_complete``);
        ``check_rollup(target, receipt)`` checks a roll-up's anchor on that target's chain."""
        return VerificationReport({gw: self._check(gw, st, check_anchor, require_complete, rollup_targets,
                                                   check_rollup)
                                   for gw, st in self._gws.items()}, list(self._stray))

    def _check(self, gw: str, st: _GatewayState, check_anchor: Callable[[AnchorReceipt], str | None] | None,
               require_complete: bool, rollup_targets: Collection[str] = (),
               check_rollup: Callable[[str, AnchorReceipt], str | None] | None = None) -> GatewayReport:
        rep = GatewayReport(gw=gw, problems=list(st.problems), anchors_checked_on_chain=check_anchor is not None)

        def problem(reason: Reason, message: str, **kw: Any) -> None:
            if sum(1 for p in rep.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
                rep.problems.append(Problem(reason, message, gw, **kw))

        seqs = sorted(st.records)
        rep.records = len(seqs)
        if seqs:
            rep.first_seq, rep.last_seq = seqs[0], seqs[-1]
        # Batches: numbering, adjacency, prev chain, signature, root.
        covered_to = 0
        prev_digest: bytes | None = GENESIS_PREV
        numbers = sorted(st.batches)
        roots: dict[int, bytes] = {}  # batch number → the root its (received) manifest signs
        expected = 1
        for n in numbers:
            if n != expected:
                problem(Reason.MISSING_BATCH, f"batches {expected}..{n - 1} were never received", batch=expected)
                prev_digest = None  # the chain cannot be checked across a missing batch
            expected = n + 1
            sm = SignedManifest.from_bytes(st.batches[n])
            m = sm.manifest
            roots[n] = m.root
            ok = True
            anchored = next((r.block for r in st.receipts.get(n, []) if r.root == m.root), None)
            verifier = self._verifier_for(st, rep, sm.key_id, anchored)
            if verifier is None:
                problem(Reason.UNTRUSTED_KEY, f"batch {n} is signed by key {sm.key_id}, which is not trusted"
                        + (f" at block {anchored}" if anchored is not None and self.key_history else ""), batch=n)
                ok = False
            elif not sm.verify(verifier):
                problem(Reason.BAD_SIGNATURE, f"batch {n}: SM2 signature does not verify under {sm.key_id}", batch=n)
                ok = False
            if prev_digest is not None and m.prev != prev_digest:
                problem(Reason.BROKEN_CHAIN, f"batch {n}: prev does not match the previous manifest's SM3", batch=n)
                ok = False
            if (covered_to and m.first_seq != covered_to + 1) or (n == 1 and m.first_seq != 1):
                problem(Reason.BATCH_GAP, f"batch {n} starts at seq {m.first_seq}, expected {covered_to + 1}",
                        batch=n)
                ok = False
            if ok and self._check_root(m, st, problem):
                rep.batches_verified += 1
                rep.records_in_verified_batches += m.count
                ok = self._check_anchor(n, m, st, rep, check_anchor, problem)
            prev_digest = sm3(sm.manifest_bytes)
            covered_to = m.last_seq
        self._check_rollups(gw, st, roots, rep, problem, require_complete, rollup_targets, check_rollup)
        # Records: gaps and coverage.
        if seqs:
            present = set(seqs)
            top = max(seqs[-1], covered_to)
            missing = [s for s in range(1, top + 1) if s not in present]
            reported_missing = {p.seq for p in rep.problems if p.reason == Reason.MISSING_RECORD}
            for s in missing:
                if s not in reported_missing:
                    problem(Reason.MISSING_RECORD, f"record seq {s} was never received", seq=s)
            rep.unbatched = sum(1 for s in seqs if s > covered_to)
            if rep.unbatched and require_complete:
                problem(Reason.UNBATCHED, f"{rep.unbatched} record(s) after seq {covered_to} are in no batch",
                        seq=covered_to + 1)
        return rep

    @staticmethod
    def _check_rollups(gw: str, st: _GatewayState, roots: Mapping[int, bytes], rep: GatewayReport,
                       problem: Callable[..., None],
                       require_complete: bool, rollup_targets: Collection[str],
                       check_rollup: Callable[[str, AnchorReceipt], str | None] | None) -> None:
        """Each roll-up: its receipt anchors its root under ``<gw>.rollup``; its leaves are exactly the roots
        of the signed batches it names; with ``check_rollup``, the target's chain confirms it."""
        covered: dict[str, set[int]] = {}
        for (target, number), (rollup, receipt) in sorted(st.rollups.items()):
            ok = (receipt.root == rollup.root and receipt.gw == rollup_gw(gw) and receipt.batch == number)
            if not ok:
                problem(Reason.ROLLUP_MISMATCH, f"roll-up {number} for {target}: its receipt does not anchor its root")
                continue
            for i, root in enumerate(rollup.roots):
                n = rollup.first_batch + i
                if roots.get(n) != root:
                    problem(Reason.ROLLUP_MISMATCH, f"roll-up {number} for {target}: leaf {i} is not the root of "
                            f"signed batch {n}", batch=n)
                    ok = False
                    break
            if ok and check_rollup is not None:
                why = check_rollup(target, receipt)
                if why is not None:
                    problem(Reason.ANCHOR_NOT_ON_CHAIN, f"roll-up {number} on {target}: {why}")
                    ok = False
            if ok:
                n_ok, n_batches = rep.rollups.get(target, (0, 0))
                rep.rollups[target] = (n_ok + 1, n_batches + len(rollup.roots))
                covered.setdefault(target, set()).update(range(rollup.first_batch, rollup.last_batch + 1))
        if require_complete:
            for target in rollup_targets:
                missing = [n for n in sorted(st.batches) if n not in covered.get(target, set())]
                if missing:
                    problem(Reason.MISSING_ROLLUP, f"batches {missing[0]}..{missing[-1]} ({len(missing)}) are in no "
                            f"verified roll-up on {target}", batch=missing[0])

    @staticmethod
    def _check_root(m: Manifest, st: _GatewayState, problem: Callable[..., None]) -> bool:
        missing = [s for s in range(m.first_seq, m.last_seq + 1) if s not in st.records]
        if missing:
            for s in missing[:MAX_PROBLEMS_PER_REASON]:
                problem(Reason.MISSING_RECORD, f"record seq {s} (in batch {m.batch}) was never received", seq=s,
                        batch=m.batch)
            return False
        root = merkle_root([st.records[s] for s in range(m.first_seq, m.last_seq + 1)])
        if root != m.root:
            problem(Reason.ROOT_MISMATCH, f"batch {m.batch}: the Merkle root over seq {m.first_seq}..{m.last_seq} "
                    "does not match the signed manifest (a record was altered or reordered)", batch=m.batch)
            return False
        return True

    @staticmethod
    def _check_anchor(n: int, m: Manifest, st: _GatewayState, rep: GatewayReport,
                      check_anchor: Callable[[AnchorReceipt], str | None] | None,
                      problem: Callable[..., None]) -> bool:
        receipts = st.receipts.get(n, [])
        if not receipts:
            problem(Reason.MISSING_ANCHOR, f"batch {n} has no anchor receipt", batch=n)
            return False
        good = [r for r in receipts if r.root == m.root]
        if not good:
            problem(Reason.ANCHOR_MISMATCH, f"batch {n}: the anchor receipt names another root", batch=n)
            return False
        if check_anchor is not None:
            reasons = [check_anchor(r) for r in good]
            if all(reasons):
                problem(Reason.ANCHOR_NOT_ON_CHAIN, f"batch {n}: {reasons[0]}", batch=n)
                return False
        rep.anchors_verified += 1
        return True


def report_json(report: VerificationReport) -> str:
    return json.dumps(report.to_json(), indent=2)
