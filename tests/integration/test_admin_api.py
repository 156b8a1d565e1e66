"""The admin API over real HTTP, on a gateway with a real Mosquitto and the in-process chain: every endpoint by
hand, the refusals (no token, a wrong one, a forged or oversized one), and schemathesis against its own OpenAPI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from anchoring.bundle import verify_bundle
from anchoring.trust import TrustPolicy
from edge.sm2 import load_public_key_pem
from gateway.api_tokens import TokenStore, add_token
from tests.integration.api_harness import RunningGateway

ADDRESS = re.compile(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}")
PROTECTED = [
    ("GET", "/api/v1/ready"),
    ("GET", "/api/v1/devices"),
    ("POST", "/api/v1/devices"),
    ("DELETE", "/api/v1/devices/ble-000000000000"),
    ("GET", "/api/v1/batches"),
    ("GET", "/api/v1/proofs/1"),
    ("GET", "/api/v1/config"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/events?once=true"),
]


def test_health_is_the_only_anonymous_endpoint(gw: RunningGateway) -> None:
    assert requests.get(gw.base + "/api/v1/health", timeout=5).json() == {"status": "ok"}
    forged = [
        {},  # no token
        {"Authorization": "Bearer tiyi_wrong"},
        {"Authorization": "Bearer " + gw.token[:-1]},  # truncated
        {"Authorization": "Bearer " + gw.token + "x"},  # extended
        {"Authorization": "Bearer " + "a" * 10_000},  # oversized
        {"Authorization": "Basic " + gw.token},  # another scheme
        {"Authorization": gw.token},  # no scheme
        {"Authorization": "Bearer " + TokenStore.load(gw.cfg.api_token_path).hashes[0][1].hex()},  # the stored hash
    ]
    for method, path in PROTECTED:
        for headers in forged:
            r = requests.request(method, gw.base + path, headers=headers, json={"entry": "name:x"}, timeout=5)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "detail" in r.json()


def test_a_token_added_while_running_works_at_once_and_a_removed_one_stops(gw: RunningGateway) -> None:
    from gateway.api_tokens import remove_token

    other = add_token(gw.cfg.api_token_path, "front-desk")
    assert gw.get("/api/v1/devices", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    assert remove_token(gw.cfg.api_token_path, "front-desk")
    assert gw.get("/api/v1/devices", headers={"Authorization": f"Bearer {other}"}).status_code == 401
    assert gw.get("/api/v1/devices").status_code == 200


def test_a_damaged_token_file_refuses_everyone(gw: RunningGateway) -> None:
    path = gw.cfg.api_token_path
    path.write_text(path.read_text() + "intruder plaintext-token\n")
    r = gw.get("/api/v1/devices")
    assert r.status_code == 503 and "token file" in r.json()["detail"]


def test_every_endpoint_by_hand(gw: RunningGateway) -> None:
    gw.feed(12)
    gw.feed(3, dev="hr-2")
    gw.settle()

    ready = gw.get("/api/v1/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "broker": "ok",
        "chain": "ok",
        "journal": "ok",
        "radio": "not configured",
    }

    devices = {d["id"]: d for d in gw.get("/api/v1/devices").json()}
    assert devices["hr-1"]["records"] == 12 and devices["hr-2"]["records"] == 3
    assert devices["hr-1"]["last_reading"]["kind"] == "heart_rate"
    assert devices["hr-1"]["last_reading"]["seq"] == 12
    assert devices["hr-1"]["state"] == "seen" and not devices["hr-1"]["paired"]

    # Pairing by address: the response, and every later listing, names the device by its pseudonym only.
    r = requests.post(
        gw.base + "/api/v1/devices", json={"entry": "c0:ff:ee:00:00:01", "model": "strap"}, headers=gw.auth, timeout=5
    )
    assert r.status_code == 201 and r.json()["id"].startswith("ble-")
    pid = r.json()["id"]
    listing = gw.get("/api/v1/devices")
    assert not ADDRESS.search(listing.text)
    assert {d["id"]: d for d in listing.json()}[pid]["paired"]
    # A bad entry: a clear 422 naming the problem; an unknown id to forget: 404.
    for entry in ("not-an-address", "c0:ff:ee:00:00", "irk:abc", "vendor:0x12345", "name:", "x" * 81):
        bad = requests.post(gw.base + "/api/v1/devices", json={"entry": entry}, headers=gw.auth, timeout=5)
        assert bad.status_code == 422 and bad.json()["detail"].startswith("body.entry:"), (entry, bad.text)
    missing = requests.post(gw.base + "/api/v1/devices", json={}, headers=gw.auth, timeout=5)
    assert missing.status_code == 422 and "entry" in missing.json()["detail"]
    assert requests.delete(gw.base + "/api/v1/devices/ble-nope", headers=gw.auth, timeout=5).status_code == 404
    assert requests.delete(gw.base + f"/api/v1/devices/{pid}", headers=gw.auth, timeout=5).status_code == 204
    assert pid not in {d["id"] for d in gw.get("/api/v1/devices").json()}

    batches = gw.get("/api/v1/batches").json()
    assert [b["batch"] for b in batches] == sorted((b["batch"] for b in batches), reverse=True)
    assert batches[-1]["batch"] == 1 and batches[-1]["first_seq"] == 1
    assert all(b["anchor"]["state"] == "final" and b["anchor"]["tx"].startswith("0x") for b in batches)
    assert gw.get("/api/v1/batches?limit=1&before=2").json()[0]["batch"] == 1
    assert gw.get("/api/v1/batches?limit=0").status_code == 422
    assert gw.get("/api/v1/batches?limit=abc").status_code == 422

    # The proof link of a batch is a bundle that verifies on its own.
    bundle = gw.get(batches[0]["proof"]).json()
    key = load_public_key_pem((gw.cfg.state_dir / "keys" / "gateway.pub").read_text())
    result = verify_bundle(bundle, TrustPolicy(pinned={"gw-api": [key]}))
    assert result.ok, result
    assert gw.get("/api/v1/proofs/99999").status_code == 404
    assert gw.get("/api/v1/proofs/0").status_code == 422

    config = gw.get("/api/v1/config")
    assert config.json()["gateway_id"] == "gw-api" and config.json()["api"]["listen"] == "127.0.0.1"

    metrics = gw.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(metrics.text)}
    assert {"tiyi_records_journaled", "tiyi_head_batch", "tiyi_anchor_jobs"} <= names

    event = gw.get("/api/v1/events?once=true")
    assert event.headers["content-type"].startswith("text/event-stream")
    assert event.text.startswith("data: ") and event.text.endswith("\n\n")
    snap = json.loads(event.text[len("data: ") :])
    assert snap["backlog"]["journal_records"] == 15 and {d["id"] for d in snap["devices"]} == {"hr-1", "hr-2"}
    codes = {a["code"] for a in snap["alarms"]} - {"disk_filling"}  # that one depends on the machine's disk
    assert codes == {"key_not_registered"}  # the in-process chain never registered our key

    docs = requests.get(gw.base + "/openapi.json", timeout=5).json()
    assert docs["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_config_view_redacts_credentials_and_addresses() -> None:
    from dataclasses import replace

    from gateway.api import redacted
    from gateway.config import BleConfig, GatewayConfig, MqttConfig

    cfg = replace(
        GatewayConfig(),
        mqtt=MqttConfig(url="mqtts://gym:hunter2@broker.example:8883", username="gym"),
        ble=BleConfig(allow=frozenset({"C0:FF:EE:00:00:01", "name:Polar H10", "irk:" + "ab" * 16})),
    )
    out = redacted(cfg)
    text = repr(out)
    assert "hunter2" not in text and "C0:FF:EE" not in text and "abab" not in text
    assert out["mqtt"]["url"] == "mqtts://***@broker.example:8883"
    assert "name:Polar H10" in out["ble"]["allow"]


def test_schemathesis_against_its_own_openapi(gw: RunningGateway) -> None:
    """Every operation of /openapi.json, with generated inputs (bounded: 15 examples each, no example database):
    no server error, every status and body as documented. Run by hand over the API rather than through
    schemathesis's pytest plugin, whose lazy fixtures this pytest does not support."""
    gw.feed(6)
    gw.settle()
    schema = schemathesis.openapi.from_url(gw.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11  # with GET /api/v1/audiences
    # The event stream never ends unless asked for one event: it is tested by hand (below) instead.
    operations = [op for op in operations if op.path != "/api/v1/events"]
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=gw.auth, timeout=10)

        check()


