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
    assert len({m.dev_id for m in a}) == len(a) == 43
    straps = [m for m in a if isinstance(m, HeartRateStrap)]
    assert straps[0].frame_at(5.0).data == next(m for m in b if isinstance(m, HeartRateStrap)).frame_at(5.0).data
    assert any(isinstance(m, IndoorBike) for m in a)


@pytest.mark.parametrize("text,fragment", [
    ("name = 'x'", "at least one"),
    ("[[devices]]\nmodel = 'toaster'", "not one of"),
    ("[[devices]]\nmodel = 'scale'\ncount = 0", "positive integer"),
    ("[[devices]]\nmodel = 'scale'\ncolour = 'red'", "may only set"),
    ("bogus = 1\n[[devices]]\nmodel = 'scale'", "unknown setting"),
    ("[[devices]]\nmodel = 'scale'\n[chaos]\nsilent_fraction = 2", "out of range"),
    ("[[devices]]\nmodel = 'scale'\ncount = 5000", "more than"),
    ("[[devices", "invalid TOML"),
])
def test_errors(text: str, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        parse_scenario(text, "test.toml")
