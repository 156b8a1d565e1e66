"""`tiyi config check`: every problem at once, each naming its setting; a summary without secrets when valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.config_check import check_file, redact_url
from gateway.errors import ConfigError
from gateway.keys import generate_keypair

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "gateway.example.toml"

BROKEN = """\
[gateway]
id = "a/b"
region = "mars"
source = "zigbee"
colour = 1
[batch]
max_records = "x"
max_age_s = nan
[mqtt]
url = "mqtt://h"
ca_file = "/x"
protocol = "4"
[chain]
kind = "fisco2"
[bogus]
[ble]
allow = ["AA"]
[[rollup]]
kind = "evm"
"""

# One line per broken setting above, each naming it.
EXPECTED = [
    "[gateway] source must be",
    "unknown setting [gateway] colour",
    "[batch] max_records must be an integer",
    "unknown section [bogus]",
    "[ble] allow: 'AA' is neither a Bluetooth address",
    "rollup[0] needs target",
    "[mqtt] protocol must be one of",
    "gateway.id must be",
    "batch.max_age_s must be a finite number",
    "[mqtt] ca_file set, but [mqtt] url mqtt://h is plain MQTT",
    "gateway.region 'mars' is not one of",
    "chain.kind = 'fisco2' needs chain.url",
    "chain.kind = 'fisco2' needs chain.contract",
]


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sim_config(tmp_path: Path, extra: str = "") -> Path:
    """A valid configuration whose state dir holds a real signing key, so the file checks pass."""
    generate_keypair(tmp_path / "state" / "keys")
    return write(tmp_path, f'[gateway]\nid = "gw-t"\nsource = "sim"\nstate_dir = "{tmp_path / "state"}"\n{extra}')


def test_every_problem_is_listed_with_its_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BROKEN)
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if line.startswith("PROBLEM ")]
    for fragment, line in zip(EXPECTED, problems, strict=True):
        assert fragment in line
    assert out[-1] == f"{path}: {len(EXPECTED)} problems; `tiyi run` would refuse this configuration"


def test_tiyi_run_still_stops_at_the_first_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[gateway\] source must be"):
        load_config(write(tmp_path, BROKEN))


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("[gateway\nid = 1\n", "invalid TOML"),
        ("[batch]\nmax_records = 10\nmax_records = 20\n", "invalid TOML"),
        ("gateway = 5\n", "[gateway] must be a table"),
        ('[ble]\nallow = ["irk:1234"]\n', "32 hex digits"),
        ('[chain]\nkind = "bitcoin"\n', "[chain] kind must be one of"),
        ("[chain]\nconfirmations = -1\n", "chain.confirmations"),
        ('[mqtt]\nurl = "mqtts://b:8883"\nkey_file = "/k.pem"\n', "[mqtt] key_file needs [mqtt] cert_file"),
        ("[publish]\nhead_interval_s = inf\n", "publish.head_interval_s"),
        ('[[rollup]]\ntarget = "judicial"\nkind = "evm"\n', "rollup[0] (kind evm) needs url"),
        ("rollup = 3\n", "rollup must be an array of tables"),
    ],
)
def test_each_kind_of_broken_file_is_named(tmp_path: Path, fragment: str, text: str) -> None:
    result = check_file(write(tmp_path, text), files=False)
    assert result.config is None
    assert any(fragment in p for p in result.problems), result.problems


def test_not_utf8_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_bytes(b'[gateway]\nid = "gw-\xff"\n')
    assert check_file(path).problems == ("not UTF-8 text (byte 19); save the file as UTF-8",)


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err


def test_valid_config_prints_ok_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = sim_config(tmp_path)
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK\n")
    assert "gateway    gw-t (region shenzhen, source sim)" in out
    assert "sim        3 simulated devices" in out


def test_summary_leaves_out_secrets_and_device_identities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    irk = "0123456789abcdef0123456789abcdef"
    path = write(
        tmp_path,
        '[gateway]\nid = "gw-t"\nsource = "ble"\n'
        '[chain]\nkind = "evm"\nurl = "https://anchorer:s3cret@node.example:8545/rpc?apikey=TOKEN9"\n'
        f'[ble]\nallow = ["C8:3F:0A:11:22:33", "irk:{irk}", "name:Polar H10 1"]\n',
    )
    assert main(["config", "check", "--no-files", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in ("s3cret", "TOKEN9", "C8:3F:0A", irk, "Polar H10"):
        assert secret not in out
    assert "https://anchorer:***@node.example:8545/rpc?apikey=***" in out
    assert "3 allowed in the file (1 address, 1 name, 1 IRK)" in out


def test_redact_url() -> None:
    assert redact_url("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"
    assert redact_url("http://u:p@h/x?a=1&b=2") == "http://u:***@h/x?a=***&b=***"
    assert redact_url(None) == "-"
    assert redact_url("http://[::1") == "<unparseable URL>"


def test_missing_or_exposed_signing_key_is_a_problem(tmp_path: Path) -> None:
    path = sim_config(tmp_path)
    key = tmp_path / "state" / "keys" / "gateway.key"
    os.chmod(key, 0o644)
    (problem,) = check_file(path).problems
    assert problem.startswith("[gateway] key_file: signing key") and "chmod 600" in problem
    key.unlink()
    (problem,) = check_file(path).problems
    assert "no signing key" in problem and "tiyi keys generate" in problem
    assert check_file(path, files=False).problems == ()


def test_mqtt_password_file_is_checked_as_tiyi_run_does(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("pw\n")
    os.chmod(secret, 0o644)
    path = sim_config(tmp_path, f'[mqtt]\nusername = "gw-t"\npassword_file = "{secret}"\n')
    (problem,) = check_file(path).problems
    assert "[mqtt] password_file" in problem and "chmod 600" in problem
    os.chmod(secret, 0o600)
    assert check_file(path).problems == ()


def test_mqtts_ca_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = write(tmp_path, "not a certificate", "ca.crt")
    path = sim_config(tmp_path, f'[mqtt]\nurl = "mqtts://broker:8883"\nca_file = "{junk}"\n')
    (problem,) = check_file(path).problems
    assert problem.startswith("[mqtt] ca_file") and "not a PEM CA certificate" in problem


def test_the_shipped_example_is_valid() -> None:
    assert check_file(EXAMPLE, files=False).problems == ()
    assert parse_config({}).gateway_id  # the empty file still gives working defaults
