"""Scenario files: the built-ins parse, builds are reproducible, mistakes are named."""

from __future__ import annotations

import pytest

from firmware_sim.devices import IndoorBike
from firmware_sim.heart_rate_strap import HeartRateStrap
from firmware_sim.scenario import ScenarioError, builtin_scenarios, parse_scenario


def test_builtins() -> None:
    sc = builtin_scenarios()
    assert {"evening-class", "clinic", "stress-300", "chaos"} <= set(sc)
    assert sc["stress-300"].device_count == 300
    assert sc["chaos"].chaos.malformed_every > 0


def test_build_is_reproducible_with_stable_ids() -> None:
    sc = builtin_scenarios()["evening-class"]
    a, b = sc.build(), sc.build()
    assert [m.dev_id for m in a] == [m.dev_id for m in b]
    assert len({m.dev_id for m in a}) == len(a) == 52  # 30 straps, 10 treadmills, 6 bikes, 4 rowers, cuff, scale
    straps = [m for m in a if isinstance(m, HeartRateStrap)]
    assert straps[0].frame_at(5.0).data == next(m for m in b if isinstance(m, HeartRateStrap)).frame_at(5.0).data
    assert any(isinstance(m, IndoorBike) for m in a)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name = 'x'", "at least one"),
        ("[[devices]]\nmodel = 'toaster'", "not one of"),
        ("[[devices]]\nmodel = 'scale'\ncount = 0", "positive integer"),
        ("[[devices]]\nmodel = 'scale'\ncolour = 'red'", "may only set"),
        ("bogus = 1\n[[devices]]\nmodel = 'scale'", "unknown setting"),
        ("[[devices]]\nmodel = 'scale'\n[chaos]\nsilent_fraction = 2", "out of range"),
        ("[[devices]]\nmodel = 'scale'\ncount = 5000", "more than"),
        ("[[devices]]\nmodel = 'scale'\n[chaos]\nexplode = 1", "may only set"),
        ("[[devices]]\nmodel = 'scale'\n[chaos]\nrefuse_connections = 1.5", "must be an integer"),
        ("[[devices]]\nmodel = 'scale'\n[chaos]\nrename_every_s = 'often'", "must be a number"),
        ("[[devices]]\nmodel = 'scale'\n[chaos]\nbattery_drain_per_min = -1", "out of range"),
        ("chaos = 3\n[[devices]]\nmodel = 'scale'", "must be a table"),
        ("[[devices", "invalid TOML"),
    ],
)
def test_errors(text: str, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        parse_scenario(text, "test.toml")


def test_chaos_settings_are_parsed() -> None:
    sc = parse_scenario(
        "[[devices]]\nmodel = 'watch'\n[chaos]\nduplicate_every = 4\nrotate_address_every_s = 30\n"
        "refuse_connections = 2\nbattery_drain_per_min = 1",
        "t.toml",
    )
    c = sc.chaos
    assert (c.duplicate_every, c.rotate_address_every_s, c.refuse_connections, c.battery_drain_per_min) == (
        4,
        30.0,
        2,
        1.0,
    )


def test_chaos_clock_settings_give_devices_wrong_clocks() -> None:
    sc = parse_scenario(
        "[[devices]]\nmodel = 'bp_cuff'\ncount = 7\n[chaos]\nclock_offset_s = -600\nclock_drift_ppm = 50", "t.toml"
    )
    models = sc.build()
    offsets = sorted(m.clock_offset_s for m in models)  # type: ignore[union-attr]
    assert offsets[0] == -600 and offsets[-1] == 600 and 0 in offsets
    assert all(m.clock_drift_ppm == 50 for m in models)  # type: ignore[union-attr]
