"""Every simulated model's bytes decode to plausible values with the gateway's own decoders."""

from __future__ import annotations

import itertools

import pytest

from edge.gatt import decode
from edge.gatt.assembly import RecordAssembler
from firmware_sim.devices import MODELS, BloodPressureCuff, IndoorBike, PowerMeter, Scale, Thermometer

RANGES = {
    "blood_pressure": {"systolic": (80, 180), "diastolic": (45, 120), "pulse_rate": (40, 120)},
    "temperature": {"temperature": (35, 39)},
    "weight": {"weight": (50, 100), "bmi": (12, 45), "height": (1.5, 1.95)},
    "spo2": {"spo2": (90, 100), "pulse_rate": (40, 120)},
    "cycling_power": {"power": (0, 400)},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_decode_in_range_and_are_reproducible(name: str) -> None:
    a, b = MODELS[name](f"{name}-1", seed=5), MODELS[name](f"{name}-1", seed=5)
    for step in range(1, 40):
        t = step * a.interval_s
        frames = a.frames_at(t)
        assert [f.data for f in frames] == [f.data for f in b.frames_at(t)]
        for f in frames:
            for r in decode(f.char, f.data):
                for field, (lo, hi) in RANGES.get(r.kind, {}).items():
                    if field in r.val:
                        assert lo <= r.val[field] <= hi, (name, field, r.val[field])  # type: ignore[operator]


def test_units_variants_decode_to_the_same_quantities() -> None:
    for kpa in (False, True):
        (r,) = decode(0x2A35, BloodPressureCuff("c", seed=1, kpa=kpa).frames_at(60)[0].data)
        assert 80 <= r.val["systolic"] <= 180  # type: ignore[operator]
    c = decode(0x2A1C, Thermometer("t", seed=2).frames_at(30)[0].data)[0].val["temperature"]
    f = decode(0x2A1C, Thermometer("t", seed=2, fahrenheit=True).frames_at(30)[0].data)[0].val["temperature"]
    assert c == pytest.approx(f, abs=0.06)  # °F travels with 0.1 °F resolution
    kg = decode(0x2A9D, Scale("s", seed=3).frames_at(1)[0].data)[0].val["weight"]
    lb = decode(0x2A9D, Scale("s", seed=3, imperial=True).frames_at(1)[0].data)[0].val["weight"]
    assert kg == pytest.approx(lb, abs=0.005)


def test_bike_records_are_split_and_reassemble() -> None:
    bike = IndoorBike("bike", seed=1)
    asm: RecordAssembler[int] = RecordAssembler()
    for step in range(1, 20):
        frames = bike.frames_at(float(step))
        assert len(frames) >= 2 and all(len(f.data) <= 20 for f in frames)
        done = [j for f in frames for j in asm.feed(f.dev, f.char, f.data, step, now=step)]
        assert len(done) == 1 and done[0].parts == len(frames)
        (r,) = decode(0x2AD2, done[0].data)
        assert "more_data" not in r.q and "speed" in r.val
        assert r.val["elapsed_time"] == step and 0 < r.val["power"] < 400  # type: ignore[operator]


def test_power_meter_counters_wrap() -> None:
    pm = PowerMeter("pm", seed=4, interval_s=60.0)
    revs = [decode(0x2A63, pm.frames_at(60.0 * i)[0].data)[0].val["crank_revolutions"] for i in range(1, 1000)]
    assert max(revs) < 65536 and any(b < a for a, b in itertools.pairwise(revs))  # it wrapped
