"""``tiyi-ingest``: one instance of the verifying store.

It joins an MQTT 5 shared subscription (``$share/{group}/tiyi/v1/+/+/#``) with a persistent session (a stable
client id, ``clean_start`` false, a session expiry), so instances split the stream and a restarted one gets what the
broker queued for it. A message is acknowledged only after its rows are committed: a ``kill -9`` between the two
makes the broker redeliver, and the (gw, seq) keys make the redelivery harmless. After each commit the instance
proves whatever batches the database now holds complete, whichever instance stored their pieces. One thread does
it all: it reads what the broker sent (``ingest.link``), writes it in one transaction, acknowledges, proves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.engine import BatchVerdict, Untrusted, check_signature, judge_leaves
from anchoring.errors import AnchoringError
from anchoring.findings import MAX_PROBLEMS_PER_REASON, Reason, _span
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
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import AnchorChecker
from edge.errors import EdgeError
from edge.head import SignedHead
from edge.manifest import SignedManifest
from edge.merkle import leaf_hash
from edge.record import read_record
from edge.sm3 import sm3
from ingest.errors import SettingsError
from ingest.link import Link
from ingest.store import BIGINT_END, BatchRow, Ready, RecordRow, Store, connect, migrate

log = logging.getLogger("tiyi.ingest")

TOPIC = "tiyi/v1/+/+/#"
_BEYOND = "a seq or batch number beyond the store's range (PostgreSQL bigint, below 2**63)"


def _beyond(msg: object) -> bool:
    """Whether a manifest, receipt, roll-up or head carries a number the store's bigint columns cannot hold (the
    contract allows uints up to 2**64 - 1): such a message is a problem, not a failed transaction that the broker
    would redeliver forever."""
    if isinstance(msg, ManifestMessage):
        m = msg.signed.manifest
        return max(m.batch, m.last_seq) >= BIGINT_END
    if isinstance(msg, ReceiptMessage):
        return msg.receipt.number >= BIGINT_END
    if isinstance(msg, RollupMessage):
        return msg.rollup.number >= BIGINT_END
    if isinstance(msg, HeadMessage):
        return max(msg.signed.head.batch, msg.signed.head.last_seq) >= BIGINT_END
    return False


@dataclass(frozen=True, slots=True)
class IngestSettings:
    broker: str  # mqtt://host:port
    dsn: str
    group: str = "tiyi-ingest"
    client_id: str = "tiyi-ingest-1"
    session_expiry_s: int = 7 * 24 * 3600
    max_batch: int = 2000  # messages per transaction
    receive_maximum: int = 1000
    late_join: bool = False  # a gateway may start at a verified signed head or an anchored manifest
    gap_timeout_s: float = 60.0  # how long a missing batch, record or tail may be in flight before it is a problem
    final_depth: int = 0  # blocks on top of an anchor before it is final (0: BFT chains, final once included)
    chain_poll_s: float = 1.0  # how often receipts, finality and the gap checks run
    chain_tail_s: float = 30.0  # how often the chain is asked for each gateway's latest anchor (an RPC per gateway)

    def __post_init__(self) -> None:
        u = urlsplit(self.broker)
        if u.scheme != "mqtt" or not u.hostname:
            raise SettingsError(f"broker must be mqtt://HOST[:PORT], got {self.broker!r}")
        if not 0 < self.session_expiry_s < 1 << 32:
            raise SettingsError("session expiry must be 1 s .. 136 years")
        if not 0 < self.gap_timeout_s <= 30 * 24 * 3600:
            raise SettingsError("the gap timeout must be more than 0 s and at most 30 days")
        if not 0 <= self.final_depth <= 10_000:
            raise SettingsError("the final depth must be 0 .. 10000 blocks")
        if not (0 < self.chain_poll_s <= 3600 and 0 < self.chain_tail_s <= 24 * 3600):
            raise SettingsError("chain polling intervals must be more than 0 s (at most 1 h and 1 day)")


@dataclass(frozen=True, slots=True)
class ChainView:
    """The batches' chain as ingest uses it: ``checker`` confirms receipts from the chain's own records, ``head``
    is the newest block number (how deep an anchor is)."""

    checker: AnchorChecker
    head: Callable[[], int]


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int


class Ingest:
    """One instance, run by the caller's thread: ``run`` reads messages, writes and proves them."""

    def __init__(self, settings: IngestSettings, trust: TrustPolicy, chain: ChainView | None = None) -> None:
        if trust.uses_registry and chain is None:
            raise SettingsError("registry trust needs the chain (--rpc): a key is judged at its anchor's block")
        self.settings = settings
        self.trust = trust
        self.chain = chain
        self._last_checks = 0.0
        self._last_tail = 0.0
        self.conn = connect(settings.dsn)
        migrate(self.conn)
        self.store = Store(self.conn, settings.client_id)
        self._inbox: list[_Incoming] = []
        self._stop = threading.Event()
        self.stored = 0
        u = urlsplit(settings.broker)
        self.link = Link(
            u.hostname or "",
            u.port or 1883,
            settings.client_id,
            f"$share/{settings.group}/{TOPIC}",
            settings.session_expiry_s,
            settings.receive_maximum,
            lambda topic, payload, mid: self._inbox.append(_Incoming(topic, payload, mid)),
        )

    @property
    def connected(self) -> bool:
        return self.link.connected

    def start(self) -> None:
        self.link.connect()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.link.close()
        self.conn.close()

    def _full(self) -> bool:
        return len(self._inbox) >= self.settings.max_batch

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Write and prove until ``stop`` (or ``until()``): whatever the broker has sent when the socket runs dry (or
        ``max_batch`` messages) goes into one transaction, then is acknowledged, then batches are proven."""
        idle_since = time.monotonic()
        while not self._stop.is_set() and not (until and until()):
            before = len(self._inbox)
            self.link.pump(0.0 if self._inbox else 0.2, self._full)
            if self._inbox and (len(self._inbox) == before or self._full()):
                items, self._inbox = self._inbox, []
                with self.conn.transaction():
                    self._write(items)
                self.link.ack(it.mid for it in items)  # only now: a crash before this makes the broker redeliver
                self.stored += len(items)
                self.prove()
                self._periodic()
                idle_since = time.monotonic()
            elif not self._inbox and time.monotonic() - idle_since >= 0.2:
                self.prove()
                self._periodic()
                idle_since = time.monotonic()

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self._last_checks >= self.settings.chain_poll_s:
            self._last_checks = now
            self.check_chain()
            self.check_gaps()

    # ---------------------------------------------------------------- writing
    def _record_rows(self, msg: DataMessage) -> list[RecordRow]:
        """The rows of a data message's well-formed records on their own topic; the rest become problems."""
        rows: list[RecordRow] = []
        gw, dev = msg.gw, msg.dev
        for data in msg.raw:
            try:
                rgw, seq, rdev, t, kind = read_record(data)[:5]
            except EdgeError as exc:
                self.store.problem(gw, Reason.MALFORMED, f"record on data/{dev}: {exc}"[:500])
                continue
            if seq >= BIGINT_END or t >= BIGINT_END:
                self.store.problem(gw, Reason.MALFORMED, f"record on data/{dev}: {_BEYOND}")
            elif rgw != gw or rdev != dev:
                self.store.problem(
                    gw, Reason.WRONG_TOPIC, f"record seq {seq} of {rgw}/{rdev} arrived on {gw}/data/{dev}", seq=seq
                )
            else:
                rows.append((gw, seq, dev, t, kind, data, leaf_hash(data)))
        return rows

    def _write(self, items: list[_Incoming]) -> None:
        rows: list[RecordRow] = []
        for it in items:
            try:
                msg = decode_message(it.topic, it.payload)
            except MessageError as exc:
                gw = None if not exc.topic_ok else it.topic.split("/")[3]
                self.store.problem(gw, Reason.WRONG_TOPIC if not exc.topic_ok else Reason.MALFORMED, str(exc)[:500])
                continue
            if isinstance(msg, DataMessage):
                rows.extend(self._record_rows(msg))
            elif _beyond(msg):
                self.store.problem(msg.gw, Reason.MALFORMED, f"{it.topic.rsplit('/', 1)[-1]} message: {_BEYOND}")
            elif isinstance(msg, ManifestMessage):
                m = msg.signed.manifest
                if m.gw != msg.gw:
                    self.store.problem(
                        msg.gw, Reason.WRONG_TOPIC, f"manifest of {m.gw} published under {msg.gw}", batch=m.batch
                    )
                    continue
                self.store.batch(
                    BatchRow(
                        m.gw,
                        m.batch,
                        m.first_seq,
                        m.last_seq,
                        m.count,
                        m.root,
                        m.prev,
                        sm3(msg.signed.body),
                        msg.payload,
                    )
                )
            elif isinstance(msg, ReceiptMessage):
                r = msg.receipt
                if r.gw != msg.gw or r.kind is not AnchorKind.BATCH:
                    self.store.problem(
                        msg.gw, Reason.WRONG_TOPIC, f"{r.kind.label} receipt for {r.gw} on {it.topic}", batch=r.number
                    )
                    continue
                self.store.receipt(msg.gw, r.number, r.tx, it.payload)
            elif isinstance(msg, RollupMessage):
                self.store.rollup(msg.gw, msg.target, msg.rollup.number, it.payload)
            elif isinstance(msg, HeadMessage):
                self.store.head(msg.gw, msg.signed.head.batch, msg.payload)
            elif isinstance(msg, KeyMessage):
                self.store.key(msg.gw, msg.key_id, msg.pem)
        self.store.records(rows)

    # ---------------------------------------------------------------- proving
    def prove(self, limit: int = 50) -> int:
        """Prove (or reject) up to ``limit`` batches the database holds complete; returns how many."""
        done = 0
        while True:
            with self.conn.transaction():
                ready = self.store.ready_batches(limit, need_anchor=self.trust.uses_registry)
                for r in ready:
                    self._judge(r)
            done += len(ready)
            if len(ready) < limit:
                return done

    def _judge(self, r: Ready) -> None:
        b = r.batch
        signed = SignedManifest.from_bytes(b.payload)
        anchor = (
            None if r.anchor is None else AnchorInfo(r.anchor[0], r.anchor[1], AnchorKind.BATCH, b.gw, b.batch, b.count)
        )

        def judge(leaves: list[bytes]) -> BatchVerdict:
            return judge_leaves(
                self.trust, b.gw, signed, leaves, prev_digest=r.prev, anchor=anchor, announced_pem=r.announced_pem
            )

        verdict = judge(r.leaves)
        if verdict.reason is Reason.ROOT_MISMATCH:
            # Conflicting copies arrived: whichever was stored first, the signed root decides.
            for seq, alt, leaf in self.store.alternatives(b):
                trial = list(r.leaves)
                trial[seq - b.first_seq] = leaf
                v2 = judge(trial)
                if v2.reason is None:
                    self.store.swap(b.gw, seq, alt, leaf)
                    verdict = v2
                    break
        if verdict.reason is not None:
            self.store.settle(b, "rejected", str(verdict.reason), None)
            self.store.problem(b.gw, verdict.reason, verdict.message, batch=b.batch)
            return
        self.store.settle(
            b,
            "anchored" if anchor is not None else "proven",
            None,
            str(verdict.key_source),
            prev_checked=r.prev is not None,
        )
        nxt = self.store.successor(b.gw, b.batch)
        if nxt is not None and nxt[0] in ("proven", "anchored", "final") and not nxt[2]:
            # The successor was proven across a gap (or from a join point): this batch closes the gap, so the
            # link it could not check is checked now.
            if nxt[1] == b.digest:
                self.store.chain_checked(b.gw, b.batch + 1)
            else:
                self.store.reject(b.gw, b.batch + 1, Reason.BROKEN_CHAIN)
                self.store.problem(
                    b.gw,
                    Reason.BROKEN_CHAIN,
                    f"batch {b.batch + 1}: prev does not match the manifest of batch {b.batch}, which arrived late",
                    batch=b.batch + 1,
                )

    # ---------------------------------------------------------------- the chain: anchored, final
    def check_chain(self, limit: int = 200) -> None:
        """Ask the chain about each new receipt once (a confirmed anchor makes a proven batch anchored), then make
        anchors ``final_depth`` blocks deep final after asking again (an anchor the chain lost goes back)."""
        if self.chain is None:
            return
        checker = self.chain.checker
        with self.conn.transaction():
            for gw, n, tx, payload, b in self.store.unchecked_receipts(limit):
                receipt = AnchorReceipt.from_bytes(payload)
                if receipt.root != b.root or receipt.count != b.count:
                    self.store.receipt_checked(gw, n, tx, "mismatch")
                    self.store.problem(
                        gw,
                        Reason.ANCHOR_MISMATCH,
                        f"batch {n}: an anchor receipt names another root or count",
                        batch=n,
                        once=f"anchor_mismatch:{gw}:{n}:{tx.hex()}",
                    )
                    continue
                got = checker.confirm(receipt)
                if not isinstance(got, str) and (got.gw, got.number, got.count, got.kind) != (
                    gw,
                    n,
                    b.count,
                    AnchorKind.BATCH,
                ):
                    got = f"the chain's anchor is for {got.gw} #{got.number} ({got.count} records)"
                if isinstance(got, str):
                    self.store.receipt_checked(gw, n, tx, got[:200])
                    self.store.problem(
                        gw,
                        Reason.ANCHOR_NOT_ON_CHAIN,
                        f"batch {n}: {got}",
                        batch=n,
                        once=f"anchor_not_on_chain:{gw}:{n}:{tx.hex()}",
                    )
                    continue
                if not self.trust.counts_anchor(gw, got.anchorer):
                    # Anyone may anchor any root (the contract keys anchors by account): with registry trust only
                    # an account the registry names for the gateway counts, so a squatter's anchor of the same
                    # root, however early, never becomes the block the key is judged at.
                    self.store.receipt_checked(gw, n, tx, "unregistered anchorer")
                    self.store.problem(
                        gw,
                        Reason.UNTRUSTED_KEY,
                        f"batch {n}: an anchor of its root by 0x{got.anchorer.hex()}, an account the registry does "
                        f"not name for {gw}, is not counted",
                        batch=n,
                        once=f"unregistered_anchorer:{gw}:{n}:{tx.hex()}",
                    )
                    continue
                self.store.receipt_checked(gw, n, tx, "confirmed")
                self.store.set_anchor(gw, n, receipt.tx, got.block_number, receipt.block_hash, got.anchorer)
        with self.conn.transaction():
            rows = self.store.anchored(limit)
            head = self.chain.head() if rows else 0
            for gw, n, block, payload in rows:
                if head - block < self.settings.final_depth:
                    continue
                got = checker.confirm(AnchorReceipt.from_bytes(payload))
                if isinstance(got, str) or got.block_number != block:
                    self.store.unanchor(gw, n)
                    self.store.problem(
                        gw,
                        Reason.ANCHOR_NOT_ON_CHAIN,
                        f"batch {n}: the chain no longer holds its "
                        f"anchor in block {block}" + (f" ({got})" if isinstance(got, str) else ""),
                        batch=n,
                    )
                else:
                    self.store.finalize(gw, n)

    # ---------------------------------------------------------------- gaps, truncation, late join
    def check_gaps(self) -> None:
        """What must not wait silently: a batch whose predecessor never arrives is released (and the gap stated),
        or with late join starts verification; records a batch names that never arrive are stated as seq ranges;
        a tail dropped after a signed head or after the chain's newest anchor is stated as truncation."""
        timeout = self.settings.gap_timeout_s
        with self.conn.transaction():
            joined: set[str] = set()
            for gw, n, age, lower in self.store.orphans():
                if lower is None and gw not in joined and self.settings.late_join:
                    join = self._join_point(gw, n)
                    if join is not None:
                        self.store.release(gw, n, join[0])
                        self.store.joined(gw, n, join[1])
                        joined.add(gw)
                        log.info("%s: late join at batch %d from %s", gw, n, join[1])
                        continue
                if age < timeout:
                    continue
                first = (lower or 0) + 1
                self.store.release(gw, n, None)
                self.store.problem(
                    gw,
                    Reason.MISSING_BATCH,
                    f"batches {first}..{n - 1} were never received "
                    f"(waited {timeout:g} s); batch {n} is checked without its prev link",
                    batch=first,
                    once=f"missing_batch:{gw}:{n}",
                )
            for b in self.store.incomplete(timeout):
                runs = self.store.missing_runs(b.gw, b.first_seq, b.last_seq)
                for a, z in runs[:MAX_PROBLEMS_PER_REASON]:
                    self.store.problem(
                        b.gw,
                        Reason.MISSING_RECORD,
                        f"{_span(a, z)} (in batch {b.batch}) never received (waited {timeout:g} s)",
                        seq=a,
                        batch=b.batch,
                        once=f"missing_record:{b.gw}:{b.batch}:{a}:{z}",
                    )
            self._check_heads(timeout)
            self._check_chain_tail(timeout)

    def _join_point(self, gw: str, batch: int) -> tuple[bytes | None, str] | None:
        """Where a late join may start for a gateway whose first stored batch is ``batch``: a trusted signed head
        naming ``batch - 1`` (its digest becomes the prev to check), or the chain confirming ``batch``'s anchor
        (the prev cannot be checked); None when neither vouches for it."""
        for (payload,) in self.conn.execute("SELECT payload FROM heads WHERE gw = %s", (gw,)).fetchall():
            sh = SignedHead.from_bytes(bytes(payload))
            if sh.head.batch == batch - 1 and sh.head.gw == gw and self._head_trusted(gw, sh) is None:
                return sh.head.manifest, "signed head"
        row = self.conn.execute("SELECT anchor_block FROM batches WHERE gw = %s AND batch = %s", (gw, batch)).fetchone()
        if row is not None and row[0] is not None:
            return None, "anchored manifest"
        return None

    def _head_trusted(self, gw: str, sh: SignedHead) -> Untrusted | None:
        """None when the head's signature verifies under a trusted key for ``gw``, else why not."""
        key = self.conn.execute("SELECT pem FROM keys WHERE gw = %s", (gw,)).fetchone()
        got = check_signature(self.trust, gw, sh, None, 1, key[0] if key else None)
        return got if isinstance(got, Untrusted) else None

    def _check_heads(self, timeout: float) -> None:
        for gw, payload, age in self.store.heads_to_check():
            sh = SignedHead.from_bytes(payload)
            h = sh.head
            why = self._head_trusted(gw, sh)
            if why is not None:
                self.store.head_checked(gw, payload, "untrusted")
                self.store.problem(
                    gw, why.reason, f"signed head (batch {h.batch}): {why.why}", once=f"head:{gw}:{sm3(payload).hex()}"
                )
                continue
            if h.batch == 0:
                self.store.head_checked(gw, payload, "ok")
                continue
            digest = self.store.batch_digest(gw, h.batch)
            if digest is not None:
                self.store.head_checked(gw, payload, "ok" if digest == h.manifest else "mismatch")
                if digest != h.manifest:
                    self.store.problem(
                        gw,
                        Reason.HEAD_MISMATCH,
                        f"the signed head's manifest digest for batch {h.batch} does not match the manifest stored",
                        batch=h.batch,
                        once=f"head_mismatch:{gw}:{h.batch}:{sm3(payload).hex()}",
                    )
            elif age >= timeout:
                top = self.store.top_batch(gw)
                if top < h.batch:
                    self.store.head_checked(gw, payload, "truncated")
                    self.store.problem(
                        gw,
                        Reason.TRUNCATED,
                        f"the gateway's signed head names batch {h.batch} (up to "
                        f"seq {h.last_seq}), but none after batch {top} arrived within "
                        f"{timeout:g} s: the tail was dropped",
                        batch=top + 1,
                        once=f"truncated_head:{gw}:{h.batch}",
                    )
                else:
                    self.store.head_checked(gw, payload, "gap")  # batch h.batch itself is a stated gap

    def _check_chain_tail(self, timeout: float) -> None:
        now = time.monotonic()
        if self.chain is None or (self._last_tail and now - self._last_tail < self.settings.chain_tail_s):
            return
        self._last_tail = now
        for gw in self.store.gateway_ids():
            accounts = self.store.anchorers(gw) | self.trust.anchorers(gw)
            latest = None
            for account in sorted(accounts):
                try:
                    got = self.chain.checker.latest(account, AnchorKind.BATCH, gw)
                except AnchoringError as exc:
                    log.warning("could not ask the chain for %s's latest anchor: %s", gw, exc)
                    continue
                if got is not None and (latest is None or got[0] > latest):
                    latest = got[0]
            top = self.store.top_batch(gw)
            ahead = self.store.chain_ahead(gw, latest if latest is not None and latest > top else None)
            if ahead is not None and ahead >= timeout and latest is not None:
                self.store.problem(
                    gw,
                    Reason.TRUNCATED,
                    f"the chain holds batch {latest} anchored for {gw}, but none "
                    f"after batch {top} arrived within {timeout:g} s: the tail was dropped",
                    batch=top + 1,
                    once=f"truncated_chain:{gw}:{latest}",
                )


def wait_connected(ingest: Ingest, timeout: float = 20) -> None:
    """Pump the connection until the broker accepted it (messages arriving meanwhile wait in the inbox)."""
    deadline = time.monotonic() + timeout
    while not ingest.connected:
        if time.monotonic() > deadline:
            raise SettingsError(f"could not connect to {ingest.settings.broker}")
        ingest.link.pump(0.1, ingest._full)
