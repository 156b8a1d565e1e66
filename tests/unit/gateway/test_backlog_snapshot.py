"""Drain judges "all done" from one consistent snapshot of the journal.

Read as separate calls (stats, then the unbatched range), a batch that closed in between made its records
look batched while the batch itself was not yet counted: the backlog looked empty, and drain reported
done before that batch was published or anchored (seen as a kill -9 test failure on a busy CPU)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.config import GatewayConfig
from gateway.journal import JournalStats, SqliteJournal
from gateway.mqtt import Publisher
from gateway.service import Gateway

SIGNER = generate_signer()


def test_a_batch_closing_while_the_backlog_is_read_is_never_missed(tmp_path: Path) -> None:
    cfg = GatewayConfig(gateway_id="gw-1", state_dir=tmp_path).validated()
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    records = [
        Record(
            gw="gw-1",
            seq=s,
            dev="d",
            t=1_700_000_000_000 + s,
            kind="heart_rate",
            val={"heart_rate": 60},
            raw=b"\x00\x3c",
            salt=bytes(16),
        )
        for s in range(1, 11)
    ]
    journal.records.append(records)
    manifest = build_manifest("gw-1", 1, 1, [bytes(r) for r in records], GENESIS_PREV, 1)
    signed = sign_manifest(manifest, SIGNER)
    gw = Gateway(cfg, journal, cast(Publisher, object()), SIGNER, chain=None)  # backlog never publishes
    closing: list[asyncio.Future[Any]] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        read_stats = journal.stats

        def stats_then_a_batch_closes() -> JournalStats:
            st = read_stats()
            # The batching stage closes the batch right after this read, through the same journal thread.
            add = journal.batches.add_batch
            loop.call_soon_threadsafe(
                lambda: closing.append(asyncio.ensure_future(gw.worker.call(add, manifest, signed)))
            )
            return st

        journal.stats = stats_then_a_batch_closes  # type: ignore[method-assign]
        backlog = await gw.backlog()
        await asyncio.gather(*closing)
        assert not backlog.empty and backlog.unbatched == 10  # the records, seen before their batch closed
        journal.stats = read_stats  # type: ignore[method-assign]
        after = await gw.backlog()
        assert not after.empty and (after.unbatched, after.unpublished_batches) == (0, 1)  # and the batch after

    asyncio.run(run())
    gw.worker.shutdown()
    journal.close()
