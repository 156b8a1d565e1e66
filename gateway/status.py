"""``tiyi status``: one screen for an operator over SSH.

With ``[api]`` configured it reads one snapshot from the running gateway (the same one the dashboard shows);
otherwise, or when the gateway does not answer, it reads the journal directly and says that broker and chain
are unknown. Exit status: 0 when the gateway is ready and raises no alarm, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError

TOKEN_ENV = "TIYI_API_TOKEN"  # noqa: S105 (the name of the variable, not a token)
MAX_DEVICES_SHOWN = 12
MAX_SNAPSHOT_BYTES = 8 << 20  # a reply larger than this is not a snapshot


def from_api(cfg: GatewayConfig, token: str, timeout: float = 5) -> dict[str, Any]:
    assert cfg.api is not None
    host = "127.0.0.1" if cfg.api.listen in ("0.0.0.0", "::", "") else cfg.api.listen  # noqa: S104
    scheme = "https" if cfg.api.tls else "http"
    req = urllib.request.Request(  # noqa: S310 (http or https, chosen above)
        f"{scheme}://{host}:{cfg.api.port}/api/v1/events?once=true", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_pinned(cfg)) as r:  # noqa: S310
            body = r.read(MAX_SNAPSHOT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise GatewayError(f"the gateway's API refused the status request ({exc.code}): check the token") from None
    text = body.decode("utf-8", "replace")
    if len(body) > MAX_SNAPSHOT_BYTES or not text.startswith("data: "):
        raise GatewayError("the gateway's API sent something that is not a status snapshot")
    snap: dict[str, Any] = json.loads(text[len("data: ") :])
    snap["source"] = f"API on port {cfg.api.port}"
    return snap


def _pinned(cfg: GatewayConfig) -> ssl.SSLContext | None:
    """With HTTPS, trust exactly the certificate the gateway is configured to serve (it is read from the same
    configuration on the same machine), whoever issued it; the host name is not checked, since the API is
    reached here by address."""
    if cfg.api is None or cfg.api.cert_file is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.api.cert_file))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


def from_journal(cfg: GatewayConfig) -> dict[str, Any]:
    from gateway.journal import SqliteJournal

    journal = SqliteJournal.open(cfg.journal_path, cfg.gateway_id)
    try:
        st = journal.stats()
        batches = journal.batches.batch_page(None, 1)
    finally:
        journal.close()
    return {
        "gateway": cfg.gateway_id,
        "source": "journal (no API answer: broker and chain unknown)",
        "ready": {"broker": "unknown", "chain": "unknown", "journal": "ok", "radio": "unknown", "ready": False},
        "backlog": {
            "unacknowledged_records": st.undelivered,
            "unpublished_batches": st.unpublished_batches,
            "open_anchors": sum(n for s, n in st.anchors.items() if s not in ("final", "failed")),
            "journal_records": st.records,
            "journal_bytes": st.file_bytes,
        },
        "batches": [
            {"batch": b.batch, "first_seq": b.first_seq, "last_seq": b.last_seq, "anchor": b.anchor_state, "tx": None}
            for b in batches
        ],
        "devices": [],
        "alarms": [],
    }


def render(snap: dict[str, Any], now_ms: int) -> str:
    r, b = snap["ready"], snap["backlog"]
    lines = [
        f"gateway  {snap['gateway']}   (from the {snap['source']})",
        f"broker   {r['broker']}",
        f"chain    {r['chain']}",
        f"journal  {r['journal']}: {b['journal_records']} records, {b['unacknowledged_records']} unacknowledged, "
        f"{b['unpublished_batches']} batches unpublished, {b['open_anchors']} anchors open, "
        f"{b['journal_bytes'] / 1e6:.1f} MB",
    ]
    if snap["batches"]:
        last = snap["batches"][0]
        tx = f" (tx {last['tx'][:18]}…)" if last.get("tx") else ""
        anchor = last["anchor"] or "none"
        lines.append(f"batch    #{last['batch']} seq {last['first_seq']}..{last['last_seq']}, anchor {anchor}{tx}")
    else:
        lines.append("batch    none yet")
    devices = snap["devices"]
    lines.append(
        f"devices  {len(devices)}" + ("" if snap["source"].startswith("API") else " (unknown without the API)")
    )
    for d in devices[:MAX_DEVICES_SHOWN]:
        last_r = d.get("last_reading")
        age = "" if not last_r else f", last reading {max(0, now_ms - last_r['t']) // 1000}s ago"
        battery = "" if d.get("battery") is None else f", battery {d['battery']}%"
        lines.append(f"  {d['id']:<20} {d['state']}{' (paired)' if d['paired'] else ''}{battery}{age}")
    if len(devices) > MAX_DEVICES_SHOWN:
        lines.append(f"  … and {len(devices) - MAX_DEVICES_SHOWN} more")
    alarms = snap["alarms"]
    lines.append("alarms   " + (", ".join(a["code"] for a in alarms) if alarms else "none"))
    return "\n".join(lines)


def status_main(config: Path, token_file: Path | None) -> int:
    cfg = load_config(config)
    token = os.environ.get(TOKEN_ENV, "")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatewayError(f"--token-file {token_file}: {exc.strerror}") from None
    snap = None
    if cfg.api is not None and token:
        try:
            snap = from_api(cfg, token)
        except (urllib.error.URLError, OSError, ValueError):
            snap = None  # not running, or not answering: the journal still tells the rest
    if snap is None:
        snap = from_journal(cfg)
    print(render(snap, int(time.time() * 1000)))
    return 0 if snap["ready"]["ready"] and not snap["alarms"] else 1
