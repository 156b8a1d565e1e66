"""Load for the platform side: signed gateway streams recorded once, replayed at a set rate by many simulated
gateways, so the ingest (not the generator) is what a benchmark measures.

Recording does the gateway's work once — canonical records, SM3 Merkle roots, SM2-signed manifests, receipts and
a signed head — and writes the messages to a capture file (the format ``tiyi verify --capture`` reads), cached by
its parameters. Replaying only publishes bytes: several MQTT 5 connections (QoS 1, PUBLISH packets encoded before the
run and written many per system call, as many in flight as the broker allows), each paced to its share of the target
rate, and the wall time of every data message is kept for latency.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from anchoring.capture import read_capture, write_capture_item
from bench.rawmqtt import Packet, RawPublisher, publish_packet
from edge.head import Head, sign_head
from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record, encode_data_message
from edge.sm2 import Sm2Signer, generate_signer, load_private_key_pem
from edge.topics import Topics

CACHE = Path(__file__).resolve().parent / "results" / "streams"
REGION = "bench"


@dataclass
class Streams:
    """Recorded streams: every gateway's messages in publication order, and the key that signed them all."""

    messages: dict[str, list[tuple[str, bytes]]]
    records: int
    pem: str
    path: Path

    @property
    def gateways(self) -> list[str]:
        return sorted(self.messages)


