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
from edge.gatt.health import (
    BLOOD_PRESSURE,
    BODY_COMPOSITION,
    ICP_UNUSED_NOT_NAN,
    INTERMEDIATE_CUFF_PRESSURE,
    PLX_CONTINUOUS,
    PLX_SPOT,
    TEMPERATURE,
    WEIGHT,
)
from edge.gatt.layout import (
    DEVICE_TIME_INVALID,
    DEVICE_TIME_PARTIAL,
    DEVICE_TIME_UNKNOWN,
    Layout,
    date_time,
    encode_float32,
    encode_sfloat,
    float32,
    sfloat,
)


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
    assert val == {
        "systolic": 120.0,
        "diastolic": 80.0,
        "mean_arterial_pressure": 90.0,
        "device_time": 1732442400,
        "pulse_rate": 72.0,
        "user_id": 1,
    }
    assert q == ()
    val, _ = d(0x2A35, "01 a0f0 a0f0 a0f0")  # kPa: 16.0 each (mantissa 160, exponent -1)
    assert val["systolic"] == pytest.approx(120.01, abs=0.01)
    val, q = d(0x2A35, "00 ff07 5000 5a00")
    assert "systolic" not in val and q == ("systolic_nan",)
    val, q = d(0x2A35, "02 7800 5000 5a00 0000 00 00 00 00 00")
    assert "device_time" not in val and q == ("device_time_unknown",)


# Intermediate Cuff Pressure 0x2A36 (BLS 1.0): flags u8 (bit0 kPa, bit1 time stamp, bit2 pulse rate, bit3 user id,
# bit4 measurement status), then the 0x2A35 compound value with the current cuff pressure in the systolic position
# and NaN (SFLOAT 0x07FF, bytes ff 07) in the diastolic and mean-arterial positions.
ICP_GOLDEN = [
    # flags 00: mmHg, nothing optional | cuff 78 00 = 0x0078: exponent 0, mantissa 120 | ff07 ff07: NaN, NaN
    ("00 7800 ff07 ff07", {"cuff_pressure": 120.0}, ()),
    # flags 00 | cuff 0a 00 = 10 mmHg (the cuff at rest, before inflating)
    ("00 0a00 ff07 ff07", {"cuff_pressure": 10.0}, ()),
    # flags 1e: time stamp + pulse rate + user id + status | cuff 96 00 = 150 | NaN, NaN
    # | e8 07 0b 18 0a 00 00 = 2024-11-24 10:00:00 = 1732442400 | pulse 48 00 = 72 | user 02 | status 04 00 = 0x0004
    (
        "1e 9600 ff07 ff07 e807 0b 18 0a 00 00 4800 02 0400",
        {"cuff_pressure": 150.0, "device_time": 1732442400, "pulse_rate": 72.0, "user_id": 2, "measurement_status": 4},
        (),
    ),
    # flags 08: user id | cuff 120 | NaN, NaN | user ff = unknown user
    ("08 7800 ff07 ff07 ff", {"cuff_pressure": 120.0}, ("user_id_unavailable",)),
    # flags 00 | cuff ff 07 = NaN: the cuff has no pressure to report
    ("00 ff07 ff07 ff07", {}, ("cuff_pressure_nan",)),
]


@pytest.mark.parametrize("hexstr,val,q", ICP_GOLDEN)
def test_intermediate_cuff_pressure_golden_vectors(hexstr: str, val: dict[str, object], q: tuple[str, ...]) -> None:
    data = bytes.fromhex(hexstr.replace(" ", ""))
    (r,) = decode(0x2A36, data)
    assert (r.kind, r.val, r.q) == ("intermediate_cuff_pressure", val, q)
    flags, fields = INTERMEDIATE_CUFF_PRESSURE.decode(data)
    assert INTERMEDIATE_CUFF_PRESSURE.encode(flags, fields) == data


def test_intermediate_cuff_pressure_in_kpa_and_never_as_a_blood_pressure() -> None:
    # flags 01: kPa | cuff a0 f0 = 0xF0A0: exponent -1 (0xF), mantissa 0x0A0 = 160 → 16.0 kPa | NaN, NaN
    (r,) = decode(0x2A36, bytes.fromhex("01a0f0ff07ff07"))
    assert r.kind == "intermediate_cuff_pressure" and set(r.val) == {"cuff_pressure"}
    assert r.val["cuff_pressure"] == pytest.approx(16.0 * 7.500616827)
    # The same bytes on 0x2A35 would be a (NaN-diastolic) blood pressure: the characteristic decides, not the bytes.
    assert not {"systolic", "diastolic", "mean_arterial_pressure"} & set(r.val)


