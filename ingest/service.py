"""``tiyi-ingest``: one instance of the verifying store.

It joins an MQTT 5 shared subscription (``$share/{group}/tiyi/v1/+/+/#``) with a persistent session (a stable
client id, ``clean_start`` false, a session expiry), so instances split the stream and a restarted one gets what the
broker queued for it. A message is acknowledged only after its rows are committed: a ``kill -9`` between the two
makes the broker redeliver, and the (gw, seq) keys make the redelivery harmless. After each commit the instance
proves whatever batches the database now holds complete, whichever instance stored their pieces.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from anchoring.engine import judge_batch
from anchoring.findings import Reason
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
from anchoring.trust import TrustPolicy
from edge.errors import EdgeError
from edge.manifest import SignedManifest
from edge.merkle import leaf_hash
from edge.sm3 import sm3
from ingest.errors import SettingsError
from ingest.store import BatchRow, RecordRow, Store, connect, migrate

log = logging.getLogger("tiyi.ingest")

TOPIC = "tiyi/v1/+/+/#"


@dataclass(frozen=True, slots=True)
class IngestSettings:
    broker: str  # mqtt://host:port
    dsn: str
    group: str = "tiyi-ingest"
    client_id: str = "tiyi-ingest-1"
    session_expiry_s: int = 7 * 24 * 3600
    max_batch: int = 2000  # messages per transaction
    receive_maximum: int = 1000

    def __post_init__(self) -> None:
        u = urlsplit(self.broker)
        if u.scheme != "mqtt" or not u.hostname:
            raise SettingsError(f"broker must be mqtt://HOST[:PORT], got {self.broker!r}")
        if not 0 < self.session_expiry_s < 1 << 32:
            raise SettingsError("session expiry must be 1 s .. 136 years")


@dataclass(frozen=True, slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int


class Ingest:
    """One instance: an MQTT thread (paho's loop) hands messages to the writer (the caller's thread in ``run``)."""

    def __init__(self, settings: IngestSettings, trust: TrustPolicy) -> None:
        self.settings = settings
        self.trust = trust
        self.conn = connect(settings.dsn)
        migrate(self.conn)
        self.store = Store(self.conn, settings.client_id)
        self._q: queue.Queue[_Incoming] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.stored = 0
        u = urlsplit(settings.broker)
        self._host, self._port = u.hostname or "", u.port or 1883
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=mqtt.MQTTv5,
                        manual_ack=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 5)
        c.max_inflight_messages_set(settings.receive_maximum)
        self.client = c

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        client.subscribe(f"$share/{self.settings.group}/{TOPIC}", qos=1)
        self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put(_Incoming(msg.topic, bytes(msg.payload), msg.mid))

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect(self._host, self._port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.conn.close()

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Write and prove until ``stop`` (or ``until()``)."""
        while not self._stop.is_set() and not (until and until()):
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                self.prove()
                continue
            items = [first]
            while len(items) < self.settings.max_batch:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            with self.conn.transaction():
                self._write(items)
            for it in items:  # only now: a crash before this line makes the broker redeliver
                self.client.ack(it.mid, 1)
            self.stored += len(items)
            self.prove()

    # ---------------------------------------------------------------- writing
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
                for data, rec in msg.records():
                    if isinstance(rec, EdgeError):
                        self.store.problem(msg.gw, Reason.MALFORMED, f"record on data/{msg.dev}: {rec}"[:500])
                    elif rec.gw != msg.gw or rec.dev != msg.dev:
                        self.store.problem(msg.gw, Reason.WRONG_TOPIC, f"record seq {rec.seq} of {rec.gw}/{rec.dev} "
                                           f"arrived on {msg.gw}/data/{msg.dev}", seq=rec.seq)
                    else:
                        rows.append(RecordRow(rec.gw, rec.seq, rec.dev, rec.t, rec.kind, data, leaf_hash(data)))
            elif isinstance(msg, ManifestMessage):
                m = msg.signed.manifest
                if m.gw != msg.gw:
                    self.store.problem(msg.gw, Reason.WRONG_TOPIC, f"manifest of {m.gw} published under {msg.gw}",
                                       batch=m.batch)
                    continue
                self.store.batch(BatchRow(m.gw, m.batch, m.first_seq, m.last_seq, m.count, m.root, m.prev,
                                          sm3(msg.signed.manifest_bytes), msg.payload))
            elif isinstance(msg, ReceiptMessage):
                r = msg.receipt
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
                ready = self.store.ready_batches(limit)
                for b, data, pem, prev in ready:
                    signed = SignedManifest.from_bytes(b.payload)
                    verdict = judge_batch(self.trust, b.gw, signed, data, prev_digest=prev, announced_pem=pem)
                    if verdict.reason is Reason.ROOT_MISMATCH:
                        # Conflicting copies arrived: whichever was stored first, the signed root decides.
                        for seq, alt, leaf in self.store.alternatives(b):
                            trial = list(data)
                            trial[seq - b.first_seq] = alt
                            v2 = judge_batch(self.trust, b.gw, signed, trial, prev_digest=prev, announced_pem=pem)
                            if v2.reason is None:
                                self.store.swap(b.gw, seq, alt, leaf)
                                verdict = v2
                                break
                    if verdict.reason is None:
                        self.store.settle(b, "proven", None, str(verdict.key_source))
                    else:
                        self.store.settle(b, "rejected", str(verdict.reason), None)
                        self.store.problem(b.gw, verdict.reason, verdict.message, batch=b.batch)
            done += len(ready)
            if len(ready) < limit:
                return done


def wait_connected(ingest: Ingest, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ingest.connected.wait(0.1):
        if time.monotonic() > deadline:
            raise SettingsError(f"could not connect to {ingest.settings.broker}")
