"""The incremental verification engine: the one place every check lives (``StreamVerifier``, ``tiyi verify``, the
demo, ``tiyi sim run`` and ``tiyi ingest`` are its clients).

Sans-IO and pure: ``feed`` takes what arrived on ``tiyi/v1/{region}/{gw}/#`` in any order, any number of times, and
never raises on bad input (a malformed payload is a finding). A record is **held** until its batch's manifest and
every record of the batch are here; then the Merkle root is computed once and the records are **let go** (to the
``on_event`` sink, when live). What stays in memory is what is still unproven, plus per batch its signed manifest
(~300 bytes) until ``checkpoint`` folds a verified prefix into a (batch, digest, last seq) checkpoint — the same
shape a late join starts from (a verified signed head, or a manifest whose anchor the chain confirms).

Received seqs are kept as intervals, so gaps are ranges and a forged seq of 10^12 costs nothing. ``report`` runs the
batch-level checks (numbering, prev chain, signature under the caller's ``TrustPolicy``, anchor on the chain,
roll-ups, truncation against signed heads and the chain) over what is retained.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.errors import AnchoringError
from anchoring.findings import (
    MAX_PROBLEMS_PER_REASON,
    GatewayReport,
    Problem,
    Reason,
    VerificationReport,
    _in_spans,
    _merge,
    _span,
)
from anchoring.messages import (
    DataMessage,
    HeadMessage,
    KeyMessage,
    ManifestMessage,
    MessageError,
    ReceiptMessage,
    RollupMessage,
    decode_message,
)
from anchoring.receipt import AnchorReceipt
from anchoring.trust import KeySource, TrustedKey, TrustPolicy
from anchoring.verify_anchor import AnchorChecker
from edge.errors import EdgeError
from edge.head import SignedHead
from edge.manifest import GENESIS_PREV, Manifest, SignedManifest
from edge.merkle import MerkleTree, leaf_hash
from edge.record import read_record
from edge.rollup import Rollup
from edge.sm3 import sm3

MAX_HEADS = MAX_PROBLEMS_PER_REASON  # heads kept per gateway: the newest claims (a forged one fails its check anyway)


class SeqSet:
    """A set of non-negative ints as sorted disjoint closed intervals: memory grows with the gaps, not the span."""

    __slots__ = ("_hi", "_lo", "count")

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        self.count = 0

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self._lo, n) - 1
        return i >= 0 and n <= self._hi[i]

    def add(self, n: int) -> bool:
        """Add ``n``; False when it was already there."""
        lo, hi = self._lo, self._hi
        if hi and hi[-1] == n - 1:  # the next seq in order: the usual case
            hi[-1] = n
            self.count += 1
            return True
        i = bisect.bisect_right(lo, n) - 1
        if i >= 0 and n <= hi[i]:
            return False
        self.count += 1
        joins_left = i >= 0 and hi[i] == n - 1
        joins_right = i + 1 < len(lo) and lo[i + 1] == n + 1
        if joins_left and joins_right:
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        elif joins_left:
            hi[i] = n
        elif joins_right:
            lo[i + 1] = n
        else:
            lo.insert(i + 1, n)
            hi.insert(i + 1, n)
        return True

    def covers(self, a: int, b: int) -> bool:
        i = bisect.bisect_right(self._lo, a) - 1
        return i >= 0 and b <= self._hi[i]

    def missing(self, a: int, b: int) -> list[tuple[int, int]]:
        """The runs of ``a..b`` not in the set (work grows with the intervals, never with ``b - a``)."""
        out: list[tuple[int, int]] = []
        expect = a
        i = max(bisect.bisect_right(self._lo, a) - 1, 0)
        while i < len(self._lo) and self._lo[i] <= b:
            lo, hi = self._lo[i], self._hi[i]
            if hi >= expect:
                if lo > expect:
                    out.append((expect, lo - 1))
                expect = hi + 1
            i += 1
        if expect <= b:
            out.append((expect, b))
        return out

    def count_above(self, n: int) -> int:
        total = 0
        for i in range(len(self._lo) - 1, -1, -1):
            if self._hi[i] <= n:
                break
            total += self._hi[i] - max(self._lo[i], n + 1) + 1
        return total

    @property
    def first(self) -> int | None:
        return self._lo[0] if self._lo else None

    @property
    def last(self) -> int | None:
        return self._hi[-1] if self._hi else None

    @property
    def intervals(self) -> int:
        return len(self._lo)


# ---------------------------------------------------------------- events (what a live client is told)
@dataclass(frozen=True, slots=True)
class RecordsProven:
    """A batch's records: every one received, the Merkle root matches, the manifest's signature verifies under a
    trusted key. ``records`` are (seq, record bytes) in seq order; they are no longer held by the engine."""

    gw: str
    batch: int
    manifest: SignedManifest
    key_source: KeySource
    records: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class RecordsRejected:
    """A batch whose records cannot be proven (``reason``): the records, as received, are let go too."""

    gw: str
    batch: int
    reason: Reason
    message: str
    records: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class BatchAnchored:
    """The chain confirms a proven batch's anchor (from the chain's own records, not the receipt)."""

    gw: str
    batch: int
    anchor: AnchorInfo
    receipt: AnchorReceipt


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem seen at intake (malformed, wrong topic, conflicting duplicate ...)."""

    problem: Problem