@pytest.mark.parametrize(
    "hexstr",
    [
        "00 7800 5000 ff07",  # diastolic position holds 80 (0x0050) instead of NaN
        "00 7800 ff07 5a00",  # mean-arterial position holds 90 (0x005A)
        "00 7800 0008 ff07",  # NRes (0x0800) is a special value, but not the NaN the profile requires
        "00 7800 0000 0000",  # zeros, as a careless firmware might send
    ],
)
def test_intermediate_cuff_pressure_unused_fields_must_be_nan(hexstr: str) -> None:
    """A cuff that fills the unused positions is flagged; its cuff pressure is kept, the other values never are."""
    (r,) = decode(0x2A36, bytes.fromhex(hexstr.replace(" ", "")))
    assert r.val == {"cuff_pressure": 120.0} and r.q == (ICP_UNUSED_NOT_NAN,)


@pytest.mark.parametrize(
    "hexstr,fragment",
    [
        ("", "too short"),
        ("00 7800 ff07", "unused_mean_arterial_pressure"),  # the compound value is cut short
        ("02 7800 ff07 ff07 e807 0b", "timestamp"),  # flag 1 announces a 7-byte time stamp; 2 bytes follow
        ("04 7800 ff07 ff07", "pulse_rate"),  # flag 2 announces a pulse rate that never comes
        ("00 7800 ff07 ff07 00", "trailing"),  # one byte more than the flags announce
    ],
)
def test_intermediate_cuff_pressure_malformed(hexstr: str, fragment: str) -> None:
    with pytest.raises(MalformedFrame, match=fragment):
        decode(0x2A36, bytes.fromhex(hexstr.replace(" ", "")))


# Date Time (7 bytes): year u16 LE (0 = not known), month (0 = not known), day (0 = not known), hours, minutes,
# seconds. Complete → device_time (Unix s, UTC); partial → the known parts; nothing believed from a bad value.
DATE_TIMES = [
    ("e807 0b 18 0a 00 00", {"device_time": 1732442400}, None),  # 2024-11-24 10:00:00
    ("e807 02 1d 00 00 00", {"device_time": 1709164800}, None),  # 2024-02-29 00:00:00 (a leap year)
    # year 00 00 = not known | month 0b = 11 | day 18 = 24 | 0a 00 00 = 10:00:00 = 36000 s after midnight
    ("0000 0b 18 0a 00 00", {"device_month": 11, "device_day": 24, "device_time_of_day": 36000}, DEVICE_TIME_PARTIAL),
    # year e8 07 = 2024 | month 00 = not known | day 18 = 24 | 0a 1e 05 = 10:30:05 = 37805 s
    ("e807 00 18 0a 1e 05", {"device_year": 2024, "device_day": 24, "device_time_of_day": 37805}, DEVICE_TIME_PARTIAL),
    # 2024 | November | day 00 = not known | 17 3b 3b = 23:59:59 = 86399 s
    (
        "e807 0b 00 17 3b 3b",
        {"device_year": 2024, "device_month": 11, "device_time_of_day": 86399},
        DEVICE_TIME_PARTIAL,
    ),
    # year not known | 02 1d = 29 February: valid in some year, so kept
    ("0000 02 1d 00 00 01", {"device_month": 2, "device_day": 29, "device_time_of_day": 1}, DEVICE_TIME_PARTIAL),
    ("0000 00 00 00 00 00", {}, DEVICE_TIME_UNKNOWN),  # all zero: a cuff whose clock was never set
    ("0000 00 00 0a 00 00", {}, DEVICE_TIME_UNKNOWN),  # no date at all: a time of day since power-on, not kept
    ("0000 0d 01 00 00 00", {}, DEVICE_TIME_INVALID),  # month 13
    ("0000 02 1e 00 00 00", {}, DEVICE_TIME_INVALID),  # 30 February, in no year
    ("0000 04 1f 00 00 00", {}, DEVICE_TIME_INVALID),  # 31 April
    ("0000 00 20 00 00 00", {}, DEVICE_TIME_INVALID),  # day 32 of an unknown month
    ("e907 02 1d 00 00 00", {}, DEVICE_TIME_INVALID),  # 2025-02-29: 2025 is no leap year
    ("0000 0b 18 18 00 00", {}, DEVICE_TIME_INVALID),  # hour 24
    ("0000 0b 18 0a 3c 00", {}, DEVICE_TIME_INVALID),  # minute 60
    ("0000 0b 18 0a 00 3c", {}, DEVICE_TIME_INVALID),  # second 60
    ("1027 0b 18 0a 00 00", {}, DEVICE_TIME_INVALID),  # year 0x2710 = 10000
    ("0000 00 00 18 00 00", {}, DEVICE_TIME_INVALID),  # hour 24 without a date: still wrong, not "unknown"
]


@pytest.mark.parametrize("hexstr,fields,flag", DATE_TIMES)
def test_date_time_keeps_what_the_device_knows(hexstr: str, fields: dict[str, int], flag: str | None) -> None:
    assert date_time(bytes.fromhex(hexstr.replace(" ", ""))) == (fields, flag)


