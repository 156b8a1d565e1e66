"""The single-pass record reader: it may only accept what the reference path (cbor2 + canonical re-encoding)
accepts, with the same value; everything else it must hand over, so no forgery gets through it."""

from __future__ import annotations

import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import cbor
from edge.errors import CodecError, EdgeError
from edge.record import _READ_ERRORS, Record, _read, decode_data_message, encode_data_message, read_record
from tests.unit.edge.test_record import R, records


def _reference(data: bytes) -> Record | None:
    try:
        return Record._from_bytes_reference(data)
    except EdgeError:
        return None


def _fast(data: bytes) -> tuple[object, ...] | None:
    try:
        return _read(data)
    except _READ_ERRORS:
        return None


def _fields(r: Record) -> tuple[object, ...]:
    return (r.gw, r.seq, r.dev, r.t, r.kind, dict(r.val), r.raw, r.salt, r.q, r.sub)


def assert_agree(data: bytes) -> None:
    """The reader accepts only what the reference accepts, with the same fields (types included: 1 is not 1.0);
    ``Record.from_bytes`` and ``read_record`` accept and refuse exactly what the reference does."""
    ref = _reference(data)
    fast = _fast(data)
    if fast is not None:
        assert ref is not None, f"the reader accepted what the reference refuses: {data.hex()}"
        assert repr(fast) == repr(_fields(ref))
    if ref is None:
        with pytest.raises(EdgeError):
            Record.from_bytes(data)
        with pytest.raises(EdgeError):
            read_record(data)
    else:
        assert repr(Record.from_bytes(data)) == repr(ref)
        assert repr(read_record(data)) == repr(_fields(ref))


@settings(max_examples=400, deadline=None)
@given(records)
def test_the_reader_reads_every_generated_record_as_the_reference_does(r: Record) -> None:
    data = bytes(r)
    assert_agree(data)


def test_the_usual_shapes_take_the_fast_path() -> None:
    """Not a correctness property, but the point of the reader: plain, flagged and bound records are read by it."""
    assert _fast(bytes(R)) is not None
    for change in ({"q": ("low_battery", "motion")}, {"sub": "sub-0123456789abcdef"}):
        r = Record(**{**R.to_map(), "q": (), **change})  # type: ignore[arg-type]
        assert repr(_fast(bytes(r))) == repr(_fields(r))


@settings(max_examples=150, deadline=None)
@given(records, st.data())
def test_no_mutation_of_a_record_gets_through_the_reader_alone(r: Record, data: st.DataObject) -> None:
    """Every byte changed, dropped or doubled, truncations and appended bytes: the two paths agree."""
    b = bytes(r)
    i = data.draw(st.integers(0, len(b) - 1))
    x = data.draw(st.integers(0, 255))
    for m in (
        b[:i] + bytes([x]) + b[i + 1 :],
        b[:i] + b[i + 1 :],
        b[:i] + b[i : i + 1] + b[i:],
        b[:i] + bytes([x]) + b[i:],
        b[:i],
        b + bytes([x]),
    ):
        assert_agree(m)


def test_every_single_byte_change_of_a_real_record() -> None:
    b = bytes(R)
    for i in range(len(b)):
        for x in range(256):
            assert_agree(b[:i] + bytes([x]) + b[i + 1 :])


def _swap(data: bytes, old: str, new: str) -> bytes:
    o, n = bytes.fromhex(old), bytes.fromhex(new)
    assert data.count(o) == 1, old
    return data.replace(o, n)


GOOD = bytes(R)
T = "1b000001a1ee565e00"
FORGERIES = {
    # non-shortest heads: ints, lengths of text, bytes, maps and arrays
    "seq in two bytes": _swap(GOOD, "63736571182a", "6373657119002a"),
    "small seq in a 1-byte argument": _swap(
        bytes(Record(**{**R.to_map(), "q": (), "seq": 5})), "6373657105", "637365711805"
    ),
    "t in eight bytes below 2^32": _swap(GOOD, "61741b000001a1ee565e00", "61741b0000000000000005"),
    "val int in two bytes": _swap(GOOD, "1848", "190048"),
    "gw length in a 1-byte argument": _swap(GOOD, "6467772d31", "780467772d31"),
    "raw length in a 1-byte argument": _swap(GOOD, "441648f903", "58041648f903"),
    "val map length in a 1-byte argument": _swap(GOOD, "6376616ca3", "6376616cb803"),
    "array length in a 1-byte argument": _swap(GOOD, "81f93bcc", "9801f93bcc"),
    # floats not in their shortest form
    "float32 that fits float16": _swap(GOOD, "f93bcc", "fa" + struct.pack(">f", 0.974609375).hex()),
    "float64 that fits float16": _swap(GOOD, "f93bcc", "fb" + struct.pack(">d", 0.974609375).hex()),
    # tags and indefinite lengths
    "seq as a bignum tag": _swap(GOOD, "63736571182a", "63736571c2412a"),
    "tagged val int": _swap(GOOD, "1848", "c11848"),
    "indefinite text": _swap(GOOD, "6467772d31", "7f6467772d31ff"),
    "indefinite bytes": _swap(GOOD, "441648f903", "5f441648f903ff"),
    "indefinite val map": _swap(GOOD, "6e73656e736f725f636f6e74616374f5", "6e73656e736f725f636f6e74616374f5ff").replace(
        bytes.fromhex("6376616ca3"), bytes.fromhex("6376616cbf")
    ),
    "indefinite array": _swap(GOOD, "81f93bcc", "9ff93bccff"),
    # map structure
    "trailing byte": GOOD + b"\x00",
    "truncated": GOOD[:-1],
    "unknown key": cbor2.dumps({**R.to_map(), "zz": 1}, canonical=True),
    "empty q": cbor2.dumps({**R.to_map(), "q": []}, canonical=True),  # one byte form per record: no q
    "a list as a flag": cbor2.dumps({**R.to_map(), "q": [[1]]}, canonical=True),  # was a TypeError
    "a list as an id": cbor2.dumps({**R.to_map(), "gw": [1]}, canonical=True),
    "keys out of order": cbor2.dumps(dict(reversed(list(R.to_map().items())))),
    "val keys out of order": cbor2.dumps({**R.to_map(), "val": dict(reversed(list(R.val.items())))}),
    "newline after an id": _swap(GOOD, "6467772d31", "6567772d310a"),
    "newline after a name": cbor2.dumps({**R.to_map(), "kind": "heart_rate\n"}, canonical=True),
    "non-finite float": _swap(GOOD, "f93bcc", "f97c00"),
    "bool in a number list": _swap(GOOD, "81f93bcc", "81f5"),
}


