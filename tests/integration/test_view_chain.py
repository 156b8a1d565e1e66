"""An audience's platform verifies its view stream against a real chain (ganache) with `tiyi verify --audience`:
an honest, anchored stream verifies; a view whose source root the chain does not hold is refused."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from anchoring.capture import write_capture_item
from anchoring.chain import AnchorKind
from anchoring.receipt import AnchorReceipt
from edge.manifest import SignedManifest
from edge.sm3 import sm3
from gateway.cli.verify import VerifyOptions, verify_main
from gateway.errors import ConfigError
from tests.conftest import Ganache
from tests.integration.chainkit import Alliance, anchor
from tests.unit.anchoring.test_view_verify import AUD, KEY, SIGNER, ViewStream


def anchored(stream: ViewStream, alliance: Alliance, forge: int | None = None) -> ViewStream:
    """Anchor each source batch from one account; for batch ``forge`` the chain gets another root, and the
    receipt published still names the real one."""
    account = alliance.account()
    receipts = []
    for b in stream.batches:
        m = SignedManifest.from_bytes(b).manifest
        root = sm3(b"a root the audience never sees") if m.batch == forge else m.root
        r = anchor(account, AnchorKind.BATCH, m.gw, root, m.batch, m.count)
        receipts.append(bytes(replace(r, root=m.root)))
    stream.receipts = receipts
    return stream


@dataclass(frozen=True)
class Capture:
    """A view stream as the audience's platform captured it, next to the gateway's public key and the
    audience's key file (owner-only), and the `tiyi verify --audience` options that read them."""

    path: Path
    pem: Path
    keys: Path

    def options(self, **overrides: Any) -> VerifyOptions:
        base: dict[str, Any] = {
            "capture": self.path,
            "key": (f"gw-v={self.pem}",),
            "json": True,
            "audience": AUD,
            "audience_purpose": "research",
            "audience_key": self.keys,
        }
        return VerifyOptions(**{**base, **overrides})

    def on_chain(self, ganache: Ganache, alliance: Alliance, **overrides: Any) -> VerifyOptions:
        return self.options(rpc=ganache.url, contract=alliance.contract, **overrides)

    def append(self, topic: str, payload: bytes) -> None:
        with self.path.open("ab") as fh:
            write_capture_item(fh, topic, payload, False, 0)


@pytest.fixture
def capture(tmp_path: Path) -> Callable[[ViewStream], Capture]:
    """Writes a stream's messages as a capture file (heads retained), with the key files beside it."""

    def write(stream: ViewStream) -> Capture:
        buf = io.BytesIO()
        for topic, payload in stream.messages():
            write_capture_item(buf, topic, payload, topic.endswith("/head"), 0)
        cap = tmp_path / "audience.cap"
        cap.write_bytes(buf.getvalue())
        pem = tmp_path / "gw.pem"
        pem.write_text(SIGNER.public_key_pem(), encoding="ascii")
        keys = tmp_path / "lab-1.keys"
        keys.write_text(f"k1 {KEY.hex()}\n", encoding="ascii")
        keys.chmod(0o600)
        return Capture(cap, pem, keys)

    return write


@pytest.fixture
def alliance(ganache: Ganache) -> Alliance:
    return Alliance(ganache.url)


def test_an_anchored_view_stream_verifies_and_an_unanchored_source_root_is_refused(
    ganache: Ganache, alliance: Alliance, capture: Callable[[ViewStream], Capture], capsys: pytest.CaptureFixture[str]
) -> None:
    honest = anchored(ViewStream.honest(), alliance)
    assert verify_main(capture(honest).on_chain(ganache, alliance)) == 0
    out = json.loads(capsys.readouterr().out)
    g = out["gateways"]["gw-v"]
    assert (out["outcome"], g["views_verified"], g["anchors_verified"]) == ("verified", 3, 3)
    assert g["sealed_opened"] == g["records"] > 0 and g["anchors_checked_on_chain"]

    forged = anchored(ViewStream.honest(), alliance, forge=2)
    assert AnchorReceipt.from_bytes(forged.receipts[1]).root == forged.view(2).src_root
    assert verify_main(capture(forged).on_chain(ganache, alliance)) == 1
    out = json.loads(capsys.readouterr().out)
    problems = out["gateways"]["gw-v"]["problems"]
    assert [p["reason"] for p in problems] == ["anchor_not_on_chain"] and problems[0]["batch"] == 2
    assert "no Anchored event for this root" in problems[0]["message"]


