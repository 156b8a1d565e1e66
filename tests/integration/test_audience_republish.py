"""Audience views are published at least once and, when an acknowledgement was lost, published again after a
restart byte-identical: view records are rebuilt from the journaled source records with the consent head and
key id their signed manifest names — even after the key rotated meanwhile. A view that no longer rebuilds
identically (its audience's rules changed) is never sent as something else: its manifest goes out alone and
one line is logged. A view whose member withdrew consent after it was built, before the broker acknowledged it,
never transfers her readings after the withdrawal: it is rebuilt at the current consent head, re-signed and
replaces the journaled one, so the audience gets a consistent view without her records that its verifier
accepts; only a view that cannot be rebuilt (its key is gone) goes out as its manifest alone. The consent
events an audience gets follow its purpose, also when the purpose is changed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from anchoring.findings import Reason
from anchoring.trust import TrustPolicy
from anchoring.view_verify import AudienceVerifier
from bench.services import Mosquitto, free_port
from edge.consent import SignedConsent
from edge.frame import Frame
from edge.record import Record, decode_data_message
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from edge.view import SignedView
from gateway.audience_config import AudienceConfig, MinimiseConfig
from gateway.audience_keys import AudienceKeyring
from gateway.binding import Bindings
from gateway.clock import wall_ms
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.consent import ConsentLedger
from gateway.keys import generate_keypair, load_signer
from gateway.prometheus import scrape
from gateway.runtime import assemble, secret_file
from tests.e2e.harness import Recorder

AUD = "aud-enc"
HR = 0x2A37


def config(tmp_path: Path, url: str, drop_raw: bool = True) -> GatewayConfig:
    return GatewayConfig(
        gateway_id="gw-rep",
        region="shenzhen",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=url),
        batch=BatchConfig(max_records=4, max_age_s=0.2),
        chain=ChainConfig(kind="none"),
        audiences=(
            AudienceConfig(
                AUD, "health_management", "mainland", encrypt=True, minimise=(("*", MinimiseConfig(drop_raw=drop_raw)),)
            ),
        ),
    ).validated()


async def run_gateway(cfg: GatewayConfig, frames: int) -> None:
    parts = assemble(cfg, None)
    gw = parts.gateway
    await gw.start()
    await gw.publisher.wait_connected(10)
    for i in range(frames):
        await gw.submit(Frame("hr-1", HR, bytes([0, 60 + i])))
    assert await gw.drain(60)
    await gw.stop(drain_timeout=5)
    parts.journal.close()


def capture(url: str, cfg: GatewayConfig, frames: int) -> list[tuple[str, bytes]]:
    """Run the gateway once under an observer subscribed before it starts: (topic, payload) received."""
    with Recorder(url, Topics(cfg.region, cfg.gateway_id)) as rec:
        asyncio.run(run_gateway(cfg, frames))
        rec.wait_idle(0.5)
    return [(t, p) for t, p, _ in rec.messages]


def split(cfg: GatewayConfig, messages: list[tuple[str, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(view record bytes, view manifest payloads) of the audience."""
    topics = Topics(cfg.region, cfg.gateway_id)
    records = [b for t, p in messages if t.startswith(f"{topics.base}/aud/{AUD}/data/") for b in decode_data_message(p)]
    return records, [p for t, p in messages if t == topics.aud_view(AUD)]


def observe(url: str, cfg: GatewayConfig, frames: int) -> tuple[list[bytes], list[bytes]]:
    """Run the gateway once under an observer: (view record bytes, view manifest payloads) it received."""
    return split(cfg, capture(url, cfg, frames))


def consent_events(cfg: GatewayConfig, messages: list[tuple[str, bytes]]) -> list[tuple[int, str, bool]]:
    """(ledger number, purpose, granted) of the consent events on the audience's consent topic."""
    topic = Topics(cfg.region, cfg.gateway_id).aud_consent(AUD)
    return [(e.n, e.purpose, e.granted) for e in (SignedConsent.from_bytes(p).event for t, p in messages if t == topic)]


def verify(cfg: GatewayConfig, messages: list[tuple[str, bytes]]) -> list[tuple[Reason, str]]:
    """The audience's own verifier (anchoring.view_verify, with its keys and the gateway's pinned key) on what
    it received: its problems. Without a chain (kind "none") no anchor receipt is published, so each view also
    reports its source batch's missing anchor; any other problem is the stream's."""
    pub = load_public_key_pem((cfg.state_dir / "keys" / "gateway.pub").read_text())
    ring = AudienceKeyring(cfg.audience_key_dir, AUD)
    v = AudienceVerifier(
        TrustPolicy(pinned={cfg.gateway_id: [pub]}),
        AUD,
        cfg.audiences[0].purpose,
        {kid: ring.by_kid(kid) for kid in ring.kids()},
    )
    for t, p in messages:
        v.feed(t, p)
    rep = v.report()
    assert rep.gateways[cfg.gateway_id].views >= 1
    return [(p.reason, p.message) for p in rep.problems if p.reason != Reason.MISSING_ANCHOR]