def test_tiyi_status_reads_the_api_or_else_the_journal(
    gw: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import main

    gw.feed(7)
    gw.settle()
    assert gw.cfg.api is not None
    conf = tmp_path / "status.toml"
    conf.write_text(f'[gateway]\nid = "gw-api"\nstate_dir = "{tmp_path}"\n[api]\nport = {gw.cfg.api.port}\n')
    token_file = tmp_path / "token"
    token_file.write_text(gw.token + "\n")

    code = main(["status", "--config", str(conf), "--token-file", str(token_file)])
    out = capsys.readouterr().out
    assert "from the API" in out and "broker   ok" in out and "chain    ok" in out
    assert "7 records, 0 unacknowledged" in out and "anchor final (tx 0x" in out
    assert "hr-1" in out and "alarms   key_not_registered" in out
    assert code == 1  # an alarm is raised

    # No token: the journal alone (the gateway still running), broker and chain unknown.
    monkeypatch.delenv("TIYI_API_TOKEN", raising=False)
    assert main(["status", "--config", str(conf)]) == 1
    out = capsys.readouterr().out
    assert "from the journal" in out and "broker   unknown" in out and "7 records" in out

    # A wrong token is a clear refusal, not a silent fallback.
    token_file.write_text("tiyi_wrong\n")
    assert main(["status", "--config", str(conf), "--token-file", str(token_file)]) == 1
    err = capsys.readouterr().err
    assert "refused the status request (401)" in err and "Traceback" not in err
