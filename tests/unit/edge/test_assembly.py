"""The record assembler: parts of multi-notification records in, whole records out, nothing dropped."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import EdgeError
from edge.gatt import decode
from edge.gatt.assembly import RecordAssembler
from edge.gatt.ftms import TREADMILL, split_record

BIKE = 0x2AD2
FIRST = bytes.fromhex("4500b400fa00")  # More Data set: cadence 90 rpm, power 250 W
LAST = bytes.fromhex("0000c409")  # More Data clear: speed 25 km/h


def test_parts_join_into_one_record_tagged_with_the_last_part() -> None:
    asm: RecordAssembler[str] = RecordAssembler()
    assert asm.feed("bike", BIKE, FIRST, "t1", now=0.0) == []
    assert asm.holding == 1
    (j,) = asm.feed("bike", BIKE, LAST, "t2", now=0.1)
    assert (j.data, j.tag, j.parts) == (FIRST + LAST, "t2", 2) and asm.holding == 0
    (r,) = decode(BIKE, j.data)
    assert set(r.val) == {"cadence", "power", "speed"} and r.q == ()


def test_other_characteristics_pass_straight_through() -> None:
    asm: RecordAssembler[int] = RecordAssembler()
    (j,) = asm.feed("strap", 0x2A37, b"\x00\x48", 7, now=0.0)
    assert (j.data, j.tag, j.parts) == (b"\x00\x48", 7, 1)


def test_a_lost_last_part_never_glues_two_records() -> None:
    asm: RecordAssembler[int] = RecordAssembler()
    asm.feed("bike", BIKE, FIRST, 1, now=0.0)
    (alone,) = asm.feed("bike", BIKE, FIRST, 2, now=1.0)  # record 2 starts: record 1 leaves unfinished
    assert alone.data == FIRST and alone.tag == 1
    assert decode(BIKE, alone.data)[0].q == ("more_data",)
    (j,) = asm.feed("bike", BIKE, LAST, 3, now=1.1)
    assert j.data == FIRST + LAST


def test_unfinished_records_leave_after_the_hold_time_and_on_flush() -> None:
    asm: RecordAssembler[int] = RecordAssembler(hold_s=2.0)
    asm.feed("bike-1", BIKE, FIRST, 1, now=0.0)
    asm.feed("bike-2", BIKE, FIRST, 2, now=1.5)
    assert asm.next_deadline() == 2.0
    assert [j.dev for j in asm.expire(now=2.0)] == ["bike-1"]
    assert [j.dev for j in asm.flush()] == ["bike-2"] and asm.holding == 0


def test_malformed_part_releases_what_was_held_first() -> None:
    asm: RecordAssembler[int] = RecordAssembler()
    asm.feed("bike", BIKE, FIRST, 1, now=0.0)
    out = asm.feed("bike", BIKE, b"\x45", 2, now=0.1)
    assert [j.data for j in out] == [FIRST, b"\x45"]


def test_devices_are_assembled_separately() -> None:
    asm: RecordAssembler[int] = RecordAssembler()
    asm.feed("a", BIKE, FIRST, 1, now=0.0)
    asm.feed("b", BIKE, FIRST, 2, now=0.0)
    (ja,) = asm.feed("a", BIKE, LAST, 3, now=0.1)
    assert ja.dev == "a" and ja.parts == 2 and asm.holding == 1


def test_body_composition_packets_join_until_a_new_measurement_or_the_hold_time() -> None:
    asm: RecordAssembler[int] = RecordAssembler(hold_s=1.0)
    p1, p2 = bytes.fromhex("0810ff00a00f"), bytes.fromhex("0014ff00b036")
    assert asm.feed("scale", 0x2A9C, p1, 1, now=0.0) == []
    assert asm.feed("scale", 0x2A9C, p2, 2, now=0.2) == []
    (j,) = asm.expire(now=1.0)
    assert j.data == p1 + p2 and j.parts == 2
    (r,) = decode(0x2A9C, j.data)
    assert r.val["weight"] == 70.0 and r.q == ()
    # A single-packet measurement ends whatever was held: two records, in arrival order.
    asm.feed("scale", 0x2A9C, p1, 3, now=5.0)
    out = asm.feed("scale", 0x2A9C, bytes.fromhex("0000ff00"), 4, now=5.1)
    assert [j.tag for j in out] == [3, 4]
    assert decode(0x2A9C, out[0].data)[0].q == ("partial_record",)


def test_simulator_split_records_come_out_whole() -> None:
    values = {f.name: (i * 11) % 250 for i, f in enumerate(fl for g in TREADMILL.groups for fl in g.fields)}
    parts = split_record(TREADMILL, 0x1FFE, values, mtu_payload=20)
    asm: RecordAssembler[int] = RecordAssembler()
    out = [j for i, p in enumerate(parts) for j in asm.feed("tm", 0x2ACD, p, i, now=0.0)]
    assert len(out) == 1 and out[0].parts == len(parts) and decode(0x2ACD, out[0].data)[0].q == ()


@settings(max_examples=400, deadline=None, print_blob=True)
@given(st.lists(st.sampled_from([FIRST, LAST, bytes.fromhex("4500b400"), b"", bytes.fromhex("0100")]), max_size=30))
def test_every_part_comes_out_exactly_once_in_order(parts: list[bytes]) -> None:
    """Whatever the device sends, the bytes handed back are the bytes fed, in order, none lost."""
    asm: RecordAssembler[int] = RecordAssembler()
    out = [j for i, p in enumerate(parts) for j in asm.feed("bike", BIKE, p, i, now=float(i))]
    out += asm.flush()
    assert b"".join(j.data for j in out) == b"".join(parts)
    assert sum(j.parts for j in out) == len(parts)
    for j in out:
        with contextlib.suppress(EdgeError):  # malformed frames are handed back too; the gateway counts them
            decode(BIKE, j.data)