def lose_acks(cfg: GatewayConfig) -> None:
    """As if the broker's acks of every view and consent event had been lost before they were recorded."""
    conn = sqlite3.connect(cfg.journal_path, isolation_level=None)
    conn.execute("UPDATE views SET records_published = 0, published = 0")
    conn.execute("DELETE FROM audience_consent")
    conn.close()


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto) -> GatewayConfig:
    return make_site(tmp_path, mosquitto.url)


def make_site(tmp_path: Path, url: str) -> GatewayConfig:
    """A gateway with one encrypting audience and one bound member (hr-1) who consents to its purpose."""
    generate_keypair(tmp_path / "keys")
    cfg = config(tmp_path, url)
    AudienceKeyring(cfg.audience_key_dir, AUD).add()
    sub = Bindings(tmp_path, secret_file(cfg.site_secret_path)).bind("hr-1", "M-7", wall_ms()).sub
    ConsentLedger(tmp_path, cfg.gateway_id, load_signer(cfg.signing_key_path)).record(
        sub, "health_management", True, wall_ms()
    )
    return cfg


def test_a_restart_republishes_views_byte_identical(site: GatewayConfig, mosquitto: Mosquitto) -> None:
    cfg = site
    first_records, first_views = observe(mosquitto.url, cfg, 10)
    assert len(first_records) == 10 and len(first_views) == 3  # batches of 4, 4, 2
    # Meanwhile: the key rotates and the member withdraws from another purpose (a withdrawal from this one is
    # below). Neither may change what was already signed.
    AudienceKeyring(cfg.audience_key_dir, AUD).add()
    ledger = ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path))
    ledger.record(_sub(cfg), "research", False, wall_ms())
    lose_acks(cfg)
    again_records, again_views = observe(mosquitto.url, cfg, 0)
    assert again_views == first_views
    assert sorted(again_records) == sorted(first_records)


def _sub(cfg: GatewayConfig) -> str:
    return Bindings(cfg.state_dir, secret_file(cfg.site_secret_path)).list()[0].sub


def test_a_view_that_no_longer_rebuilds_identically_goes_out_without_records(
    site: GatewayConfig, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = site
    _, first_views = observe(mosquitto.url, cfg, 4)
    assert len(first_views) == 1
    lose_acks(cfg)
    changed = dataclasses.replace(cfg, audiences=(config(cfg.state_dir, cfg.mqtt.url, drop_raw=False).audiences))
    caplog.set_level(logging.ERROR, logger="tiyi")
    records, views = observe(mosquitto.url, changed, 0)
    assert views == first_views and records == []  # the signed truth, never records it does not describe
    assert any("differs from the signed one" in m for m in caplog.messages)


def test_an_encrypting_audience_without_a_key_stops_the_start(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Fail closed: no key means no start, rather than views that wait forever or go out in clear."""
    from gateway.audience_keys import AudienceKeyError

    generate_keypair(tmp_path / "keys")
    with pytest.raises(AudienceKeyError, match=f"audience {AUD} encrypts but has no key"):
        assemble(config(tmp_path, mosquitto.url), None)


def test_a_consent_ledger_that_stops_verifying_holds_every_view_back(
    site: GatewayConfig, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged consent.json could resurrect a withdrawn consent: no view is built from it, the error is logged
    once, and the views follow as soon as the file is restored."""
    cfg = site
    good = (cfg.state_dir / "consent.json").read_text()
    topics = Topics(cfg.region, cfg.gateway_id)
    caplog.set_level(logging.ERROR, logger="tiyi")

    async def go() -> tuple[int, int]:
        parts = assemble(cfg, None)
        gw = parts.gateway
        await gw.start()
        await gw.publisher.wait_connected(10)
        (cfg.state_dir / "consent.json").write_text('["00"]')  # damaged while running
        for i in range(4):
            await gw.submit(Frame("hr-1", HR, bytes([0, 60 + i])))
        deadline = asyncio.get_running_loop().time() + 60
        # Until the batch closed (its view is due) and the stage refused the ledger.
        while "does not verify" not in (gw.health.last_error or "") or (await gw.backlog()).views_open != 1:
            assert asyncio.get_running_loop().time() < deadline, gw.health.last_error
            await asyncio.sleep(0.05)
        assert gw.audiences is not None and gw.audiences.views_built[AUD] == 0
        held = (await gw.backlog()).views_open
        (cfg.state_dir / "consent.json").write_text(good)  # restored
        assert await gw.drain(60)
        await gw.stop(drain_timeout=5)
        parts.journal.close()
        return held, gw.audiences.views_published[AUD] if gw.audiences else -1

    with Recorder(mosquitto.url, topics) as rec:
        held, published = asyncio.run(go())
        rec.wait_idle(0.5)
    assert held == 1 and published == 1
    errors = [m for m in caplog.messages if "audience views wait" in m and "does not verify" in m]
    assert len(errors) == 1  # once, not every second
    views = [p for t, p, _ in rec.messages if t == topics.aud_view(AUD)]
    assert len(views) == 1


async def build_while_the_broker_is_down(
    cfg: GatewayConfig, frames: int, views: int, devs: tuple[str, ...] = ("hr-1",)
) -> None:
    """Run the gateway without a broker until ``views`` views are built (journaled, none acknowledged), then
    stop it. Frames come from ``devs`` in turn."""
    parts = assemble(cfg, None)
    gw = parts.gateway
    await gw.start()
    for i in range(frames):
        await gw.submit(Frame(devs[i % len(devs)], HR, bytes([0, 60 + i])))
    deadline = asyncio.get_running_loop().time() + 60
    assert gw.audiences is not None
    while gw.audiences.views_built[AUD] < views:
        assert asyncio.get_running_loop().time() < deadline, gw.health.last_error
        await asyncio.sleep(0.05)
    assert gw.audiences.views_published[AUD] == 0
    await gw.stop(drain_timeout=0)
    parts.journal.close()


def second_member(cfg: GatewayConfig) -> str:
    """Bind hr-2 to a second member who consents to the audience's purpose: her pseudonymous sub."""
    sub = Bindings(cfg.state_dir, secret_file(cfg.site_secret_path)).bind("hr-2", "M-8", wall_ms()).sub
    ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path)).record(
        sub, "health_management", True, wall_ms()
    )
    return sub


