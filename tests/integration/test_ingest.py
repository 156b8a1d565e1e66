"""Two ``tiyi-ingest`` instances on a real Mosquitto (MQTT 5 shared subscription) and a real PostgreSQL: every record
stored exactly once and proven, an instance killed with SIGKILL mid-run loses nothing, and each forgery is stored as
rejected with its reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import Mosquitto
from edge import cbor
from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record, decode_data_message, encode_data_message
from edge.sm2 import generate_signer
from edge.topics import Topics
from tests.unit.anchoring.fakes import receipt

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SIGNER = generate_signer()
OTHER = generate_signer()


def rec(gw: str, seq: int) -> bytes:
    return bytes(
        Record(
            gw=gw,
            seq=seq,
            dev=f"dev-{seq % 2}",
            t=1_700_000_000_000 + seq * 1000,
            kind="heart_rate",
            val={"heart_rate": 60 + seq % 90},
            raw=bytes([0, 60 + seq % 90]),
            salt=os.urandom(16),
        )
    )


def gateway_stream(gw: str, n: int = 600, per_batch: int = 50) -> list[tuple[str, bytes]]:
    """What an honest gateway publishes: data messages of 5 records, then each batch's manifest and receipt."""
    t = Topics("shenzhen", gw)
    records = {q: rec(gw, q) for q in range(1, n + 1)}
    out: list[tuple[str, bytes]] = []
    prev = GENESIS_PREV
    for number, first in enumerate(range(1, n + 1, per_batch), 1):
        chunk = [records[q] for q in range(first, first + per_batch)]
        for i in range(0, per_batch, 5):
            part = chunk[i : i + 5]
            for dev in {Record.from_bytes(d).dev for d in part}:
                out.append((t.data(dev), encode_data_message([d for d in part if Record.from_bytes(d).dev == dev])))
        m = build_manifest(gw, number, first, chunk, prev, 1)
        out.append((t.batch, bytes(sign_manifest(m, SIGNER))))
        out.append((t.anchor, bytes(receipt(gw, number, m.count, m.root, 100 + number))))
        prev = m.digest
    return out


def forged_streams() -> dict[str, list[tuple[str, bytes]]]:
    """One gateway per forgery class, each otherwise honest (two batches of 10)."""
    out: dict[str, list[tuple[str, bytes]]] = {}

    def honest(
        gw: str, signer: object = SIGNER, alter: int | None = None, bad_prev: bool = False
    ) -> list[tuple[str, bytes]]:
        t = Topics("shenzhen", gw)
        records = [rec(gw, q) for q in range(1, 21)]
        msgs: list[tuple[str, bytes]] = []
        prev = GENESIS_PREV
        for number in (1, 2):
            chunk = records[(number - 1) * 10 : number * 10]
            m = build_manifest(
                gw, number, (number - 1) * 10 + 1, chunk, b"\x07" * 32 if bad_prev and number == 2 else prev, 1
            )
            sent = list(chunk)
            if alter is not None and number == 2:
                r = Record.from_bytes(sent[alter])
                sent[alter] = bytes(replace(r, val={"heart_rate": 199}))
            msgs += [(t.data(Record.from_bytes(d).dev), encode_data_message([d])) for d in sent]
            msgs.append((t.batch, bytes(sign_manifest(m, signer))))  # type: ignore[arg-type]
            prev = m.digest
        return msgs

    out["gw-root"] = honest("gw-root", alter=3)
    out["gw-key"] = honest("gw-key", signer=OTHER)
    out["gw-chain"] = honest("gw-chain", bad_prev=True)
    sig = honest("gw-sig")
    sm = cbor.loads(sig[-1][1])
    sm["sig"] = bytes(SIGNER.sign(b"something else"))
    sig[-1] = (sig[-1][0], cbor.dumps(sm))
    out["gw-sig"] = sig
    dup = honest("gw-dup")
    r5 = Record.from_bytes(decode_data_message(dup[4][1])[0])
    dup.append((Topics("shenzhen", "gw-dup").data(r5.dev), encode_data_message([bytes(replace(r5, t=r5.t + 1))])))
    out["gw-dup"] = dup
    out["gw-junk"] = [
        (Topics("shenzhen", "gw-junk").data("dev-1"), b"\xff\x00"),
        (Topics("shenzhen", "gw-junk").data("dev-9"), encode_data_message([rec("gw-junk", 1)])),
    ]
    return out


