"""Scenarios: a gym or clinic described in TOML, turned into seeded device models.

    name = "evening class"
    duration_s = 2700
    [[devices]]
    model = "hr_strap"     # see ALL_MODELS (`tiyi sim list` prints them)
    count = 30
    [chaos]                # optional misbehaviour
    malformed_every = 50   # every n-th notification of each device is corrupt
    duplicate_every = 40   # every n-th notification is sent twice

Over the emulated radio (``--ble``) these apply too: ``silent_fraction`` (share of devices that stay
connected but go quiet), ``battery_drain_per_min`` (at 0 % the device switches off),
``rename_every_s`` (the advertised name changes), ``rotate_address_every_s`` (devices advertise from
resolvable private addresses and are paired by IRK) and ``refuse_connections`` (each device refuses
its first n connections, as a busy peripheral does) and ``disconnect_every_s`` (the device drops its
link now and then). In both modes ``clock_offset_s`` and ``clock_drift_ppm`` set wrong, drifting device
clocks on devices that time-stamp their measurements (cuffs, scales).

Pure: parsing and building models do no I/O beyond reading the text they are given.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources

from edge.errors import EdgeError
from firmware_sim.devices import MODELS, SimDevice
from firmware_sim.heart_rate_strap import HeartRateStrap

ALL_MODELS = ("hr_strap", *sorted(MODELS))
MAX_DEVICES = 2000


class ScenarioError(EdgeError, ValueError):
    """A scenario file is malformed; the message names the setting."""


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    model: str
    count: int
    interval_s: float | None = None


@dataclass(frozen=True, slots=True)
class Chaos:
    malformed_every: int = 0
    silent_fraction: float = 0.0
    duplicate_every: int = 0
    battery_drain_per_min: float = 0.0
    rename_every_s: float = 0.0
    rotate_address_every_s: float = 0.0
    refuse_connections: int = 0
    disconnect_every_s: float = 0.0
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    groups: tuple[DeviceGroup, ...]
    chaos: Chaos = field(default_factory=Chaos)
    seed: int = 1

    @property
    def device_count(self) -> int:
        return sum(g.count for g in self.groups)

    def build(self) -> list[HeartRateStrap | SimDevice]:
        """Seeded models with stable ids like ``bike-003``; the same scenario gives the same gym."""
        out: list[HeartRateStrap | SimDevice] = []
        n = 0
        for g in self.groups:
            for i in range(g.count):
                seed = self.seed * 100_000 + n
                n += 1
                dev_id = f"{g.model.replace('_', '-')}-{i + 1:03d}"
                if g.model == "hr_strap":
                    out.append(HeartRateStrap(dev_id, seed=seed))
                else:
                    model = MODELS[g.model](dev_id, seed=seed)
                    if g.interval_s is not None:
                        model.interval_s = g.interval_s
                    # Wrong device clocks: each device off by up to the configured offset, drifting.
                    model.clock_offset_s = self.chaos.clock_offset_s * ((n % 7) - 3) / 3
                    model.clock_drift_ppm = self.chaos.clock_drift_ppm
                    out.append(model)
        return out


def parse_scenario(text: str, origin: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{origin}: invalid TOML: {exc}") from exc
    unknown = set(data) - {"name", "description", "duration_s", "devices", "chaos", "seed"}
    if unknown:
        raise ScenarioError(f"{origin}: unknown setting(s) {sorted(unknown)}")
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ScenarioError(f"{origin}: needs at least one [[devices]] table")
    groups = []
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or set(d) - {"model", "count", "interval_s"}:
            raise ScenarioError(f"{origin}: devices[{i}] may only set model, count, interval_s")
        model, count = d.get("model"), d.get("count", 1)
        if model not in ALL_MODELS:
            raise ScenarioError(f"{origin}: devices[{i}].model {model!r} is not one of {', '.join(ALL_MODELS)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ScenarioError(f"{origin}: devices[{i}].count must be a positive integer")
        interval = d.get("interval_s")
        if interval is not None and (not isinstance(interval, int | float) or interval <= 0):
            raise ScenarioError(f"{origin}: devices[{i}].interval_s must be a positive number")
        groups.append(DeviceGroup(model, count, None if interval is None else float(interval)))
    chaos = _parse_chaos(data.get("chaos", {}), origin)
    duration = data.get("duration_s", 600)
    if not isinstance(duration, int | float) or duration <= 0:
        raise ScenarioError(f"{origin}: duration_s must be a positive number")
    sc = Scenario(
        str(data.get("name", origin)),
        str(data.get("description", "")),
        float(duration),
        tuple(groups),
        chaos,
        int(data.get("seed", 1)),
    )
    if sc.device_count > MAX_DEVICES:
        raise ScenarioError(f"{origin}: {sc.device_count} devices is more than {MAX_DEVICES}")
    return sc


def _parse_chaos(raw: object, origin: str) -> Chaos:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{origin}: [chaos] must be a table")
    kinds = {f: type(getattr(Chaos(), f)) for f in Chaos.__slots__}
    unknown = set(raw) - set(kinds)
    if unknown:
        raise ScenarioError(f"{origin}: [chaos] may only set {', '.join(kinds)} (not {', '.join(sorted(unknown))})")
    values: dict[str, int | float] = {}
    for name, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or (kinds[name] is int and not isinstance(v, int)):
            raise ScenarioError(f"{origin}: [chaos] {name} must be a{'n integer' if kinds[name] is int else ' number'}")
        if (v < 0 and name != "clock_offset_s") or (name == "silent_fraction" and v > 1):
            raise ScenarioError(f"{origin}: [chaos] {name} = {v} is out of range")
        values[name] = kinds[name](v)
    return Chaos(**values)  # type: ignore[arg-type]


def builtin_scenarios() -> dict[str, Scenario]:
    """The scenarios shipped in ``firmware_sim/scenarios/``, by file stem."""
    out: dict[str, Scenario] = {}
    for entry in sorted(resources.files("firmware_sim").joinpath("scenarios").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            stem = entry.name.removesuffix(".toml")
            out[stem] = parse_scenario(entry.read_text(encoding="utf-8"), entry.name)
    return out
