"""``[[audience]]``: parsed into frozen dataclasses; `tiyi config check` names every bad key; the shipped
example's commented audiences are valid when uncommented."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from gateway.audience_config import AudienceConfig, MinimiseConfig
from gateway.cli import main
from gateway.config import parse_config
from gateway.config_check import check_file
from gateway.errors import ConfigError
from gateway.keys import generate_keypair
from gateway.stages.view_maker import audience_spec

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "gateway.example.toml"

GOOD = """\
[gateway]
id = "gw-t"
region = "shenzhen"
source = "sim"
state_dir = "{state}"

[[audience]]
id = "platform-health"
purpose = "health_management"
jurisdiction = "mainland"
encrypt = true
[audience.minimise."*"]
drop_raw = true
time_s = 60
round = 0

[[audience]]
id = "hku-research"
purpose = "research"
jurisdiction = "hongkong"
legal_basis = "gba_standard_contract"
legal_basis_ref = "GBA-SC filing 2026-001"
min_n = 10
[audience.minimise.heart_rate]
aggregate = true
"""


def test_audiences_parse_into_frozen_dataclasses(tmp_path: Path) -> None:
    cfg = parse_config(tomllib.loads(GOOD.format(state=tmp_path)))
    health, research = cfg.audiences
    assert health == AudienceConfig(
        "platform-health",
        "health_management",
        "mainland",
        encrypt=True,
        minimise=(("*", MinimiseConfig(drop_raw=True, time_s=60, round=0)),),
    )
    assert research.rules == {"heart_rate": MinimiseConfig(aggregate=True)}
    assert (research.legal_basis, research.unbound) == ("gba_standard_contract", False)  # unbound: fail closed
    assert (health.min_n, research.min_n) == (5, 10)  # 5 unless set
    assert audience_spec(research, None).min_n == 10  # and it reaches the view builder
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.encrypt = False  # type: ignore[misc]


BROKEN = """\
[gateway]
id = "gw-t"
region = "shenzhen"

[[audience]]
id = "a/b"
purpose = "marketing"
jurisdiction = "taiwan"
colour = "red"
unbound = "yes"
legal_basis = "handshake"
min_n = 0
[audience.minimise.HeartRate]
drop_raw = true
[audience.minimise.heart_rate]
round = 12
time_s = -1
aggregate = 1
shuffle = true

[[audience]]
purpose = "research"
jurisdiction = "hongkong"
legal_basis = "recorded_basis"

[[audience]]
id = "twice"
purpose = "research"
jurisdiction = "mainland"
[[audience]]
id = "twice"
purpose = "research"
jurisdiction = "mainland"
[[audience]]
id = "a-note"
purpose = "research"
jurisdiction = "mainland"
legal_basis_ref = "a note"
"""

EXPECTED = [
    "unknown setting audience[0].colour",
    "audience[0].id must be",
    "audience[0].purpose 'marketing' is not one of",
    "audience[0].jurisdiction 'taiwan' is not one of",
    "audience[0].legal_basis 'handshake' is not one of",
    "audience[0].unbound must be true or false",
    "audience[0].min_n must be a whole number of wearers, 1..100000",
    "audience[0].minimise.HeartRate: a record kind is snake_case",
    "audience[0].minimise.heart_rate.round must be a number of decimals from 0 to 9",
    "audience[0].minimise.heart_rate.time_s must be a whole number of seconds",
    "audience[0].minimise.heart_rate.aggregate must be true or false",
    "unknown setting audience[0].minimise.heart_rate.shuffle",
    "audience[1] needs id",
    "audience[1].legal_basis_ref is required with legal_basis = 'recorded_basis'",
    "audience[3].id 'twice' is configured twice",
    "audience[4].legal_basis_ref is set but legal_basis is not",
]


@pytest.mark.parametrize("value", ["0", "100001", "-5", "true", '"5"', "2.5"])
def test_min_n_is_a_whole_number_of_wearers_in_range(tmp_path: Path, value: str) -> None:
    """A de-identified aggregate of 0 wearers, or of a number TOML gives as text, float or bool, is refused
    (a bool is an int in Python: True would mean groups of one)."""
    text = GOOD.format(state=tmp_path).replace("min_n = 10", f"min_n = {value}")
    with pytest.raises(ConfigError, match=re.escape("audience[1].min_n must be a whole number of wearers")):
        parse_config(tomllib.loads(text))


def test_config_check_names_every_bad_audience_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.toml"
    path.write_text(BROKEN, encoding="utf-8")
    assert main(["config", "check", "--no-files", str(path)]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("PROBLEM ")]
    assert len(problems) == len(EXPECTED), "\n".join(problems)
    for fragment in EXPECTED:
        assert any(fragment in p for p in problems), (fragment, problems)


@pytest.mark.parametrize(
    "region,jurisdiction,basis,fragment",
    [
        # the GBA standard contract covers Hong Kong and the nine mainland GBA cities only
        ("shantou", "hongkong", "gba_standard_contract", "does not cover readings from shantou to hongkong"),
        ("shenzhen", "macao", "gba_standard_contract", "does not cover readings from shenzhen to macao"),
        ("shenzhen", "mainland", "pipl_standard_contract", "both in mainland"),
    ],
)
def test_a_legal_basis_that_cannot_cover_the_flow_is_a_problem(
    tmp_path: Path, region: str, jurisdiction: str, basis: str, fragment: str
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        f'[gateway]\nregion = "{region}"\n[[audience]]\nid = "a1"\npurpose = "research"\n'
        f'jurisdiction = "{jurisdiction}"\nlegal_basis = "{basis}"\n',
        encoding="utf-8",
    )
    result = check_file(path, files=False)
    assert any(fragment in p for p in result.problems), result.problems


def test_an_encrypting_audience_without_a_key_fails_the_file_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_keypair(tmp_path / "keys")
    path = tmp_path / "g.toml"
    path.write_text(GOOD.format(state=tmp_path), encoding="utf-8")
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM audience[0].encrypt: audience platform-health encrypts but has no key" in out
    assert main(["keys", "audience", "new", "platform-health", "--config", str(path)]) == 0
    capsys.readouterr()
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "audience   platform-health: health_management, mainland, SM4-GCM; *: no raw time/60s round 0" in out
    assert "audience   hku-research: research, hongkong, legal basis gba_standard_contract, not encrypted" in out


def test_the_examples_commented_audiences_are_valid(tmp_path: Path) -> None:
    """Uncommenting the [[audience]] block of deploy/gateway.example.toml gives a configuration that parses."""
    text = EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"^# \[\[audience\]\]\n(?:#.*\n)+", text, re.M)
    assert block is not None, "the example has no commented [[audience]] block"
    uncommented = "\n".join(line[2:] for line in block.group(0).splitlines() if line.startswith("# "))
    cfg = parse_config(tomllib.loads(f'[gateway]\nregion = "shenzhen"\nstate_dir = "{tmp_path}"\n' + uncommented))
    assert len(cfg.audiences) == 2
    assert {a.jurisdiction for a in cfg.audiences} == {"mainland", "hongkong"}