Event = RecordsProven | RecordsRejected | BatchAnchored | Finding


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where verification of a gateway starts: batch ``batch`` (digest ``digest``) ended at ``last_seq``."""

    batch: int
    digest: bytes
    last_seq: int
    by: str  # "genesis" | "signed head" | "anchored manifest" | "checkpoint"


GENESIS = Checkpoint(0, GENESIS_PREV, 0, "genesis")


@dataclass(frozen=True, slots=True)
class Untrusted:
    """Why no trusted key vouches for a signature: ``bad_signature`` when a trusted key was found but the signature
    does not verify under it (forged or altered), else no key is trusted for this gateway here (``why``)."""

    why: str
    bad_signature: bool = False

    @property
    def reason(self) -> Reason:
        return Reason.BAD_SIGNATURE if self.bad_signature else Reason.UNTRUSTED_KEY


def check_signature(
    trust: TrustPolicy,
    gw: str,
    sm: SignedManifest | SignedHead,
    anchor: AnchorInfo | None,
    gateways_in_view: int,
    announced_pem: str | None,
) -> TrustedKey | Untrusted:
    """The trusted key ``sm``'s signature verifies under, or why there is none."""
    got = trust.key_for(gw, sm.key_id, anchor, gateways_in_view, announced_pem)
    if isinstance(got, str):
        return Untrusted(got)
    if not sm.verify(got.verifier):
        return Untrusted(f"SM2 signature does not verify under {sm.key_id}", bad_signature=True)
    return got


@dataclass
class _Batch:
    payload: bytes
    signed: SignedManifest
    digest: bytes
    root_ok: bool | None = None  # None: not all its records are here yet
    leaves: bytes | None = None  # concatenated leaf hashes once checked, to compare re-sent records against
    event_sent: bool = False
    anchored_sent: bool = False

    @property
    def m(self) -> Manifest:
        return self.signed.manifest


@dataclass
class _Gw:
    received: SeqSet = field(default_factory=SeqSet)
    pending: dict[int, bytes] = field(default_factory=dict)  # held: received, in no checked batch yet
    batches: dict[int, _Batch] = field(default_factory=dict)
    waiting: list[tuple[int, int, int]] = field(default_factory=list)  # sorted (first_seq, last_seq, batch)
    receipts: dict[int, list[AnchorReceipt]] = field(default_factory=dict)
    rollups: dict[tuple[str, int], tuple[Rollup, AnchorReceipt]] = field(default_factory=dict)
    heads: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # payload → claimed (batch, issued)
    key_pem: str | None = None
    key_id: str | None = None
    problems: list[Problem] = field(default_factory=list)
    start: Checkpoint = GENESIS
    roots: dict[int, bytes] = field(default_factory=dict)  # roots of batches folded into the checkpoint (roll-ups)
    folded_records: int = 0  # records proven in batches folded into the checkpoint
    folded_batches: int = 0
    folded_anchors: int = 0
    late_unchecked: int = 0
    leaf_order: list[int] = field(default_factory=list)  # batches holding leaves, oldest first


@dataclass
class _Walk:
    """The state ``report`` carries from one batch to the next, and what the tail and roll-up checks need from it."""

    covered_to: int  # last seq of the previous batch
    prev_digest: bytes | None  # the previous manifest's SM3; None across a missing batch
    expected: int  # the batch number that should come next
    roots: dict[int, bytes]  # batch number → the root its (received) manifest signs
    numbers: list[int] = field(default_factory=list)  # batches walked, in order
    digests: dict[int, bytes] = field(default_factory=dict)
    anchorers: set[bytes] = field(default_factory=set)  # accounts the chain says anchored this gateway's batches


