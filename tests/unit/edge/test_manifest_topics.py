"""Manifests sign exactly their bytes and chain by SM3; topics follow the contract and nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import cbor
from edge.errors import CodecError, EdgeError
from edge.manifest import GENESIS_PREV, Manifest, SignedManifest, build_manifest, sign_manifest
from edge.merkle import merkle_root
from edge.sm2 import generate_signer
from edge.sm3 import sm3
from edge.topics import Topics, parse_topic

SIGNER, OTHER = generate_signer(), generate_signer()
RECORDS = [f"r{i}".encode() for i in range(5)]


def test_build_sign_parse_verify() -> None:
    m = build_manifest("gw-1", 1, 1, RECORDS, GENESIS_PREV, 1_700_000_000_000)
    assert (m.first_seq, m.last_seq, m.count, m.root, m.hash) == (1, 5, 5, merkle_root(RECORDS), "sm3")
    signed = sign_manifest(m, SIGNER)
    again = SignedManifest.from_bytes(bytes(signed))
    assert again == signed and again.manifest == m
    assert again.verify(SIGNER) and not again.verify(OTHER)
    assert m.digest == sm3(bytes(m))
    m2 = build_manifest("gw-1", 2, 6, RECORDS, m.digest, 1_700_000_001_000)
    assert m2.prev == m.digest and m2.first_seq == 6


def test_tampered_manifest_bytes_fail() -> None:
    signed = sign_manifest(build_manifest("gw-1", 1, 1, RECORDS, GENESIS_PREV, 1), SIGNER)
    forged = cbor.loads(signed.body)
    forged["count"], forged["last_seq"] = 4, 4
    assert not SignedManifest(cbor.dumps(forged), signed.sig, signed.key_id).verify(SIGNER)
    assert not SignedManifest(signed.body, signed.sig, OTHER.key_id).verify(SIGNER)


@pytest.mark.parametrize(
    "change",
    [
        {"count": 4},
        {"last_seq": 0, "first_seq": 1},
        {"root": b"x"},
        {"prev": b"\x00" * 31},
        {"hash": "sha256"},
        {"batch": -1},
    ],
)
def test_manifest_rules(change: dict[str, object]) -> None:
    m = build_manifest("gw-1", 1, 1, RECORDS, GENESIS_PREV, 1)
    fields = {**cbor.loads(bytes(m)), **change}
    with pytest.raises(CodecError):
        Manifest.from_bytes(cbor.dumps(fields))


def test_empty_batch_is_refused() -> None:
    with pytest.raises(CodecError):
        build_manifest("gw-1", 1, 1, [], GENESIS_PREV, 1)


def test_topics() -> None:
    t = Topics("shenzhen", "gw-1")
    assert t.data("hr-1") == "tiyi/v1/shenzhen/gw-1/data/hr-1"
    assert (t.batch, t.anchor, t.status, t.key, t.all) == (
        "tiyi/v1/shenzhen/gw-1/batch",
        "tiyi/v1/shenzhen/gw-1/anchor",
        "tiyi/v1/shenzhen/gw-1/status",
        "tiyi/v1/shenzhen/gw-1/key",
        "tiyi/v1/shenzhen/gw-1/#",
    )
    p = parse_topic("tiyi/v1/shenzhen/gw-1/data/hr-1")
    assert (p.region, p.gw, p.channel, p.dev) == ("shenzhen", "gw-1", "data", "hr-1")
    assert parse_topic(t.key).channel == "key"
    d = parse_topic(t.device_state("ble-0123"))
    assert (d.channel, d.dev) == ("devices", "ble-0123")


def test_audience_topics() -> None:
    """Contract 1.3: an audience's own channels, parsed apart from the site's full stream."""
    t = Topics("shenzhen", "gw-1")
    assert t.aud_data("research-hk", "hr-1") == "tiyi/v1/shenzhen/gw-1/aud/research-hk/data/hr-1"
    assert t.aud_view("research-hk") == "tiyi/v1/shenzhen/gw-1/aud/research-hk/view"
    assert t.aud_consent("research-hk") == "tiyi/v1/shenzhen/gw-1/aud/research-hk/consent"
    d = parse_topic(t.aud_data("research-hk", "hr-1"))
    assert (d.region, d.gw, d.channel, d.dev, d.aud) == ("shenzhen", "gw-1", "aud_data", "hr-1", "research-hk")
    v, c = parse_topic(t.aud_view("a1")), parse_topic(t.aud_consent("a1"))
    assert (v.channel, v.aud, v.dev, c.channel, c.aud) == ("aud_view", "a1", None, "aud_consent", "a1")
    assert parse_topic(t.data("hr-1")).aud is None
    for bad in ("a b", "+", "#", ""):
        with pytest.raises(CodecError):
            t.aud_view(bad)


@pytest.mark.parametrize(
    "topic",
    [
        "tiyi/v1/r/g/aud",
        "tiyi/v1/r/g/aud/a1",
        "tiyi/v1/r/g/aud/a1/data",
        "tiyi/v1/r/g/aud/a1/data/d/x",
        "tiyi/v1/r/g/aud/a1/view/x",
        "tiyi/v1/r/g/aud/a1/consent/x",
        "tiyi/v1/r/g/aud/a1/batch",
        "tiyi/v1/r/g/aud/+/view",
        "tiyi/v1/r/g/aud/a 1/view",
    ],
)
def test_bad_audience_topics(topic: str) -> None:
    with pytest.raises(CodecError):
        parse_topic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "tiyi/v2/r/g/batch",
        "tiyi/v1/r/g/secrets",
        "tiyi/v1/r/g/data",
        "tiyi/v1/r/g+/batch",
        "tiyi/v1/r/#/batch",
        "tiyi/v1/r/g/batch/extra",
        "tiyi/v1/r/g/devices/d",
        "tiyi/v1/r/g/devices/d/other",
        "other/topic",
    ],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(CodecError):
        parse_topic(topic)
    with pytest.raises(CodecError):
        Topics("shen zhen", "gw")


# ---------------------------------------------------------------- network input: never anything but our errors


@settings(max_examples=800, deadline=None, print_blob=True)
@given(
    st.binary(max_size=400)
    | st.builds(
        lambda d: cbor.dumps(d),
        st.dictionaries(
            st.sampled_from(
                ["manifest", "sig", "key_id", "gw", "batch", "root", "prev", "count", "first_seq", "t", "x"]
            ),
            st.integers() | st.binary(max_size=40) | st.text(max_size=10),
            max_size=8,
        ),
    )
)
def test_manifests_from_the_network_fail_only_with_our_errors(data: bytes) -> None:
    for parse in (Manifest.from_bytes, SignedManifest.from_bytes):
        with contextlib.suppress(EdgeError):
            parse(data)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_topics_from_the_network_fail_only_with_our_errors(topic: str) -> None:
    with contextlib.suppress(EdgeError):
        parse_topic(topic)
