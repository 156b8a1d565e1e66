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


def test_bundle_round_trip(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    state = tmp_path / "state"
    generate_keypair(state / "keys")
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[gateway]\nid = "gw-proof"\nregion = "hongkong"\nstate_dir = "{state}"\n'
        f'[mqtt]\nurl = "{mosquitto.url}"\n[batch]\nmax_records = 8\nmax_age_s = 0.5\n'
        f'[chain]\nkind = "evm"\nurl = "{ganache.url}"\ncontract = "0x{chain.contract.hex()}"\n'
    )

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
    on_chain = ["--rpc", ganache.url, "--contract", "0x" + chain.contract.hex()]
    assert main(["verify", "--bundle", str(bundle), "--key", str(pub), *on_chain]) == 0
    out = capsys.readouterr().out
    assert "the reading is proven" in out and "the chain confirms the anchor" in out

    data = json.loads(bundle.read_text())
    rec = bytearray(bytes.fromhex(data["record"]))
    rec[-1] ^= 1  # one flipped bit in the salt
    data["record"] = rec.hex()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    assert main(["verify", "--bundle", str(forged), "--key", str(pub), *on_chain]) == 1
    assert "FAIL Merkle inclusion" in capsys.readouterr().out
    assert main(["proof", "export", "--config", str(config), "--seq", "999"]) == 1


def test_a_reading_proven_against_its_regional_anchor_and_a_supervision_roll_up(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two targets: every batch on the regional chain, roll-ups of the batch roots on a supervision chain
    (here a second Anchor contract on the same node). The bundle carries both paths and both check out."""
    from gateway.runtime import build_rollup_chains

    regional = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    supervision = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    assert supervision.contract != regional.contract
    state = tmp_path / "state"
    generate_keypair(state / "keys")
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[gateway]\nid = "gw-two"\nregion = "macao"\nstate_dir = "{state}"\n'
        f'[mqtt]\nurl = "{mosquitto.url}"\n[batch]\nmax_records = 8\nmax_age_s = 0.5\n'
        f'[chain]\nkind = "evm"\nurl = "{ganache.url}"\ncontract = "0x{regional.contract.hex()}"\n'
        f'[[rollup]]\ntarget = "health_supervision"\nperiod_s = 1\nkind = "evm"\nurl = "{ganache.url}"\n'
        f'contract = "0x{supervision.contract.hex()}"\npoll_s = 0.1\n'
    )

    async def run() -> int:
        cfg = load_config(config)
        gw = assemble(cfg, regional, rollup_chains=build_rollup_chains(cfg)).gateway
        await gw.start()
        strap = HeartRateStrap("hr-r", seed=3)
        for i in range(30):
            await gw.submit(strap.frame_at(float(i)))
            await asyncio.sleep(0.05)
        assert await gw.drain(60)
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        return gw.metrics.rollups_final

    assert asyncio.run(run()) >= 2  # the batches spread over more than one roll-up period
    bundle = tmp_path / "proof.json"
    assert main(["proof", "export", "--config", str(config), "--seq", "17", "-o", str(bundle)]) == 0
    data = json.loads(bundle.read_text())
    (entry,) = data["rollups"]
    assert entry["target"] == "health_supervision" and entry["receipt"]
    pub = state / "keys" / "gateway.pub"
    capsys.readouterr()
    assert (
        main(
            [
                "verify",
                "--bundle",
                str(bundle),
                "--key",
                str(pub),
                "--rpc",
                ganache.url,
                "--contract",
                "0x" + regional.contract.hex(),
                "--rollup-rpc",
                f"health_supervision=0x{supervision.contract.hex()}@{ganache.url}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "the health_supervision chain confirms the roll-up" in out and "the reading is proven" in out

    # A roll-up path that does not lead to the anchored roll-up root is refused.
    entry["index"] = entry["index"] ^ 1 if entry["size"] > 1 else entry["index"] + 1
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    assert main(["verify", "--bundle", str(forged), "--key", str(pub)]) == 1
    assert "FAIL roll-up health_supervision" in capsys.readouterr().out
