"""Records: one canonical byte form, strict parsing, and nothing but the package's own errors."""

from __future__ import annotations

import contextlib
import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import CodecError, EdgeError, NotCanonical
from edge.record import Record, decode_data_message, encode_data_message, encode_record

R = Record(
    gw="gw-1",
    seq=42,
    dev="hr-001",
    t=1_795_000_000_000,
    kind="heart_rate",
    val={"heart_rate": 72, "rr_intervals": [0.974609375], "sensor_contact": True},
    raw=bytes.fromhex("1648f903"),
    salt=bytes(range(16)),
)


def test_golden_bytes() -> None:
    """Canonical key order: by encoded length, then bytewise (t, gw, dev, raw, seq, val, kind, salt)."""
    expected = (
        "a8"  # map of 8
        "6174"
        "1b000001a1ee565e00"  # "t": 1795000000000 = 0x1A1EE565E00 (uint64)
        "626777"
        "64"
        "67772d31"  # "gw": "gw-1"
        "63646576"
        "66"
        "68722d303031"  # "dev": "hr-001"
        "63726177"
        "44"
        "1648f903"  # "raw": h'1648f903'
        "63736571"
        "18"
        "2a"  # "seq": 42
        "6376616c"
        "a3"  # "val": map of 3
        "6a"
        "68656172745f72617465"
        "1848"  # "heart_rate": 72
        "6c"
        "72725f696e74657276616c73"
        "81"
        "f93bcc"  # "rr_intervals": [0.974609375]: exact in half precision,
        # so the shortest form is f9 3bcc (RFC 8949 §4.2.1)
        "6e"
        "73656e736f725f636f6e74616374"
        "f5"  # "sensor_contact": true
        "646b696e64"
        "6a"
        "68656172745f72617465"  # "kind": "heart_rate"
        "6473616c74"
        "50"
        "000102030405060708090a0b0c0d0e0f"  # "salt": 16 bytes
    )
    assert bytes(R).hex() == expected
    assert Record.from_bytes(bytes.fromhex(expected)) == R


def test_non_canonical_encodings_are_rejected() -> None:
    m = R.to_map()
    unsorted = cbor2.dumps(dict(reversed(list(m.items()))))
    assert cbor2.loads(unsorted) == m
    with pytest.raises(NotCanonical):
        Record.from_bytes(unsorted)
    long_int = bytes(R).replace(bytes.fromhex("63736571182a"), bytes.fromhex("6373657119002a"))
    with pytest.raises(NotCanonical):
        Record.from_bytes(long_int)


@pytest.mark.parametrize(
    "change",
    [
        {"gw": "gw/1"},
        {"dev": "a#b"},
        {"dev": ""},
        {"gw": "x" * 65},
        {"salt": b"short"},
        {"seq": True},
        {"t": -1},
        {"seq": 1 << 64},
        {"kind": "HeartRate"},
        {"val": {"x": math.nan}},
        {"val": {"x": math.inf}},
        {"val": {"BadName": 1}},
        {"val": {"x": "text"}},
        {"val": {"x": [1, "2"]}},
        {"raw": b"\x00" * 3000},
        {"q": ("Bad Flag",)},
    ],
)
def test_validation(change: dict[str, object]) -> None:
    fields = {**R.to_map(), "q": ()}
    fields.update(change)
    with pytest.raises(CodecError):
        Record(**fields)  # type: ignore[arg-type]


def test_unknown_or_missing_fields_are_rejected() -> None:
    m = R.to_map()
    with pytest.raises(CodecError, match="unexpected"):
        Record.from_bytes(cbor2.dumps({**m, "extra": 1}, canonical=True))
    del m["salt"]
    with pytest.raises(CodecError, match="missing"):
        Record.from_bytes(cbor2.dumps(m, canonical=True))