class VerificationEngine:
    """Incremental verification of gateway streams under one ``TrustPolicy``.

    ``chain``, when given, confirms anchors as receipts arrive (live); ``report`` can also be given one at the end.
    ``on_event`` receives ``Event``s as records are proven or rejected. ``keep_leaves``: how many checked batches keep
    their leaf hashes for comparing re-sent records (None: all — what a one-shot ``tiyi verify`` wants).
    ``late_join``: a gateway may start at a verified signed head or at an anchored manifest instead of batch 1.
    """

    def __init__(
        self,
        trust: TrustPolicy,
        *,
        chain: AnchorChecker | None = None,
        on_event: Callable[[Event], None] | None = None,
        keep_leaves: int | None = None,
        late_join: bool = False,
    ) -> None:
        self.trust = trust
        self.chain = chain
        self.on_event = on_event
        self.keep_leaves = keep_leaves
        self.late_join = late_join
        self._gws: dict[str, _Gw] = {}
        self._stray: list[Problem] = []
        self._sig_cache: dict[tuple[bytes, AnchorInfo | None, str | None, int], TrustedKey | Untrusted] = {}
        self.messages = 0

    # ---------------------------------------------------------------- accounting
    @property
    def gateways(self) -> Collection[str]:
        return self._gws.keys()

    def held_records(self) -> int:
        """Records received and still unproven (what memory grows with)."""
        return sum(len(g.pending) for g in self._gws.values())

    def retained_batches(self) -> int:
        return sum(len(g.batches) for g in self._gws.values())

    def _gw(self, gw: str) -> _Gw:
        return self._gws.setdefault(gw, _Gw())

    def _note(self, st: _Gw, reason: Reason, message: str, gw: str, **kw: Any) -> None:
        if sum(1 for p in st.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
            p = Problem(reason, message, gw, **kw)
            st.problems.append(p)
            if self.on_event is not None:
                self.on_event(Finding(p))

    # ---------------------------------------------------------------- intake
    def feed(self, topic: str, payload: bytes, retained: bool = False) -> None:
        self.messages += 1
        try:
            msg = decode_message(topic, payload)
        except MessageError as exc:
            if not exc.topic_ok:
                if len(self._stray) < MAX_PROBLEMS_PER_REASON:
                    self._stray.append(Problem(Reason.WRONG_TOPIC, str(exc)))
                return
            gw = topic.split("/")[3]
            self._note(self._gw(gw), Reason.MALFORMED, str(exc), gw)
            return
        st = self._gw(msg.gw)
        if isinstance(msg, DataMessage):
            self._feed_data(st, msg)
        elif isinstance(msg, ManifestMessage):
            self._feed_batch(st, msg)
        elif isinstance(msg, ReceiptMessage):
            self._feed_receipt(st, msg, topic)
        elif isinstance(msg, RollupMessage):
            self._feed_rollup(st, msg)
        elif isinstance(msg, HeadMessage):
            head = msg.signed.head
            if head.gw != msg.gw:
                self._note(st, Reason.WRONG_TOPIC, f"head of {head.gw} published under {msg.gw}", msg.gw)
                return
            st.heads[msg.payload] = (head.batch, head.issued)
            if len(st.heads) > MAX_HEADS:  # keep the newest claims
                del st.heads[min(st.heads, key=lambda k: (st.heads[k], k))]
        elif isinstance(msg, KeyMessage):
            st.key_id, st.key_pem = msg.key_id, msg.pem

    def _feed_data(self, st: _Gw, msg: DataMessage) -> None:
        gw, dev = msg.gw, msg.dev
        received, pending = st.received, st.pending
        for data in msg.raw:
            try:
                rgw, seq, rdev = read_record(data)[:3]
            except EdgeError as exc:
                self._note(st, Reason.MALFORMED, f"record on data/{dev}: {exc}", gw)
                continue
            if rgw != gw or rdev != dev:
                self._note(
                    st,
                    Reason.WRONG_TOPIC,
                    f"record seq {seq} of {rgw}/{rdev} arrived on {gw}/data/{dev}",
                    gw,
                    seq=seq,
                )
                continue
            if received.add(seq):
                pending[seq] = data
                if st.waiting:
                    self._try_waiting(st, gw, seq)
                continue
            old = pending.get(seq)
            if old is not None:
                if old != data:
                    self._note(st, Reason.CONFLICTING_DUPLICATE, f"two different records claim seq {seq}", gw, seq=seq)
                continue
            self._compare_late(st, gw, seq, data)

    def _compare_late(self, st: _Gw, gw: str, seq: int, data: bytes) -> None:
        """A re-sent record whose batch was already checked: compare its leaf with the one the batch was built on."""
        for b in st.batches.values():
            m = b.m
            if m.first_seq <= seq <= m.last_seq and b.leaves is not None:
                i = (seq - m.first_seq) * 32
                if b.leaves[i : i + 32] != leaf_hash(data):
                    self._note(st, Reason.CONFLICTING_DUPLICATE, f"two different records claim seq {seq}", gw, seq=seq)
                return
        st.late_unchecked += 1

    def _feed_batch(self, st: _Gw, msg: ManifestMessage) -> None:
        m = msg.signed.manifest
        gw = msg.gw
        if m.gw != gw:
            self._note(st, Reason.WRONG_TOPIC, f"manifest of {m.gw} published under {gw}", gw, batch=m.batch)
            return
        if m.batch <= st.start.batch:  # already folded into the checkpoint (or before the join point)
            return
        old = st.batches.get(m.batch)
        if old is None:
            st.batches[m.batch] = _Batch(msg.payload, msg.signed, sm3(msg.signed.body))
            bisect.insort(st.waiting, (m.first_seq, m.last_seq, m.batch))
            if st.received.covers(m.first_seq, m.last_seq):
                self._try_prove(st, gw, m.batch)
        elif old.payload != msg.payload:
            self._note(
                st, Reason.CONFLICTING_BATCH, f"two different manifests claim batch {m.batch}", gw, batch=m.batch
            )

    def _feed_receipt(self, st: _Gw, msg: ReceiptMessage, topic: str) -> None:
        r = msg.receipt
        if r.gw != msg.gw or r.kind is not AnchorKind.BATCH:
            self._note(st, Reason.WRONG_TOPIC, f"{r.kind.label} receipt for {r.gw} on {topic}", msg.gw, batch=r.number)
            return
        if r.number <= st.start.batch:
            return
        known = st.receipts.setdefault(r.number, [])
        if r not in known and len(known) < MAX_PROBLEMS_PER_REASON:
            known.append(r)
        b = st.batches.get(r.number)
        if b is not None and b.event_sent:
            self._live_anchor(st, msg.gw, b)

    def _feed_rollup(self, st: _Gw, msg: RollupMessage) -> None:
        gw, target, rollup, receipt = msg.gw, msg.target, msg.rollup, msg.receipt
        if rollup.gw != gw or rollup.target != target:
            self._note(
                st,
                Reason.WRONG_TOPIC,
                f"roll-up of {rollup.gw} for {rollup.target} published under {gw}/rollup/{target}",
                gw,
            )
            return
        key = (target, rollup.number)
        old = st.rollups.get(key)
        if old is not None and old != (rollup, receipt):
            self._note(st, Reason.ROLLUP_MISMATCH, f"two different roll-ups claim {target} #{rollup.number}", gw)
            return
        st.rollups[key] = (rollup, receipt)

    # ---------------------------------------------------------------- proving as records complete a batch
    def _try_waiting(self, st: _Gw, gw: str, seq: int) -> None:
        i = bisect.bisect_right(st.waiting, (seq, 1 << 64, 1 << 64))
        for first, last, n in st.waiting[max(0, i - 4) : i][::-1]:
            if first <= seq <= last and st.received.covers(first, last):
                self._try_prove(st, gw, n)
                return

    def _try_prove(self, st: _Gw, gw: str, n: int) -> None:
        b = st.batches[n]
        m = b.m
        if not all(s in st.pending for s in range(m.first_seq, m.last_seq + 1)):
            return  # some were let go with another (overlapping) batch: ``report`` names it
        st.waiting.remove((m.first_seq, m.last_seq, n))
        data = [st.pending.pop(s) for s in range(m.first_seq, m.last_seq + 1)]
        leaves = [leaf_hash(d) for d in data]
        b.root_ok = MerkleTree.from_leaf_hashes(leaves).root == m.root
        b.leaves = b"".join(leaves)
        st.leaf_order.append(n)
        if self.keep_leaves is not None:
            while len(st.leaf_order) > self.keep_leaves:
                old = st.batches.get(st.leaf_order.pop(0))
                if old is not None:
                    old.leaves = None
        if self.on_event is not None:
            self._live_verdict(st, gw, b, tuple(zip(range(m.first_seq, m.last_seq + 1), data, strict=True)))

    def _live_verdict(self, st: _Gw, gw: str, b: _Batch, records: tuple[tuple[int, bytes], ...]) -> None:
        assert self.on_event is not None
        m = b.m
        if not b.root_ok:
            self.on_event(
                RecordsRejected(
                    gw,
                    m.batch,
                    Reason.ROOT_MISMATCH,
                    f"batch {m.batch}: the Merkle root does not match the signed manifest",
                    records,
                )
            )
            return
        anchor = None
        if self.trust.uses_registry:
            # The key is judged at the anchor's block: without a chain-confirmed anchor nothing can be proven.
            anchor = self._live_confirm(st, b)
            if anchor is None:
                self.on_event(
                    RecordsRejected(
                        gw,
                        m.batch,
                        Reason.MISSING_ANCHOR,
                        f"batch {m.batch}: registry trust needs the chain to confirm the batch's anchor first",
                        records,
                    )
                )
                return
        trusted = self._trusted(gw, st, b.signed, anchor)
        if isinstance(trusted, Untrusted):
            self.on_event(RecordsRejected(gw, m.batch, trusted.reason, f"batch {m.batch}: {trusted.why}", records))
            return
        b.event_sent = True
        self.on_event(RecordsProven(gw, m.batch, b.signed, trusted.source, records))
        self._live_anchor(st, gw, b)

    def _live_confirm(self, st: _Gw, b: _Batch) -> AnchorInfo | None:
        got = self._live_anchors(st, b)
        return got[0][0] if got else None

    def _live_anchors(self, st: _Gw, b: _Batch) -> list[tuple[AnchorInfo, AnchorReceipt]]:
        """The chain's anchors of the batch through its receipts, the one that counts first: with registry trust
        only those by an account the registry names for the gateway (anyone may anchor any root, and a squatter's
        earlier anchor must not become the block the key is judged at), else the earliest."""
        if self.chain is None:
            return []
        m = b.m
        found: list[tuple[AnchorInfo, AnchorReceipt]] = []
        for r in st.receipts.get(m.batch, []):
            if r.root == m.root and r.count == m.count:
                got = self.chain.confirm(r)
                if (
                    not isinstance(got, str)
                    and (got.gw, got.number, got.count, got.kind) == (m.gw, m.batch, m.count, AnchorKind.BATCH)
                    and self.trust.counts_anchor(m.gw, got.anchorer)
                ):
                    found.append((got, r))
        found.sort(key=lambda a: a[0].block_number)
        return found

    def _live_anchor(self, st: _Gw, gw: str, b: _Batch) -> None:
        if self.on_event is None or self.chain is None or b.anchored_sent:
            return
        found = self._live_anchors(st, b)
        if found:
            b.anchored_sent = True
            self.on_event(BatchAnchored(gw, b.m.batch, found[0][0], found[0][1]))

    def _trusted(
        self,
        gw: str,
        st: _Gw,
        sm: SignedManifest | SignedHead,
        anchor: AnchorInfo | None,
    ) -> TrustedKey | Untrusted:
        """``check_signature``, cached: ``report`` asks again for every batch."""
        key = (bytes(sm), anchor, st.key_pem, len(self._gws))
        got = self._sig_cache.get(key)
        if got is None:
            got = check_signature(self.trust, gw, sm, anchor, len(self._gws), st.key_pem)
            if len(self._sig_cache) > 100_000:
                self._sig_cache.clear()
            self._sig_cache[key] = got
        return got

    # ---------------------------------------------------------------- checkpoints (bounded memory for long runs)
    def checkpoint(self, keep: int = 2) -> int:
        """Fold each gateway's verified prefix of batches, all but the newest ``keep``, into its checkpoint (their
        manifests, leaves and receipts are let go; counts and roots stay). Returns the batches folded. A batch is
        folded only when no problem names it, its records or anything before it, so nothing a report would name is
        forgotten (problems seen at intake stay listed regardless)."""
        rep = self.report(self.chain)
        self._sig_cache.clear()  # it holds whole manifests: the retained ones are re-checked once at the next report
        folded = 0
        for gw, st in self._gws.items():
            self._move_start(st, self._join_point(gw, st, self.chain))
            folded += self._fold(st, *self._fold_limits(st, rep.gateways[gw]), keep)
        return folded

    @staticmethod
    def _move_start(st: _Gw, start: Checkpoint) -> None:
        """Start at ``start`` (a late join point): what lies before it is let go."""
        if start is st.start:
            return
        st.start = start
        for s in [s for s in st.pending if s <= start.last_seq]:
            del st.pending[s]
        for n in [n for n in st.batches if n <= start.batch]:
            del st.batches[n]

    @staticmethod
    def _fold_limits(st: _Gw, rep: GatewayReport) -> tuple[int, int]:
        """The first batch and seq a problem of this report names (not one seen at intake, which stays listed):
        nothing from there on may be folded. A problem naming neither stops all folding."""
        limit_batch, limit_seq = 1 << 64, 1 << 64
        for p in rep.problems:
            if p in st.problems:
                continue
            if p.batch is None and p.seq is None:
                limit_batch = 0
            if p.batch is not None:
                limit_batch = min(limit_batch, p.batch)
            if p.seq is not None:
                limit_seq = min(limit_seq, p.seq)
        return limit_batch, limit_seq

    @staticmethod
    def _fold(st: _Gw, limit_batch: int, limit_seq: int, keep: int) -> int:
        """Fold the proven, consecutive batches after the checkpoint, below the limits and all but the newest
        ``keep``, into the checkpoint. Returns how many were folded."""
        numbers = sorted(st.batches)
        expect = st.start.batch + 1
        folded = 0
        for n in numbers[: max(0, len(numbers) - keep)]:
            b = st.batches[n]
            m = b.m
            if n != expect or b.root_ok is not True or n >= limit_batch or m.last_seq >= limit_seq:
                break
            st.start = Checkpoint(n, b.digest, m.last_seq, "checkpoint")
            st.roots[n] = m.root
            st.folded_batches += 1
            st.folded_records += m.count
            st.folded_anchors += 1 if st.receipts.get(n) else 0
            del st.batches[n]
            st.receipts.pop(n, None)
            if n in st.leaf_order:
                st.leaf_order.remove(n)
            expect = n + 1
            folded += 1
        return folded

    # ---------------------------------------------------------------- checks
    def report(
        self,
        chain: AnchorChecker | None = None,
        require_complete: bool = False,
        rollup_targets: Collection[str] = (),
        rollup_chains: Mapping[str, AnchorChecker] | None = None,
    ) -> VerificationReport:
        """``chain``: the batches' chain; ``rollup_chains``: each roll-up target's chain; ``rollup_targets``:
        chains every batch must be rolled up to (checked with ``require_complete``)."""
        if self.trust.uses_registry and chain is None:
            raise ValueError("registry trust needs the chain: a key's validity is judged at its anchor's block")
        rollup_chains = dict(rollup_chains or {})
        report = VerificationReport(
            {
                gw: self._check(gw, st, chain, require_complete, rollup_targets, rollup_chains)
                for gw, st in self._gws.items()
            },
            list(self._stray),
        )
        if chain is not None:
            report.chains[chain.name] = True
        for target in sorted({t for st in self._gws.values() for t, _ in st.rollups} | set(rollup_targets)):
            report.chains[target] = target in rollup_chains
        return report

    def _join_point(self, gw: str, st: _Gw, chain: AnchorChecker | None) -> Checkpoint:
        """Late join: the earliest verified signed head at or before the first batch received, else the first
        batch received when the chain confirms its anchor; else genesis (verification must start at batch 1)."""
        if not self.late_join or st.start is not GENESIS or 1 in st.batches:
            return st.start
        first = min(st.batches) if st.batches else None
        best: Checkpoint | None = None
        for payload in st.heads:
            sh = SignedHead.from_bytes(payload)
            h = sh.head
            if h.batch == 0 or (first is not None and h.batch >= first):
                continue
            if isinstance(self._trusted(gw, st, sh, None), Untrusted):
                continue
            if best is None or h.batch < best.batch:
                best = Checkpoint(h.batch, h.manifest, h.last_seq, "signed head")
        if best is not None and (first is None or best.batch == first - 1):
            return best
        if first is not None and chain is not None:
            b = st.batches[first]
            m = b.m
            for r in st.receipts.get(first, []):
                if r.root == m.root and r.count == m.count:
                    got = chain.confirm(r)
                    if not isinstance(got, str) and (got.gw, got.number, got.count, got.kind) == (
                        m.gw,
                        m.batch,
                        m.count,
                        AnchorKind.BATCH,
                    ):
                        # Its anchor vouches for it; its prev (the batch before) is what cannot be checked.
                        return Checkpoint(first - 1, m.prev, m.first_seq - 1, "anchored manifest")
        return st.start

    def _check(
        self,
        gw: str,
        st: _Gw,
        chain: AnchorChecker | None,
        require_complete: bool,
        rollup_targets: Collection[str],
        rollup_chains: Mapping[str, AnchorChecker],
    ) -> GatewayReport:
        rep = GatewayReport(gw=gw, problems=list(st.problems), anchors_checked_on_chain=chain is not None)

        def problem(reason: Reason, message: str, **kw: Any) -> None:
            if sum(1 for p in rep.problems if p.reason == reason) < MAX_PROBLEMS_PER_REASON:
                rep.problems.append(Problem(reason, message, gw, **kw))

        for first, last, n in list(st.waiting):  # anything completed out of the usual order
            if st.received.covers(first, last):
                self._try_prove(st, gw, n)
        start = self._join_point(gw, st, chain)
        if start.by in ("signed head", "anchored manifest"):
            rep.joined_at = (start.by, start.batch + 1)
        recv = st.received
        rep.records = recv.count
        rep.first_seq, rep.last_seq = recv.first, recv.last
        rep.before_join = 0 if start.by in ("genesis", "checkpoint") else recv.count - recv.count_above(start.last_seq)
        rep.batches_verified = st.folded_batches
        rep.records_in_verified_batches = st.folded_records
        rep.anchors_verified = st.folded_anchors
        rep.late_duplicates_unchecked = st.late_unchecked
        walk = _Walk(
            covered_to=start.last_seq, prev_digest=start.digest, expected=start.batch + 1, roots=dict(st.roots)
        )
        for n in sorted(n for n in st.batches if n > start.batch):
            self._check_batch(gw, st, rep, walk, n, start, chain, problem)
        self._check_rollups(gw, st, walk.roots, rep, problem, require_complete, rollup_targets, rollup_chains)
        self._check_tail(gw, st, start, rep, walk.numbers, walk.digests, walk.anchorers, chain, problem)
        self._check_records(st, start, rep, walk.covered_to, problem, require_complete)
        return rep

    def _check_batch(
        self,
        gw: str,
        st: _Gw,
        rep: GatewayReport,
        walk: _Walk,
        n: int,
        start: Checkpoint,
        chain: AnchorChecker | None,
        problem: Callable[..., None],
    ) -> None:
        """One batch, in number order: numbering, adjacency, prev chain, signature, root, anchor."""
        if n != walk.expected:
            problem(Reason.MISSING_BATCH, f"batches {walk.expected}..{n - 1} were never received", batch=walk.expected)
            walk.prev_digest = None  # the chain cannot be checked across a missing batch
        walk.expected = n + 1
        b = st.batches[n]
        m = b.m
        walk.numbers.append(n)
        walk.roots[n] = m.root
        walk.digests[n] = b.digest
        anchor = self._confirmed_anchor(n, m, st, chain, problem)
        if anchor is not None:
            walk.anchorers.add(anchor.anchorer)
        ok = self._check_signature(gw, st, rep, b.signed, anchor, problem)
        ok = self._check_links(m, walk, start, problem) and ok
        if ok and self._check_root(b, st, problem):
            rep.batches_verified += 1
            rep.records_in_verified_batches += m.count
            if anchor is not None or (chain is None and self._has_receipt(n, m, st, problem)):
                rep.anchors_verified += 1
        walk.prev_digest = b.digest
        walk.covered_to = m.last_seq

    @staticmethod
    def _check_links(m: Manifest, walk: _Walk, start: Checkpoint, problem: Callable[..., None]) -> bool:
        """The batch's prev names the previous manifest's SM3 and its seqs start right after the previous batch."""
        ok = True
        n, covered_to = m.batch, walk.covered_to
        if walk.prev_digest is not None and m.prev != walk.prev_digest:
            problem(Reason.BROKEN_CHAIN, f"batch {n}: prev does not match the previous manifest's SM3", batch=n)
            ok = False
        if ((covered_to or start.batch) and m.first_seq != covered_to + 1) or (n == 1 and m.first_seq != 1):
            problem(Reason.BATCH_GAP, f"batch {n} starts at seq {m.first_seq}, expected {covered_to + 1}", batch=n)
            ok = False
        return ok

    @staticmethod
    def _check_records(
        st: _Gw,
        start: Checkpoint,
        rep: GatewayReport,
        covered_to: int,
        problem: Callable[..., None],
        require_complete: bool,
    ) -> None:
        """Records: gaps (counted in runs, never listed one by one) and coverage."""
        recv = st.received
        if not recv.count:
            return
        top = max(recv.last or 0, covered_to)
        reported = {p.seq for p in rep.problems if p.reason == Reason.MISSING_RECORD}
        for a, b2 in recv.missing(start.last_seq + 1, top):
            if a not in reported:
                problem(Reason.MISSING_RECORD, f"{_span(a, b2)} never received", seq=a)
        rep.unbatched = recv.count_above(covered_to)
        if rep.unbatched and require_complete:
            problem(
                Reason.UNBATCHED,
                f"{rep.unbatched} record(s) after seq {covered_to} are in no batch",
                seq=covered_to + 1,
            )

    def _check_signature(
        self,
        gw: str,
        st: _Gw,
        rep: GatewayReport,
        sm: SignedManifest,
        anchor: AnchorInfo | None,
        problem: Callable[..., None],
    ) -> bool:
        n = sm.manifest.batch
        trusted = self._trusted(gw, st, sm, anchor)
        if isinstance(trusted, Untrusted):
            if trusted.bad_signature:
                problem(Reason.BAD_SIGNATURE, f"batch {n}: SM2 signature does not verify under {sm.key_id}", batch=n)
            else:
                problem(Reason.UNTRUSTED_KEY, f"batch {n} is signed by key {sm.key_id}: {trusted.why}", batch=n)
            return False
        rep.key_sources.add(trusted.source)
        rep.key_ids.add(sm.key_id)
        if trusted.operator is not None:
            rep.operators.add(trusted.operator)
        return True

    def _confirmed_anchor(
        self, n: int, m: Manifest, st: _Gw, chain: AnchorChecker | None, problem: Callable[..., None]
    ) -> AnchorInfo | None:
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
    def _has_receipt(n: int, m: Manifest, st: _Gw, problem: Callable[..., None]) -> bool:
        receipts = st.receipts.get(n, [])
        if not receipts:
            problem(Reason.MISSING_ANCHOR, f"batch {n} has no anchor receipt", batch=n)
            return False
        if not any(r.root == m.root and r.count == m.count for r in receipts):
            problem(Reason.ANCHOR_MISMATCH, f"batch {n}: the anchor receipt names another root or count", batch=n)
            return False
        return True

    def _check_tail(
        self,
        gw: str,
        st: _Gw,
        start: Checkpoint,
        rep: GatewayReport,
        numbers: list[int],
        digests: Mapping[int, bytes],
        anchorers: set[bytes],
        chain: AnchorChecker | None,
        problem: Callable[..., None],
    ) -> None:
        """Truncation: the newest signed head and (with a chain) the newest anchor must not lie beyond the last
        batch received."""
        last = numbers[-1] if numbers else start.batch
        best: tuple[int, int] | None = None
        for payload in sorted(st.heads):
            sh = SignedHead.from_bytes(payload)
            h = sh.head
            trusted = self._trusted(gw, st, sh, None)
            if isinstance(trusted, Untrusted):
                if trusted.bad_signature:
                    problem(Reason.BAD_SIGNATURE, f"signed head (batch {h.batch}): SM2 signature does not verify")
                else:
                    problem(
                        Reason.UNTRUSTED_KEY,
                        f"signed head (batch {h.batch}) is signed by key {sh.key_id}: {trusted.why}",
                    )
                continue
            if h.batch > last:
                problem(
                    Reason.TRUNCATED,
                    f"the gateway's signed head names batch {h.batch} (up to seq {h.last_seq}), "
                    f"but the stream ends at batch {last}: the tail was dropped",
                    batch=last + 1,
                )
            elif h.batch and (
                digests[h.batch] != h.manifest
                if h.batch in digests
                else not self._head_before_start(start, h.batch, h.manifest)
            ):
                problem(
                    Reason.HEAD_MISMATCH,
                    f"the signed head's manifest digest for batch {h.batch} does not match the manifest received",
                    batch=h.batch,
                )
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
                problem(
                    Reason.TRUNCATED,
                    f"the chain holds batch {latest[0]} anchored for {gw} by 0x{account.hex()} "
                    f"(block {latest[1]}), but the stream ends at batch {last}: the tail was dropped",
                    batch=last + 1,
                )

    @staticmethod
    def _head_before_start(start: Checkpoint, batch: int, digest: bytes) -> bool:
        """A head for a batch this verifier no longer (or never) holds: it can only be checked against the
        start itself (a checkpoint or the join point); older ones are history."""
        if batch == start.batch:
            return start.by == "anchored manifest" or digest == start.digest
        return batch < start.batch

    def _check_rollups(
        self,
        gw: str,
        st: _Gw,
        roots: Mapping[int, bytes],
        rep: GatewayReport,
        problem: Callable[..., None],
        require_complete: bool,
        rollup_targets: Collection[str],
        rollup_chains: Mapping[str, AnchorChecker],
    ) -> None:
        """Each roll-up: its receipt anchors its root as a roll-up of this gateway; its leaves are exactly the roots
        of the signed batches it names; the target's chain (when given) confirms it, from an account the registry
        names for the gateway when keys come from the registry."""
        covered: dict[str, set[tuple[int, int]]] = {}
        registered = self.trust.anchorers(gw)
        for (target, number), (rollup, receipt) in sorted(st.rollups.items()):
            ok = self._check_rollup(gw, target, number, rollup, receipt, roots, problem)
            checker = rollup_chains.get(target)
            if ok and checker is not None:
                ok = self._confirm_rollup(gw, target, number, receipt, checker, registered, problem)
            elif ok:
                rep.rollups_unchecked.add(target)
            if ok:
                n_ok, n_batches = rep.rollups.get(target, (0, 0))
                rep.rollups[target] = (n_ok + 1, n_batches + len(rollup.roots))
                covered.setdefault(target, set()).add((rollup.first_batch, rollup.last_batch))
        if require_complete:
            for target in rollup_targets:
                spans = _merge(covered.get(target, set()))
                missing = [n for n in sorted(set(st.batches) | set(st.roots)) if not _in_spans(spans, n)]
                if missing:
                    problem(
                        Reason.MISSING_ROLLUP,
                        f"batches {missing[0]}..{missing[-1]} ({len(missing)}) are in no verified roll-up on {target}",
                        batch=missing[0],
                    )

    @staticmethod
    def _check_rollup(
        gw: str,
        target: str,
        number: int,
        rollup: Rollup,
        receipt: AnchorReceipt,
        roots: Mapping[int, bytes],
        problem: Callable[..., None],
    ) -> bool:
        """The receipt anchors the roll-up's root as this gateway's roll-up ``number`` for ``target``, and its
        leaves are exactly the roots of the signed batches it names."""
        ok = (
            receipt.kind is AnchorKind.ROLLUP
            and receipt.root == rollup.root
            and receipt.gw == gw
            and receipt.number == number
            and receipt.count == len(rollup.roots)
            and receipt.target in (None, target)
        )
        if not ok:
            problem(
                Reason.ROLLUP_MISMATCH,
                f"roll-up {number} for {target}: its receipt does not anchor its root "
                "as this gateway's roll-up"
                + (f" (it names target {receipt.target})" if receipt.target not in (None, target) else ""),
            )
            return False
        for i, root in enumerate(rollup.roots):
            n = rollup.first_batch + i
            if roots.get(n) != root:
                problem(
                    Reason.ROLLUP_MISMATCH,
                    f"roll-up {number} for {target}: leaf {i} is not the root of signed batch {n}",
                    batch=n,
                )
                return False
        return True

    def _confirm_rollup(
        self,
        gw: str,
        target: str,
        number: int,
        receipt: AnchorReceipt,
        checker: AnchorChecker,
        registered: Collection[bytes],
        problem: Callable[..., None],
    ) -> bool:
        """The target's chain confirms the roll-up, from an account the registry names for the gateway when keys
        come from the registry."""
        got = checker.confirm(receipt)
        if isinstance(got, str):
            problem(Reason.ANCHOR_NOT_ON_CHAIN, f"roll-up {number} on {target}: {got}")
            return False
        if self.trust.uses_registry and got.anchorer not in registered:
            problem(
                Reason.UNTRUSTED_KEY,
                f"roll-up {number} on {target} was anchored by 0x{got.anchorer.hex()}"
                f", an account the registry does not name for {gw}",
            )
            return False
        return True

    @staticmethod
    def _check_root(b: _Batch, st: _Gw, problem: Callable[..., None]) -> bool:
        m = b.m
        if b.root_ok is None:
            gaps = st.received.missing(m.first_seq, m.last_seq)
            if not gaps:
                problem(
                    Reason.BATCH_GAP,
                    f"batch {m.batch}: seq {m.first_seq}..{m.last_seq} overlaps records another batch already covers",
                    batch=m.batch,
                )
                return False
            for a, b2 in gaps[:MAX_PROBLEMS_PER_REASON]:
                problem(
                    Reason.MISSING_RECORD, f"{_span(a, b2)} (in batch {m.batch}) never received", seq=a, batch=m.batch
                )
            return False
        if not b.root_ok:
            problem(
                Reason.ROOT_MISMATCH,
                f"batch {m.batch}: the Merkle root over seq {m.first_seq}..{m.last_seq} "
                "does not match the signed manifest (a record was altered or reordered)",
                batch=m.batch,
            )
            return False
        return True


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """What ``judge_batch`` found: ``reason`` None means proven (root and signature) under ``key_source``."""

    reason: Reason | None
    message: str
    key_source: KeySource | None = None


def judge_batch(
    trust: TrustPolicy,
    gw: str,
    signed: SignedManifest,
    records: list[bytes],
    *,
    prev_digest: bytes | None = None,
    anchor: AnchorInfo | None = None,
    gateways_in_view: int = 1,
    announced_pem: str | None = None,
) -> BatchVerdict:
    """One batch judged from stored rows (``tiyi ingest``): the same checks and ``Reason``s as the engine's —
    manifest for this gateway, every record present, Merkle root, signature under a trusted key, and the prev chain
    when the previous batch's digest is known. With registry trust the key is judged at ``anchor`` (the chain's)."""
    return judge_leaves(
        trust,
        gw,
        signed,
        [leaf_hash(d) for d in records],
        prev_digest=prev_digest,
        anchor=anchor,
        gateways_in_view=gateways_in_view,
        announced_pem=announced_pem,
    )


def judge_leaves(
    trust: TrustPolicy,
    gw: str,
    signed: SignedManifest,
    leaves: list[bytes],
    *,
    prev_digest: bytes | None = None,
    anchor: AnchorInfo | None = None,
    gateways_in_view: int = 1,
    announced_pem: str | None = None,
) -> BatchVerdict:
    """``judge_batch`` from the records' leaf hashes, in seq order (an ingest store keeps each record's leaf, hashed
    from its bytes when it was stored, so a batch is not hashed twice)."""
    m = signed.manifest
    if m.gw != gw:
        return BatchVerdict(Reason.WRONG_TOPIC, f"manifest of {m.gw} stored under {gw}")
    if len(leaves) != m.count:
        return BatchVerdict(Reason.MISSING_RECORD, f"batch {m.batch}: {m.count - len(leaves)} record(s) missing")
    if MerkleTree.from_leaf_hashes(leaves).root != m.root:
        return BatchVerdict(
            Reason.ROOT_MISMATCH,
            f"batch {m.batch}: the Merkle root over seq {m.first_seq}.."
            f"{m.last_seq} does not match the signed manifest (a record was altered or reordered)",
        )
    trusted = check_signature(trust, gw, signed, anchor, gateways_in_view, announced_pem)
    if isinstance(trusted, Untrusted):
        if trusted.bad_signature:
            return BatchVerdict(Reason.BAD_SIGNATURE, f"batch {m.batch}: {trusted.why}")
        return BatchVerdict(Reason.UNTRUSTED_KEY, f"batch {m.batch} is signed by key {signed.key_id}: {trusted.why}")
    if m.batch == 1 and (m.first_seq != 1 or m.prev != GENESIS_PREV):
        return BatchVerdict(Reason.BATCH_GAP, "batch 1 must start at seq 1 after the genesis prev")
    if prev_digest is not None and m.prev != prev_digest:
        return BatchVerdict(Reason.BROKEN_CHAIN, f"batch {m.batch}: prev does not match the previous manifest's SM3")
    return BatchVerdict(None, "proven", trusted.source)
