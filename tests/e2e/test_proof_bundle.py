"""A proof bundle exported from a gateway's journal convinces a third party, offline and on chain."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest

from anchoring.evm import EvmChainClient
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.cli import main
from gateway.config import load_config
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from tests.conftest import Ganache, Mosquitto

pytestmark = pytest.mark.slow


def test_bundle_round_trip(mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    state = tmp_path / "state"
    generate_keypair(state / "keys")
    config = tmp_path / "gw.toml"
    config.write_text(f'[gateway]\nid = "gw-proof"\nregion = "hongkong"\nstate_dir = "{state}"\n'
                      f'[mqtt]\nurl = "{mosquitto.url}"\n[batch]\nmax_records = 8\nmax_age_s = 0.5\n'
                      f'[chain]\nkind = "evm"\nurl = "{ganache.url}"\ncontract = "0x{chain.contract.hex()}"\n')

    async def run() -> None:
        gw = assemble(load_config(config), chain).gateway
        await gw.start()
        strap = HeartRateStrap("hr-p", seed=2)
        for i in range(20):
            await gw.submit(strap.frame_at(float(i)))
        assert await gw.drain(60)
        await gw.stop(drain_timeout=5)
        gw.journal.close()

    asyncio.run(run())
    bundle = tmp_path / "proof.json"
    assert main(["proof", "export", "--config", str(config), "--seq", "11", "-o", str(bundle)]) == 0
    pub = state / "keys" / "gateway.pub"
    assert main(["verify", "--bundle", str(bundle), "--key", str(pub), "--rpc", ganache.url]) == 0
    out = capsys.readouterr().out
    assert "the reading is proven" in out and "the chain confirms the anchor" in out

    data = json.loads(bundle.read_text())
    rec = bytearray(bytes.fromhex(data["record"]))
    rec[-1] ^= 1  # one flipped bit in the salt
    data["record"] = rec.hex()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    assert main(["verify", "--bundle", str(forged), "--key", str(pub), "--rpc", ganache.url]) == 1
    assert "FAIL Merkle inclusion" in capsys.readouterr().out
    assert main(["proof", "export", "--config", str(config), "--seq", "999"]) == 1
