"""The staff dashboard: static HTML/JS/CSS (no build step) and one live event stream.

The page asks for a bearer token once and sends it on every call, the event stream included (read with
``fetch``, since ``EventSource`` cannot send headers), so the dashboard has no anonymous door of its own.
Each event is one snapshot: devices, throughput and backlog, recent batches and the alarms, computed here so
that ``tiyi status`` and the page agree on what an alarm means.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from gateway.clock import monotonic, wall_ms
from gateway.journal import BATCH_QUEUE

STATIC = Path(__file__).parent / "static"
EVENT_INTERVAL_S = 1.0  # a reading shows within this (plus the ingest linger) of being journaled
SILENT_AFTER_S = 60.0  # a device that sent readings and then nothing for this long raises an alarm
DISK_LOW_FRACTION = 0.10  # free space below this share of the journal's file system raises an alarm
CLOCK_JUMP_ALARM_S = 600.0  # a wall-clock jump stays on the dashboard this long
KEY_CHECK_S = 300.0  # how often the chain's registry is asked whether our signing key is registered
KEY_CHECK_TIMEOUT_S = 15.0


@dataclass
class LiveState:
    """What the event stream remembers between snapshots (rates, the last clock jump, the key check)."""

    last: tuple[float, int, int] | None = None  # (monotonic, records journaled, records delivered)
    clock_jumps: int = 0
    clock_jump_at: float | None = None
    key_status: str = "unknown"  # registered, not registered, unknown (no chain, or it could not be asked)
    key_checked_at: float | None = None
    rates: dict[str, float] = field(default_factory=lambda: {"in": 0.0, "out": 0.0})
    started: float = field(default_factory=monotonic)  # the API (and with it the gateway) started
    listed: dict[str, float] = field(default_factory=dict)  # paired device id → when first listed unheard
    looked: bool = False  # a snapshot has listed the devices before (else a paired device counts from the start)


def mount(app: FastAPI, api_state: Any, auth: list[Any], prefix: str) -> None:
    """The page at ``/``, its files at ``/static``, and ``{prefix}/events`` (bearer token required)."""
    live = LiveState()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get(
        f"{prefix}/events",
        responses={200: {"content": {"text/event-stream": {}}, "description": "one JSON snapshot per event"}},
        dependencies=auth,
    )
    async def events(request: Request, once: bool = False) -> StreamingResponse:
        """Server-sent events: a snapshot every second (``once``: just one, then the stream ends)."""

        async def stream() -> AsyncIterator[str]:
            while True:
                yield "data: " + json.dumps(await snapshot(api_state, live)) + "\n\n"
                if once or await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_INTERVAL_S)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def snapshot(api_state: Any, live: LiveState) -> dict[str, Any]:
    """One view of the gateway, as the dashboard and ``tiyi status`` show it."""
    from gateway.api import list_devices, readiness

    gw = api_state.gateway
    stats = await gw.worker.call(gw.journal.stats)
    batches = await gw.worker.call(gw.journal.batches.batch_page, None, 10)
    ready = await readiness(api_state)
    m = gw.metrics
    now = monotonic()
    if live.last is not None and now > live.last[0]:
        dt = now - live.last[0]
        live.rates = {"in": (m.records - live.last[1]) / dt, "out": (m.records_delivered - live.last[2]) / dt}
    live.last = (now, m.records, m.records_delivered)
    await _check_key(api_state, live, now)
    devices = [d.model_dump() for d in list_devices(api_state)]
    open_anchors = sum(n for s, n in stats.anchors.items() if s not in ("final", "failed"))
    return {
        "gateway": gw.cfg.gateway_id,
        "t": wall_ms(),
        "ready": ready.model_dump(),
        "throughput": {
            "records_in_per_s": round(live.rates["in"], 2),
            "records_out_per_s": round(live.rates["out"], 2),
        },
        "backlog": {
            "unacknowledged_records": stats.undelivered,
            "unpublished_batches": stats.unpublished_batches,
            "open_anchors": open_anchors,
            "journal_records": stats.records,
            "journal_bytes": stats.file_bytes,
        },
        "devices": devices,
        "batches": [
            {
                "batch": b.batch,
                "first_seq": b.first_seq,
                "last_seq": b.last_seq,
                "anchor": b.anchor_state,
                "tx": None if b.tx_hash is None else "0x" + b.tx_hash.hex(),
                "proof": f"/api/v1/proofs/{b.first_seq}",
            }
            for b in batches
        ],
        "alarms": alarms(api_state, live, ready.model_dump(), devices, now),
    }


def alarms(
    api_state: Any, live: LiveState, ready: dict[str, Any], devices: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """Each alarm: a stable code (the docs explain each), and what it is about."""
    gw = api_state.gateway
    out: list[dict[str, Any]] = []
    if ready["broker"] == "down":
        out.append({"code": "broker_down"})
    if ready["chain"] == "down":
        out.append({"code": "chain_down"})
    with contextlib.suppress(OSError):
        disk = shutil.disk_usage(gw.cfg.state_dir)
        if disk.free < disk.total * DISK_LOW_FRACTION or gw.health.last_error == "journal: disk full":
            out.append({"code": "disk_filling", "free_bytes": disk.free})
    silent = silent_devices(devices, live, wall_ms(), now)
    if silent:
        out.append({"code": "device_silent", "devices": silent})
    if gw.metrics.clock_jumps > live.clock_jumps:
        live.clock_jumps, live.clock_jump_at = gw.metrics.clock_jumps, now
    if live.clock_jump_at is not None and now - live.clock_jump_at < CLOCK_JUMP_ALARM_S:
        out.append({"code": "clock_jump", "count": live.clock_jumps})
    if live.key_status == "not registered":
        out.append({"code": "key_not_registered"})
    return out


def silent_devices(devices: list[dict[str, Any]], live: LiveState, t_ms: int, now: float) -> list[str]:
    """Devices silent for ``SILENT_AFTER_S``: heard since start and then quiet, or paired and never heard since
    start (counted from the start, or from when a device paired later was first listed)."""
    out = []
    for d in devices:
        last = d["last_reading"]
        if last is not None:
            live.listed.pop(d["id"], None)
            if t_ms - last["t"] > SILENT_AFTER_S * 1000:
                out.append(d["id"])
        elif d["paired"]:
            since = live.listed.setdefault(d["id"], now if live.looked else live.started)
            if now - since > SILENT_AFTER_S:
                out.append(d["id"])
    paired = {d["id"] for d in devices if d["paired"]}
    for gone in [k for k in live.listed if k not in paired]:  # forgotten devices are not tracked any longer
        del live.listed[gone]
    live.looked = True
    return out


async def _check_key(api_state: Any, live: LiveState, now: float) -> None:
    """Ask the batch chain's registry, now and then, whether the key we sign with is the gateway's current one."""
    if live.key_checked_at is not None and now - live.key_checked_at < KEY_CHECK_S:
        return
    live.key_checked_at = now
    gw = api_state.gateway
    targets = [t for t in gw.anchoring.targets if t.queue == BATCH_QUEUE]
    if not targets:
        live.key_status = "unknown"
        return
    from edge.sm2 import load_public_key_pem

    ours = load_public_key_pem(api_state.public_key_pem).public_key.point[1:]
    try:
        ask = asyncio.get_running_loop().run_in_executor(None, targets[0].chain.gateway, gw.cfg.gateway_id)
        entry = await asyncio.wait_for(ask, KEY_CHECK_TIMEOUT_S)  # a hung node must not stall the dashboard
    except Exception:  # a chain that cannot be asked is the chain_down alarm's business, not this one's
        live.key_status = "unknown"
        return
    current = None if entry is None else entry.current
    live.key_status = "registered" if current is not None and current.key == ours else "not registered"
