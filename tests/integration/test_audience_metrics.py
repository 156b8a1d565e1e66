"""A cross-border block on a running gateway: a Hong Kong audience without a legal basis gets no individual
readings from a Foshan gateway (mainland), only consented aggregates; the block shows in /metrics (through the
admin API on a real port) and in one log line per batch with counts only; a mainland audience of the same
gateway gets the readings."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.record import Record, decode_data_message
from edge.topics import Topics
from edge.view import SignedView
from gateway.audience_config import AudienceConfig, MinimiseConfig
from gateway.binding import Bindings
from gateway.clock import wall_ms
from gateway.consent import ConsentLedger
from gateway.keys import load_signer
from gateway.prometheus import AUDIENCE_COUNTERS
from gateway.runtime import secret_file
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder
from tests.integration.api_harness import RunningGateway

MEMBER = "M-4711"


def test_a_cross_border_block_shows_in_metrics(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rg = RunningGateway(tmp_path, mosquitto.url)
    rg.cfg = dataclasses.replace(
        rg.cfg,
        audiences=(
            AudienceConfig(
                "hk-research", "research", "hongkong", minimise=(("battery", MinimiseConfig(aggregate=True)),)
            ),
            AudienceConfig("gz-health", "research", "mainland"),
        ),
    ).validated()
    secret = secret_file(rg.cfg.site_secret_path)
    sub = Bindings(tmp_path, secret).bind("hr-1", MEMBER, wall_ms()).sub
    ConsentLedger(tmp_path, "gw-api", load_signer(tmp_path / "keys" / "gateway.key")).record(
        sub, "research", True, wall_ms()
    )
    topics = Topics(rg.cfg.region, rg.cfg.gateway_id)
    caplog.set_level(logging.INFO, logger="tiyi")
    with Recorder(mosquitto.url, topics) as rec:
        with rg:
            rg.feed(12)  # heart-rate readings of the bound, consenting member
            rg.settle()
            r = rg.get("/metrics")
            assert r.status_code == 200
            status = rg.get("/api/v1/audiences")
            assert status.status_code == 200
            assert rg.get("/api/v1/audiences", headers={}).status_code == 401
        rec.wait_idle(0.5)
    families = {fam.name: fam for fam in text_string_to_metric_families(r.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in families.values() for s in fam.samples}
    # Every counter the audiences stage keeps is exported, per audience, with its help text; three views each
    # (batches of 5, 5, 2), all published, none rebuilt or sent without records.
    for attr, (name, doc) in AUDIENCE_COUNTERS.items():
        assert families[name].type == "counter" and families[name].documentation == doc, attr
        for aud in ("hk-research", "gz-health"):
            got = samples[(name + "_total", (("audience", aud),))]
            want = {"views_built": 3, "views_published": 3}.get(attr, 0)
            if attr == "view_records":
                want = 0 if aud == "hk-research" else 12
            assert got == want, (attr, aud)
    blocked = samples[
        ("tiyi_audience_withheld_records_total", (("audience", "hk-research"), ("reason", "cross_border")))
    ]
    assert blocked == 12
    assert samples[("tiyi_audience_view_records_total", (("audience", "hk-research"),))] == 0
    assert samples[("tiyi_audience_view_records_total", (("audience", "gz-health"),))] == 12
    assert (
        "tiyi_audience_withheld_records_total",
        (("audience", "gz-health"), ("reason", "cross_border")),
    ) not in samples
    hk, gz = status.json()
    assert (hk["id"], hk["jurisdiction"], hk["legal_basis"], hk["first_batch"]) == ("hk-research", "hongkong", "", 1)
    assert hk["views"] == 3 and hk["views_unpublished"] == 0 and hk["view_records"] == 0  # batches of 5, 5, 2
    assert hk["withheld"] == {"cross_border": 12} and gz["withheld"] == {} and gz["view_records"] == 12
    assert sub not in status.text and MEMBER not in status.text
    # What the Hong Kong platform received: signed views that account for every reading as withheld.
    views = [SignedView.from_bytes(p).manifest for t, p, _ in rec.messages if t == topics.aud_view("hk-research")]
    assert sum(v.last - v.first + 1 for v in views) == 12 and all(v.count == 0 for v in views)
    assert {w[0] for v in views for w in v.withheld} == {"cross_border"}
    assert not [t for t, _, _ in rec.messages if t.startswith(f"{topics.base}/aud/hk-research/data/")]
    mainland = [
        Record.from_bytes(b)
        for t, p, _ in rec.messages
        if t.startswith(f"{topics.base}/aud/gz-health/data/")
        for b in decode_data_message(p)
    ]
    assert len({r.seq for r in mainland}) == 12 and {r.sub for r in mainland} == {sub}
    lines = [m for m in caplog.messages if "hk-research" in m and "cross_border" in m]
    assert lines and all("withheld cross_border" in m for m in lines)
    assert not [m for m in caplog.messages if sub in m or MEMBER in m or ("hr-1" in m and "audience" in m)]