def _duplicate_key(top: bool) -> bytes:
    """A map with one key twice (cbor2 keeps the last): the top level gets a second ``seq``; ``val`` a second
    ``heart_rate``."""
    if top:
        return b"\xa9" + _swap(GOOD[1:], "63736571182a", "63736571182a63736571182a")
    hr = "6a68656172745f726174651848"
    return _swap(GOOD, "6376616ca3" + hr, "6376616ca4" + hr + hr)


FORGERIES["duplicate top-level key"] = _duplicate_key(True)
FORGERIES["duplicate val key"] = _duplicate_key(False)


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_each_forgery_is_refused_and_never_read_by_the_fast_path(name: str) -> None:
    data = FORGERIES[name]
    assert data != GOOD
    assert _fast(data) is None
    with pytest.raises(CodecError):
        Record.from_bytes(data)
    with pytest.raises(CodecError):
        read_record(data)
    assert_agree(data)


def test_a_long_text_head_for_a_short_id_is_refused_even_when_the_id_was_read_before() -> None:
    """The reader caches what it has checked by its bytes; a cached id under a non-shortest head is still refused."""
    Record.from_bytes(GOOD)  # caches gw-1 and hr-001
    assert _fast(FORGERIES["gw length in a 1-byte argument"]) is None


def test_a_subclass_or_non_bytes_input_takes_the_reference_path() -> None:
    assert Record.from_bytes(bytearray(GOOD)) == R  # type: ignore[arg-type]
    assert read_record(memoryview(GOOD))[:3] == ("gw-1", 42, "hr-001")  # type: ignore[arg-type]


def _split_reference(payload: bytes, max_records: int = 10_000) -> list[bytes] | None:
    try:
        items = cbor.loads(payload)
    except EdgeError:
        return None
    if not isinstance(items, list) or not all(isinstance(x, bytes) for x in items) or len(items) > max_records:
        return None
    return items


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=30), st.data())
def test_data_messages_split_as_the_reference_does(records: list[bytes], data: st.DataObject) -> None:
    """A data message is split in one pass; every mutation is accepted or refused exactly as cbor2 + canonical
    re-encoding would (a non-shortest head, an indefinite array or string, a tag, trailing bytes)."""
    payload = encode_data_message(records)
    assert decode_data_message(payload) == records
    i = data.draw(st.integers(0, len(payload) - 1))
    x = data.draw(st.integers(0, 255))
    for m in (
        payload[:i] + bytes([x]) + payload[i + 1 :],
        payload[:i] + payload[i + 1 :],
        payload[:i],
        payload + b"\0",
    ):
        ref = _split_reference(m)
        if ref is None:
            with pytest.raises(EdgeError):
                decode_data_message(m)
        else:
            assert decode_data_message(m) == ref


@pytest.mark.parametrize(
    "payload",
    [
        "9f41aaff",  # indefinite array
        "98014161",  # array length in a 1-byte argument
        "81580141",  # byte-string length in a 1-byte argument
        "815f4161ff",  # indefinite byte string
        "81c24101",  # a tagged item
        "814161" + "00",  # trailing byte
        "8241",  # truncated
    ],
)
def test_non_canonical_data_messages_are_refused(payload: str) -> None:
    with pytest.raises(CodecError):
        decode_data_message(bytes.fromhex(payload))


def test_a_data_message_over_the_record_limit_is_refused() -> None:
    with pytest.raises(CodecError, match="more than 2"):
        decode_data_message(encode_data_message([b"a", b"b", b"c"]), max_records=2)


def test_a_record_read_by_the_fast_path_has_every_field_of_the_reference_one() -> None:
    """The reader builds a Record without __init__: a field it forgets to set (``enc`` once did) would make the
    record unusable, so the two paths must give equal records, every field present."""
    fast = Record.from_bytes(bytes(R))
    assert fast == Record._from_bytes_reference(bytes(R)) and fast.enc is None


def test_a_sealed_record_takes_the_reference_path_and_keeps_its_enc() -> None:
    enc = {"kid": "k1", "iv": bytes(12), "ct": bytes(20)}
    sealed = Record(**{**R.to_map(), "val": {}, "raw": b"", "enc": enc})  # type: ignore[arg-type]
    assert _fast(bytes(sealed)) is None
    assert Record.from_bytes(bytes(sealed)).enc == enc
