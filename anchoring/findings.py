"""What a verification finds: the ``Reason`` for every failed check (the one source of truth for ``tiyi verify``,
the subscriber SDK and ``tiyi ingest``), the ``Outcome`` it amounts to (``tiyi verify``'s exit code) and the reports.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from anchoring.trust import KeySource

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
    # An audience's view stream (anchoring.view_verify)
    MISSING_VIEW = "missing_view"  # a source batch (or a number between views) without its view manifest
    VIEW_SOURCE_MISMATCH = "view_source_mismatch"  # src_root/first/last are not the signed source batch's
    VIEW_INCOMPLETE = "view_incomplete"  # a source seq neither a view record nor in a withheld range
    VIEW_OVERLAP = "view_overlap"  # a source seq accounted for twice (or views whose ranges overlap)
    PURPOSE_MISMATCH = "purpose_mismatch"  # a view or consent event for another purpose than the configured one
    SEAL_BROKEN = "seal_broken"  # sealed content whose SM4-GCM tag does not verify, or sealing not as declared
    WRONG_KEY_ID = "wrong_key_id"  # a sealed record under another key id than its view's, or one not held
    NO_CONSENT = "no_consent"  # a view record of a subject without a received grant in force at consent_n
    BAD_AGGREGATE = "bad_aggregate"  # aggregate records that do not account for the seqs marked aggregated
    CONSENT_INCOMPLETE = "consent_incomplete"  # fewer consent events received than the view's signed consent_count
    NOT_SEALED = "not_sealed"  # a view in clear although the platform holds keys (and did not pass --audience-clear)


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
    joined_at: tuple[str, int] | None = None  # late join: (what vouched for the start, the batch verified from)
    before_join: int = 0  # records received from before the join point: in no batch this verifier saw
    late_duplicates_unchecked: int = 0  # re-sent records of batches whose leaves were already let go

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
        if self.before_join:
            out.append(f"{self.before_join} record(s) from before the join point are in no batch received here")
        if self.late_duplicates_unchecked:
            out.append(
                f"{self.late_duplicates_unchecked} re-sent record(s) arrived after their batch's leaves were "
                "let go, so they were not compared"
            )
        return out


class JudgedGateway(Protocol):
    """What a report's verdict needs of each gateway's part."""

    problems: list[Problem]

    @property
    def ok(self) -> bool: ...

    def unchecked(self) -> list[str]: ...


G = TypeVar("G", bound=JudgedGateway)


@dataclass
class Report(Generic[G]):
    """What every report shares (``tiyi verify``'s and an audience's): the verdict over its gateways' parts,
    its ``RESULT`` line and the head of its JSON form. A subclass says what is pending and how it words
    "everything verified" and "pending"."""

    gateways: dict[str, G]
    stray: list[Problem]

    VERIFIED: ClassVar[str]
    PENDING: ClassVar[str]

    def _pending(self, g: G) -> bool:
        raise NotImplementedError

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
        if any(self._pending(g) for g in self.gateways.values()):
            return Outcome.PENDING
        return Outcome.VERIFIED

    @property
    def problems(self) -> list[Problem]:
        return [*self.stray, *(p for g in self.gateways.values() for p in g.problems)]

    def result_line(self) -> str:
        verdict = {
            Outcome.VERIFIED: self.VERIFIED,
            Outcome.PROBLEMS: f"{len(self.problems)} problem(s)",
            Outcome.PENDING: self.PENDING,
            Outcome.UNCHECKED: "no problems found, but not everything could be checked (see NOT CHECKED)",
        }[self.outcome]
        return "RESULT: " + verdict

    def json_head(self) -> dict[str, Any]:
        return {"ok": self.ok, "outcome": self.outcome.name.lower(), "exit_code": int(self.outcome)}


@dataclass
class VerificationReport(Report[GatewayReport]):
    chains: dict[str, bool] = field(default_factory=dict)  # chain name → consulted

    VERIFIED = "every record verified"
    PENDING = "no problems, but some records are not in a signed batch yet (pending)"

    def _pending(self, g: GatewayReport) -> bool:
        return bool(g.unbatched)

    def summary(self) -> str:
        lines: list[str] = []
        if not self.gateways:
            lines.append("nothing to verify: no gateway messages were received")
        for g in self.gateways.values():
            span = f"seq {g.first_seq}..{g.last_seq}" if g.first_seq is not None else "no records"
            lines.append(f"gateway {g.gw}: {'OK' if g.ok else 'FAILED'}")
            lines.append(
                f"  records   {g.records} unique ({span}), {g.records_in_verified_batches} proven in "
                f"{g.batches_verified} signed batches" + (f", {g.unbatched} not yet batched" if g.unbatched else "")
            )
            chain = "checked on the chain" if g.anchors_checked_on_chain else "NOT checked on a chain"
            lines.append(f"  anchors   {g.anchors_verified} of {g.batches_verified} batches ({chain})")
            for target, (n, covered) in sorted(g.rollups.items()):
                how = "NOT checked on that chain" if target in g.rollups_unchecked else "checked on that chain"
                lines.append(f"  roll-ups  {n} on {target}, covering {covered} batches ({how})")
            if g.joined_at is not None:
                lines.append(f"  joined    late, at batch {g.joined_at[1]} (vouched for by {g.joined_at[0]})")
            head = "none received" if g.head is None else f"batch {g.head[0]}, signed {_utc(g.head[1])}"
            if g.chain_latest is not None:
                head += f"; the chain's latest anchored batch is {g.chain_latest}"
            lines.append(f"  head      {head}")
            lines.append(f"  key       {g.key_source}")
            lines.extend(_problem_lines(g.problems))
            lines.extend(f"  NOT CHECKED: {u}" for u in g.unchecked())
        lines.extend(_problem_lines(self.stray))
        if self.chains:
            lines.append(
                "chains    "
                + ", ".join(f"{n} ({'consulted' if c else 'NOT consulted'})" for n, c in self.chains.items())
            )
        lines.append(self.result_line())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.json_head(),
            "chains": self.chains,
            "gateways": {
                gw: {
                    "ok": g.ok,
                    "records": g.records,
                    "first_seq": g.first_seq,
                    "last_seq": g.last_seq,
                    "batches_verified": g.batches_verified,
                    "records_in_verified_batches": g.records_in_verified_batches,
                    "anchors_verified": g.anchors_verified,
                    "anchors_checked_on_chain": g.anchors_checked_on_chain,
                    "unbatched": g.unbatched,
                    "key_source": g.key_source,
                    "head": None if g.head is None else {"batch": g.head[0], "issued": g.head[1]},
                    "chain_latest_batch": g.chain_latest,
                    "joined_at": None if g.joined_at is None else {"by": g.joined_at[0], "batch": g.joined_at[1]},
                    "rollups": {
                        t: {"verified": n, "batches": c, "checked_on_chain": t not in g.rollups_unchecked}
                        for t, (n, c) in g.rollups.items()
                    },
                    "not_checked": g.unchecked(),
                    "problems": [_problem_json(p) for p in g.problems],
                }
                for gw, g in self.gateways.items()
            },
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
    for s in present[bisect.bisect_left(present, first) : bisect.bisect_right(present, last)]:
        if s > expect:
            out.append((expect, s - 1))
        expect = s + 1
    if expect <= last:
        out.append((expect, last))
    return out


def _span(a: int, b: int) -> str:
    return f"seq {a}" if a == b else f"seq {a}..{b} ({b - a + 1} records)"


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
