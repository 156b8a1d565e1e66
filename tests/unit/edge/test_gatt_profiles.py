"""Health and fitness characteristics: golden vectors from the SIG layouts, units, specials, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import EdgeError, MalformedFrame
from edge.gatt import decode, known_characteristics
from edge.gatt.fitness import CSC, CYCLING_POWER, RSC, CounterTracker
from edge.gatt.ftms import (
    CROSS_TRAINER,
    INDOOR_BIKE,
    ROWER,
    TREADMILL,
    Variant,
    readings_rower,
    readings_treadmill,
    split_record,
    treadmill_layout,
)
from edge.gatt.health import BLOOD_PRESSURE, BODY_COMPOSITION, PLX_CONTINUOUS, PLX_SPOT, TEMPERATURE, WEIGHT
from edge.gatt.layout import Layout, encode_float32, encode_sfloat, float32, sfloat


def d(char: int, hexstr: str) -> tuple[dict[str, object], tuple[str, ...]]:
    (r,) = decode(char, bytes.fromhex(hexstr.replace(" ", "")))
    return r.val, r.q


def test_ieee11073_numbers() -> None:
    assert sfloat(0x0078) == (120.0, None)  # notes: 78 00 = 120
    assert sfloat(0xF16E) == (36.6, None)  # mantissa 366, exponent -1
    assert sfloat(0x0FFB) == (-5.0, None)  # mantissa -5
    assert sfloat(0x07FF) == (None, "nan") and sfloat(0x0800) == (None, "nres")
    assert sfloat(0x07FE) == (None, "pos_inf") and sfloat(0x0802) == (None, "neg_inf")
    assert float32(int.from_bytes(bytes.fromhex("6e0100ff"), "little")) == (36.6, None)  # notes' example
    assert float32(0x007FFFFF) == (None, "nan")
    assert encode_sfloat(366, -1) == 0xF16E and encode_float32(366, -1) == 0xFF00016E


def test_blood_pressure() -> None:
    val, q = d(0x2A35, "0e 7800 5000 5a00 e807 0b 18 0a 00 00 4800 01")
    assert val == {"systolic": 120.0, "diastolic": 80.0, "mean_arterial_pressure": 90.0,
                   "device_time": 1732442400, "pulse_rate": 72.0, "user_id": 1}
    assert q == ()
    val, _ = d(0x2A35, "01 a0f0 a0f0 a0f0")  # kPa: 16.0 each (mantissa 160, exponent -1)
    assert val["systolic"] == pytest.approx(120.01, abs=0.01)
    val, q = d(0x2A35, "00 ff07 5000 5a00")
    assert "systolic" not in val and q == ("systolic_nan",)
    val, q = d(0x2A35, "02 7800 5000 5a00 0000 00 00 00 00 00")
    assert "device_time" not in val and q == ("device_time_unknown",)


def test_pulse_oximetry() -> None:
    val, _ = d(0x2A5E, "00 6200 4800")
    assert val == {"spo2": 98.0, "pulse_rate": 72.0}
    val, _ = d(0x2A5F, "01 6100 4600 6200 4800")
    assert val == {"spo2": 97.0, "pulse_rate": 70.0, "spo2_fast": 98.0, "pulse_rate_fast": 72.0}


def test_weight_and_body_composition() -> None:
    val, _ = d(0x2A9D, "00 b036")  # 14000 x 0.005 kg
    assert val == {"weight": 70.0}
    val, _ = d(0x2A9D, "01 483c")  # 15432 x 0.01 lb
    assert val["weight"] == pytest.approx(154.32 * 0.45359237)
    val, _ = d(0x2A9D, "08 b036 f000 da06")  # BMI 24.0, height 1.754 m
    assert val == {"weight": 70.0, "bmi": 24.0, "height": 1.754}
    val, q = d(0x2A9D, "00 ffff")
    assert val == {} and q == ("weight_unavailable",)
    val, q = d(0x2A9C, "0010 ff00")
    assert val == {"body_fat": 25.5} and q == ("partial_record",)
    val, _ = d(0x2A9C, "0004 ff00 b036")  # + weight
    assert val == {"body_fat": 25.5, "weight": 70.0}
    # Two packets of one multi-packet measurement, joined: body fat repeats (same value), the rest merges.
    val, q = d(0x2A9C, "0810 ff00 a00f" "0014 ff00 b036")
    assert val == {"body_fat": 25.5, "basal_metabolism": 4_000_000.0, "weight": 70.0} and q == ()
    with pytest.raises(MalformedFrame, match="repeats body_fat"):
        decode(0x2A9C, bytes.fromhex("0810ff00a00f" "00140001b036"))


def test_temperature() -> None:
    assert d(0x2A1C, "00 6e0100ff") == ({"temperature": 36.6}, ())
    val, _ = d(0x2A1C, "01 da0300ff")  # 98.6 °F
    assert val["temperature"] == pytest.approx(37.0)
    assert d(0x2A1C, "00 ffff7f00") == ({}, ("temperature_nan",))


def test_csc_rsc_power() -> None:
    val, _ = d(0x2A5B, "03 e8030000 0008 3200 0004")
    assert val == {"wheel_revolutions": 1000, "last_wheel_event_time": 2.0, "crank_revolutions": 50,
                   "last_crank_event_time": 1.0}
    val, _ = d(0x2A53, "07 0003 b4 6400 e8030000")  # 3.0 m/s, 180/min, 1.00 m stride, 100.0 m
    assert val == {"speed": 3.0, "cadence": 180, "instantaneous_stride_length": 1.0, "total_distance": 100.0,
                   "is_running": True}
    val, _ = d(0x2A63, "2000 fa00 3200 0004")
    assert val == {"power": 250, "crank_revolutions": 50, "last_crank_event_time": 1.0}
    val, _ = d(0x2A63, "1000 fa00 e8030000 0008")  # wheel event time is in 1/2048 s
    assert val["last_wheel_event_time"] == 1.0


def test_ftms_machines() -> None:
    val, _ = d(0x2AD2, "4400 c409 b400 fa00")  # 25.00 km/h, 90 rpm, 250 W
    assert val == {"speed": pytest.approx(25 / 3.6), "cadence": 90.0, "power": 250}
    val, q = d(0x2AD2, "4500 b400 fa00")  # More Data: no speed in this part
    assert "speed" not in val and q == ("more_data",)
    val, _ = d(0x2ACD, "8c00 e803 100000 1e00 0000 3200 0000 00")  # + distance, incline 3.0 %, energy 50 kcal
    assert val["speed"] == pytest.approx(10 / 3.6) and val["total_distance"] == 16 and val["inclination"] == 3.0
    assert val["energy_expended"] == 50 * 4184.0
    val, _ = d(0x2AD1, "0000 1c 6400")  # 28 strokes/min (FTMS 1.0), count 100
    assert val == {"stroke_rate": 28.0, "stroke_count": 100}
    _, r = ROWER.decode(bytes.fromhex("00001c6400"))
    assert readings_rower(r, Variant.CURRENT)[0].val["stroke_rate"] == 14.0
    val, _ = d(0x2ACE, "008000 e803")  # flags bit 15: moving backward
    assert val["moving_backward"] is True


def test_treadmill_pace_variants() -> None:
    _, r = TREADMILL.decode(bytes.fromhex("2000e8030c"))  # 1.2 km/min
    assert readings_treadmill(r)[0].val["pace"] == pytest.approx(50.0)  # seconds per km
    cur = treadmill_layout(Variant.CURRENT)
    _, r = cur.decode(bytes.fromhex("2000e8032c01"))  # 300 s/km
    assert readings_treadmill(r, Variant.CURRENT)[0].val["pace"] == 300


def test_split_records_reassemble_exactly() -> None:
    flags = 0x1FFE  # everything but More Data
    values = {f.name: (i * 7) % 200 for i, f in enumerate(fl for g in TREADMILL.groups for fl in g.fields)}
    parts = split_record(TREADMILL, flags, values, mtu_payload=20)
    assert len(parts) >= 2 and all(len(p) <= 20 for p in parts)
    assert all(p[0] & 1 for p in parts[:-1]) and not parts[-1][0] & 1
    merged_flags, merged, n = TREADMILL.decode_joined(b"".join(parts), 0x0001)
    assert merged == values and merged_flags == flags and n == len(parts)
    (whole,) = decode(0x2ACD, b"".join(parts))
    assert whole.q == () and whole.val == readings_treadmill(values)[0].val


def test_joined_parts_must_not_contradict_each_other() -> None:
    part = bytes.fromhex("4500b400fa00")  # More Data, cadence and power
    with pytest.raises(MalformedFrame, match="repeats cadence"):
        decode(0x2AD2, part + part)
    with pytest.raises(MalformedFrame, match="trailing"):
        decode(0x2AD2, bytes.fromhex("4400c409b400fa00") + part)  # a complete record cannot be continued
    (r,) = decode(0x2AD2, part + bytes.fromhex("0000c409"))  # cadence + power, then speed: one record
    assert r.val == {"cadence": 90.0, "power": 250, "speed": pytest.approx(25 / 3.6)} and r.q == ()


def test_counter_wrap_around() -> None:
    t = CounterTracker()
    assert t.update(65530, 65000) is None
    assert t.update(4, 488) == pytest.approx(10 * 60 * 1024 / 1024)  # 10 revs over 1024 ticks across both wraps
    assert t.update(4, 488) == pytest.approx(600.0)  # no new event: held, no division by zero


@pytest.mark.parametrize("hexstr", ["", "00", "0e7800", "00 6200", "2000fa", "4400c409b4"])
def test_truncation_is_named(hexstr: str) -> None:
    for char in (0x2A35, 0x2A5E, 0x2A63, 0x2AD2):
        with contextlib.suppress(MalformedFrame):
            decode(char, bytes.fromhex(hexstr.replace(" ", "")))


@settings(max_examples=3000, deadline=None, print_blob=True)
@given(st.sampled_from(known_characteristics()), st.binary(max_size=48))
def test_fuzz_every_decoder(char: int, data: bytes) -> None:
    with contextlib.suppress(EdgeError):
        decode(char, data)


LAYOUTS = [BLOOD_PRESSURE, PLX_SPOT, PLX_CONTINUOUS, WEIGHT, BODY_COMPOSITION, TEMPERATURE, CSC, RSC,
           CYCLING_POWER, TREADMILL, INDOOR_BIKE, ROWER, CROSS_TRAINER]
_MAX = {"u8": 0xFF, "s8": 0x7F, "u16": 0xFFFF, "s16": 0x7FFF, "u24": 0xFFFFFF, "s24": 0x7FFFFF, "u32": 0xFFFFFFFF,
        "sfloat": 0xFFFF, "float": 0xFFFFFFFF}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(LAYOUTS), st.data())
def test_layout_round_trip(layout: Layout, data: st.DataObject) -> None:
    flags = data.draw(st.integers(0, (1 << (8 * layout.flags_size)) - 1))
    values: dict[str, int | bytes] = {}
    for g in layout.groups:
        for f in g.fields:
            if f.fmt == "datetime":
                values[f.name] = data.draw(st.binary(min_size=7, max_size=7))
            elif f.fmt in ("s8", "s16", "s24"):
                values[f.name] = data.draw(st.integers(-_MAX[f.fmt] - 1, _MAX[f.fmt]))
            else:
                values[f.name] = data.draw(st.integers(0, _MAX[f.fmt]))
    raw = layout.encode(flags, values)
    back_flags, back = layout.decode(raw)
    assert back_flags == flags
    assert back == {k: v for k, v in values.items() if k in back}
    assert layout.encode(back_flags, back) == raw


def test_device_information_strings() -> None:
    from edge.gatt.device_info import decode_device_info

    assert decode_device_info(0x2A29, b"Polar Electro Oy\x00") == ("manufacturer", "Polar Electro Oy")
    assert decode_device_info(0x2A24, "体测仪-3".encode()) == ("model", "体测仪-3")
    for bad in (b"\xff\xfe", b"ok\x07", b"x" * 300):
        with pytest.raises(MalformedFrame):
            decode_device_info(0x2A25, bad)
    with pytest.raises(EdgeError):
        decode_device_info(0x2A37, b"x")


def test_per_model_quirks_change_only_what_the_model_does_differently() -> None:
    from edge.gatt import check_quirks
    from edge.gatt.registry import BadQuirk

    rower = bytes.fromhex("00001c6400")  # stroke rate byte 0x1c
    assert decode(0x2AD1, rower)[0].val["stroke_rate"] == 28.0  # FTMS 1.0, what most machines send
    assert decode(0x2AD1, rower, {"ftms_variant": "current"})[0].val["stroke_rate"] == 14.0
    tread = bytes.fromhex("2000e8032c01")  # pace as u16 s/km in the current definition
    with pytest.raises(MalformedFrame):
        decode(0x2ACD, tread)  # read as FTMS 1.0 (u8 pace) the length does not add up
    assert decode(0x2ACD, tread, {"ftms_variant": "current"})[0].val["pace"] == 300
    assert decode(0x2A37, bytes.fromhex("0048"), {"ftms_variant": "current"})[0].val["heart_rate"] == 72
    with pytest.raises(BadQuirk):
        check_quirks({"ftms_variant": "2.0"})