def test_data_messages() -> None:
    payload = encode_data_message([bytes(R), bytes(R)])
    assert decode_data_message(payload) == [bytes(R), bytes(R)]
    for bad in (cbor2.dumps([1]), cbor2.dumps({"a": b""}), b"\xff"):
        with pytest.raises(CodecError):
            decode_data_message(bad)


ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
numbers = st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
records = st.builds(
    Record,
    gw=ids,
    seq=st.integers(0, 2**64 - 1),
    dev=ids,
    t=st.integers(0, 2**64 - 1),
    kind=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
    val=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        numbers | st.booleans() | st.lists(numbers, max_size=5),
        max_size=6,
    ),
    raw=st.binary(max_size=40),
    salt=st.binary(min_size=16, max_size=16),
    q=st.lists(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True), max_size=3).map(tuple),
    sub=st.none() | st.from_regex(r"sub-[0-9a-f]{16}", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_round_trip(r: Record) -> None:
    assert Record.from_bytes(bytes(r)) == r


@settings(max_examples=1000, deadline=None, print_blob=True)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_package_errors(data: bytes) -> None:
    with contextlib.suppress(EdgeError):
        Record.from_bytes(data)


@settings(max_examples=1500, deadline=None, print_blob=True)
@given(
    records, st.lists(st.sampled_from([0.5, 72.0, -0.0, 1e-45, 3.4028234663852886e38, 65504.0, 0.8, 1e300]), max_size=3)
)
def test_the_fast_encoding_is_exactly_the_canonical_one(r: Record, floats: list[float]) -> None:
    """Record bytes are consensus-critical: the hot-path encoder must equal canonical cbor2 byte for byte,
    including floats that canonical CBOR shortens to float16/float32."""
    from dataclasses import replace

    from edge import cbor

    if floats:
        r = replace(r, val={**r.val, "f_a": floats[0], "f_list": floats})
    assert bytes(r) == cbor.dumps(r.to_map())


junk = (
    st.none()
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.booleans()
    | numbers
    | st.floats()
    | st.lists(numbers | st.booleans() | st.floats(), max_size=3)
)


@settings(max_examples=1500, deadline=None, print_blob=True)
@given(
    records,
    st.dictionaries(st.text(max_size=4) | st.from_regex(r"[a-z]{1,4}", fullmatch=True), junk, max_size=4),
    st.integers(-2, 2**64 + 1) | st.just(1.5),
    st.binary(max_size=20),
)
def test_encode_record_checks_exactly_what_record_checks(
    r: Record, val: dict[str, object], seq: object, salt: bytes
) -> None:
    """The ingest path encodes without building a Record: it must accept, refuse and encode the same."""
    fields = {
        "gw": r.gw,
        "seq": seq,
        "dev": r.dev,
        "t": r.t,
        "kind": r.kind,
        "val": val,
        "raw": r.raw,
        "salt": salt,
        "q": r.q,
        "sub": r.sub,
    }
    try:
        expected = bytes(Record(**fields))  # type: ignore[arg-type]
    except CodecError:
        with pytest.raises(CodecError):
            encode_record(**fields)  # type: ignore[arg-type]
        return
    assert encode_record(**fields) == expected  # type: ignore[arg-type]


SUB = "sub-0123456789abcdef"


def test_a_bound_wearer_adds_sub_in_its_canonical_place() -> None:
    from dataclasses import replace

    r = replace(R, sub=SUB)
    data = bytes(r)
    assert data == cbor2.dumps(r.to_map(), canonical=True) and Record.from_bytes(data) == r
    keys = list(cbor2.loads(data))
    assert keys.index("seq") + 1 == keys.index("sub") == keys.index("val") - 1
    assert Record.from_bytes(bytes(R)).sub is None and b"sub" not in bytes(R)  # unbound: no sub at all


@pytest.mark.parametrize(
    "forged",
    [
        "sub-0123456789abcde",  # truncated
        "sub-0123456789abcdef0",  # too long
        "sub-0123456789ABCDEF",  # upper case: two spellings of one subject
        "ble-0123456789abcdef",  # a device pseudonym where a subject belongs
        "member-42",  # a raw member id
        "",
    ],
)
def test_a_forged_sub_is_refused_on_both_paths(forged: str) -> None:
    m = {**R.to_map(), "sub": forged}
    with pytest.raises(CodecError, match=r"record\.sub"):
        Record.from_bytes(cbor2.dumps(m, canonical=True))
    with pytest.raises(CodecError, match=r"record\.sub"):
        encode_record(**{**R.to_map(), "q": (), "sub": forged})
    with pytest.raises(CodecError):
        Record.from_bytes(cbor2.dumps({**R.to_map(), "sub": 7}, canonical=True))  # not text