def _gateway(gw: str, n: int, per_batch: int, per_message: int, signer: Sm2Signer) -> Iterator[tuple[str, bytes]]:
    t = Topics(REGION, gw)
    devs = [f"strap-{i:02d}" for i in range(4)]
    prev, number, t0 = GENESIS_PREV, 1, 1_795_000_000_000
    for first in range(1, n + 1, per_batch):
        last = min(n, first + per_batch - 1)
        batch: list[bytes] = []
        for start in range(first, last + 1, per_message):
            dev = devs[(start // per_message) % len(devs)]
            chunk = []
            for seq in range(start, min(last, start + per_message - 1) + 1):
                hr = 60 + seq % 90
                chunk.append(
                    bytes(
                        Record(
                            gw=gw,
                            seq=seq,
                            dev=dev,
                            t=t0 + seq * 100,
                            kind="heart_rate",
                            val={"heart_rate": hr, "sensor_contact": True},
                            raw=bytes([0x06, hr]),
                            salt=secrets.token_bytes(16),
                        )
                    )
                )
            batch += chunk
            yield t.data(dev), encode_data_message(chunk)
        m = build_manifest(gw, number, first, batch, prev, t0 + last * 100)
        sm = sign_manifest(m, signer)
        yield t.batch, bytes(sm)
        prev, number = m.digest, number + 1
    if n:
        yield t.head, bytes(sign_head(Head(gw, number - 1, n, prev, t0 + n * 100), signer))


def record(gateways: int, per_gateway: int, per_batch: int = 1000, per_message: int = 10) -> Streams:
    """The streams of ``gateways`` gateways of ``per_gateway`` records each, from the cache when recorded before."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{gateways}x{per_gateway}-b{per_batch}-m{per_message}.capture"
    key = path.with_suffix(".key")
    if not (path.exists() and key.exists()):
        signer = generate_signer()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            for g in range(gateways):
                for topic, payload in _gateway(f"gw-{g:03d}", per_gateway, per_batch, per_message, signer):
                    write_capture_item(fh, topic, payload, topic.endswith("/head"), 0)
        key.write_text(signer.private_key_pem())
        os.replace(tmp, path)
    signer = load_private_key_pem(key.read_text())
    messages: dict[str, list[tuple[str, bytes]]] = {}
    with path.open("rb") as fh:
        for item in read_capture(fh):
            messages.setdefault(item.topic.split("/")[3], []).append((item.topic, item.payload))
    return Streams(messages, gateways * per_gateway, signer.public_key_pem(), path)


@dataclass
class Replay:
    """What a replay did: when each data message left (gw, first seq, records, wall time) and how long it took."""

    sent: list[tuple[str, int, int, float]] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


def _array_len(payload: bytes) -> int:
    """The length in a CBOR array's head (a data message's record count) without decoding the records."""
    info = payload[0] & 0x1F
    if info < 24:
        return info
    size = 1 << (info - 24)
    return int.from_bytes(payload[1 : 1 + size], "big")


def _first_seq(payload: bytes) -> tuple[int, int]:
    from edge.record import decode_data_message

    recs = decode_data_message(payload)
    return Record.from_bytes(recs[0]).seq, len(recs)


def _first_seqs(streams: Streams) -> dict[tuple[str, int], tuple[int, int]]:
    """(gateway, message index) → (first seq, records) of every data message, read before the run."""
    return {
        (gw, i): _first_seq(payload)
        for gw in streams.gateways
        for i, (topic, payload) in enumerate(streams.messages[gw])
        if "/data/" in topic
    }


@dataclass
class _Connection:
    """One replaying connection: its gateways' messages in order (interleaved between them), encoded beforehand."""

    order: list[tuple[str, int]]  # (gateway, index of its message)
    packets: list[Packet]
    counts: list[int]  # counts[j]: data records in the packets before j
    firsts: dict[tuple[str, int], tuple[int, int]]
    sent: list[tuple[str, int, int, float]] = field(default_factory=list)
    start: float = 0.0

    @classmethod
    def of(cls, streams: Streams, mine: list[str], firsts: dict[tuple[str, int], tuple[int, int]]) -> _Connection:
        order = [
            (gw, i)
            for i in range(max(len(streams.messages[g]) for g in mine))
            for gw in mine
            if i < len(streams.messages[gw])
        ]
        packets, counts = [], [0]
        for gw, i in order:
            topic, payload = streams.messages[gw][i]
            packets.append(publish_packet(topic, payload, retain=topic.endswith("/head")))
            counts.append(counts[-1] + (_array_len(payload) if "/data/" in topic else 0))
        return cls(order, packets, counts, firsts)

    def note(self, i: int, j: int) -> None:
        """Packets ``i..j-1`` are being written now: the wall time of each data message among them."""
        now = time.time()
        for key in self.order[i:j]:
            if key in self.firsts:
                seq, n = self.firsts[key]
                self.sent.append((key[0], seq, n, now))

    def paced(self, per_second: float) -> Callable[[int], int]:
        """How many packets from ``i`` on are due at ``per_second`` records/s since ``start``."""

        def allowed(i: int) -> int:
            due = (time.monotonic() - self.start) * per_second
            j = i
            while j < len(self.packets) and self.counts[j] <= due:
                j += 1
            return j - i

        return allowed


def replay(
    url_port: int, streams: Streams, rate: float | None = None, clients: int = 4, timing: bool = False
) -> Replay:
    """Publish every gateway's messages (gateways split over ``clients`` connections, each in order) at ``rate``
    records/s in total (None: as fast as the broker takes them). With ``timing``, note each data message's wall
    time (its first seq is read from the bytes before the run, not during it).

    The packets are encoded before the run and written many per system call (``bench.rawmqtt``): the generator's
    own cost per message is a few microseconds, so what a benchmark measures is the side that receives."""
    out = Replay()
    gws = streams.gateways
    shares = [s for s in (gws[i::clients] for i in range(clients)) if s]
    firsts = _first_seqs(streams) if timing else {}
    conns = [_Connection.of(streams, mine, firsts) for mine in shares]
    per_client = None if rate is None else rate / len(conns)
    lock = threading.Lock()
    errors: list[BaseException] = []
    ready = threading.Barrier(len(conns) + 1)

    def run(conn: _Connection, k: int) -> None:
        try:
            pub = RawPublisher(url_port, f"loadgen-{k}-{secrets.token_hex(3)}")
        except BaseException as exc:
            errors.append(exc)
            ready.abort()  # the others (and the caller) stop waiting instead of hanging at the barrier
            raise
        try:
            ready.wait()
            conn.start = time.monotonic()
            pub.send(
                conn.packets,
                None if per_client is None else conn.paced(per_client),
                conn.note if timing else None,
            )
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            pub.close()
        with lock:
            out.sent += conn.sent

    threads = [threading.Thread(target=run, args=(c, k), daemon=True) for k, c in enumerate(conns)]
    for th in threads:
        th.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a connection failed: reported below
        ready.wait()
    out.started = time.time()
    for th in threads:
        th.join()
    out.finished = time.time()
    if errors:
        raise RuntimeError(f"the replay failed: {errors[0]}") from errors[0]
    return out
