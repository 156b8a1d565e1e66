"""`tiyi demo` as `make demo` runs it, and against external services."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import Ganache, Mosquitto

pytestmark = pytest.mark.slow


def test_demo_with_no_arguments_verifies_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "3", "--speed", "5"]) == 0
    out = capsys.readouterr().out
    assert "embedded amqtt" in out and "in-process EVM" in out
    assert "RESULT: every record verified" in out


def test_demo_against_a_real_broker_and_chain(mosquitto: Mosquitto, ganache: Ganache,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--duration", "3", "--speed", "5", "--devices", "3", "--broker", mosquitto.url,
                 "--chain", ganache.url, "--region", "macao", "--gateway-id", "gw-mo-1"]) == 0
    out = capsys.readouterr().out
    assert "tiyi/v1/macao/gw-mo-1/#" in out and "chain id 20200" in out
    assert "RESULT: every record verified" in out


def test_demo_over_emulated_bluetooth(capsys: pytest.CaptureFixture[str]) -> None:
    """The straps are Bumble peripherals; the gateway collects them through its real bleak code path."""
    assert main(["demo", "--ble", "--duration", "3", "--speed", "4", "--devices", "4"]) == 0
    out = capsys.readouterr().out
    assert "collected through bleak" in out and "RESULT: every record verified" in out


def test_sim_run_a_scenario_with_ground_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cbor2

    truth = tmp_path / "truth.cbor"
    assert main(["sim", "run", "clinic", "--duration", "3", "--speed", "30", "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "scenario 'rehab clinic': 16 devices" in out and "RESULT: every record verified" in out
    data = io.BytesIO(truth.read_bytes())
    items = []
    while data.tell() < len(data.getvalue()):
        items.append(cbor2.load(data))
    assert len(items) > 50 and {i[1] for i in items} >= {0x2A37, 0x2A5F}


def test_sim_run_chaos_over_emulated_bluetooth(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", "chaos", "--ble", "--duration", "3", "--speed", "5"]) == 0
    out = capsys.readouterr().out
    assert "RESULT: every record verified" in out
    assert "malformed 0" not in out  # corrupt frames arrived, were counted, and nothing else was lost