def test_the_audience_key_file_is_a_secret_and_must_parse(capture: Callable[[ViewStream], Capture]) -> None:
    cap = capture(ViewStream.honest())
    base = cap.options(key=(str(cap.pem),), json=False)
    keys = cap.keys
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        verify_main(base)
    keys.chmod(0o600)
    keys.write_text("k1 not-hex\n", encoding="ascii")
    with pytest.raises(ConfigError, match="line 1: the key is not hex"):
        verify_main(base)
    with pytest.raises(ConfigError, match="--audience-purpose"):
        verify_main(replace(base, audience_purpose=None))
    with pytest.raises(ConfigError, match="go with --audience"):
        verify_main(replace(base, audience=None))
    for alone in ({"audience_clear": True}, {"audience_from": 2}):
        with pytest.raises(ConfigError, match="go with --audience"):
            verify_main(replace(base, audience=None, audience_key=None, audience_purpose=None, **alone))  # type: ignore[arg-type]
    keys.write_text(f"k1 {KEY.hex()}\n", encoding="ascii")
    with pytest.raises(ConfigError, match="--audience-from is a batch number"):
        verify_main(replace(base, audience_from=0))
    with pytest.raises(ConfigError, match="--gateway"):
        verify_main(replace(base, gateway="bad id"))


def test_a_foreign_gateway_on_the_audience_topics_is_reported_apart_and_dropped_by_gateway(
    ganache: Ganache, alliance: Alliance, capture: Callable[[ViewStream], Capture], capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding 10: another account publishes a view under its own gateway id on aud/AUD/. The pinned key
    decides (gw-evil has none), in gw-evil's own report; with --gateway gw-v it is listed as seen, not verified."""
    from edge.sm2 import generate_signer
    from edge.topics import Topics
    from edge.view import sign_view

    honest = anchored(ViewStream.honest(), alliance)
    cap = capture(honest)
    fake = replace(honest.view(1), gw="gw-evil")
    cap.append(Topics("shenzhen", "gw-evil").aud_view(AUD), bytes(sign_view(fake, generate_signer())))
    opts = cap.on_chain(ganache, alliance)
    assert verify_main(opts) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["gateways"]["gw-v"]["ok"] and not out["gateways"]["gw-evil"]["ok"]
    assert {p["reason"] for p in out["gateways"]["gw-evil"]["problems"]} == {"untrusted_key"}
    assert out["gateways_seen"] == ["gw-evil", "gw-v"] and out["gateways_ignored"] == []
    assert verify_main(replace(opts, gateway="gw-v")) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["gateways"]) == ["gw-v"] and out["gateways_ignored"] == ["gw-evil"]
    assert verify_main(replace(opts, gateway="gw-v", json=False)) == 0
    text = capsys.readouterr().out
    assert "gateways seen: gw-evil, gw-v" in text and "not verified (not asked for with --gateway): gw-evil" in text


def test_without_a_chain_or_a_key_the_result_is_not_verified(
    capture: Callable[[ViewStream], Capture], capsys: pytest.CaptureFixture[str]
) -> None:
    cap = capture(ViewStream.honest())
    assert verify_main(cap.options(key=(str(cap.pem),), json=False, audience_key=None)) == 4
    out = capsys.readouterr().out
    assert "NOT CHECKED: the source batches' anchors were not checked on a chain" in out
    assert "content and SM4-GCM tag not checked (no audience key)" in out
