"""FISCO BCOS 2.x 国密 interop: SM2 transaction signatures checked by OpenSSL; a live node if one is given.

Set TIYI_FISCO_RPC=http://node:8545 (and TIYI_FISCO_CONTRACT=0x... for an Anchor contract deployed with
the 国密 toolchain, TIYI_FISCO_GROUP, TIYI_FISCO_CHAIN_ID) to run the live test; no node can run here.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import rlp

from anchoring.chain import AnchorKind
from anchoring.fisco2 import Fisco2ChainClient, GmTransaction, decode_transaction
from edge.sm2 import GmsslSm2Signer, encode_signature, generate_signer


def _openssl_verifies(tmp_path: Path, signer: GmsslSm2Signer, tx: GmTransaction, r: int, s: int) -> None:
    (tmp_path / "pub.pem").write_text(signer.public_key_pem())
    (tmp_path / "hash.bin").write_bytes(tx.signing_hash())
    (tmp_path / "sig.der").write_bytes(encode_signature(r, s))
    out = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-rawin",
            "-digest",
            "sm3",
            "-pubin",
            "-inkey",
            str(tmp_path / "pub.pem"),
            "-in",
            str(tmp_path / "hash.bin"),
            "-sigfile",
            str(tmp_path / "sig.der"),
            "-pkeyopt",
            "distid:1234567812345678",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_openssl_accepts_the_transaction_signature(tmp_path: Path) -> None:
    signer = generate_signer()
    tx = GmTransaction(secrets.randbits(128), 0, 300_000, 1234, b"\x33" * 20, 0, b"\x01\x02", 1, 1)
    _, pub, r, s = decode_transaction(tx.sign(signer).raw)
    assert pub == signer.public_key.point[1:]
    _openssl_verifies(tmp_path, signer, tx, r, s)


def test_openssl_accepts_a_real_signature_whose_r_or_s_is_short(tmp_path: Path) -> None:
    """The 1-in-128 case the old encoder broke: r or s below 2^248, written in fewer than 32 bytes."""
    signer = generate_signer()
    for i in range(3000):  # ~128 tries expected; all 3000 missing it has probability ~1e-10
        tx = GmTransaction(i, 0, 300_000, 1234, b"\x33" * 20, 0, b"", 1, 1)
        raw = tx.sign(signer).raw
        _, _, r, s = decode_transaction(raw)
        if min(r, s) < 1 << 248:
            break
    else:
        pytest.fail("no short r or s in 3000 signatures")
    items = rlp.decode(raw)
    assert min(len(items[11]), len(items[12])) < 32 and items[11][0] and items[12][0]  # minimal: no leading 00
    _openssl_verifies(tmp_path, signer, tx, r, s)


@pytest.mark.skipif(not os.environ.get("TIYI_FISCO_RPC"), reason="no FISCO BCOS node: set TIYI_FISCO_RPC")
def test_live_fisco_node() -> None:
    url = os.environ["TIYI_FISCO_RPC"]
    contract = bytes.fromhex(os.environ["TIYI_FISCO_CONTRACT"].removeprefix("0x"))
    group, chain = int(os.environ.get("TIYI_FISCO_GROUP", "1")), int(os.environ.get("TIYI_FISCO_CHAIN_ID", "1"))
    client = Fisco2ChainClient(url, generate_signer(), contract, group, chain)
    root, gw = secrets.token_bytes(32), "gw-live"
    assert client.latest_anchored(client.account, AnchorKind.BATCH, gw) is None  # a fresh account anchored nothing
    tx = client.prepare_anchor(AnchorKind.BATCH, gw, root, 1, 1)
    client.send(tx)
    for _ in range(60):
        rec = client.receipt(tx.tx_hash)
        if rec is not None:
            break
        time.sleep(1)
    assert rec is not None and rec.ok
    info = client.anchored_at(client.account, AnchorKind.BATCH, gw, root)
    assert info is not None and info.block_number == rec.block_number and (info.number, info.count) == (1, 1)
    assert client.anchored_in(rec, root) == info
    assert client.anchored_at(client.account, AnchorKind.ROLLUP, gw, root) is None  # kinds never mix
    assert client.latest_anchored(client.account, AnchorKind.BATCH, gw) == (1, rec.block_number)
    own = client.own_anchor(AnchorKind.BATCH, gw, root)
    assert own is not None and own[1].tx_hash == tx.tx_hash
    reader = Fisco2ChainClient.reader(url, contract, group, chain)
    assert reader.own_anchor(AnchorKind.BATCH, gw, root) is None  # another account's anchor is not the reader's
    assert reader.gateway("gw-never-registered-" + secrets.token_hex(4)) is None
    assert len(reader.admin()) == 20
