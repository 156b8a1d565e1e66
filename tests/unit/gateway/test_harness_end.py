"""The verifying subscriber's end of stream: only the gateway's own clean-stop ``offline`` status counts."""

from __future__ import annotations

from edge import cbor
from gateway.cli.harness import says_offline


def test_only_a_live_offline_from_this_gateway_ends_the_stream() -> None:
    assert says_offline(cbor.dumps({"state": "offline", "t": 1_700_000_000_000, "gw": "gw-1"}), "gw-1")
    assert not says_offline(cbor.dumps({"state": "offline", "t": 0, "gw": "gw-1"}), "gw-1")  # its last will
    assert not says_offline(cbor.dumps({"state": "online", "t": 1_700_000_000_000, "gw": "gw-1"}), "gw-1")
    assert not says_offline(cbor.dumps({"state": "offline", "t": 1_700_000_000_000, "gw": "gw-2"}), "gw-1")
    assert not says_offline(b"\xff\x00 not cbor", "gw-1")
    assert not says_offline(cbor.dumps(["offline"]), "gw-1")
