"""`tiyi broker acl`: explicit per-account sections, and nothing that could widen them gets in."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.broker_acl import parse_audience, parse_gateway, parse_platform, render_acl
from gateway.cli import main
from gateway.errors import ConfigError


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line[5:]
            out[user] = []
        elif line and not line.startswith("#"):
            assert user is not None, f"a rule outside any user section applies to anonymous clients: {line}"
            out[user].append(line)
    return out


def test_each_account_gets_exactly_its_own_rights() -> None:
    text = render_acl(
        [parse_gateway("shenzhen/gw-1"), parse_gateway("macao/gw-2")],
        [parse_platform("bureau"), parse_platform("macao-platform=macao")],
    )
    assert _sections(text) == {
        "gw-1": ["topic write tiyi/v1/shenzhen/gw-1/#"],
        "gw-2": ["topic write tiyi/v1/macao/gw-2/#"],
        "bureau": ["topic read tiyi/v1/#"],
        "macao-platform": ["topic read tiyi/v1/macao/#"],
    }


def test_the_same_accounts_give_the_same_bytes() -> None:
    a = render_acl([parse_gateway("shenzhen/gw-1"), parse_gateway("foshan/gw-0")], [parse_platform("p")])
    b = render_acl([parse_gateway("foshan/gw-0"), parse_gateway("shenzhen/gw-1")], [parse_platform("p")])
    assert a == b


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("gw-1", "REGION/ID"),
        ("beijing/gw-1", "23 regions"),
        ("+/gw-1", "23 regions"),
        ("shenzhen/gw#", "A-Za-z0-9"),  # a wildcard in a rule would widen it
        ("shenzhen/+", "A-Za-z0-9"),
        ("shenzhen/gw-1/#", "A-Za-z0-9"),
        ("shenzhen/gw-1\nuser admin", "A-Za-z0-9"),  # a second line would add a section
        ("shenzhen/gw 1", "A-Za-z0-9"),
        ("shenzhen/", "A-Za-z0-9"),
    ],
)
def test_malformed_gateways_are_refused(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_gateway(spec)


@pytest.mark.parametrize("spec", ["bureau=beijing", "bureau#", "bureau\ntopic readwrite #", "=shenzhen", ""])
def test_malformed_platforms_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_platform(spec)


def test_one_name_for_two_accounts_is_refused() -> None:
    with pytest.raises(ConfigError, match="used twice: gw-1"):
        render_acl([parse_gateway("shenzhen/gw-1"), parse_gateway("macao/gw-1")], [])
    with pytest.raises(ConfigError, match="used twice: p"):
        render_acl([parse_gateway("shenzhen/p")], [parse_platform("p")])


def test_the_command_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiyi.acl"
    assert main(["broker", "acl", "--gateway", "shenzhen/gw-1", "--platform", "bureau", "-o", str(out)]) == 0
    assert out.read_text() == render_acl([parse_gateway("shenzhen/gw-1")], [parse_platform("bureau")])
    assert out.stat().st_mode & 0o777 == 0o644
    assert main(["broker", "acl", "--gateway", "beijing/gw-1"]) == 2
    assert "23 regions" in capsys.readouterr().err
    assert main(["broker", "acl"]) == 2


def test_an_audience_reads_its_own_view_and_the_proofs_only() -> None:
    text = render_acl([parse_gateway("shenzhen/gw-1")], [], [parse_audience("hku=hongkong,shenzhen")])
    proofs = ["batch", "head", "anchor", "anchor/state", "key", "rollup/+"]
    assert _sections(text)["hku"] == [
        line
        for region in ("hongkong", "shenzhen")
        for line in (
            f"topic read tiyi/v1/{region}/+/aud/hku/#",
            *(f"topic read tiyi/v1/{region}/+/{c}" for c in proofs),
        )
    ]
    everywhere = _sections(render_acl([], [], [parse_audience("aud-1")]))["aud-1"]
    assert everywhere[0] == "topic read tiyi/v1/+/+/aud/aud-1/#"
    assert not [rule for rule in everywhere if "data" in rule or (rule.endswith("/#") and "/aud/" not in rule)]


@pytest.mark.parametrize("spec", ["aud=beijing", "aud#", "a+b", "aud\ntopic read #", "=shenzhen", ""])
def test_malformed_audiences_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_audience(spec)


def test_an_audience_may_not_share_a_name_with_another_account() -> None:
    with pytest.raises(ConfigError, match="used twice: p"):
        render_acl([], [parse_platform("p")], [parse_audience("p")])
