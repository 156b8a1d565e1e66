"""The gateway's metrics in the Prometheus text format, for ``/metrics``.

Everything is read at scrape time from what the stages already keep (``Health``), the journal (on its own
thread, in one call, so the numbers are one snapshot) and the frame source's device states; nothing here
writes to a stage. Device labels are the pseudonymous ids the gateway publishes, never addresses.
``prometheus_client`` is the ``api`` extra: it is imported only by a gateway that serves metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.journal import BATCH_QUEUE, JournalStats
from gateway.metrics import Latencies

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.service import Gateway

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Metrics field → (counter name without ``_total``, help). Every field of ``Metrics`` is exported.
COUNTERS: Mapping[str, tuple[str, str]] = {
    "frames_in": ("tiyi_frames_received", "Frames received from devices"),
    "malformed_frames": ("tiyi_frames_malformed", "Frames that could not be decoded (never became records)"),
    "unknown_frames": ("tiyi_frames_unknown", "Frames of characteristics the gateway has no decoder for"),
    "frames_joined": ("tiyi_frames_joined", "Parts of multi-notification records joined into a later record"),
    "records": ("tiyi_records_journaled", "Records written to the journal (records in)"),
    "records_delivered": ("tiyi_records_delivered", "Records the broker acknowledged (records out)"),
    "messages_published": ("tiyi_mqtt_messages_published", "Data messages the broker acknowledged"),
    "publish_failures": ("tiyi_mqtt_publish_failures", "Publishes that failed (re-sent later)"),
    "batches": ("tiyi_batches_closed", "Batches closed, signed and journaled"),
    "batches_published": ("tiyi_batches_published", "Batch manifests the broker acknowledged"),
    "heads_published": ("tiyi_heads_published", "Signed heads the broker acknowledged"),
    "anchors_submitted": ("tiyi_anchors_submitted", "Anchor transactions sent"),
    "anchors_included": ("tiyi_anchors_included", "Anchor transactions seen in a block"),
    "anchors_final": ("tiyi_anchors_final", "Batch anchors that reached the configured confirmations"),
    "anchors_reverted": ("tiyi_anchors_reverted", "Anchor transactions that reverted or were dropped"),
    "anchor_conflicts": ("tiyi_anchor_conflicts", "Roots found on chain under another anchor"),
    "anchor_transitions": ("tiyi_anchor_transitions", "State changes of anchor jobs"),
    "rollups": ("tiyi_rollups_made", "Roll-ups built"),
    "rollups_final": ("tiyi_rollups_final", "Roll-up anchors that reached final"),
    "rollups_published": ("tiyi_rollups_published", "Final roll-ups the broker acknowledged"),
    "receipts_published": ("tiyi_receipts_published", "Final anchor receipts the broker acknowledged"),
    "chain_errors": ("tiyi_chain_errors", "Chain calls that failed"),
    "journal_errors": ("tiyi_journal_errors", "Journal operations that failed (disk full, I/O)"),
    "clock_jumps": ("tiyi_clock_jumps", "Wall-clock jumps detected against the monotonic clock"),
}


# Audiences stage counter (a Counter by audience id) → (counter name without ``_total``, help), one sample per
# configured audience.
AUDIENCE_COUNTERS: Mapping[str, tuple[str, str]] = {
    "view_records": ("tiyi_audience_view_records", "View records built for an audience"),
    "views_built": ("tiyi_audience_views_built", "Views of source batches built, signed and journaled"),
    "views_published": ("tiyi_audience_views_published", "View manifests the broker acknowledged"),
    "rebuilt_views": (
        "tiyi_audience_views_rebuilt",
        "Unpublished views rebuilt and re-signed at a later consent head (a member withdrew after the build)",
    ),
    "withdrawn_views": (
        "tiyi_audience_views_withdrawn",
        "Views published without their records: a member withdrew and the view could not be rebuilt",
    ),
    "rebuild_failures": (
        "tiyi_audience_views_unrebuildable",
        "Views published without their records: they no longer rebuild as signed (rules changed, key gone)",
    ),
}


@dataclass(frozen=True)
class JournalView:
    """What a scrape reads from the journal, in one call on its thread."""

    stats: JournalStats
    anchor_states: dict[tuple[str, str], int]
    head_batch: int  # the latest batch whose manifest the broker acknowledged: what a verifier can see


def read_journal(gateway: Gateway) -> JournalView:
    """Runs on the journal thread."""
    j = gateway.journal
    head = j.batches.last_published_batch()
    return JournalView(j.stats(), j.anchors.anchor_states(), 0 if head is None else head.batch)


async def scrape(gateway: Gateway) -> bytes:
    """The exposition for one scrape of ``gateway``."""
    view = await gateway.worker.call(read_journal, gateway)
    return render(gateway, view)


def render(gateway: Gateway, view: JournalView) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(gateway, view))
    return generate_latest(registry)


class _Collector:
    def __init__(self, gateway: Gateway, view: JournalView) -> None:
        self._gw, self._view = gateway, view

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._journal()
        yield from self._latencies()
        yield from self._links()
        yield from self._audiences()

    def _audiences(self) -> Iterator[Metric]:
        """Per audience (a platform's name, never a member or device): the stage's counters (views built,
        published, rebuilt, sent without records; view records built) and source records withheld, by reason
        (no_consent, unbound, cross_border, aggregated)."""
        from prometheus_client.core import CounterMetricFamily

        aud = self._gw.audiences
        if aud is None:
            return
        for attr, (name, doc) in AUDIENCE_COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=["audience"])
            counts: Counter[str] = getattr(aud, attr)
            for a in aud.ids:
                family.add_metric([a], counts[a])
            yield family
        withheld = CounterMetricFamily(
            "tiyi_audience_withheld_records",
            "Source records an audience did not get one by one, by reason",
            labels=["audience", "reason"],
        )
        for (a, reason), n in sorted(aud.withheld.items()):
            withheld.add_metric([a, reason], n)
        yield withheld

    def _counters(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        snap = self._gw.metrics.snapshot()
        for field, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=snap[field])
        per_device = CounterMetricFamily(
            "tiyi_device_records", "Records journaled per device (pseudonymous id)", labels=["device"]
        )
        for dev, n in sorted(self._gw.health.device_records.items()):
            per_device.add_metric([dev], n)
        yield per_device

    def _journal(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        st, cfg = self._view.stats, self._gw.cfg
        yield GaugeMetricFamily("tiyi_journal_records", "Records in the journal (its depth)", value=st.records)
        yield GaugeMetricFamily("tiyi_journal_size_bytes", "Journal file and WAL size", value=st.file_bytes)
        yield GaugeMetricFamily(
            "tiyi_journal_unacknowledged_records", "Records the broker has not acknowledged yet", value=st.undelivered
        )
        yield GaugeMetricFamily(
            "tiyi_journal_unpublished_batches",
            "Batches whose manifest is not acknowledged",
            value=st.unpublished_batches,
        )
        yield GaugeMetricFamily("tiyi_journal_batches", "Batches in the journal", value=st.batches)
        yield GaugeMetricFamily(
            "tiyi_head_batch", "Latest batch a verifier can see (named by the signed head)", value=self._view.head_batch
        )
        states = GaugeMetricFamily("tiyi_anchor_jobs", "Anchor jobs per target and state", labels=["target", "state"])
        for (queue, state), n in sorted(self._view.anchor_states.items()):
            states.add_metric([cfg.chain_target if queue == BATCH_QUEUE else queue, state], n)
        yield states

    def _latencies(self) -> Iterator[Metric]:
        h = self._gw.health
        yield _histogram("tiyi_batch_close_seconds", "Time to read, hash, sign and store a batch", h.batch_close_s)
        yield _histogram(
            "tiyi_anchor_latency_seconds", "Time from a batch's close to its anchor being final", h.anchor_final_s
        )

    def _links(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        gw = self._gw
        states: dict[str, dict[str, Any]] = gw.devices.device_states()
        yield CounterMetricFamily(
            "tiyi_ble_connects", "BLE connections made", value=sum(int(s.get("connects") or 0) for s in states.values())
        )
        yield CounterMetricFamily(
            "tiyi_ble_connect_failures",
            "BLE connection attempts that failed",
            value=sum(int(s.get("failures") or 0) for s in states.values()),
        )
        yield CounterMetricFamily(
            "tiyi_ble_adapter_resets", "BLE adapter power-cycles", value=_sources_sum(gw, "adapter_resets")
        )
        yield CounterMetricFamily(
            "tiyi_ble_scanner_restarts", "BLE scanner restarts", value=_sources_sum(gw, "scanner_restarts")
        )
        yield GaugeMetricFamily(
            "tiyi_ble_devices_connected",
            "Devices connected now",
            value=sum(bool(s.get("connected")) for s in states.values()),
        )
        connects = int(getattr(gw.publisher, "connects", 0))
        yield CounterMetricFamily(
            "tiyi_mqtt_reconnects", "Broker connections after the first", value=max(connects - 1, 0)
        )
        yield GaugeMetricFamily(
            "tiyi_mqtt_connected", "1 while connected to the broker", value=int(gw.publisher.connected)
        )


def _sources_sum(gw: Gateway, name: str) -> int:
    """Sum of a counter over the directory's adapters (one BLE source or several); 0 for sources without radios."""
    d = gw.devices
    sources = getattr(d, "sources", [d])
    return sum(int(getattr(s, name, 0) or 0) for s in sources)


def _histogram(name: str, doc: str, lat: Latencies) -> Metric:
    from prometheus_client.core import HistogramMetricFamily

    buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in lat.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=lat.sum)