REBUILT_LINE = (
    f"audience {AUD}, batch 1: rebuilt at consent event 3 (1 member(s) withdrew consent after it was built): "
    "2 of its 4 records are published"
)


def topics_data(cfg: GatewayConfig, topic: str) -> str | None:
    """``topic`` when it is one of the audience's data topics."""
    return topic if topic.startswith(f"{Topics(cfg.region, cfg.gateway_id).base}/aud/{AUD}/data/") else None


def assert_rebuilt_without_her(cfg: GatewayConfig, messages: list[tuple[str, bytes]], other: str) -> None:
    """The audience got the withdrawal, then the other member's 2 records, then one view manifest built at the
    withdrawal's head that withholds her 2 readings; its verifier finds nothing missing or unconsented."""
    records, views = split(cfg, messages)
    assert len(views) == 1 and len(records) == 2
    assert {Record.from_bytes(b).sub for b in records} == {other}
    m = SignedView.from_bytes(views[0]).manifest
    assert (m.consent_n, m.consent_count, m.count) == (3, 3, 2)
    assert sum(b - a + 1 for reason, a, b in m.withheld if reason == "no_consent") == 2
    assert verify(cfg, messages) == []
    without_data = [(t, p) for t, p in messages if t != topics_data(cfg, t)]
    assert Reason.MISSING_RECORD in {r for r, _ in verify(cfg, without_data)}  # control: the check can fail
    assert consent_events(cfg, messages) == [
        (1, "health_management", True),
        (2, "health_management", True),
        (3, "health_management", False),
    ]
    topics = Topics(cfg.region, cfg.gateway_id)
    order = [t for t, _ in messages]
    first_data = min(i for i, t in enumerate(order) if t.startswith(f"{topics.base}/aud/{AUD}/data/"))
    assert order.index(topics.aud_consent(AUD)) < first_data < order.index(topics.aud_view(AUD))


