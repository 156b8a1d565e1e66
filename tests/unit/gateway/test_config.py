"""Configuration: defaults that work, and errors that name the file and the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig, load_config, parse_config
from gateway.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "gateway.example.toml"


def test_empty_config_gives_working_defaults() -> None:
    cfg = parse_config({})
    assert cfg == GatewayConfig().validated()
    assert cfg.batch.max_records == 1000 and cfg.mqtt.url.startswith("mqtt://")


def test_example_config_parses() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.chain.kind == "evm" and cfg.gateway_id


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"gateway": {"idd": "x"}}, "unknown setting \\[gateway\\] idd"),
        ({"mqtt": {"url": 5}}, "must be a string"),
        ({"batch": {"max_records": 0}}, "max_records"),
        ({"batch": {"max_records": "10"}}, "must be an integer"),
        ({"chain": {"kind": "evm"}}, "chain.url"),
        ({"chain": {"kind": "bitcoin"}}, "kind must be one of"),
        ({"gateway": {"id": "a/b"}}, "gateway.id"),
        ({"nonsense": {}}, "unknown section"),
        ({"gateway": {"region": "beijing"}}, "23 regional sub-chains"),
        ({"chain": {"confirmations": -1}}, "confirmations"),
        ({"publish": {"head_interval_s": 0}}, "head_interval_s must be 1..86400"),
        ({"publish": {"head_interval_s": 86_401}}, "head_interval_s must be 1..86400"),
        ({"publish": {"head_interval_s": float("nan")}}, "head_interval_s must be 1..86400"),
        ({"publish": {"head_interval_s": "60"}}, "must be a number"),
        ({"chain": {"kind": "fisco2", "url": "http://n:8545"}}, "needs chain.contract"),
        ({"ble": {"allow": "AA:BB"}}, "list of strings"),
        ({"ble": {"allow": ["AA:BB"]}}, "neither a Bluetooth address"),
        ({"ble": {"allow": ["irk:1234"]}}, "32 hex digits"),
        ({"ble": {"adapter": "wlan0"}}, "adapter names like hci0"),
        ({"ble": {"scan_stall_s": 1}}, "scan_stall_s"),
        ({"ble": {"adapter": "hci0,hci0"}}, "each once"),
        ({"ble": {"adapter": ","}}, "adapter names"),
        ({"gateway": {"source": "zigbee"}}, "source must be"),
        ({"chain": {"target": "mars"}}, "not a chain of the alliance topology"),
        ({"rollup": [{"target": "health"}]}, "not a chain of the alliance topology"),
        ({"rollup": [{"kind": "evm", "url": "http://n"}]}, "needs target"),
        ({"rollup": [{"target": "health_supervision", "kind": "evm"}]}, "needs url"),
        ({"rollup": [{"target": "health_supervision", "kind": "evm", "url": "http://n", "period_s": 0}]}, "period_s"),
        (
            {
                "rollup": [
                    {"target": "judicial", "kind": "evm", "url": "http://n"},
                    {"target": "judicial", "kind": "evm", "url": "http://m"},
                ]
            },
            "configured twice",
        ),
        ({"rollup": {"target": "judicial"}}, "array of tables"),
        ({"rollup": [{"target": "judicial", "kind": "evm", "url": "http://n", "colour": 1}]}, "unknown setting"),
    ],
)
def test_errors_name_the_setting(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_config(data, "test.toml")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "g.toml"
    p.write_text("[gateway\nid=")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_ble_allowlist_is_normalised() -> None:
    irk = "IRK:EC0234A357C8AD05341010A60A397D9B"
    cfg = parse_config({"gateway": {"source": "ble"}, "ble": {"allow": ["aa:bb:cc:dd:ee:ff", "name:Polar H10", irk]}})
    assert cfg.ble.allow == frozenset({"AA:BB:CC:DD:EE:FF", "name:Polar H10", irk.lower()})


def test_several_adapters() -> None:
    cfg = parse_config({"ble": {"adapter": "hci0, hci1"}})
    assert cfg.ble.adapters == ["hci0", "hci1"]


def test_roll_up_targets_parse() -> None:
    cfg = parse_config(
        {
            "chain": {"kind": "evm", "url": "http://regional:8545"},
            "rollup": [
                {
                    "target": "health_supervision",
                    "kind": "evm",
                    "url": "http://health:8545",
                    "period_s": 3600,
                    "confirmations": 2,
                },
                {"target": "national_fitness_services", "kind": "evm", "url": "http://nf:8545"},
            ],
        }
    )
    assert cfg.chain_target == "shenzhen"  # the gateway's own regional sub-chain
    assert [r.target for r in cfg.rollups] == ["health_supervision", "national_fitness_services"]
    assert cfg.rollups[0].chain.confirmations == 2 and cfg.rollups[0].period_s == 3600.0
    assert cfg.rollups[1].chain.url == "http://nf:8545" and cfg.rollups[1].period_s == 3600.0


# ---------------------------------------------------------------- fuzzing the parser (network and operator input)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = st.sampled_from(
    [
        "id",
        "region",
        "state_dir",
        "source",
        "url",
        "kind",
        "allow",
        "max_records",
        "max_age_s",
        "confirmations",
        "target",
        "period_s",
        "protocol",
        "linger_ms",
        "adapter",
        "contract",
        "devices",
        "interval_s",
        "head_interval_s",
        "bogus",
    ]
)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_SECTIONS = st.sampled_from(["gateway", "mqtt", "batch", "publish", "chain", "sim", "ble", "rollup", "nonsense"])


@settings(max_examples=1500, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        _SECTIONS,
        st.dictionaries(_KEYS, _VALUES, max_size=5)
        | st.lists(st.dictionaries(_KEYS, _VALUES, max_size=5), max_size=2)
        | _VALUES,
        max_size=5,
    )
)
def test_any_parsed_toml_gives_a_config_or_a_config_error(data: dict[str, object]) -> None:
    """Whatever the file holds, the parser answers with a valid config or a ConfigError naming the
    problem: never another exception (seed printed by hypothesis on failure)."""
    try:
        cfg = parse_config(data, "fuzz.toml")  # type: ignore[arg-type]
    except ConfigError as exc:
        assert "fuzz.toml" in str(exc)  # every error names the file it is about
        return
    assert cfg.validated() is cfg


@settings(max_examples=500, deadline=None, print_blob=True)
@given(st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=300))
def test_any_file_gives_a_config_or_a_config_error(raw: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "g.toml"
        p.write_bytes(raw)
        try:
            load_config(p)
        except ConfigError as exc:
            assert str(p) in str(exc)
