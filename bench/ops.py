"""Operations budgets (issue 18): `tiyi run` as its own process with the admin API and dashboard served and
300 simulated straps (one reading per second each).

- ``rss_300_devices_api``: peak RSS (VmHWM and sampled VmRSS) with the API serving, the event stream open
  and ``/metrics`` scraped; baseline: a bare Python process with paho and sqlite3 loaded.
- ``metrics_scrape_300``: wall time of one authenticated ``GET /metrics`` over HTTP (p95 of 40 scrapes);
  baseline: ``GET /api/v1/health`` on the same server (the HTTP round trip without the work).
- ``dashboard_update_p99``: for every reading that appears in the dashboard's event stream, the time from
  its gateway receive stamp to the event carrying it (p99 over all devices); baseline: the stream's 1 s
  period. What the browser adds to render it is not included (the browser test shows it live).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.result import Result
from bench.services import ROOT, Mosquitto, free_port
from bench.system import _bare_python_rss, _percentile, _proc_status


def _get(url: str, token: str | None) -> float:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
    return time.perf_counter() - t


def _watch_events(url: str, token: str, delays: list[float], stop: threading.Event) -> None:
    """Read the event stream; for each device's new reading, how long after its receive stamp it was sent."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    seen: dict[str, int] = {}
    with urllib.request.urlopen(req, timeout=30) as r:
        while not stop.is_set():
            line = r.readline()
            if not line.startswith(b"data: "):
                continue
            snap = json.loads(line[6:])
            for d in snap["devices"]:
                last = d.get("last_reading")
                if last and seen.get(d["id"]) != last["seq"]:
                    if d["id"] in seen:  # the first event shows old readings too: skip it
                        delays.append((snap["t"] - last["t"]) / 1000)
                    seen[d["id"]] = last["seq"]


def bench_ops(devices: int = 300, seconds: float = 25.0) -> tuple[list[Result], dict[str, Any]]:
    from gateway.api_tokens import add_token
    from gateway.keys import generate_keypair

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "broker").mkdir()
        broker = Mosquitto(free_port(), root / "broker")
        broker.start()
        try:
            state = root / "state"
            generate_keypair(state / "keys")
            port = free_port()
            token = add_token(state / "api-tokens", "bench")
            config = root / "gateway.toml"
            config.write_text(
                f'[gateway]\nid = "gw-ops"\nregion = "shenzhen"\nstate_dir = "{state}"\n'
                f'[mqtt]\nurl = "{broker.url}"\n[chain]\nkind = "none"\n'
                f"[sim]\ndevices = {devices}\ninterval_s = 1.0\n[api]\nport = {port}\n"
            )
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            delays: list[float] = []
            scrapes: list[float] = []
            health: list[float] = []
            stop = threading.Event()
            peak = 0
            try:
                time.sleep(6.0)  # start-up
                watcher = threading.Thread(
                    target=_watch_events, args=(base + "/api/v1/events", token, delays, stop), daemon=True
                )
                watcher.start()
                t0 = time.monotonic()
                while time.monotonic() - t0 < seconds:
                    scrapes.append(_get(base + "/metrics", token))
                    health.append(_get(base + "/api/v1/health", None))
                    peak = max(peak, _proc_status(proc.pid).get("VmRSS:", 0))
                    time.sleep(0.5)
                hwm = _proc_status(proc.pid).get("VmHWM:", 0)
                stop.set()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
        finally:
            broker.stop()
    mb = 1024 * 1024
    rss = max(peak, hwm)
    bare = _bare_python_rss()
    scrape_p95, health_p95 = _percentile(scrapes, 95) * 1000, _percentile(health, 95) * 1000
    upd = _percentile(delays, 99)
    detail = {
        "devices": devices,
        "seconds": seconds,
        "anchoring": "none",
        "peak_rss_bytes": rss,
        "scrapes": len(scrapes),
        "scrape_ms_p50": round(_percentile(scrapes, 50) * 1000, 1),
        "scrape_ms_p95": round(scrape_p95, 1),
        "update_s_p50": round(_percentile(delays, 50), 3),
        "update_s_p99": round(upd, 3),
        "update_s_max": round(max(delays, default=float("nan")), 3),
        "readings_seen": len(delays),
    }
    results = [
        Result(
            "rss_300_devices_api",
            rss / mb,
            "MB",
            bare / mb,
            "bare Python with paho and sqlite3",
            rss / bare,
            "<= 100 MB",
            rss <= 100 * mb,
        ),
        Result(
            "metrics_scrape_300",
            scrape_p95,
            "ms p95",
            health_p95,
            "GET /api/v1/health, same server",
            scrape_p95 / health_p95 if health_p95 else float("inf"),
            "< 50 ms",
            scrape_p95 < 50,
        ),
        Result("dashboard_update_p99", upd, "s", 1.0, "the event stream's period", upd / 1.0, "<= 2 s", upd <= 2),
    ]
    return results, detail