def test_a_view_built_before_a_withdrawal_is_rebuilt_without_her_records(
    site: GatewayConfig, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Broker down: the view of batch 1 is built (two members consent, two readings each) but not sent; one
    withdraws; the gateway restarts and the broker is back. Her readings must not go out after she withdrew,
    and a manifest without its records would show the audience a broken stream: the view is rebuilt at the
    current consent head, re-signed and replaces the unacknowledged journaled one. None of her readings reaches
    the broker; one line with counts is logged."""
    cfg = site
    her = _sub(cfg)
    other = second_member(cfg)
    mosquitto.stop()
    asyncio.run(build_while_the_broker_is_down(cfg, 4, 1, devs=("hr-1", "hr-2")))
    built = journaled_views(cfg)
    ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path)).record(
        her, "health_management", False, wall_ms()
    )
    mosquitto.start()
    caplog.set_level(logging.INFO, logger="tiyi")
    messages = capture(mosquitto.url, cfg, 0)
    assert_rebuilt_without_her(cfg, messages, other)
    assert [(n, c, p) for n, c, _, p in built] == [(1, 2, 0)]
    ((n, c, signed, published),) = journaled_views(cfg)
    assert (n, c, published) == (1, 3, 1) and signed == split(cfg, messages)[1][0] != built[0][2]
    assert [m for m in caplog.messages if "withdrew consent" in m] == [REBUILT_LINE]
    assert her not in caplog.text and other not in caplog.text and "M-7" not in caplog.text


def test_a_later_view_follows_a_rebuilt_one_to_its_consent_head(
    site: GatewayConfig, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Two views built while the broker is down; only the first holds readings of the member who then
    withdraws. It is rebuilt at the withdrawal's head; the second, at the older head, would tell the audience
    a consent state older than the view before it (its verifier flags that as no_consent), so it is rebuilt at
    that head too — its records unchanged. The whole stream verifies."""
    cfg = site
    her = _sub(cfg)
    other = second_member(cfg)
    mosquitto.stop()
    devs = ("hr-1", "hr-2", "hr-1", "hr-2", "hr-2", "hr-2", "hr-2", "hr-2")
    asyncio.run(build_while_the_broker_is_down(cfg, 8, 2, devs=devs))
    assert [(n, c) for n, c, _, _ in journaled_views(cfg)] == [(1, 2), (2, 2)]
    ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path)).record(
        her, "health_management", False, wall_ms()
    )
    mosquitto.start()
    caplog.set_level(logging.INFO, logger="tiyi")
    messages = capture(mosquitto.url, cfg, 0)
    records, views = split(cfg, messages)
    assert [SignedView.from_bytes(v).manifest.consent_n for v in views] == [3, 3]
    assert len(records) == 6 and {Record.from_bytes(b).sub for b in records} == {other}
    assert verify(cfg, messages) == []
    assert [(n, c, p) for n, c, _, p in journaled_views(cfg)] == [(1, 3, 1), (2, 3, 1)]
    assert [m for m in caplog.messages if "withdrew consent" in m] == [
        REBUILT_LINE,
        f"audience {AUD}, batch 2: rebuilt at consent event 3 (0 member(s) withdrew consent after it was built): "
        "4 of its 4 records are published",
    ]


def journaled_views(cfg: GatewayConfig) -> list[tuple[int, int, bytes, int]]:
    """(n, consent_n, signed, published) of the audience's journaled views."""
    conn = sqlite3.connect(cfg.journal_path)
    try:
        return [
            (int(n), int(c), bytes(s), int(p))
            for n, c, s, p in conn.execute("SELECT n, consent_n, signed, published FROM views ORDER BY n")
        ]
    finally:
        conn.close()


def test_a_withdrawal_from_another_purpose_or_by_a_member_not_in_the_view_keeps_its_records(
    site: GatewayConfig, mosquitto: Mosquitto
) -> None:
    """The check is no broader than the withdrawal: the view's records still go out after a withdrawal from
    another purpose and after one by a member none of whose readings are in the view."""
    cfg = site
    signer = load_signer(cfg.signing_key_path)
    other = Bindings(cfg.state_dir, secret_file(cfg.site_secret_path)).bind("hr-2", "M-8", wall_ms()).sub
    ledger = ConsentLedger(cfg.state_dir, cfg.gateway_id, signer)
    ledger.record(other, "health_management", True, wall_ms())
    mosquitto.stop()
    asyncio.run(build_while_the_broker_is_down(cfg, 4, 1))
    ledger.record(_sub(cfg), "research", False, wall_ms())
    ledger.record(other, "health_management", False, wall_ms())
    mosquitto.start()
    records, views = observe(mosquitto.url, cfg, 0)
    assert len(views) == 1 and len(records) == 4


