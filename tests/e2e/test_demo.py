"""`tiyi demo` as `make demo` runs it, and against external services."""

from __future__ import annotations

import io
import re
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


def test_demo_against_a_real_broker_and_chain(
    mosquitto: Mosquitto, ganache: Ganache, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "demo",
                "--duration",
                "3",
                "--speed",
                "5",
                "--devices",
                "3",
                "--broker",
                mosquitto.url,
                "--chain",
                ganache.url,
                "--region",
                "macao",
                "--gateway-id",
                "gw-mo-1",
            ]
        )
        == 0
    )
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
    # A minute of scenario time: enough notifications per device for the corrupt ones to come round even
    # when refusals, renames, address rotations and link drops delay the connections on a loaded machine.
    assert main(["sim", "run", "chaos", "--ble", "--duration", "8", "--speed", "10"]) == 0
    out = capsys.readouterr().out
    assert "RESULT: every record verified" in out
    assert "malformed 0" not in out  # corrupt frames arrived, were counted, and nothing else was lost
    m = re.search(r"misbehaviour: (\d+) connections refused, \d+ renames, (\d+) private-address rotations", out)
    assert m is not None and int(m.group(1)) > 0 and int(m.group(2)) > 0  # (a bare "0 ..." would match "40 ...")


@pytest.mark.timeout(180)
def test_sim_run_with_devices_in_other_processes_attached_to_a_hub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Device processes attach to the gateway's emulated radio over WebSocket and TCP HCI transports."""
    scenario = tmp_path / "mix.toml"
    scenario.write_text(
        'name = "mix"\n[[devices]]\nmodel = "hr_strap"\ncount = 2\n'
        '[[devices]]\nmodel = "indoor_bike"\ncount = 1\n[[devices]]\nmodel = "watch"\ncount = 1\n'
    )
    for kind in ("ws", "tcp"):
        assert (
            main(
                [
                    "sim",
                    "run",
                    str(scenario),
                    "--ble",
                    "--hub",
                    kind,
                    "--processes",
                    "2",
                    "--duration",
                    "3",
                    "--speed",
                    "5",
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert f"devices in 2 processes attached to a {kind} hub" in out and "RESULT: every record verified" in out
        joined = int(out.split(" notifications joined")[0].rsplit("(", 1)[1])
        assert joined > 0  # the bike's split records crossed the sockets and were joined


def test_hub_without_the_radio_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", "chaos", "--hub", "tcp"]) == 2
    assert "needs --ble" in capsys.readouterr().err
