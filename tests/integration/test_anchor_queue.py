"""The durable anchor queue against a real node: reverts, outages and finality."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from anchoring.chain import AnchorInfo, AnchorKind, ChainReader
from anchoring.evm import EvmChainClient
from anchoring.lifecycle import Job, Prepared, next_step
from anchoring.receipt import AnchorReceipt
from anchoring.verify_anchor import confirm_receipt
from edge.topics import Topics
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.journal import SqliteJournal
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from gateway.service import Gateway
from tests.conftest import Ganache, Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow


def make_gateway(tmp: Path, mqtt: str, chain: EvmChainClient, confirmations: int, anchoring: bool = True) -> Gateway:
    generate_keypair(tmp / "keys")
    cfg = GatewayConfig(
        gateway_id="gw-q",
        region="zhuhai",
        state_dir=tmp,
        mqtt=MqttConfig(url=mqtt),
        batch=BatchConfig(max_records=10, max_age_s=0.3),
        chain=ChainConfig(kind="evm", url="unused", poll_s=0.1, confirmations=confirmations),
    )
    return assemble(cfg.validated(), chain, anchoring=anchoring).gateway


async def feed(gw: Gateway, n: int) -> None:
    strap = HeartRateStrap("hr-q", seed=1)
    for i in range(n):
        await gw.submit(strap.frame_at(float(i)))


async def wait_for(pred, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def confirmed(receipt: AnchorReceipt, chain: ChainReader) -> bool:
    return isinstance(confirm_receipt(receipt, chain), AnchorInfo)


def receipts(rec: Recorder) -> list[AnchorReceipt]:
    return [AnchorReceipt.from_bytes(p) for t, p, _ in rec.messages if t.endswith("/anchor")]


def test_a_reverted_anchor_is_resubmitted_and_only_the_final_one_reported(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path
) -> None:
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    snapshot = ganache.rpc("evm_snapshot")

    async def main(rec: Recorder) -> Gateway:
        gw = make_gateway(tmp_path, mosquitto.url, chain, confirmations=3)
        await gw.start()
        await feed(gw, 10)

        async def included() -> bool:
            return bool(await gw.worker.call(gw.journal.anchors.anchor_jobs, ["included"]))

        await wait_for(included)
        assert receipts(rec) == []  # included is not final: nothing reported yet
        # The contract deployment is in the snapshot too, so revert to just after it: only the anchor vanishes.
        ganache.rpc("evm_revert", snapshot)

        async def reverted() -> bool:
            return gw.metrics.anchors_reverted >= 1

        await wait_for(reverted)

        async def final() -> bool:
            ganache.rpc("evm_mine")
            return gw.metrics.anchors_final >= 1

        await wait_for(final)
        await gw.stop(drain_timeout=30)
        gw.journal.close()
        return gw

    with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
        gw = asyncio.run(main(rec))
        rec.wait_idle(0.5)
        got = receipts(rec)
    assert gw.metrics.anchors_reverted >= 1
    assert [r.status for r in got] == ["final"]
    assert confirmed(got[0], chain)
    assert ganache.rpc("eth_blockNumber") != "0x0"


def test_chain_outage_only_delays_anchors(mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path) -> None:
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)

    async def main() -> Gateway:
        gw = make_gateway(tmp_path, mosquitto.url, chain, confirmations=0)
        await gw.start()
        ganache.stop()
        await feed(gw, 30)  # three batches close while the node is down
        await asyncio.sleep(3)
        assert gw.metrics.chain_errors >= 1 and gw.metrics.anchors_final == 0
        ganache.start()
        assert await gw.drain(60), "the anchor queue did not drain after the node came back"
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        return gw

    with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
        gw = asyncio.run(main())
        rec.wait_idle(0.5)
        got = receipts(rec)
    assert gw.metrics.anchors_final == 3
    assert sorted(r.number for r in got) == [1, 2, 3]
    assert all(confirmed(r, chain) for r in got)


def test_a_signed_but_unsent_transaction_is_sent_first_so_no_nonce_gap(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path
) -> None:
    """Power cut right after the anchor tx was signed and stored, before it was sent."""
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)

    async def crash_after_signing() -> None:
        # no anchoring loop in this first life: we drive the queue by hand
        gw = make_gateway(tmp_path, mosquitto.url, chain, confirmations=0, anchoring=False)
        await gw.start()
        await feed(gw, 20)  # two batches

        async def two_batches() -> bool:
            return len(await gw.worker.call(gw.journal.anchors.anchor_jobs, ["pending"])) == 2

        await wait_for(two_batches)
        job = (await gw.worker.call(gw.journal.anchors.anchor_jobs, ["pending"]))[0]
        tx = chain.prepare_anchor(AnchorKind.BATCH, "gw-q", job.root, job.number, job.count)  # the next nonce
        await gw.worker.call(gw.journal.anchors.advance, job.number, next_step(job, Prepared(tx.raw, tx.tx_hash)))
        await gw.stop(drain_timeout=5)
        gw.journal.close()

    asyncio.run(crash_after_signing())
    restarted = EvmChainClient.connect(ganache.url, chain.account_key, contract=chain.contract)

    async def second_life() -> Gateway:
        gw = assemble(
            GatewayConfig(
                gateway_id="gw-q",
                region="zhuhai",
                state_dir=tmp_path,
                mqtt=MqttConfig(url=mosquitto.url),
                chain=ChainConfig(kind="evm", url="unused", poll_s=0.1),
            ).validated(),
            restarted,
        ).gateway
        await gw.start()
        assert await gw.drain(30)
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        return gw

    gw = asyncio.run(second_life())
    assert gw.metrics.anchors_final == 2
    # nonce 0 deployed the contract; 1 is the stored transaction, sent first after the restart; 2 the next
    # batch's. A gap would leave the count at 1 or 2 and the second anchor stuck.
    assert chain.w3.eth.get_transaction_count(chain.account_address) == 3


def test_slow_blocks_and_confirmations(mosquitto: Mosquitto, tmp_path: Path) -> None:
    from tests.conftest import GANACHE, free_port

    if not GANACHE.exists():
        pytest.fail("ganache is not installed: run `make test`")
    node = Ganache(port=free_port(), block_time=1)  # a block every second, like a slow consortium chain
    node.start()
    try:
        chain = EvmChainClient.connect(node.url, secrets.token_bytes(32), contract=None)

        async def main() -> Gateway:
            gw = make_gateway(tmp_path, mosquitto.url, chain, confirmations=2)
            await gw.start()
            await feed(gw, 10)
            assert await gw.drain(60)
            await gw.stop(drain_timeout=5)
            gw.journal.close()
            return gw

        with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
            gw = asyncio.run(main())
            rec.wait_idle(0.5)
            got = receipts(rec)
        assert gw.metrics.anchors_final == 1 and [r.status for r in got] == ["final"]
        assert chain.block_number() >= got[0].block + 2  # reported only after two blocks on top
        assert confirmed(got[0], chain)
    finally:
        node.stop()


async def first_life_without_anchoring(tmp: Path, mqtt: str, chain: EvmChainClient, records: int) -> list[Job]:
    """Run the gateway with its anchor loop off until its batches are closed; return the pending jobs."""
    gw = make_gateway(tmp, mqtt, chain, confirmations=0, anchoring=False)
    await gw.start()
    await feed(gw, records)

    async def all_closed() -> bool:
        return len(await gw.worker.call(gw.journal.anchors.anchor_jobs, ["pending"])) == records // 10

    await wait_for(all_closed)
    jobs = await gw.worker.call(gw.journal.anchors.anchor_jobs, ["pending"])
    await gw.stop(drain_timeout=5)
    gw.journal.close()
    return jobs


def second_life(tmp: Path, mqtt: str, chain: EvmChainClient) -> Gateway:
    async def run() -> Gateway:
        gw = assemble(
            GatewayConfig(
                gateway_id="gw-q",
                region="zhuhai",
                state_dir=tmp,
                mqtt=MqttConfig(url=mqtt),
                chain=ChainConfig(kind="evm", url="unused", poll_s=0.1),
            ).validated(),
            chain,
        ).gateway
        await gw.start()
        assert await gw.drain(30), "the anchor queue did not drain"
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        return gw

    return asyncio.run(run())


def test_an_anchor_sent_but_never_journaled_is_adopted_not_sent_again(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path
) -> None:
    """The gateway's own anchor landed, but the journal never learnt it (a crash after the node took the
    transaction, or a send that timed out): the queue takes that anchor over instead of looping on
    'already anchored'."""
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    (job,) = asyncio.run(first_life_without_anchoring(tmp_path, mosquitto.url, chain, 10))
    lost = chain.prepare_anchor(AnchorKind.BATCH, "gw-q", job.root, job.number, job.count)
    chain.send(lost)

    restarted = EvmChainClient.connect(ganache.url, chain.account_key, contract=chain.contract)
    with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
        gw = second_life(tmp_path, mosquitto.url, restarted)
        rec.wait_idle(0.5)
        got = receipts(rec)
    assert gw.metrics.anchors_final == 1 and gw.metrics.anchor_conflicts == 0
    assert [(r.number, r.tx) for r in got] == [(job.number, lost.tx_hash)]
    assert confirmed(got[0], chain)
    # deployment + the one anchor: no second transaction was sent
    assert chain.w3.eth.get_transaction_count(chain.account_address) == 2


def test_a_root_anchored_first_by_someone_else_does_not_block_ours(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path
) -> None:
    """The manifest is public before its anchor: a third party that copies the root (even under our gateway id
    and batch number) anchors it under its own account, and ours still lands."""
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    first, second = asyncio.run(first_life_without_anchoring(tmp_path, mosquitto.url, chain, 20))
    squatter = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=chain.contract)
    squatter.send(squatter.prepare_anchor(AnchorKind.BATCH, "gw-q", first.root, first.number, first.count))

    with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
        gw = second_life(tmp_path, mosquitto.url, chain)
        rec.wait_idle(0.5)
        got = receipts(rec)
    assert gw.metrics.anchor_conflicts == 0 and gw.metrics.anchors_final == 2
    assert sorted(r.number for r in got) == [first.number, second.number]
    assert all(r.anchorer == chain.account and confirmed(r, chain) for r in got)
    assert squatter.anchored_at(squatter.account, AnchorKind.BATCH, "gw-q", first.root) is not None  # both exist
    journal = SqliteJournal.open(tmp_path / "journal.sqlite3", "gw-q")
    assert journal.anchors.anchor_jobs(["failed"]) == []
    journal.close()


def test_a_signed_transaction_whose_nonce_went_elsewhere_is_signed_again(
    mosquitto: Mosquitto, ganache: Ganache, tmp_path: Path
) -> None:
    chain = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    (job,) = asyncio.run(first_life_without_anchoring(tmp_path, mosquitto.url, chain, 10))
    stored = chain.prepare_anchor(AnchorKind.BATCH, "gw-q", job.root, job.number, job.count)
    journal = SqliteJournal.open(tmp_path / "journal.sqlite3", "gw-q")
    journal.anchors.advance(job.number, next_step(job, Prepared(stored.raw, stored.tx_hash)))
    journal.close()
    # Another transaction from the same account takes that nonce first (say, an operator's registry action).
    other = EvmChainClient.connect(ganache.url, chain.account_key, contract=chain.contract)
    other.send(other.prepare_anchor(AnchorKind.BATCH, "elsewhere", secrets.token_bytes(32), 1, 1))

    restarted = EvmChainClient.connect(ganache.url, chain.account_key, contract=chain.contract)
    with Recorder(mosquitto.url, Topics("zhuhai", "gw-q")) as rec:
        gw = second_life(tmp_path, mosquitto.url, restarted)
        rec.wait_idle(0.5)
        got = receipts(rec)
    assert gw.metrics.anchors_final == 1
    assert len(got) == 1 and got[0].tx != stored.tx_hash
    assert confirmed(got[0], chain)