def test_an_audience_whose_purpose_changed_gets_every_consent_event_of_its_new_purpose(
    site: GatewayConfig, mosquitto: Mosquitto
) -> None:
    """The consent topic carried the health events up to ledger number 2; the audience is then configured for
    research. The research grant numbered 2 (at or below what was published for health) must still go out,
    before the first research view."""
    cfg = site
    ledger = ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path))
    ledger.record(_sub(cfg), "research", True, wall_ms())
    first = capture(mosquitto.url, cfg, 4)
    assert consent_events(cfg, first) == [(1, "health_management", True)]
    research = dataclasses.replace(cfg, audiences=(dataclasses.replace(cfg.audiences[0], purpose="research"),))
    again = capture(mosquitto.url, research, 4)
    assert consent_events(cfg, again) == [(2, "research", True)]
    records, views = split(cfg, again)
    assert len(views) == 1 and len(records) == 4
    topics = [t for t, _ in again]
    assert topics.index(Topics(cfg.region, cfg.gateway_id).aud_consent(AUD)) < topics.index(
        Topics(cfg.region, cfg.gateway_id).aud_view(AUD)
    )


@pytest.mark.parametrize("key_kept", [True, False], ids=["rebuilt", "key-gone-manifest-alone"])
def test_a_broker_outage_between_build_and_publication_withholds_a_withdrawn_members_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key_kept: bool
) -> None:
    """The same within one run (the view's records are still in memory): the broker goes down, the view is
    built, a member withdraws, the broker comes back. The platform keeps a persistent session, so it would
    receive anything sent after the outage: it gets the withdrawal, then the view rebuilt without her
    readings, which verifies. Only when the view cannot be rebuilt (here: its audience key was removed
    meanwhile) does its manifest go out alone, with no record at all."""
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(free_port(), tmp_path / "broker", persistent=True)
    broker.start()
    (tmp_path / "site").mkdir()
    cfg = make_site(tmp_path / "site", broker.url)
    her = _sub(cfg)
    other = second_member(cfg)
    topics = Topics(cfg.region, cfg.gateway_id)
    caplog.set_level(logging.INFO, logger="tiyi")

    async def run() -> tuple[int, int, str]:
        parts = assemble(cfg, None)
        gw = parts.gateway
        await gw.start()
        await gw.publisher.wait_connected(10)
        broker.stop()  # SIGTERM: Mosquitto saves the platform's session
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while gw.publisher.connected:  # the gateway noticed: nothing is handed to the client library any more
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        for i in range(4):
            await gw.submit(Frame(("hr-1", "hr-2")[i % 2], HR, bytes([0, 60 + i])))
        assert gw.audiences is not None
        while gw.audiences.views_built[AUD] < 1:
            assert loop.time() < deadline, gw.health.last_error
            await asyncio.sleep(0.05)
        ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path)).record(
            her, "health_management", False, wall_ms()
        )
        if not key_kept:
            for key in cfg.audience_key_dir.glob(f"{AUD}/*.key"):
                key.unlink()
        broker.start()
        assert await gw.drain(60)
        metrics = (await scrape(gw)).decode()
        await gw.stop(drain_timeout=5)
        parts.journal.close()
        return gw.audiences.withdrawn_views[AUD], gw.audiences.rebuilt_views[AUD], metrics

    try:
        with Recorder(broker.url, topics, session_expiry_s=600) as rec:
            withdrawn, rebuilt, metrics = asyncio.run(run())
            rec.wait_idle(1.0)
    finally:
        broker.stop()
    # What the operator sees in /metrics: the same counts, per audience.
    exported = {
        s.name: s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.labels == {"audience": AUD}
    }
    assert (
        exported["tiyi_audience_views_withdrawn_total"],
        exported["tiyi_audience_views_rebuilt_total"],
        exported["tiyi_audience_views_built_total"],
        exported["tiyi_audience_views_published_total"],
        exported["tiyi_audience_views_unrebuildable_total"],
    ) == (withdrawn, rebuilt, 1, 1, 0)
    messages = [(t, p) for t, p, _ in rec.messages]
    if key_kept:
        assert (withdrawn, rebuilt) == (0, 1)
        assert_rebuilt_without_her(cfg, messages, other)
        assert [m for m in caplog.messages if "withdrew consent" in m] == [REBUILT_LINE]
        return
    records, views = split(cfg, messages)
    assert (withdrawn, rebuilt) == (1, 0) and len(views) == 1 and records == []
    assert SignedView.from_bytes(views[0]).manifest.consent_n == 2  # the view as first built and signed
    assert [(n, c, p) for n, c, _, p in journaled_views(cfg)] == [(1, 2, 1)]
    order = [t for t, _ in messages]
    assert order.index(topics.aud_consent(AUD)) < order.index(topics.aud_view(AUD))
    assert sum("cannot be rebuilt at the current consent" in m for m in caplog.messages) == 1
    assert [m for m in caplog.messages if "withdrew consent" in m] == [
        f"audience {AUD}, batch 1: 1 member(s) withdrew consent after it was built; its manifest is published "
        "without its 4 records"
    ]
