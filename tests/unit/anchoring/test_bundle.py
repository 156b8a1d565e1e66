"""Proof bundles: every link is checked, and each broken link is named."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.bundle import BundleError, build_bundle, verify_bundle
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Outcome
from anchoring.trust import TrustPolicy
from edge.manifest import SignedManifest
from edge.sm2 import load_public_key_pem
from tests.unit.anchoring.fakes import FakeChain
from tests.unit.anchoring.test_stream_verifier import GW, OTHER, SIGNER, Stream, pinned

TRUSTED = pinned()
CHAIN = Stream.honest(n=25, per_batch=10).chain()


def bundle_for(seq: int) -> dict[str, Any]:
    s = Stream.honest(n=25, per_batch=10)
    batch = (seq - 1) // 10
    signed = SignedManifest.from_bytes(s.batches[batch])
    m = signed.manifest
    records = [s.records[i] for i in range(m.first_seq, m.last_seq + 1)]
    return build_bundle(seq, records, signed, AnchorReceipt.from_bytes(s.receipts[batch]), SIGNER.public_key_pem())


def failed(b: dict[str, Any], **kw: Any) -> set[str]:
    result = verify_bundle(b, kw.pop("trusted", TRUSTED), **kw)
    return {name for name, good, _ in result.steps if not good}


@pytest.mark.parametrize("seq", [1, 10, 11, 17, 25])
def test_honest_bundles_verify(seq: int) -> None:
    result = verify_bundle(bundle_for(seq), TRUSTED, CHAIN)
    assert result.ok, result.summary()
    assert result.outcome is Outcome.VERIFIED


def test_each_broken_link_is_named() -> None:
    b = bundle_for(12)
    bad = copy.deepcopy(b)
    bad["inclusion"]["path"][0] = "00" * 32
    assert failed(bad) == {"Merkle inclusion"}
    bad = copy.deepcopy(b)
    bad["inclusion"]["index"] = 3
    assert "position" in failed(bad)
    assert failed(b, trusted=pinned(OTHER)) == {"signature"}
    bad = copy.deepcopy(b)
    bad["anchor"] = None
    assert failed(bad) == {"anchor"}
    assert failed(b, chain=FakeChain()) == {"on chain"}
    bad = copy.deepcopy(b)
    bad["batch"]["sig"] = bundle_for(2)["batch"]["sig"]
    assert failed(bad) == {"signature"}


def test_embedded_key_is_used_only_with_explicit_trust_on_first_use_and_never_counts_as_verified() -> None:
    result = verify_bundle(bundle_for(3), TrustPolicy(tofu=load_public_key_pem), CHAIN)
    assert result.ok and "trust on first use" in result.summary()
    assert result.outcome is Outcome.UNCHECKED


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(version=2),
        lambda b: b.update(record="zz"),
        lambda b: b["inclusion"].update(path="x"),
        lambda b: b.update(batch=[]),
    ],
)
def test_malformed_bundles_fail_cleanly(mutate: Any) -> None:
    b = bundle_for(4)
    mutate(b)
    result = verify_bundle(b, TRUSTED)
    assert not result.ok and result.steps[0][0] == "bundle format"


def test_seq_outside_the_batch_is_refused() -> None:
    s = Stream.honest(n=10, per_batch=10)
    signed = SignedManifest.from_bytes(s.batches[0])
    with pytest.raises(BundleError):
        build_bundle(11, list(s.records.values()), signed, None)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2**70)
    | st.text(max_size=20)
    | st.sampled_from(["00" * 32, "0x" + "11" * 20, "zz", ""]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "hash",
                    "record",
                    "inclusion",
                    "index",
                    "size",
                    "path",
                    "batch",
                    "manifest",
                    "sig",
                    "key_id",
                    "anchor",
                    "receipt",
                    "rollups",
                    "target",
                    "rollup",
                    "first_batch",
                    "root",
                    "public_key_pem",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=600, deadline=None, print_blob=True)
@given(
    st.dictionaries(
        st.sampled_from(["version", "hash", "record", "inclusion", "batch", "anchor", "rollups"]), _json, max_size=7
    ).map(lambda d: {"version": 1, "hash": "sm3", **d})
)
def test_a_hostile_bundle_is_never_proven_and_never_crashes(bundle: dict[str, Any]) -> None:
    """Bundles come from anyone: whatever the JSON holds, the answer is a check result (or BundleError)."""
    try:
        result = verify_bundle(bundle, TrustPolicy(pinned={GW: [SIGNER]}))
    except BundleError:
        return
    assert not result.ok
