"""The simulated strap emits real 0x2A37 bytes from a plausible, reproducible signal."""

from __future__ import annotations

import statistics

from edge.gatt import decode
from edge.gatt.heart_rate import HeartRateMeasurement
from firmware_sim.heart_rate_strap import HeartRateStrap
from firmware_sim.signals import HR_MAX, HR_MIN, HeartRateModel


def test_frames_decode_to_what_was_emitted() -> None:
    strap = HeartRateStrap("hr-1", seed=7, keep_emitted=True)
    for t in range(300):
        frame = strap.frame_at(float(t))
        assert frame.char == 0x2A37
        assert HeartRateMeasurement.from_bytes(frame.data) == strap.emitted[-1]
        (reading,) = decode(frame.char, frame.data)
        assert reading.val["heart_rate"] == strap.emitted[-1].heart_rate


def test_same_seed_same_bytes() -> None:
    a, b = HeartRateStrap("a", seed=3), HeartRateStrap("a", seed=3)
    assert [a.frame_at(t).data for t in range(200)] == [b.frame_at(t).data for t in range(200)]
    c = HeartRateStrap("a", seed=4)
    assert [c.frame_at(t).data for t in range(50)] != [HeartRateStrap("a", seed=3).frame_at(t).data for t in range(50)]


def test_heart_rate_follows_the_session() -> None:
    model = HeartRateModel(seed=11)
    by_phase: dict[str, list[float]] = {}
    for t in range(int(model.cycle)):
        hr, _ = model.advance(float(t))
        assert HR_MIN <= hr <= HR_MAX
        by_phase.setdefault(model.phase_at(float(t)).name, []).append(hr)
    assert statistics.mean(by_phase["interval"]) > statistics.mean(by_phase["rest"]) + 30


def test_rr_intervals_account_for_elapsed_time() -> None:
    model = HeartRateModel(seed=5)
    total = 0.0
    for t in range(1, 601):
        _hr, rr = model.advance(float(t))
        total += sum(rr)
        for x in rr:
            assert 60 / HR_MAX - 1e-9 <= x <= 60 / HR_MIN + 1e-9
    assert abs(total - 600) < 2.0  # beats cover the elapsed time up to the last, unfinished one


def test_energy_is_reported_every_tenth_frame_and_grows() -> None:
    strap = HeartRateStrap("e", seed=1, keep_emitted=True)
    for t in range(100):
        strap.frame_at(float(t))
    energies = [m.energy_expended for m in strap.emitted if m.energy_expended is not None]
    assert len(energies) == 10
    assert energies == sorted(energies) and energies[-1] > 0
