"""Power cuts: kill -9 the gateway mid-stream, restart it, and the platform still gets every record.

Real processes throughout: the gateway runs as `tiyi run` in its own process, Mosquitto and ganache
run as their own processes, and the verifier subscribes from this one.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anchoring.evm import EvmChainClient
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.journal import SqliteJournal
from gateway.keys import generate_keypair, load_signer
from tests.conftest import ROOT, Ganache, Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow
KILLS = 20  # at random points, from mid-startup to mid-batch
STARTUP_KILL = 0.25  # the share of kills at a random moment of start-up, each followed by one after progress


def write_config(path: Path, state: Path, mqtt_url: str, chain_url: str, contract: str) -> None:
    path.write_text(f"""
[gateway]
id = "gw-kill"
region = "macao"
state_dir = "{state}"

[mqtt]
url = "{mqtt_url}"

[batch]
max_records = 100
max_age_s = 1.0

[chain]
kind = "evm"
url = "{chain_url}"
contract = "{contract}"
poll_s = 0.2

[sim]
devices = 5
interval_s = 0.02
""")


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "-v", "run", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


STARTED = " started (region "  # logged once `tiyi run` handles SIGTERM and its stages run


def wait_started(proc: subprocess.Popen[bytes], log: Path, count: int, timeout: float = 120) -> None:
    """Until the log holds ``count`` start lines (the newest gateway's is the last), or the process exits."""
    deadline = time.monotonic() + timeout
    while log.read_text().count(STARTED) < count:
        assert proc.poll() is None, f"the gateway exited ({proc.returncode}) before it started"
        assert time.monotonic() < deadline, f"the gateway did not start within {timeout:g} s"
        time.sleep(0.05)  # polling the log for a condition, not waiting a guessed time


PROGRESS = " closed: seq "  # a batch closed: records journaled since the gateway started, and going out


def wait_progress(proc: subprocess.Popen[bytes], log: Path, since: int, timeout: float = 120) -> None:
    """Until the gateway whose log starts at offset ``since`` closed a batch (or exits): it journaled records
    and publishes them, so a kill now lands mid-stream. Killed at a fixed delay instead, every gateway of a
    starved run could die while still starting (seen: no gateway published anything, and `tiyi verify`,
    having heard nothing for 60 s, gave up)."""
    deadline = time.monotonic() + timeout
    while PROGRESS not in log.read_text()[since:]:
        assert proc.poll() is None, f"the gateway exited ({proc.returncode}) before it closed a batch"
        assert time.monotonic() < deadline, f"the gateway closed no batch within {timeout:g} s"
        time.sleep(0.05)


def wait_listening(proc: subprocess.Popen[str]) -> str:
    """Until `tiyi verify` says it is subscribed (or exits); what it printed meanwhile."""
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("listening on"):
            break
    return "".join(seen)


def test_kill_9_mid_stream_loses_nothing(mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path) -> None:
    seed = int(os.environ.get("TIYI_KILL9_SEED") or random.randrange(1 << 30))  # replay a failure with its seed
    print(f"kill -9 test seed {seed}")
    rng = random.Random(seed)
    state = tmp_path / "state"
    generate_keypair(state / "keys")
    deployer = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    contract = "0x" + deployer.contract.hex()
    config = tmp_path / "gateway.toml"
    write_config(config, state, mosquitto.url, ganache.url, contract)
    log = tmp_path / "gateway.log"
    key = load_public_key_pem((state / "keys" / "gateway.pub").read_text())

    # The platform's own tool, live: subscribes, verifies every proof and checks anchors on the chain.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    verify = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "verify",
            "--broker",
            mosquitto.url,
            "--rpc",
            ganache.url,
            "--contract",
            contract,
            "--key",
            str(state / "keys" / "gateway.pub"),
            "--require-complete",
            "--idle",
            "10",
            "--save",
            str(tmp_path / "capture.cbor"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    early = wait_listening(verify)  # records delivered before it subscribed would never reach it
    with Recorder(mosquitto.url, Topics("macao", "gw-kill")) as rec:
        startup = False
        for _ in range(KILLS):
            since = len(log.read_text()) if log.exists() else 0
            gw = start_gateway(config, log)
            # Now and then a kill at any moment of start-up (journal recovery, connecting, re-sending), but
            # never two in a row: the gateway after it runs until it made progress, so the stream moves on.
            startup = not startup and rng.random() < STARTUP_KILL
            if startup:
                time.sleep(rng.uniform(0.2, 2.0))
            else:
                wait_progress(gw, log, since)
                time.sleep(rng.uniform(0.0, 1.5))  # then anywhere in its stream: mid-batch, mid-anchor, ...
            gw.send_signal(signal.SIGKILL)
            gw.wait()
        started = log.read_text().count(STARTED)
        since = len(log.read_text())
        gw = start_gateway(config, log)
        wait_started(gw, log, started + 1)  # a SIGTERM before its handler exists kills a starting process
        wait_progress(gw, log, since)
        gw.send_signal(signal.SIGTERM)  # a clean stop drains: last batch closed, signed, anchored
        assert gw.wait(90) == 0, log.read_text()[-3000:]
        assert rec.wait_end(), "the stopped gateway's offline status never reached the recorder"
        report = rec.verify(key, EvmChainClient.reader(ganache.url, contract))

    journal = SqliteJournal.open(state / "journal.sqlite3", "gw-kill")
    committed = journal.records.next_seq - 1
    journal.close()
    print(report.summary())
    assert report.ok, report.summary() + "\n" + log.read_text()[-3000:]
    g = report.gateways["gw-kill"]
    # Every record the journal ever accepted reached the platform exactly once by seq, proven and anchored.
    assert committed > 500
    assert (g.first_seq, g.last_seq, g.records) == (1, committed, committed)
    assert g.records_in_verified_batches == committed
    assert g.anchors_verified == g.batches_verified
    out, _ = verify.communicate(timeout=60)
    out = early + out
    print(out)
    assert verify.returncode == 0, out
    assert "every record verified" in out and f"seq 1..{committed}" in out
    # The capture it saved verifies offline too.
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "verify",
            "--capture",
            str(tmp_path / "capture.cbor"),
            "--key",
            str(state / "keys" / "gateway.pub"),
            "--rpc",
            ganache.url,
            "--contract",
            contract,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    # No secret ever reaches a log: the SM2 private key (PEM body or raw scalar) or the chain account key.
    text = log.read_text() + out
    pem = (state / "keys" / "gateway.key").read_text()
    scalar = f"{load_signer(state / 'keys' / 'gateway.key').private_key.d:064x}"
    chain_key = (state / "keys" / "chain-account.key").read_text().strip()
    for secret in ("".join(pem.splitlines()[1:-1]), *pem.splitlines()[1:-1], scalar, scalar.upper(), chain_key):
        assert secret not in text
    seen = [t for t, _, _ in rec.messages if "/data/" in t]
    print(f"{len(seen)} data messages for {committed} records (re-sends after kills are allowed)")
