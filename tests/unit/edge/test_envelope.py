"""The one signed envelope behind manifests, heads, consent events and view manifests: each kind round-trips to
the same bytes, refuses oversized input before decoding it, refuses another kind's body where it is built or
decoded (so a signature over one kind never passes for another), and verifies only under the key it names."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edge import cbor
from edge.consent import ConsentEvent, SignedConsent, sign_consent
from edge.envelope import Signed
from edge.errors import CodecError
from edge.head import Head, SignedHead, sign_head
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.sm2 import generate_signer
from edge.view import SignedView, ViewManifest, sign_view

SIGNER, OTHER = generate_signer(), generate_signer()
SUB = "sub-0123456789abcdef"

SAMPLES: dict[str, Callable[[], Signed[object]]] = {
    "manifest": lambda: sign_manifest(build_manifest("gw-1", 1, 1, [b"r1", b"r2"], GENESIS_PREV, 7), SIGNER),
    "head": lambda: sign_head(Head("gw-1", 1, 2, b"\x01" * 32, 9), SIGNER),
    "consent": lambda: sign_consent(ConsentEvent("gw-1", 1, 5, SUB, "research", True, GENESIS_PREV), SIGNER),
    "view": lambda: sign_view(
        ViewManifest(
            "gw-1", "aud-1", 1, b"\x02" * 32, 1, 2, b"\x03" * 32, 0, (("no_consent", 1, 2),), 0, "research", "", 0, 1
        ),
        SIGNER,
    ),
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_kind_round_trips_to_the_same_bytes_and_verifies_only_under_its_key(kind: str) -> None:
    signed = SAMPLES[kind]()
    cls = type(signed)
    data = bytes(signed)
    assert cbor.loads(data) == {kind: signed.body, "sig": signed.sig, "key_id": SIGNER.key_id}
    again = cls.from_bytes(data)
    assert again == signed and bytes(again) == data and hash(again) == hash(signed)
    assert again.verify(SIGNER) and not again.verify(OTHER)
    assert not cls(signed.body, signed.sig, OTHER.key_id).verify(OTHER)  # the named key must be the signer's


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_oversized_input_is_refused_before_it_is_decoded(kind: str) -> None:
    cls = type(SAMPLES[kind]())
    padded = cbor.dumps({kind: b"\x00" * cls.MAX_BYTES, "sig": b"", "key_id": ""})
    with pytest.raises(CodecError, match=f"exceeds the {cls.MAX_BYTES}-byte limit"):
        cls.from_bytes(padded)
    with pytest.raises(CodecError, match="expected bytes"):
        cls.from_bytes("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(SAMPLES))
@pytest.mark.parametrize("other", sorted(SAMPLES))
def test_a_body_of_another_kind_is_refused_where_it_is_built_or_decoded(kind: str, other: str) -> None:
    if kind == other:
        return
    cls, foreign = type(SAMPLES[kind]()), SAMPLES[other]()
    with pytest.raises(CodecError):
        cls(foreign.body, foreign.sig, foreign.key_id)
    with pytest.raises(CodecError):
        cls.from_bytes(cbor.dumps({kind: foreign.body, "sig": foreign.sig, "key_id": foreign.key_id}))


def test_the_kinds_never_compare_equal_across_classes() -> None:
    signed = SAMPLES["manifest"]()
    assert isinstance(signed, SignedManifest) and not isinstance(signed, SignedHead | SignedConsent | SignedView)
    with pytest.raises(AttributeError):
        signed.body = b""  # type: ignore[misc]
