"""System benchmarks: latency, memory, disk, CPU and the emulated radio, each with a same-run baseline.

- ``latency_p99_1k`` / ``latency_p99_10k``: a frame submitted to the gateway → its record received and
  parsed (canonical CBOR, every field checked) by a subscriber on a real Mosquitto, at a steady rate.
  Baseline: a bare paho QoS 1 publisher → subscriber at the same rate, one message per reading.
- ``rss_300_devices``, ``disk_write_amplification``, ``cpu_per_1k``: `tiyi run` as its own process with
  300 simulated straps (one reading per second each), anchoring on a ganache node when one is installed,
  measured from ``/proc``. Baselines: a bare Python process with paho and sqlite3 loaded; bare SQLite
  inserts of the same record bytes; a bare paho publisher sending one message per record at the same rate.
- ``ble_emulated``: straps notifying at 20 Hz over the emulated radio, collected through bleak and the
  gateway's ``BleakSource``; baseline: the same peripherals read by a bare Bumble central.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.result import Result
from bench.services import GANACHE, ROOT, Ganache, Mosquitto, free_port


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


class _LatencySubscriber:
    """A paho subscriber on its own network thread, timing each record against its gateway timestamp."""

    def __init__(self, url: str, topic: str, parse_records: bool) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.latencies_ms: list[float] = []
        self.parse_records = parse_records
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"lat-{secrets.token_hex(3)}", protocol=paho.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        now = time.time() * 1000
        if self.parse_records:
            from edge.record import Record, decode_data_message

            if "/data/" not in msg.topic:
                return
            for data in decode_data_message(msg.payload):
                self.latencies_ms.append(now - Record.from_bytes(data).t)
        else:
            self.latencies_ms.append(now - float(msg.payload.decode()))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def _paced(rate: int, seconds: float, emit: Any) -> int:
    """Call ``emit(n)`` every 5 ms with the number of readings due, holding ``rate`` per second."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (now := loop.time() - start) < seconds:
        due = int(now * rate) - sent
        if due > 0:
            await emit(due)
            sent += due
        await asyncio.sleep(0.005)
    return sent


