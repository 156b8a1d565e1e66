"""An audience's platform verifies its view stream against a real chain (ganache) with `tiyi verify --audience`:
an honest, anchored stream verifies; a view whose source root the chain does not hold is refused."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

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


def files(tmp_path: Path, stream: ViewStream) -> tuple[Path, Path, Path]:
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
    return cap, pem, keys


def run(cap: Path, pem: Path, keys: Path, ganache: Ganache, alliance: Alliance) -> int:
    opts = VerifyOptions(
        capture=cap,
        rpc=ganache.url,
        contract=alliance.contract,
        key=(f"gw-v={pem}",),
        json=True,
        audience=AUD,
        audience_purpose="research",
        audience_key=keys,
    )
    return verify_main(opts)


def test_an_anchored_view_stream_verifies_and_an_unanchored_source_root_is_refused(
    ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alliance = Alliance(ganache.url)
    honest = anchored(ViewStream.honest(), alliance)
    assert run(*files(tmp_path, honest), ganache, alliance) == 0
    out = json.loads(capsys.readouterr().out)
    g = out["gateways"]["gw-v"]
    assert (out["outcome"], g["views_verified"], g["anchors_verified"]) == ("verified", 3, 3)
    assert g["sealed_opened"] == g["records"] > 0 and g["anchors_checked_on_chain"]

    forged = anchored(ViewStream.honest(), alliance, forge=2)
    assert AnchorReceipt.from_bytes(forged.receipts[1]).root == forged.view(2).src_root
    assert run(*files(tmp_path, forged), ganache, alliance) == 1
    out = json.loads(capsys.readouterr().out)
    problems = out["gateways"]["gw-v"]["problems"]
    assert [p["reason"] for p in problems] == ["anchor_not_on_chain"] and problems[0]["batch"] == 2
    assert "no Anchored event for this root" in problems[0]["message"]


def test_the_audience_key_file_is_a_secret_and_must_parse(tmp_path: Path) -> None:
    cap, pem, keys = files(tmp_path, ViewStream.honest())
    base = VerifyOptions(capture=cap, key=(str(pem),), audience=AUD, audience_purpose="research", audience_key=keys)
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
    ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review finding 10: another account publishes a view under its own gateway id on aud/AUD/. The pinned key
    decides (gw-evil has none), in gw-evil's own report; with --gateway gw-v it is listed as seen, not verified."""
    from edge.sm2 import generate_signer
    from edge.topics import Topics
    from edge.view import sign_view

    alliance = Alliance(ganache.url)
    honest = anchored(ViewStream.honest(), alliance)
    cap, pem, keys = files(tmp_path, honest)
    fake = replace(honest.view(1), gw="gw-evil")
    buf = io.BytesIO()
    write_capture_item(
        buf, Topics("shenzhen", "gw-evil").aud_view(AUD), bytes(sign_view(fake, generate_signer())), False, 0
    )
    with cap.open("ab") as fh:
        fh.write(buf.getvalue())
    opts = VerifyOptions(
        capture=cap,
        rpc=ganache.url,
        contract=alliance.contract,
        key=(f"gw-v={pem}",),
        json=True,
        audience=AUD,
        audience_purpose="research",
        audience_key=keys,
    )
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cap, pem, _ = files(tmp_path, ViewStream.honest())
    opts = VerifyOptions(capture=cap, key=(str(pem),), audience=AUD, audience_purpose="research")
    assert verify_main(opts) == 4
    out = capsys.readouterr().out
    assert "NOT CHECKED: the source batches' anchors were not checked on a chain" in out
    assert "content and SM4-GCM tag not checked (no audience key)" in out
