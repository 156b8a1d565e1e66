"""Audiences: each configured platform's own view of every closed batch, built, signed, journaled, published.

When a batch closes, each audience's view is built by the pure :func:`edge.view.build_view` from the batch's
journaled records, the consent ledger as it stands at that moment (re-read if ``tiyi members`` changed it),
salts derived from the site secret, and the audience's SM4 key when it encrypts. The signed view manifest is
journaled (no readings in it); the view records are not: after a reconnect or restart they are rebuilt from the
source records, byte-identical, with the consent head and key id the manifest names.

Publication per audience, at least once and in this order: the consent events of its purpose up to the head
a view was built at (``aud/<id>/consent``), then the view's records (``aud/<id>/data/<dev>``), then its
manifest (``aud/<id>/view``). Each step is recorded in the journal only after the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import ClassVar

from edge.errors import EdgeError
from edge.record import Record, encode_data_message
from edge.signing import Signer
from edge.topics import Topics
from edge.view import AGGREGATED, ViewManifest
from gateway.audience_config import AudienceConfig
from gateway.errors import GatewayError, JournalError, PublishError
from gateway.journal import BatchStore, RecordLog, SourceBatch, ViewJournal, ViewRow
from gateway.mqtt import Publisher
from gateway.stages.ports import Health, JournalErrorPolicy, Wake, Worker
from gateway.stages.view_maker import AudienceSetup, ViewMaker

log = logging.getLogger("tiyi.gateway")

CACHE_VIEWS = 16  # built views kept in memory until published; past this they are rebuilt when due
PUBLISH_AHEAD = 16  # unpublished views handled per audience per round


async def _all_acked(futs: list[asyncio.Future[None]]) -> None:
    """Wait for every ack; the first failure is raised once all have settled (none is left unretrieved)."""
    for result in await asyncio.gather(*futs, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


def withheld_counts(m: ViewManifest) -> Counter[str]:
    """Source records not sent one by one, per reason (aggregated ones are in an aggregate record)."""
    out: Counter[str] = Counter()
    for reason, first, last in m.withheld:
        out[reason] += last - first + 1
    return out


class Audiences:
    """Builds and publishes the views; counts per audience for /metrics (``gateway.prometheus.AUDIENCE_COUNTERS``)."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE

    def __init__(
        self,
        gw: str,
        region: str,
        topics: Topics,
        audiences: Sequence[AudienceConfig],
        setup: AudienceSetup,
        signer: Signer,
        records: RecordLog,
        batches: BatchStore,
        views: ViewJournal,
        worker: Worker,
        publisher: Publisher,
        health: Health,
        wake: Wake,
        per_message: int,
    ) -> None:
        self._topics, self._audiences, self._setup, self._per_message = topics, tuple(audiences), setup, per_message
        self._maker = ViewMaker(gw, region, setup, signer)
        self._records, self._batches, self._worker, self._publisher, self._health, self._wake = (
            records,
            batches,
            worker,
            publisher,
            health,
            wake,
        )
        self._views = views
        self._cache: dict[tuple[str, int], list[bytes]] = {}
        self.view_records: Counter[str] = Counter()  # view records built, per audience
        self.withheld: Counter[tuple[str, str]] = Counter()  # source records withheld, per (audience, reason)
        self.views_built: Counter[str] = Counter()
        self.views_published: Counter[str] = Counter()
        self.rebuild_failures: Counter[str] = Counter()  # views sent without records: no longer rebuild as signed
        self.withdrawn_views: Counter[str] = Counter()  # views published without records: withdrawn since built
        self.rebuilt_views: Counter[str] = Counter()  # views rebuilt at a later consent head before publication
        self._floor: dict[str, int] = {}  # per audience: the latest consent head a view was published at (this run)
        self._last_problem: str | None = None

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self._audiences]

    def reconnected(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        since = await self._worker.call(lambda: {a: self._views.start(a) for a in self.ids})
        self._maker.since.update(since)  # journaled, stable across restarts
        while True:
            await self._wake.wait(0.5)
            try:
                await self._build_due()
                if self._publisher.connected:
                    await self._publish_due()
                self._last_problem = None
            except PublishError as exc:
                self._health.metrics.publish_failures += 1
                log.debug("audience view not sent: %s", exc)
                await asyncio.sleep(0.1)
            except JournalError as exc:
                self._health.journal_failed(self.journal_errors, "could not build or record an audience view", exc)
                await asyncio.sleep(1.0)
            except (GatewayError, EdgeError) as exc:  # a consent ledger or key that cannot be used: views wait
                self._problem(f"audience views wait: {exc}")
                await asyncio.sleep(1.0)

    def _problem(self, text: str) -> None:
        if text != self._last_problem:  # once per distinct problem, not every second
            log.error("%s", text)
            self._health.last_error = text
        self._last_problem = text

    # ------------------------------------------------------------------ building
    async def _build_due(self) -> None:
        last = await self._worker.call(self._batches.last_batch)
        if last is None:
            return
        for a in self._audiences:
            while (n := await self._worker.call(self._views.next_view, a.id)) <= last.batch:
                await self._build(a, n)

    async def _source(self, n: int) -> tuple[SourceBatch, list[bytes]]:
        src = await self._worker.call(self._views.source_batch, n)
        if src is None:
            raise JournalError(f"batch {n} is not in the journal")
        return src, await self._worker.call(self._records.read, src.first_seq, src.last_seq)

    async def _build(self, a: AudienceConfig, n: int) -> None:
        src, raw = await self._source(n)
        loop = asyncio.get_running_loop()
        records, manifest, signed, consent_n = await loop.run_in_executor(None, self._maker.new, a, src, raw)
        await self._worker.call(self._views.add_view, a.id, n, consent_n, bytes(signed))
        if len(self._cache) < CACHE_VIEWS:
            self._cache[(a.id, n)] = records
        self.views_built[a.id] += 1
        self.view_records[a.id] += manifest.count
        counts = withheld_counts(manifest)
        for reason, k in counts.items():
            self.withheld[(a.id, reason)] += k
        blocked = {r: k for r, k in counts.items() if r != AGGREGATED}
        if blocked:  # counts only: no member, device or reading in the log
            log.info(
                "audience %s, batch %d: %d view records; withheld %s",
                a.id,
                n,
                manifest.count,
                ", ".join(f"{r} {k}" for r, k in sorted(blocked.items())),
            )
        self._wake.set()

    async def _at_head(
        self, a: AudienceConfig, row: ViewRow, records: list[bytes], floor: int, consent_done: int
    ) -> tuple[ViewRow, list[bytes]] | None:
        """The view to publish: as journaled, or — when a member with a record in it withdrew from its purpose
        after it was built, or an earlier view went out at a later consent head (``floor``; the audience's
        verifier requires heads never to go back) — rebuilt at the current head, re-signed and replacing the
        unacknowledged journaled view. None: its consent events must go out first (the ledger moved meanwhile).
        A view that cannot be rebuilt is returned as it is (:meth:`_unless_withdrawn` then withholds its
        records)."""
        loop = asyncio.get_running_loop()
        gone = await loop.run_in_executor(None, self._maker.withdrawn_in, row, records)
        if not gone and row.consent_n >= floor:
            return row, records
        src, raw = await self._source(row.n)
        made = await loop.run_in_executor(None, self._maker.at_head, a, row, src, raw)
        if made is None:
            return row, records
        fresh, signed, consent_n = made
        if consent_n > consent_done:
            return None
        await self._worker.call(self._views.replace_unpublished, a.id, row.n, consent_n, bytes(signed))
        log.warning(  # counts only: no member, device or reading
            "audience %s, batch %d: rebuilt at consent event %d (%d member(s) withdrew consent after it was built): "
            "%d of its %d records are published",
            a.id,
            row.n,
            consent_n,
            gone,
            len(fresh),
            len(records),
        )
        self.rebuilt_views[a.id] += 1
        return ViewRow(a.id, row.n, consent_n, bytes(signed), False), fresh

    # ------------------------------------------------------------------ publishing
    async def _publish_due(self) -> None:
        loop = asyncio.get_running_loop()
        for a in self._audiences:
            consent_done = await self._publish_consent(a)
            for row in await self._worker.call(self._views.unpublished, a.id, PUBLISH_AHEAD):
                if row.consent_n > consent_done:
                    break  # its consent events go first
                if not row.records_published:
                    cached = self._cache.pop((a.id, row.n), None)
                    if cached is None:
                        src, raw = await self._source(row.n)
                        cached = await loop.run_in_executor(None, self._maker.rebuild, a, row, src, raw)
                    if cached is None:  # it no longer rebuilds as signed: its manifest goes out alone
                        self.rebuild_failures[a.id] += 1
                        records: list[bytes] = []
                    else:
                        current = await self._at_head(a, row, cached, self._floor.get(a.id, 0), consent_done)
                        if current is None:
                            break  # rebuilt past the consent published: next round, consent first
                        row, records = current
                    records = await loop.run_in_executor(None, self._unless_withdrawn, a, row, records)
                    await self._send_records(a.id, records)
                    await self._worker.call(self._views.mark_records_published, a.id, row.n)
                await (await self._publisher.publish(self._topics.aud_view(a.id), row.signed, 1, False))
                await self._worker.call(self._views.mark_published, a.id, row.n)
                self._floor[a.id] = max(self._floor.get(a.id, 0), row.consent_n)
                self.views_published[a.id] += 1

    def _unless_withdrawn(self, a: AudienceConfig, row: ViewRow, records: list[bytes]) -> list[bytes]:
        """Off the loop: the view's records, or none when a member with a record in it withdrew from the view's
        purpose after the consent head it was built at and the view could not be rebuilt at a later head (its
        key is gone) or the withdrawal came after that rebuild. Sending them would transfer readings after the
        withdrawal; the signed manifest goes out alone."""
        gone = self._maker.withdrawn_in(row, records)
        if not gone:
            return records
        log.warning(  # counts only: no member, device or reading
            "audience %s, batch %d: %d member(s) withdrew consent after it was built; its manifest is published "
            "without its %d records",
            a.id,
            row.n,
            gone,
            len(records),
        )
        self.withdrawn_views[a.id] += 1
        return []

    async def _publish_consent(self, a: AudienceConfig) -> int:
        """Publish the purpose's consent events not yet acknowledged; the ledger number they are done to."""
        done = await self._worker.call(self._views.consent_published, a.id, a.purpose)
        ledger = self._setup.ledger
        await asyncio.get_running_loop().run_in_executor(None, ledger.reload)
        head = ledger.head
        if head <= done:
            return done
        futs = [
            await self._publisher.publish(self._topics.aud_consent(a.id), data, 1, False)
            for _, data in ledger.events_for(a.purpose, done, head)
        ]
        await _all_acked(futs)
        await self._worker.call(self._views.mark_consent_published, a.id, a.purpose, head)
        return head

    async def _send_records(self, aud: str, records: list[bytes]) -> None:
        by_dev: dict[str, list[bytes]] = defaultdict(list)
        for data in records:
            by_dev[Record.from_bytes(data).dev].append(data)
        futs = []
        n = self._per_message
        for dev, items in by_dev.items():
            for i in range(0, len(items), n):
                payload = encode_data_message(items[i : i + n])
                futs.append(await self._publisher.publish(self._topics.aud_data(aud, dev), payload, 1, False))
        await _all_acked(futs)

    def backlog(self) -> int:
        """Runs on the journal thread: views not published plus batches not yet viewed."""
        return self._views.unpublished_total(self.ids)
