"""Roll-ups: a Merkle tree over batch roots, with a path from each batch root to the roll-up root."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import CodecError, EdgeError
from edge.merkle import merkle_root
from edge.rollup import Rollup, verify_rollup_path
from edge.sm3 import sm3


def roots(n: int) -> tuple[bytes, ...]:
    return tuple(sm3(bytes([i])) for i in range(n))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 1000))
def test_every_batch_root_has_a_path_to_the_roll_up_root(n: int, first: int) -> None:
    r = Rollup("gw-1", "health_supervision", 3, first, roots(n))
    assert r.root == merkle_root(list(roots(n))) and r.last_batch == first + n - 1
    for i in range(n):
        path = r.path(first + i)
        assert verify_rollup_path(r.roots[i], i, n, path, r.root)
        assert not verify_rollup_path(sm3(b"other"), i, n, path, r.root)
        if n > 1:
            assert not verify_rollup_path(r.roots[i], (i + 1) % n, n, path, r.root)


def test_round_trip_and_path_bounds() -> None:
    r = Rollup("gw-1", "judicial", 1, 5, roots(3))
    assert Rollup.from_bytes(bytes(r)) == r
    with pytest.raises(CodecError):
        r.path(9)


@pytest.mark.parametrize(
    "kw", [{"roots": ()}, {"roots": (b"short",)}, {"number": 0}, {"first_batch": True}, {"gw": "a/b"}]
)
def test_invalid_roll_ups_are_refused(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"gw": "gw-1", "target": "judicial", "number": 1, "first_batch": 1, "roots": roots(2)}
    with pytest.raises(CodecError):
        Rollup(**{**args, **kw})  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsing_random_bytes_raises_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(EdgeError):
        Rollup.from_bytes(data)