# Every characteristic that carries a Date Time, with its time-stamp flag and the mandatory fields before it.
TIMESTAMPED = [
    (0x2A35, "02", "7800 5000 5a00", {"systolic": 120.0, "diastolic": 80.0, "mean_arterial_pressure": 90.0}),
    (0x2A36, "02", "7800 ff07 ff07", {"cuff_pressure": 120.0}),
    (0x2A5E, "01", "6200 4800", {"spo2": 98.0, "pulse_rate": 72.0}),
    (0x2A9D, "02", "b036", {"weight": 70.0}),
    (0x2A9C, "0200", "ff00", {"body_fat": 25.5}),
    (0x2A1C, "02", "6e0100ff", {"temperature": 36.6}),
]


@pytest.mark.parametrize("char,flags,before,val", TIMESTAMPED)
def test_partial_device_time_on_every_characteristic(
    char: int, flags: str, before: str, val: dict[str, object]
) -> None:
    """Year 0 with a valid month, day and time: the known parts reach the record, flagged precisely."""
    (r,) = decode(char, bytes.fromhex((flags + before + "0000 0b 18 0a 00 00").replace(" ", "")))
    assert r.val == {**val, "device_month": 11, "device_day": 24, "device_time_of_day": 36000}
    assert r.q == (DEVICE_TIME_PARTIAL,) and "device_time" not in r.val
    (r,) = decode(char, bytes.fromhex((flags + before + "e807 0b 18 0a 00 00").replace(" ", "")))
    assert r.val == {**val, "device_time": 1732442400} and r.q == ()
    (r,) = decode(char, bytes.fromhex((flags + before + "0000 0d 18 0a 00 00").replace(" ", "")))
    assert r.val == val and r.q == (DEVICE_TIME_INVALID,)  # month 13: nothing of it kept


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
    val, q = d(0x2A9C, "0810 ff00 a00f0014 ff00 b036")
    assert val == {"body_fat": 25.5, "basal_metabolism": 4_000_000.0, "weight": 70.0} and q == ()
    with pytest.raises(MalformedFrame, match="repeats body_fat"):
        decode(0x2A9C, bytes.fromhex("0810ff00a00f00140001b036"))


def test_temperature() -> None:
    assert d(0x2A1C, "00 6e0100ff") == ({"temperature": 36.6}, ())
    val, _ = d(0x2A1C, "01 da0300ff")  # 98.6 °F
    assert val["temperature"] == pytest.approx(37.0)
    assert d(0x2A1C, "00 ffff7f00") == ({}, ("temperature_nan",))


def test_csc_rsc_power() -> None:
    val, _ = d(0x2A5B, "03 e8030000 0008 3200 0004")
    assert val == {
        "wheel_revolutions": 1000,
        "last_wheel_event_time": 2.0,
        "crank_revolutions": 50,
        "last_crank_event_time": 1.0,
    }
    val, _ = d(0x2A53, "07 0003 b4 6400 e8030000")  # 3.0 m/s, 180/min, 1.00 m stride, 100.0 m
    assert val == {
        "speed": 3.0,
        "cadence": 180,
        "instantaneous_stride_length": 1.0,
        "total_distance": 100.0,
        "is_running": True,
    }
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
    """Every truncated payload is refused, and the error says what is missing (the flags, or which field)."""
    named = r"too short for the \d-byte flags|flags announce \w+ \(\d+ bytes at offset \d+\) but the payload has"
    for char in (0x2A35, 0x2A36, 0x2A5E, 0x2A63, 0x2AD2):
        with pytest.raises(MalformedFrame, match=named):
            decode(char, bytes.fromhex(hexstr.replace(" ", "")))


def test_the_fuzzer_reaches_every_health_decoder() -> None:
    assert {0x2A35, 0x2A36, 0x2A5E, 0x2A5F, 0x2A9D, 0x2A9C, 0x2A1C} <= set(known_characteristics())


@settings(max_examples=3000, deadline=None, print_blob=True)
@given(st.sampled_from(known_characteristics()), st.binary(max_size=48))
def test_fuzz_every_decoder(char: int, data: bytes) -> None:
    with contextlib.suppress(EdgeError):
        decode(char, data)


LAYOUTS = [
    BLOOD_PRESSURE,
    INTERMEDIATE_CUFF_PRESSURE,
    PLX_SPOT,
    PLX_CONTINUOUS,
    WEIGHT,
    BODY_COMPOSITION,
    TEMPERATURE,
    CSC,
    RSC,
    CYCLING_POWER,
    TREADMILL,
    INDOOR_BIKE,
    ROWER,
    CROSS_TRAINER,
]
_MAX = {
    "u8": 0xFF,
    "s8": 0x7F,
    "u16": 0xFFFF,
    "s16": 0x7FFF,
    "u24": 0xFFFFFF,
    "s24": 0x7FFFFF,
    "u32": 0xFFFFFFFF,
    "sfloat": 0xFFFF,
    "float": 0xFFFFFFFF,
}


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
