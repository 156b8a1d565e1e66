"""Signed heads: one byte form, strict decoding, and a signature that only ever vouches for a head."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import cbor
from edge.errors import CodecError, EdgeError, NotCanonical
from edge.head import MAX_HEAD_BYTES, MAX_SIGNED_HEAD_BYTES, NO_MANIFEST, Head, SignedHead, sign_head
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.sm2 import generate_signer
from edge.topics import Topics, parse_topic

SIGNER, OTHER = generate_signer(), generate_signer()
HEAD = Head(gw="gw-1", batch=3, last_seq=42, manifest=b"\xab" * 32, issued=1_795_000_000_000)

# Canonical CBOR: keys ordered by their encoded bytes (shorter first), shortest integer forms.
GOLDEN_HEAD = bytes.fromhex(
    "a6"  # map(6)
    "6267776467772d31"  # "gw": "gw-1"
    "6474797065"
    "6468656164"  # "type": "head"
    "656261746368"
    "03"  # "batch": 3
    "666973737565641b000001a1ee565e00"  # "issued": 1795000000000
    "686c6173745f736571"
    "182a"  # "last_seq": 42
    "686d616e6966657374"
    "5820" + "ab" * 32  # "manifest": h'ab..ab'
)
GOLDEN_EMPTY = bytes.fromhex(
    "a6"
    "6267776467772d31"
    "6474797065"
    "6468656164"
    "656261746368"
    "00"
    "666973737565"
    "6401"
    "686c6173745f736571"
    "00"
    "686d616e6966657374"
    "5820" + "00" * 32
)
FAKE_SIG = bytes.fromhex("3006020101020102")
GOLDEN_SIGNED = bytes.fromhex(
    "a3"  # map(3)
    "63736967"
    "48"
    + FAKE_SIG.hex()  # "sig": h'3006...'
    + "6468656164"
    "5860"
    + GOLDEN_HEAD.hex()  # "head": the head bytes (96)
    + "666b65795f6964"
    "74" + b"sm2:0011223344556677".hex()  # "key_id"
)


def fields(**change: Any) -> dict[str, Any]:
    return {**cbor.loads(GOLDEN_HEAD), **change}


# ---------------------------------------------------------------- codec


def test_golden_bytes_both_ways() -> None:
    assert bytes(HEAD) == GOLDEN_HEAD and Head.from_bytes(GOLDEN_HEAD) == HEAD
    empty = Head(gw="gw-1", batch=0, last_seq=0, manifest=NO_MANIFEST, issued=1)
    assert bytes(empty) == GOLDEN_EMPTY and Head.from_bytes(GOLDEN_EMPTY) == empty
    signed = SignedHead(GOLDEN_HEAD, FAKE_SIG, "sm2:0011223344556677")
    assert bytes(signed) == GOLDEN_SIGNED and SignedHead.from_bytes(GOLDEN_SIGNED) == signed
    assert signed.head == HEAD


def test_no_batch_yet_names_what_batch_one_will_chain_to() -> None:
    assert NO_MANIFEST == GENESIS_PREV


def test_sign_round_trip_and_verify() -> None:
    signed = sign_head(HEAD, SIGNER)
    again = SignedHead.from_bytes(bytes(signed))
    assert again == signed and again.head == HEAD and again.body == GOLDEN_HEAD
    assert again.verify(SIGNER)


def test_head_names_a_manifest_by_its_digest() -> None:
    m = build_manifest("gw-1", 1, 1, [b"a", b"b"], GENESIS_PREV, 5)
    head = Head(gw="gw-1", batch=m.batch, last_seq=m.last_seq, manifest=m.digest, issued=6)
    assert build_manifest("gw-1", 2, 3, [b"c"], head.manifest, 7).prev == m.digest


def test_extreme_but_valid_values_fit_the_size_limits() -> None:
    top = (1 << 64) - 1
    big = Head(gw="g" * 64, batch=top, last_seq=top, manifest=b"\xff" * 32, issued=top)
    assert Head.from_bytes(bytes(big)) == big and len(bytes(big)) <= MAX_HEAD_BYTES
    signed = SignedHead(bytes(big), b"\x30" * 80, "k" * 64)
    assert SignedHead.from_bytes(bytes(signed)) == signed and len(bytes(signed)) <= MAX_SIGNED_HEAD_BYTES


@pytest.mark.parametrize(
    "change",
    [
        {"x": 1},  # unknown field
        {"prev": NO_MANIFEST},  # a manifest's field
        {"type": "manifest"},
        {"type": b"head"},
        {"type": "HEAD"},
        {"gw": "gw 1"},
        {"gw": ""},
        {"gw": "g" * 65},
        {"gw": b"gw-1"},
        {"batch": -1},
        {"batch": True},
        {"batch": 3.0},
        {"batch": "3"},
        {"batch": 1 << 64},
        {"last_seq": -1},
        {"last_seq": 1 << 64},
        {"last_seq": 2},  # batch 3 cannot end before seq 3
        {"issued": -1},
        {"issued": 1 << 64},
        {"issued": None},
        {"manifest": b"\xab" * 31},
        {"manifest": b"\xab" * 33},
        {"manifest": "ab" * 32},
        {"manifest": NO_MANIFEST},  # a closed batch has a real digest
        {"batch": 0},  # none closed, yet a last seq and a digest
        {"batch": 0, "last_seq": 0},  # none closed, yet a digest
        {"batch": 0, "manifest": NO_MANIFEST},  # none closed, yet a last seq
    ],
    ids=repr,
)
def test_malformed_heads_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        Head.from_bytes(cbor.dumps(fields(**change)))


@pytest.mark.parametrize("name", ["type", "gw", "batch", "last_seq", "manifest", "issued"])
def test_every_field_is_required(name: str) -> None:
    m = fields()
    del m[name]
    with pytest.raises(CodecError):
        Head.from_bytes(cbor.dumps(m))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOLDEN_HEAD[:-1],
        GOLDEN_HEAD + b"\x00",  # truncated, trailing garbage
        cbor.dumps([1, 2]),
        cbor.dumps({1: "gw"}),
        b"\xff",
        bytes(MAX_HEAD_BYTES + 1),  # oversized: refused before decoding
    ],
    ids=repr,
)
def test_broken_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        Head.from_bytes(data)


def test_non_canonical_encodings_are_refused() -> None:
    long_int = GOLDEN_HEAD.replace(bytes.fromhex("65626174636803"), bytes.fromhex("6562617463681803"))
    assert cbor.loads(long_int, canonical=False) == cbor.loads(GOLDEN_HEAD)
    with pytest.raises(NotCanonical):
        Head.from_bytes(long_int)


# ---------------------------------------------------------------- signatures


def test_a_head_under_another_key_fails() -> None:
    signed = sign_head(HEAD, OTHER)
    assert not signed.verify(SIGNER)
    # ... and claiming our key id does not help.
    assert not SignedHead(signed.body, signed.sig, SIGNER.key_id).verify(SIGNER)
    # A valid signature presented under another key id fails too (key ids must agree).
    mine = sign_head(HEAD, SIGNER)
    assert not SignedHead(mine.body, mine.sig, OTHER.key_id).verify(SIGNER)


def test_an_altered_head_fails() -> None:
    signed = sign_head(HEAD, SIGNER)
    for change in (
        {"batch": 2},
        {"last_seq": 41},
        {"manifest": b"\xac" * 32},
        {"issued": HEAD.issued + 1},
        {"gw": "gw-2"},
    ):
        forged = cbor.dumps(fields(**change))
        assert not SignedHead(forged, signed.sig, signed.key_id).verify(SIGNER)


def test_a_manifest_signature_cannot_be_replayed_as_a_head() -> None:
    sm = sign_manifest(build_manifest("gw-1", 3, 1, [b"r"] * 42, b"\x01" * 32, 9), SIGNER)
    assert sm.verify(SIGNER)
    with pytest.raises(CodecError, match="missing field"):
        SignedHead(sm.body, sm.sig, sm.key_id)
    with pytest.raises(CodecError):
        SignedHead.from_bytes(cbor.dumps({"head": sm.body, "sig": sm.sig, "key_id": sm.key_id}))


def test_a_head_signature_cannot_be_replayed_as_a_manifest() -> None:
    sh = sign_head(HEAD, SIGNER)
    with pytest.raises(CodecError, match="missing field"):  # refused where it is decoded, like a head
        SignedManifest.from_bytes(cbor.dumps({"manifest": sh.body, "sig": sh.sig, "key_id": sh.key_id}))
    with pytest.raises(CodecError, match="missing field"):
        SignedManifest(sh.body, sh.sig, sh.key_id)


@pytest.mark.parametrize(
    "envelope",
    [
        {"head": GOLDEN_HEAD, "sig": b"\x30" * 81, "key_id": "k"},  # signature too long
        {"head": GOLDEN_HEAD, "sig": FAKE_SIG, "key_id": "k" * 65},  # key id too long
        {"head": GOLDEN_HEAD, "sig": FAKE_SIG.hex(), "key_id": "k"},  # wrong types
        {"head": GOLDEN_HEAD, "sig": FAKE_SIG, "key_id": b"k"},
        {"head": GOLDEN_HEAD.hex(), "sig": FAKE_SIG, "key_id": "k"},
        {"head": GOLDEN_HEAD, "sig": FAKE_SIG},  # missing key id
        {"head": GOLDEN_HEAD, "sig": FAKE_SIG, "key_id": "k", "t": 1},  # unknown field
        {"manifest": GOLDEN_HEAD, "sig": FAKE_SIG, "key_id": "k"},  # a manifest envelope
        {"head": GOLDEN_HEAD[:-1], "sig": FAKE_SIG, "key_id": "k"},  # body not a head
    ],
    ids=repr,
)
def test_malformed_envelopes_are_refused(envelope: dict[str, Any]) -> None:
    with pytest.raises(CodecError):
        SignedHead.from_bytes(cbor.dumps(envelope))


def test_oversized_envelopes_are_refused_before_decoding() -> None:
    padded = cbor.dumps({"head": GOLDEN_HEAD, "sig": FAKE_SIG, "key_id": "k", "pad": bytes(400)})
    with pytest.raises(CodecError, match="limit"):
        SignedHead.from_bytes(padded)


# ---------------------------------------------------------------- topic


def test_head_topic() -> None:
    t = Topics("shenzhen", "gw-1")
    assert t.head == "tiyi/v1/shenzhen/gw-1/head"
    p = parse_topic(t.head)
    assert (p.region, p.gw, p.channel, p.dev) == ("shenzhen", "gw-1", "head", None)
    for bad in ("tiyi/v1/shenzhen/gw-1/head/x", "tiyi/v1/shenzhen/gw-1/heads"):
        with pytest.raises(CodecError):
            parse_topic(bad)


# ---------------------------------------------------------------- network input: never anything but our errors


@settings(max_examples=800, deadline=None, print_blob=True)
@given(
    st.binary(max_size=600)
    | st.builds(
        lambda d: cbor.dumps(d),
        st.dictionaries(
            st.sampled_from(["head", "sig", "key_id", "type", "gw", "batch", "last_seq", "manifest", "issued", "x"]),
            st.integers() | st.binary(max_size=40) | st.text(max_size=10),
            max_size=8,
        ),
    )
)
def test_heads_from_the_network_fail_only_with_our_errors(data: bytes) -> None:
    for parse in (Head.from_bytes, SignedHead.from_bytes):
        with contextlib.suppress(EdgeError):
            parse(data)
