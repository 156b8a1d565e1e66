"""The `tiyi` command as a user meets it: help, decode, keys, verify from a capture, config errors."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from anchoring.capture import write_capture_item
from edge.record import Record, encode_data_message
from gateway.cli import main
from tests.conftest import ROOT, Mosquitto
from tests.unit.anchoring.test_stream_verifier import SIGNER, Stream, T


def test_help_teaches_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--help"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    for word in ("demo", "run", "verify", "keys", "decode", "examples:"):
        assert word in out


def test_decode_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "0x2A37", "16 48 f9 03"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "heart_rate" and out["val"]["heart_rate"] == 72
    assert out["val"]["rr_intervals"] == [1017 / 1024]


@pytest.mark.parametrize("args", [["2a37", "01"], ["zz", "00"], ["2a37", "xyz"], ["2a00", "00"]])
def test_decode_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", *args]) == 2
    assert "tiyi decode:" in capsys.readouterr().err


def test_decode_rejects_rr_flag_without_rr_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "2a37", "170101"]) == 2  # flags say RR intervals follow; none do
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "tiyi decode: heart rate 0x2A37: flags announce RR intervals but none follow\n"


def test_keys_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    assert main(["keys", "generate", "--dir", str(d)]) == 0
    assert stat.S_IMODE((d / "gateway.key").stat().st_mode) == 0o600
    assert main(["keys", "generate", "--dir", str(d)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keys", "show", str(d / "gateway.key")]) == 0
    assert "BEGIN PUBLIC KEY" in capsys.readouterr().out


def _capture(path: Path, stream: Stream) -> None:
    buf = io.BytesIO()
    for data in stream.records.values():
        write_capture_item(buf, T.data(Record.from_bytes(data).dev), encode_data_message([data]), False, 0)
    for b in stream.batches:
        write_capture_item(buf, T.batch, b, False, 0)
    for r in stream.receipts:
        write_capture_item(buf, T.anchor, r, False, 0)
    path.write_bytes(buf.getvalue())


def test_verify_capture_passes_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "gateway.pub"
    pub.write_text(SIGNER.public_key_pem())
    good = Stream.honest()
    _capture(tmp_path / "good.cbor", good)
    # Nothing fails, but without a chain (and without a signed head) not everything could be checked: exit 4.
    assert main(["verify", "--capture", str(tmp_path / "good.cbor"), "--key", str(pub)]) == 4
    out = capsys.readouterr().out
    assert "every record verified" not in out and "NOT CHECKED: anchors were not checked on a chain" in out
    bad = Stream.honest()
    del bad.records[3]
    _capture(tmp_path / "bad.cbor", bad)
    assert main(["verify", "--capture", str(tmp_path / "bad.cbor"), "--key", str(pub), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    assert {p["reason"] for p in report["gateways"]["gw-test"]["problems"]} == {"missing_record"}


def test_verify_needs_exactly_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_run_with_a_broken_config_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text("[batch]\nmax_records = -1\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "max_records" in capsys.readouterr().err


def test_bench_pipeline_prints_one_verified_json_line(mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "pipeline", "--broker", mosquitto.url, "--records", "2000", "--devices", "10"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["records"] == result["verified"] == 2000 and result["verified_ok"]
    assert result["anchored"] == result["batches"] >= 1 and result["records_per_s"] > 0
