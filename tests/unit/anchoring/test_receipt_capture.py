"""Anchor receipts and capture files: exact round trips, strict rejection, damage reported not hidden."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.capture import read_capture, write_capture_item
from anchoring.chain import AnchorKind, GatewayEntry, KeyRecord
from anchoring.errors import CaptureError, ReceiptError
from anchoring.receipt import AnchorReceipt
from edge import cbor

R = AnchorReceipt(
    "gw-1", AnchorKind.BATCH, 3, 10, b"\x01" * 32, 20200, b"\x02" * 20, b"\x04" * 20, b"\x03" * 32, 77, b"\x05" * 32
)


def test_receipt_round_trip_is_canonical() -> None:
    data = bytes(R)
    assert AnchorReceipt.from_bytes(data) == R
    assert cbor.loads(data)["status"] == "final"


def test_receipt_says_what_it_anchors() -> None:
    m = cbor.loads(bytes(R))
    assert (m["kind"], m["number"], m["count"]) == ("batch", 3, 10)
    rollup = AnchorReceipt.from_bytes(cbor.dumps({**m, "kind": "rollup"}))
    assert rollup.kind is AnchorKind.ROLLUP and rollup != R


def test_a_receipt_names_its_target_and_a_receipt_without_one_still_reads() -> None:
    from dataclasses import replace

    named = replace(R, target="shenzhen")
    assert cbor.loads(bytes(named))["target"] == "shenzhen"
    assert AnchorReceipt.from_bytes(bytes(named)) == named
    assert "target" not in cbor.loads(bytes(R)) and AnchorReceipt.from_bytes(bytes(R)).target is None
    for bad in ("", "a b", 7, "x" * 65):
        with pytest.raises(ReceiptError):
            AnchorReceipt.from_bytes(cbor.dumps({**cbor.loads(bytes(R)), "target": bad}))


@pytest.mark.parametrize(
    "change",
    [
        {"root": b"\x01" * 31},
        {"contract": b""},
        {"block": -1},
        {"status": "maybe"},
        {"gw": "a b"},
        {"number": True},
        {"kind": "batches"},
        {"kind": 0},
        {"anchorer": b"\x01" * 19},
        {"block_hash": b""},
        {"count": 0},
        {"number": 0},
        {"extra": 1},
    ],
)
def test_receipt_rejects_bad_fields(change: dict[str, object]) -> None:
    m = cbor.loads(bytes(R))
    m.update(change)
    with pytest.raises(ReceiptError):
        AnchorReceipt.from_bytes(cbor.dumps(m))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_receipt_fuzz(data: bytes) -> None:
    with contextlib.suppress(ReceiptError):
        AnchorReceipt.from_bytes(data)


def test_capture_round_trip_and_truncation() -> None:
    buf = io.BytesIO()
    for i in range(5):
        write_capture_item(buf, f"t/{i}", bytes([i]) * i, i % 2 == 0, 1000 + i)
    whole = buf.getvalue()
    items = list(read_capture(io.BytesIO(whole)))
    assert [(x.topic, x.payload, x.retained, x.t_ms) for x in items] == [
        (f"t/{i}", bytes([i]) * i, i % 2 == 0, 1000 + i) for i in range(5)
    ]
    got = []
    with pytest.raises(CaptureError, match="item 4"):
        for item in read_capture(io.BytesIO(whole[:-2])):
            got.append(item)
    assert len(got) == 4


def test_key_periods_from_the_registry_history() -> None:
    a, b, c = b"a" * 64, b"b" * 64, b"c" * 64
    x, y = b"x" * 20, b"y" * 20
    entry = GatewayEntry("gw-1", b"o" * 20, False, 0, (KeyRecord(a, x, 10), KeyRecord(b, x, 20), KeyRecord(c, y, 30)))
    periods = entry.periods()
    assert [(p.key, p.anchorer, p.since, p.until) for p in periods] == [
        (a, x, None, 20),
        (b, x, 20, 30),
        (c, y, 30, None),
    ]
    assert periods[0].covers(5) and not periods[0].covers(20) and periods[1].covers(20) and periods[2].covers(10**9)
    assert entry.current == KeyRecord(c, y, 30)
    revoked = GatewayEntry("gw-1", b"o" * 20, True, 15, (KeyRecord(a, x, 10),))
    assert [(p.key, p.since, p.until) for p in revoked.periods()] == [(a, None, 15)]  # nothing after a revocation
    assert revoked.current is None