def _gateway_latency(url: str, rate: int, seconds: float) -> list[float]:
    from firmware_sim.heart_rate_strap import HeartRateStrap
    from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
    from gateway.keys import generate_keypair
    from gateway.runtime import assemble

    straps = [HeartRateStrap(f"hr-{i:03d}", seed=i) for i in range(100)]
    frames = [straps[i % 100].frame_at(float(i // 100)) for i in range(int(rate * seconds) + rate)]
    with tempfile.TemporaryDirectory() as d:
        state = Path(d)
        generate_keypair(state / "keys")
        gw_id = f"gw-lat-{secrets.token_hex(2)}"
        cfg = GatewayConfig(
            gateway_id=gw_id,
            region="shenzhen",
            state_dir=state,
            mqtt=MqttConfig(url=url),
            batch=BatchConfig(max_records=5000, max_age_s=1.0),
            chain=ChainConfig(kind="none"),
        ).validated()
        sub = _LatencySubscriber(url, f"tiyi/v1/shenzhen/{gw_id}/data/#", parse_records=True)

        async def run() -> None:
            parts = assemble(cfg, None)
            gw = parts.gateway
            await gw.start()
            await gw.publisher.wait_connected(10)
            it = iter(frames)

            async def emit(n: int) -> None:
                for _ in range(n):
                    await gw.submit(next(it))

            await _paced(rate, seconds, emit)
            await gw.drain(60)
            await gw.stop(drain_timeout=5)
            parts.journal.close()

        asyncio.run(run())
        time.sleep(0.5)
        sub.close()
        return sub.latencies_ms


def _bare_latency(url: str, rate: int, seconds: float) -> list[float]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    sub = _LatencySubscriber(url, "bench/latency", parse_records=False)
    host, port = url.removeprefix("mqtt://").split(":")
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="lat-pub", protocol=paho.MQTTv5)
    pub.connect(host, int(port))
    pub.loop_start()
    time.sleep(0.2)

    async def emit(n: int) -> None:
        for _ in range(n):
            pub.publish("bench/latency", str(time.time() * 1000).encode(), qos=1)

    asyncio.run(_paced(rate, seconds, emit))
    time.sleep(0.5)
    pub.loop_stop()
    pub.disconnect()
    sub.close()
    return sub.latencies_ms


def bench_latency(rate: int, seconds: float) -> tuple[Any, dict[str, Any]]:

    with tempfile.TemporaryDirectory() as d:
        broker = Mosquitto(free_port(), Path(d))
        broker.start()
        try:
            ours = _gateway_latency(broker.url, rate, seconds)
            bare = _bare_latency(broker.url, rate, seconds)
        finally:
            broker.stop()
    detail = {
        "rate": rate,
        "seconds": seconds,
        "records": len(ours),
        "ours_ms": {
            "p50": round(_percentile(ours, 50), 2),
            "p99": round(_percentile(ours, 99), 2),
            "max": round(max(ours, default=float("nan")), 2),
        },
        "bare_ms": {
            "p50": round(_percentile(bare, 50), 2),
            "p99": round(_percentile(bare, 99), 2),
            "max": round(max(bare, default=float("nan")), 2),
        },
    }
    p99, b99 = detail["ours_ms"]["p99"], detail["bare_ms"]["p99"]
    name = f"latency_p99_{rate // 1000}k"
    goal = "p99 <= 50 ms (default 20 ms linger)" if rate == 1000 else "informational (near saturation)"
    met = (p99 <= 50) if rate == 1000 else None
    return Result(
        name, p99, "ms", b99, f"bare paho QoS 1 at {rate}/s, p99", p99 / b99 if b99 else float("inf"), goal, met
    ), detail


# ----------------------------------------------------------------------------- a gateway process under load
def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key + ":"] = int(value.split()[0]) * 1024
    return out


def _proc_io_write(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bare_python_rss() -> int:
    code = (
        "import paho.mqtt.client, sqlite3, time, pathlib, os; sqlite3.connect(':memory:'); "
        "print(next(int(l.split()[1])*1024 for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmHWM')))"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _bare_sqlite_write_bytes(blobs: list[bytes], per_commit: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import sqlite3, sys, pathlib\n"
            "blobs = [bytes.fromhex(x) for x in sys.stdin.read().split()]\n"
            f"c = sqlite3.connect(r'{d}/raw.sqlite3', isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA synchronous=FULL')\n"
            "c.execute('CREATE TABLE r (seq INTEGER PRIMARY KEY, data BLOB)')\n"
            f"for i in range(0, len(blobs), {per_commit}):\n"
            "    c.execute('BEGIN')\n"
            f"    c.executemany('INSERT INTO r VALUES (?, ?)', [(k + 1, blobs[k]) for k in range(i, min(len(blobs), "
            f"i + {per_commit}))])\n"
            "    c.execute('COMMIT')\n"
            "c.close()\n"
            "print(next(int(l.split()[1]) for l in pathlib.Path('/proc/self/io').read_text().splitlines() "
            "if l.startswith('write_bytes')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=" ".join(b.hex() for b in blobs),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out)


def _bare_publisher_cpu(url: str, payload: bytes, rate: int, seconds: float) -> float:
    code = (
        "import time, resource, paho.mqtt.client as paho\n"
        "from paho.mqtt.enums import CallbackAPIVersion\n"
        f"host, port = {url.removeprefix('mqtt://')!r}.split(':')\n"
        "c = paho.Client(CallbackAPIVersion.VERSION2, client_id='cpu-bare', protocol=paho.MQTTv5)\n"
        "c.connect(host, int(port)); c.loop_start(); time.sleep(0.2)\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.monotonic(); sent = 0\n"
        f"payload = bytes.fromhex({payload.hex()!r})\n"
        f"while (now := time.monotonic() - t0) < {seconds}:\n"
        f"    due = int(now * {rate}) - sent\n"
        "    for _ in range(due): c.publish('bench/cpu', payload, qos=1)\n"
        "    sent += max(due, 0); time.sleep(0.005)\n"
        "r1 = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print((r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime))\n"
        "c.loop_stop(); c.disconnect()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out)


def bench_gateway_process(devices: int = 300, seconds: float = 30.0) -> tuple[list[Any], dict[str, Any]]:
    """`tiyi run` with 300 simulated straps as its own process: RSS, bytes written, CPU."""
    from gateway.journal import SqliteJournal
    from gateway.keys import generate_keypair

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "broker").mkdir()
        broker = Mosquitto(free_port(), root / "broker")
        broker.start()
        node = Ganache(free_port()) if GANACHE.exists() else None
        try:
            if node is not None:
                node.start()
            state = root / "state"
            generate_keypair(state / "keys")
            chain = f'[chain]\nkind = "evm"\nurl = "{node.url}"\n' if node is not None else '[chain]\nkind = "none"\n'
            config = root / "gateway.toml"
            config.write_text(
                f'[gateway]\nid = "gw-load"\nregion = "shenzhen"\nstate_dir = "{state}"\n'
                f'[mqtt]\nurl = "{broker.url}"\n{chain}[sim]\ndevices = {devices}\ninterval_s = 1.0\n'
            )
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            peak_rss, write0, cpu0 = 0, 0, 0.0
            try:
                time.sleep(5.0)  # start-up (imports, chain contract deployment) is not the steady state
                write0, cpu0 = _proc_io_write(proc.pid), _proc_cpu_s(proc.pid)
                seq0 = _journal_next_seq(state)
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    time.sleep(0.5)
                    peak_rss = max(peak_rss, _proc_status(proc.pid).get("VmRSS:", 0))
                elapsed = time.monotonic() - t0
                write1, cpu1 = _proc_io_write(proc.pid), _proc_cpu_s(proc.pid)
                hwm = _proc_status(proc.pid).get("VmHWM:", 0)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            j = SqliteJournal.open(state / "journal.sqlite3", "gw-load")
            seq1 = j.records.next_seq
            blobs = j.records.read(seq0, seq1 - 1) if seq1 > seq0 else []
            j.close()
            rate = (seq1 - seq0) / elapsed
            record_bytes = sum(len(b) for b in blobs)
            payload = blobs[0] if blobs else b"x" * 150
            bare_cpu = _bare_publisher_cpu(broker.url, payload, max(1, round(rate)), min(seconds, 15.0))
            bare_cpu_per_s = bare_cpu / min(seconds, 15.0)
        finally:
            if node is not None:
                node.stop()
            broker.stop()
    bare_rss = _bare_python_rss()
    # Linger groups of ~20 ms at this rate: about rate/50 records per commit.
    bare_writes = _bare_sqlite_write_bytes(blobs, max(1, round(rate / 50)))
    amp = (write1 - write0) / record_bytes if record_bytes else float("nan")
    bare_amp = bare_writes / record_bytes if record_bytes else float("nan")
    cpu_per_1k = (cpu1 - cpu0) / elapsed / (rate / 1000) if rate else float("nan")
    bare_cpu_per_1k = bare_cpu_per_s / (rate / 1000) if rate else float("nan")
    detail = {
        "devices": devices,
        "seconds": round(elapsed, 1),
        "records_per_s": round(rate, 1),
        "anchoring": "ganache" if node is not None else "none",
        "peak_rss_bytes": max(peak_rss, hwm),
        "written_bytes": write1 - write0,
        "record_bytes": record_bytes,
        "cpu_s": round(cpu1 - cpu0, 2),
    }
    mb = 1024 * 1024
    results = [
        Result(
            "rss_300_devices",
            max(peak_rss, hwm) / mb,
            "MB",
            bare_rss / mb,
            "bare Python with paho and sqlite3",
            max(peak_rss, hwm) / bare_rss,
            "<= 80 MB",
            max(peak_rss, hwm) <= 80 * mb,
        ),
        Result(
            "disk_write_amplification",
            amp,
            "x",
            bare_amp,
            "bare SQLite WAL inserts of the record bytes",
            amp / bare_amp if bare_amp else float("inf"),
            "<= 3x",
            amp <= 3,
        ),
        Result(
            "cpu_per_1k",
            cpu_per_1k,
            "CPU s/s per 1k rec/s",
            bare_cpu_per_1k,
            "bare paho QoS 1, one message per record",
            cpu_per_1k / bare_cpu_per_1k if bare_cpu_per_1k else 0,
            "informational",
            None,
        ),
    ]
    return results, detail


def _journal_next_seq(state: Path) -> int:
    """Next seq, read without disturbing the running gateway (read-only SQLite connection)."""
    conn = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        return int(row[0]) + 1
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the emulated radio
async def _started_straps(n: int, prefix: str) -> tuple[Any, list[Any]]:
    """A fresh emulated link with ``n`` straps notifying at 20 Hz, advertising."""
    from bumble.link import LocalLink

    from firmware_sim.bumble_devices import BumbleHeartRateStrap
    from firmware_sim.heart_rate_strap import HeartRateStrap

    _quiet_teardown()
    link = LocalLink()  # type: ignore[no-untyped-call]
    straps = [
        BumbleHeartRateStrap(link, f"{prefix}:00:00:00:00:{i:02X}", HeartRateStrap(f"s{i}", seed=i), 0.05)
        for i in range(n)
    ]
    for s in straps:
        await s.start()
    return link, straps


async def _bleak_path(n: int, seconds: float) -> float:
    from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
    from gateway.ble.source import BleakSource, BleSettings

    link, straps = await _started_straps(n, "F6")
    source = BleakSource(
        BleSettings(allow=frozenset(s.address for s in straps), max_connections=n),
        b"k" * 32,
        {"central": BumbleCentral(link)},
        BumbleScanner,
        BumbleClient,
    )
    got = [0]

    async def submit(_f: Any) -> None:
        got[0] += 1

    task = asyncio.create_task(source.run(submit))
    await asyncio.sleep(3.0)  # everyone connected and subscribed
    start = got[0]
    await asyncio.sleep(seconds)
    rate = (got[0] - start) / seconds
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for s in straps:
        await s.stop()
    return rate


async def _bumble_only(n: int, seconds: float) -> float:
    from bumble.controller import Controller
    from bumble.core import UUID
    from bumble.device import Device, Peer
    from bumble.hci import Address
    from bumble.host import Host
    from bumble.transport.common import AsyncPipeSink

    link, straps = await _started_straps(n, "F7")
    c = Controller("central", link=link, public_address="C0:00:00:00:00:09")
    central = Device(name="central", address=Address("C0:00:00:00:00:09"), host=Host(c, AsyncPipeSink(c)))
    await central.power_on()
    got = [0]
    for s in straps:
        conn = await central.connect(Address(s.address))
        peer = Peer(conn)
        await peer.discover_services()
        for svc in peer.services:
            await svc.discover_characteristics()
        (hrm,) = peer.get_characteristics_by_uuid(UUID("2A37"))
        await peer.subscribe(hrm, lambda _v: got.__setitem__(0, got[0] + 1))
    await asyncio.sleep(0.5)
    start = got[0]
    await asyncio.sleep(seconds)
    rate = (got[0] - start) / seconds
    for s in straps:
        await s.stop()
    return rate


def _quiet_teardown() -> None:
    """Bumble resolves a pending HCI response after its link is gone at teardown; that is not a result."""
    loop = asyncio.get_running_loop()

    def handler(lp: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        if not isinstance(ctx.get("exception"), asyncio.InvalidStateError):
            lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)


def bench_ble(n: int = 20, seconds: float = 5.0) -> tuple[Any, dict[str, Any]]:
    import logging

    logging.getLogger("bumble").setLevel(logging.ERROR)
    ours = asyncio.run(_bleak_path(n, seconds))
    bare = asyncio.run(_bumble_only(n, seconds))
    expected = n / 0.05
    detail = {
        "devices": n,
        "notify_hz_per_device": 20,
        "offered_per_s": expected,
        "ours_per_s": round(ours, 1),
        "bumble_only_per_s": round(bare, 1),
    }
    return Result(
        "ble_emulated",
        ours,
        "notifications/s",
        bare,
        f"bare Bumble central, {n} straps at 20 Hz",
        ours / bare if bare else 0.0,
        f"sustain all {n} devices (>= 0.9x Bumble alone)",
        ours >= 0.9 * bare,
    ), detail
