"""The real `tiyi` command against nodes and brokers that are down or locked: one line, an exit code, no
traceback; and `tiyi verify` reaching a private-CA TLS broker with a client certificate and a password."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.services import free_port
from edge import cbor
from edge.topics import Topics
from gateway.cli import EXIT_USAGE
from gateway.config import parse_config
from gateway.mqtt import PahoPublisher
from gateway.runtime import broker_settings
from tests.conftest import ROOT
from tests.integration.private_broker import Pki, make_pki, mosquitto_with, password_file, secret
from tests.unit.anchoring.test_bundle import bundle_for


def tiyi(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")


def one_line_error(r: subprocess.CompletedProcess[str], code: int, *fragments: str, service: bool = False) -> str:
    """Exactly one line of error (a service, `tiyi run`, also logs its progress at INFO around it)."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if not (service and LOG_LINE.match(x))]
    assert len(lines) == 1, r.stderr
    assert r.returncode == code, (r.returncode, r.stderr)
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_verify_against_a_broker_that_is_down(closed_port: int) -> None:
    t = time.monotonic()
    r = tiyi("verify", "--broker", f"mqtt://127.0.0.1:{closed_port}", "--tofu")
    one_line_error(r, EXIT_USAGE, "tiyi verify:", "Connection refused")
    assert time.monotonic() - t < 20  # gives up after a few refused tries, not after the full 30 s wait


def test_chain_commands_against_a_node_that_is_down(closed_port: int, tmp_path: Path) -> None:
    rpc = f"http://127.0.0.1:{closed_port}"
    contract = "0x" + "11" * 20
    r = tiyi("chain", "show", "--rpc", rpc, "--contract", contract, "--gateway", "gw-1")
    one_line_error(r, EXIT_USAGE, "tiyi chain:", "unreachable")
    r = tiyi(
        "chain",
        "revoke",
        "--rpc",
        rpc,
        "--contract",
        contract,
        "--gateway",
        "gw-1",
        "--operator-key",
        tmp_path / "op.key",
    )
    one_line_error(r, EXIT_USAGE, "tiyi chain:", "unreachable")


def test_verify_a_proof_against_a_node_that_is_down(closed_port: int, tmp_path: Path) -> None:
    bundle = tmp_path / "proof.json"
    bundle.write_text(json.dumps(bundle_for(3)))
    r = tiyi(
        "verify",
        "--bundle",
        bundle,
        "--tofu",
        "--rpc",
        f"http://127.0.0.1:{closed_port}",
        "--contract",
        "0x" + "11" * 20,
    )
    one_line_error(r, EXIT_USAGE, "tiyi verify:", "unreachable")


def test_proof_export_of_a_record_not_batched_yet(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[gateway]\nid = "gw-1"\nstate_dir = "{tmp_path / "state"}"\n')
    r = tiyi("proof", "export", "--config", cfg, "--seq", "1")
    one_line_error(r, 1, "tiyi proof:", "not in any closed batch")


def test_run_against_a_chain_node_that_is_down(closed_port: int, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert tiyi("keys", "generate", "--dir", state / "keys").returncode == 0
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw-1"\nstate_dir = "{state}"\n'
        f'[chain]\nkind = "evm"\nurl = "http://127.0.0.1:{closed_port}"\n'
    )
    r = tiyi("run", "--config", cfg, "--duration", "5")
    one_line_error(r, EXIT_USAGE, "tiyi run:", "unreachable", service=True)


# ------------------------------------------------------------------ TLS with a private CA


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Pki, Path]]:
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d / "pki")
    port = free_port()
    pw = password_file(d / "passwd", {"platform": "correct horse", "gw-tls": "gw secret"})
    conf = (
        f"listener {port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        f"require_certificate true\nallow_anonymous false\npassword_file {pw}\npersistence false\n"
    )
    with mosquitto_with(conf, d, port):
        yield port, pki, d


def _client_args(pki: Pki, pw: Path) -> list[str | Path]:
    return [
        "--tofu",
        "--cert-file",
        pki.client_cert,
        "--key-file",
        pki.client_key,
        "--username",
        "platform",
        "--password-file",
        pw,
    ]


def test_verify_reaches_a_private_ca_broker_with_the_ca_file(tls_broker: tuple[int, Pki, Path], tmp_path: Path) -> None:
    port, pki, _ = tls_broker
    # The gateway side publishes through the same settings function, from its [mqtt] section.
    cfg = parse_config(
        {
            "gateway": {"id": "gw-tls"},
            "mqtt": {
                "url": f"mqtts://127.0.0.1:{port}",
                "username": "gw-tls",
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
                "password_file": str(secret(tmp_path / "gw.pw", "gw secret")),
            },
        }
    )

    async def publish_status() -> None:
        pub = PahoPublisher(broker_settings(cfg))
        await pub.start()
        try:
            await pub.wait_connected(10)
            status = cbor.dumps({"state": "online", "t": 1, "gw": "gw-tls"})
            await (await pub.publish(Topics(cfg.region, "gw-tls").status, status, 1, True))
        finally:
            await pub.stop()

    asyncio.run(publish_status())
    pw = secret(tmp_path / "platform.pw", "correct horse")
    r = tiyi(
        "verify", "--broker", f"mqtts://127.0.0.1:{port}", "--ca-file", pki.ca, *_client_args(pki, pw), "--idle", "1"
    )
    assert "Traceback" not in r.stderr and r.returncode != EXIT_USAGE, r.stderr
    assert "1 messages read" in r.stdout, (r.stdout, r.stderr)


def test_verify_without_the_ca_file_does_not_trust_the_broker(
    tls_broker: tuple[int, Pki, Path], tmp_path: Path
) -> None:
    port, pki, _ = tls_broker
    pw = secret(tmp_path / "platform.pw", "correct horse")
    t = time.monotonic()
    r = tiyi("verify", "--broker", f"mqtts://127.0.0.1:{port}", *_client_args(pki, pw))
    one_line_error(r, EXIT_USAGE, "certificate verify failed")
    assert time.monotonic() - t < 15  # an untrusted certificate is not retried for 30 s


def test_verify_with_a_wrong_password_is_refused(tls_broker: tuple[int, Pki, Path], tmp_path: Path) -> None:
    port, pki, _ = tls_broker
    pw = secret(tmp_path / "platform.pw", "wrong")
    r = tiyi("verify", "--broker", f"mqtts://127.0.0.1:{port}", "--ca-file", pki.ca, *_client_args(pki, pw))
    line = one_line_error(r, EXIT_USAGE, "refused the connection")
    assert "Not authorized" in line or "Bad user name or password" in line
    assert "wrong" not in line


def test_a_password_file_others_can_read_is_refused_with_the_fix(
    tls_broker: tuple[int, Pki, Path], tmp_path: Path
) -> None:
    port, pki, _ = tls_broker
    pw = secret(tmp_path / "platform.pw", "correct horse", mode=0o644)
    r = tiyi("verify", "--broker", f"mqtts://127.0.0.1:{port}", "--ca-file", pki.ca, *_client_args(pki, pw))
    one_line_error(r, EXIT_USAGE, "--password-file", f"chmod 600 {pw}")
    assert "correct horse" not in r.stderr


def test_tls_files_with_a_plain_mqtt_url_are_an_error(tls_broker: tuple[int, Pki, Path]) -> None:
    port, pki, _ = tls_broker
    r = tiyi("verify", "--broker", f"mqtt://127.0.0.1:{port}", "--ca-file", pki.ca, "--tofu")
    one_line_error(r, EXIT_USAGE, "--ca-file", "mqtts://")
