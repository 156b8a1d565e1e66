"""Heart Rate Measurement 0x2A37: golden vectors from the HRS 1.0 layout, strict errors, fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import EdgeError, MalformedFrame, UnknownCharacteristic
from edge.gatt import BadUuid, decode, parse_uuid
from edge.gatt.heart_rate import HeartRateMeasurement

GOLDEN = [
    # (hex, heart_rate, contact, energy kJ, rr raw)
    ("0048", 72, None, None, ()),  # u8 HR, contact not supported
    ("014801", 328, None, None, ()),  # u16 HR (0x0148)
    ("0448", 72, False, None, ()),  # contact supported, not detected
    ("0648", 72, True, None, ()),  # contact supported and detected
    ("0e48e803", 72, True, 1000, ()),  # energy 0x03E8 kJ
    ("1648f903", 72, True, None, (0x03F9,)),  # one RR interval
    ("1e48e803f903fa03", 72, True, 1000, (0x03F9, 0x03FA)),  # energy and two RR
    ("1148000004", 72, None, None, (0x0400,)),  # u16 HR 0x0048 and RR 1.0 s
]


@pytest.mark.parametrize("hexstr,hr,contact,energy,rr", GOLDEN)
def test_golden_vectors_decode_and_reencode(
    hexstr: str, hr: int, contact: bool | None, energy: int | None, rr: tuple[int, ...]
) -> None:
    data = bytes.fromhex(hexstr)
    m = HeartRateMeasurement.from_bytes(data)
    assert (m.heart_rate, m.sensor_contact, m.energy_expended, m.rr_intervals) == (hr, contact, energy, rr)
    assert bytes(m) == data


def test_units_in_reading() -> None:
    (r,) = decode(0x2A37, bytes.fromhex("1e48e803000400020002"))
    assert r.kind == "heart_rate"
    assert r.val == {
        "heart_rate": 72,
        "energy_expended": 1_000_000,
        "sensor_contact": True,
        "rr_intervals": [1.0, 0.5, 0.5],
    }
    assert r.q == ()


def test_no_contact_is_flagged() -> None:
    (r,) = decode(0x2A37, bytes.fromhex("0448"))
    assert r.val["sensor_contact"] is False and r.q == ("no_contact",)


def test_reserved_bits_are_kept_not_interpreted() -> None:
    m = HeartRateMeasurement.from_bytes(bytes.fromhex("e648"))
    assert m.reserved_flags == 0xE0 and bytes(m) == bytes.fromhex("e648")


@pytest.mark.parametrize(
    "hexstr,fragment",
    [
        ("", "empty"),
        ("01", "u16 heart rate"),
        ("0148", "u16 heart rate"),
        ("0848e8", "energy expended"),
        ("1048f9", "multiple of 2"),
        # flags 0x17: u16 HR (bit0), contact supported+detected (bits 1-2), RR present (bit4); HR 01 01 = 257; then
        # nothing, though bit 4 promises one or more RR values (the frame the peer library accepted as 257 bpm)
        ("170101", "RR intervals but none follow"),
        ("1048", "RR intervals but none follow"),  # flags 0x10 (RR), u8 HR 72, no RR
        ("1848e803", "RR intervals but none follow"),  # flags 0x18 (energy + RR), HR 72, energy 1000 kJ, no RR
        ("004801", "trailing"),
    ],
)
def test_malformed_frames_say_what_is_wrong(hexstr: str, fragment: str) -> None:
    with pytest.raises(MalformedFrame, match=fragment):
        decode(0x2A37, bytes.fromhex(hexstr))


def test_unknown_characteristic() -> None:
    with pytest.raises(UnknownCharacteristic):
        decode(0x2A00, b"\x00")


@pytest.mark.parametrize("text", ["2a37", "0x2A37", "2A37", "00002a37-0000-1000-8000-00805f9b34fb"])
def test_uuid_forms(text: str) -> None:
    assert parse_uuid(text) == 0x2A37


@pytest.mark.parametrize("text", ["", "2a3", "12345", "00002a37-0000-1000-8000-00805f9b34fc", "zz37"])
def test_bad_uuids(text: str) -> None:
    with pytest.raises(BadUuid):
        parse_uuid(text)


def test_battery_level() -> None:
    (r,) = decode(0x2A19, b"\x57")
    assert r.kind == "battery" and r.val == {"battery_level": 87}
    with pytest.raises(MalformedFrame):
        decode(0x2A19, b"\x65")


@settings(max_examples=2000, deadline=None, print_blob=True)
@given(st.binary(max_size=40))
def test_fuzz_only_package_errors(data: bytes) -> None:
    for char in (0x2A37, 0x2A19):
        with contextlib.suppress(EdgeError):
            decode(char, data)


measurements = st.builds(
    lambda hr16, hr, contact, energy, rr: HeartRateMeasurement(
        heart_rate=hr if hr16 else hr % 256,
        sensor_contact=contact,
        energy_expended=energy,
        rr_intervals=tuple(rr),
        hr_uint16=hr16,
    ),
    st.booleans(),
    st.integers(0, 0xFFFF),
    st.none() | st.booleans(),
    st.none() | st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 0xFFFF), max_size=9),
)


@settings(max_examples=500, deadline=None)
@given(measurements)
def test_round_trip(m: HeartRateMeasurement) -> None:
    assert HeartRateMeasurement.from_bytes(bytes(m)) == m
