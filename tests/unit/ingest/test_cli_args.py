"""``tiyi ingest`` refuses ambiguous or incomplete trust and chain settings with one line, before connecting to
anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main as tiyi

BASE = ["ingest", "--broker", "mqtt://127.0.0.1:1", "--db", "host=127.0.0.1 dbname=never_used"]
CONTRACT = "0x" + "11" * 20


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "give exactly one trust root"),
        (["--tofu", "--key", "gw-1=x.pem"], "got --key and --tofu"),
        (["--registry", CONTRACT], "--contract and --registry need --rpc"),
        (["--tofu", "--contract", CONTRACT], "--contract and --registry need --rpc"),
        (["--tofu", "--operator", CONTRACT], "--operator needs --registry"),
        (["--tofu", "--rpc", "http://127.0.0.1:1"], "--rpc needs --contract"),
        (["--tofu", "--rpc", "http://127.0.0.1:1", "--contract", "0x1234"], "expected a 20-byte hex address"),
        (["--tofu", "--rpc", "ftp://x", "--contract", CONTRACT], "expected http(s)://HOST:PORT"),
        (
            ["--registry", CONTRACT, "--contract", "0x" + "22" * 20, "--rpc", "http://127.0.0.1:1"],
            "name different contracts",
        ),
        (["--key", "gw-1"], "--key takes GW=PEMFILE"),
        (["--tofu", "--gap-timeout", "0"], "gap timeout"),
        (["--tofu", "--final-depth", "-1"], "final depth"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    extra: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tiyi([*BASE, *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
