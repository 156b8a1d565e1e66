"""Every simulated model's bytes decode to plausible values with the gateway's own decoders."""

from __future__ import annotations

import itertools

import pytest

from edge.gatt import decode
from edge.gatt.assembly import RecordAssembler
from firmware_sim.devices import MODELS, BloodPressureCuff, IndoorBike, PowerMeter, Scale, Thermometer

RANGES = {
    "blood_pressure": {"systolic": (80, 180), "diastolic": (45, 120), "pulse_rate": (40, 120)},
    "intermediate_cuff_pressure": {"cuff_pressure": (0, 250)},
    "temperature": {"temperature": (35, 39)},
    "weight": {"weight": (50, 100), "bmi": (12, 45), "height": (1.5, 1.95)},
    "spo2": {"spo2": (90, 100), "pulse_rate": (40, 120)},
    "cycling_power": {"power": (0, 400)},
    "heart_rate": {"heart_rate": (40, 200)},
    "treadmill": {"speed": (0.5, 5.5), "inclination": (0, 15), "heart_rate": (50, 200)},
    "indoor_bike": {"speed": (2, 15), "cadence": (40, 130), "power": (0, 500)},
    "rower": {"stroke_rate": (14, 40), "power": (20, 400), "pace": (80, 200)},
    "cross_trainer": {"step_rate": (80, 200), "power": (10, 400), "speed": (0.5, 4)},
    "running_speed_cadence": {"speed": (1, 6), "cadence": (100, 200), "instantaneous_stride_length": (0.5, 3)},
    "body_composition": {"body_fat": (5, 40), "weight": (45, 100), "height": (1.5, 1.95), "impedance": (300, 700)},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_decode_in_range_and_are_reproducible(name: str) -> None:
    """Through the gateway's assembler and decoders: whole records, plausible values, same seed same bytes."""
    a, b = MODELS[name](f"{name}-1", seed=5), MODELS[name](f"{name}-1", seed=5)
    asm: RecordAssembler[float] = RecordAssembler()
    kinds: set[str] = set()
    for step in range(1, 120):
        t = step * a.interval_s
        frames = a.frames_at(t)
        assert [f.data for f in frames] == [f.data for f in b.frames_at(t)]
        assert {f.char for f in frames} <= {a.char, *a.also} and all(len(f.data) <= 20 for f in frames)
        joined = [j for f in frames for j in asm.feed(f.dev, f.char, f.data, t, now=t)] + asm.flush()
        for f in joined:
            for r in decode(f.char, f.data):
                kinds.add(r.kind)
                assert not {"more_data", "partial_record"} & set(r.q), (name, r.q)
                for field, (lo, hi) in RANGES.get(r.kind, {}).items():
                    if field in r.val:
                        assert lo <= r.val[field] <= hi, (name, field, r.val[field])  # type: ignore[operator]


def test_units_variants_decode_to_the_same_quantities() -> None:
    for kpa in (False, True):
        (r,) = decode(0x2A35, BloodPressureCuff("c", seed=1, kpa=kpa).frames_at(60)[-1].data)  # the result comes last
        assert 80 <= r.val["systolic"] <= 180  # type: ignore[operator]
    c = decode(0x2A1C, Thermometer("t", seed=2).frames_at(30)[0].data)[0].val["temperature"]
    f = decode(0x2A1C, Thermometer("t", seed=2, fahrenheit=True).frames_at(30)[0].data)[0].val["temperature"]
    assert c == pytest.approx(f, abs=0.06)  # °F travels with 0.1 °F resolution
    kg = decode(0x2A9D, Scale("s", seed=3).frames_at(1)[0].data)[0].val["weight"]
    lb = decode(0x2A9D, Scale("s", seed=3, imperial=True).frames_at(1)[0].data)[0].val["weight"]
    assert kg == pytest.approx(lb, abs=0.005)


def test_cuff_notifies_its_pressure_while_measuring_then_indicates_the_result() -> None:
    for kpa in (False, True):
        cuff = BloodPressureCuff("c", seed=1, kpa=kpa)
        frames = cuff.frames_at(60)
        assert [f.char for f in frames] == [0x2A36] * 9 + [0x2A35]
        assert not cuff.indicates(0x2A36) and cuff.indicates(0x2A35)  # as the Blood Pressure Service has it
        readings = [r for f in frames for r in decode(f.char, f.data)]
        assert [r.kind for r in readings] == ["intermediate_cuff_pressure"] * 9 + ["blood_pressure"]
        assert all(r.q == () for r in readings)  # the unused positions are NaN, as specified
        pressures = [r.val["cuff_pressure"] for r in readings[:-1]]
        peak = pressures.index(max(pressures))
        assert 0 < peak < 8 and pressures[peak] > readings[-1].val["systolic"]  # type: ignore[operator]
        assert pressures[-1] < readings[-1].val["systolic"]  # type: ignore[operator]  # deflated past it


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


def test_machines_couple_speed_power_and_heart_rate_to_the_session() -> None:
    """Warm-up is easier than the first hard interval, on every machine."""
    from firmware_sim.devices import CrossTrainer, Rower, Treadmill

    for cls, field in ((Treadmill, "speed"), (Rower, "power"), (CrossTrainer, "power")):
        m = cls("m", seed=1)
        asm: RecordAssembler[int] = RecordAssembler()
        vals = {}
        for t in range(1, 301):
            for f in m.frames_at(float(t)):
                for j in asm.feed(f.dev, f.char, f.data, t, now=t):
                    vals[t] = decode(j.char, j.data)[0].val
        assert vals[30][field] < vals[300][field], cls.__name__  # type: ignore[operator]
        assert vals[30]["heart_rate"] < vals[300]["heart_rate"]  # type: ignore[operator]


def test_csc_counters_wrap_and_event_times_advance() -> None:
    from edge.gatt.fitness import CounterTracker
    from firmware_sim.devices import SpeedCadenceSensor

    m = SpeedCadenceSensor("csc", seed=1)
    crank = CounterTracker()
    time_wraps, last_event = 0, 0
    for t in range(1, 400):
        (r,) = decode(0x2A5B, m.frames_at(float(t))[0].data)
        revs, event = r.val["crank_revolutions"], round(r.val["last_crank_event_time"] * 1024)  # type: ignore[operator]
        assert isinstance(revs, int) and 0 <= event < 65536
        time_wraps += event < last_event
        last_event = event
        rate = crank.update(revs, event)
        if t > 2:  # cadence derived across every wrap of the 64-s event clock stays plausible
            assert rate is not None and 50 < rate < 120, (t, rate)
    assert time_wraps >= 5


def test_watch_sends_heart_rate_and_spo2_on_two_characteristics() -> None:
    from firmware_sim.devices import Watch

    w = Watch("watch", seed=2)
    chars = [f.char for t in range(1, 11) for f in w.frames_at(float(t))]
    assert chars.count(0x2A37) == 10 and chars.count(0x2A5F) == 2


def test_wrong_and_drifting_device_clocks_reach_the_record() -> None:
    cuff = BloodPressureCuff("cuff", seed=1, clock_offset_s=-3600, clock_drift_ppm=100)
    (r,) = decode(0x2A35, cuff.frames_at(10_000)[-1].data)
    assert r.val["device_time"] == cuff.epoch + 10_000 + 1 - 3600  # 100 ppm of 10,000 s is one second


def test_a_class_has_warm_up_intervals_and_cool_down() -> None:
    from firmware_sim.devices import SESSION_S, _session_effort

    warm, hard, easy, cool = (_session_effort(t) for t in (60.0, 610.0, 900.0, SESSION_S - 30))
    assert warm < easy < hard and cool < easy
    assert max(_session_effort(float(t)) for t in range(0, 2700, 7)) <= 1.0
    assert min(_session_effort(float(t)) for t in range(0, 2700, 7)) >= -0.05