class Publisher:
    def __init__(self, broker: Mosquitto) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def send(self, msgs: list[tuple[str, bytes]]) -> None:
        infos = [self.c.publish(t, p, qos=1) for t, p in msgs]
        for i in infos:
            i.wait_for_publish(30)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def start_ingest(broker: Mosquitto, dsn: str, client_id: str, gws: list[str]) -> subprocess.Popen[bytes]:
    keys = []
    for gw in gws:
        keys += ["--key", f"{gw}={PEM}"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ingest",
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--db",
            dsn,
            "--client-id",
            client_id,
            *keys,
        ],
        cwd=ROOT,
    )


PEM = ""


def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(sql).fetchall()  # type: ignore[arg-type]


def wait_for(dsn: str, sql: str, want: object, timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    got: object = None
    while time.monotonic() < deadline:
        got = rows(dsn, sql)
        if got == want:
            return got
        time.sleep(0.5)
    return got


def wait_subscribed(broker: Mosquitto, dsn: str, instances: int = 1, seen: int = 0) -> int:
    """Probe messages of an unknown gateway until ``instances`` instances have each stored one as a problem, and more
    than ``seen`` were stored in all: they are subscribed (a shared subscription drops what is published before
    anyone subscribed, and start-up takes seconds on a busy machine). Returns how many probes were stored."""
    pub = Publisher(broker)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for _ in range(instances):  # the shared subscription hands them out in turn
                pub.send([("tiyi/v1/shenzhen/probe/data/d", b"\xff")])
            try:
                got = rows(dsn, "SELECT count(*), count(DISTINCT instance) FROM problems WHERE gw = 'probe'")[0]
            except psycopg.errors.UndefinedTable:
                got = (0, 0)  # no instance has created the schema yet
            stored, by = got
            assert isinstance(stored, int) and isinstance(by, int)
            if by >= instances and stored > seen:
                return stored
            time.sleep(0.5)  # pacing the probes; the loop ends on what the database says
        raise AssertionError(f"{instances} ingest instance(s) did not subscribe within 120 s")
    finally:
        pub.close()


def test_two_instances_store_every_record_once_survive_kill_9_and_reject_forgeries(
    mosquitto: Mosquitto, database: str, tmp_path: Path
) -> None:
    global PEM
    PEM = str(tmp_path / "gw.pem")
    Path(PEM).write_text(SIGNER.public_key_pem())
    forged = forged_streams()
    gws = ["gw-a", "gw-b", *forged]
    streams = {gw: gateway_stream(gw) for gw in ("gw-a", "gw-b")}
    a = start_ingest(mosquitto, database, "ingest-a", gws)
    b = start_ingest(mosquitto, database, "ingest-b", gws)
    pub = Publisher(mosquitto)
    try:
        wait_subscribed(mosquitto, database, instances=2)  # both sessions exist: nothing published from now is lost
        half = {gw: len(s) // 2 for gw, s in streams.items()}
        pub.send([m for gw, s in streams.items() for m in s[: half[gw]]])
        a.send_signal(signal.SIGKILL)  # mid-run, with messages in flight to it
        a.wait()
        pub.send([m for gw, s in streams.items() for m in s[half[gw] :]])
        pub.send([m for s in forged.values() for m in s])
        a = start_ingest(mosquitto, database, "ingest-a", gws)  # same client id: the broker kept its session
        got = wait_for(
            database,
            "SELECT gw, count(*), count(DISTINCT seq), min(state), max(state) FROM records "
            "WHERE gw IN ('gw-a','gw-b') GROUP BY gw ORDER BY gw",
            [("gw-a", 600, 600, "proven", "proven"), ("gw-b", 600, 600, "proven", "proven")],
        )
        assert got == [("gw-a", 600, 600, "proven", "proven"), ("gw-b", 600, 600, "proven", "proven")]
        rejected = wait_for(
            database,
            "SELECT gw, batch, reason FROM batches WHERE state = 'rejected' ORDER BY gw, batch",
            [
                ("gw-chain", 2, "broken_chain"),
                ("gw-key", 1, "untrusted_key"),
                ("gw-key", 2, "untrusted_key"),
                ("gw-root", 2, "root_mismatch"),
                ("gw-sig", 2, "bad_signature"),
            ],
        )
        assert rejected == [
            ("gw-chain", 2, "broken_chain"),
            ("gw-key", 1, "untrusted_key"),
            ("gw-key", 2, "untrusted_key"),
            ("gw-root", 2, "root_mismatch"),
            ("gw-sig", 2, "bad_signature"),
        ]
        assert rows(database, "SELECT DISTINCT state, reason FROM records WHERE gw = 'gw-root' AND batch = 2") == [
            ("rejected", "root_mismatch")
        ]
        problems = {(g, r) for g, r in rows(database, "SELECT gw, reason FROM problems")}
        assert {("gw-dup", "conflicting_duplicate"), ("gw-junk", "malformed"), ("gw-junk", "wrong_topic")} <= problems
        assert rows(database, "SELECT count(*) FROM record_conflicts WHERE gw = 'gw-dup'") == [(1,)]
        assert rows(database, "SELECT conflict FROM records WHERE gw = 'gw-dup' AND conflict") == [(True,)]
        # Whichever copy came first, the stored record is the one the signed batch proves.
        assert rows(database, "SELECT count(*) FROM records WHERE gw = 'gw-dup' AND state = 'proven'") == [(20,)]
    finally:
        pub.close()
        for p in (a, b):
            p.terminate()
            p.wait(10)


def test_an_instance_reconnects_after_the_broker_restarts(database: str, tmp_path: Path) -> None:
    """The instance drives paho from its own thread (ingest.link): it must re-establish a lost connection itself and
    go on storing and proving. (The stream's second half is published once the instance is back: Mosquitto 2.0
    does not restore shared subscriptions from its persistence file, so what a gateway publishes between the
    broker's restart and the instance's return is not queued for it, with or without this change.)"""
    global PEM
    PEM = str(tmp_path / "gw.pem")
    Path(PEM).write_text(SIGNER.public_key_pem())
    from bench.services import free_port

    broker = Mosquitto(port=free_port(), workdir=tmp_path, persistent=True)
    broker.start()
    stream = gateway_stream("gw-r")
    ing = start_ingest(broker, database, "ingest-r", ["gw-r"])
    try:
        probes = wait_subscribed(broker, database)
        half = len(stream) // 2
        pub = Publisher(broker)
        pub.send(stream[:half])
        pub.close()
        broker.stop()  # the instance loses its connection
        broker.start()
        wait_subscribed(broker, database, seen=probes)  # it is back: reconnected and subscribed again
        pub = Publisher(broker)
        pub.send(stream[half:])
        pub.close()
        want = [("gw-r", 600, 600, "proven", "proven")]
        got = wait_for(
            database,
            "SELECT gw, count(*), count(DISTINCT seq), min(state), max(state) FROM records WHERE gw = 'gw-r' "
            "GROUP BY gw",
            want,
        )
        assert got == want
        assert ing.poll() is None, "the instance exited instead of reconnecting"
    finally:
        ing.terminate()
        ing.wait(10)
        broker.stop()
