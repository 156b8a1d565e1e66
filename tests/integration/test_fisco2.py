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

from anchoring.fisco2 import Fisco2ChainClient, GmTransaction, decode_transaction
from edge.sm2 import encode_signature, generate_signer


def test_openssl_accepts_the_transaction_signature(tmp_path: Path) -> None:
    signer = generate_signer()
    tx = GmTransaction(secrets.randbits(128), 0, 300_000, 1234, b"\x33" * 20, 0, b"\x01\x02", 1, 1)
    _, pub, r, s = decode_transaction(tx.sign(signer).raw)
    assert pub == signer.public_key.point[1:]
    (tmp_path / "pub.pem").write_text(signer.public_key_pem())
    (tmp_path / "hash.bin").write_bytes(tx.signing_hash())
    (tmp_path / "sig.der").write_bytes(encode_signature(r, s))
    out = subprocess.run(["openssl", "pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey",
                          str(tmp_path / "pub.pem"), "-in", str(tmp_path / "hash.bin"), "-sigfile",
                          str(tmp_path / "sig.der"), "-pkeyopt", "distid:1234567812345678"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(not os.environ.get("TIYI_FISCO_RPC"), reason="no FISCO BCOS node: set TIYI_FISCO_RPC")
def test_live_fisco_node() -> None:
    client = Fisco2ChainClient(os.environ["TIYI_FISCO_RPC"], generate_signer(),
                               bytes.fromhex(os.environ["TIYI_FISCO_CONTRACT"].removeprefix("0x")),
                               int(os.environ.get("TIYI_FISCO_GROUP", "1")),
                               int(os.environ.get("TIYI_FISCO_CHAIN_ID", "1")))
    root = secrets.token_bytes(32)
    tx = client.prepare_anchor(root, "gw-live", 1, 1)
    client.send(tx)
    for _ in range(60):
        rec = client.receipt(tx.tx_hash)
        if rec is not None:
            break
        time.sleep(1)
    assert rec is not None and rec.ok
    info = client.lookup(root)
    assert info is not None and info.block_number == rec.block_number
    assert client.anchored_in(rec, root) is not None
