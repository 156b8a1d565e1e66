"""The gateway's signed head on a real Mosquitto: it names the latest batch the broker acknowledged, stays
retained for late subscribers, is refreshed, survives a restart, and never runs ahead of the manifests."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.services import free_port, mosquitto_binary, wait_port
from edge.frame import Frame
from edge.head import NO_MANIFEST, Head, SignedHead
from edge.manifest import SignedManifest
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig, PublishConfig
from gateway.keys import generate_keypair
from gateway.mqtt import BrokerSettings, Message, PahoPublisher, PahoSubscriber
from gateway.runtime import Assembled, assemble
from tests.conftest import Mosquitto

HR = 0x2A37


def config(tmp_path: Path, url: str, max_records: int, head_interval_s: float = 1.0) -> GatewayConfig:
    return GatewayConfig(
        gateway_id="gw-head",
        region="foshan",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=url),
        batch=BatchConfig(max_records=max_records, max_age_s=0.5),
        publish=PublishConfig(head_interval_s=head_interval_s),
        chain=ChainConfig(kind="none"),
    ).validated()


class Inbox:
    """Everything a subscriber receives, in order, with a wait for the first message matching a test."""

    def __init__(self, sub: PahoSubscriber) -> None:
        self.messages: list[Message] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._collect(sub))

    async def _collect(self, sub: PahoSubscriber) -> None:
        async for m in sub:
            self.messages.append(m)
            self._new.set()

    async def wait(self, match: Callable[[Message], bool], timeout: float = 15, after: int = 0) -> Message:
        """The first message from index ``after`` on that ``match`` accepts (waiting for it to arrive)."""
        seen = after

        async def run() -> Message:
            nonlocal seen
            while True:
                for m in self.messages[seen:]:
                    seen += 1
                    if match(m):
                        return m
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(run(), timeout)

    def heads(self, key: Verifier) -> list[Head]:
        out = []
        for m in self.messages:
            if m.topic.endswith("/head") and m.payload:  # empty: a retained head being cleared
                signed = SignedHead.from_bytes(m.payload)
                assert signed.verify(key)
                out.append(signed.head)
        return out

    def close(self) -> None:
        self._task.cancel()


def head_of(m: Message) -> Head:
    return SignedHead.from_bytes(m.payload).head


async def feed(parts: Assembled, n: int) -> None:
    for _ in range(n):
        await parts.gateway.submit(Frame("hr-1", HR, b"\x00\x48"))


async def retained_head(url: str, topics: Topics) -> Message:
    async with PahoSubscriber(BrokerSettings.from_url(url, client_id="late"), topics.head) as late:
        return await asyncio.wait_for(late.__anext__(), 10)


def test_head_names_the_last_published_batch_is_retained_refreshed_and_survives_a_restart(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "keys")
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())
    cfg = config(tmp_path, mosquitto.url, max_records=5)
    topics = Topics(cfg.region, cfg.gateway_id)

    async def main() -> None:
        async with PahoSubscriber(BrokerSettings.from_url(mosquitto.url, client_id="platform"), topics.all) as sub:
            inbox = Inbox(sub)
            parts = assemble(cfg, None)
            await parts.gateway.start()
            # Before any batch: the birth head says "none yet".
            first = head_of(await inbox.wait(lambda m: m.topic == topics.head))
            assert (first.gw, first.batch, first.last_seq, first.manifest) == ("gw-head", 0, 0, NO_MANIFEST)

            await feed(parts, 12)  # batches 1 (seq 1-5), 2 (6-10) and, after max_age_s, 3 (11-12)
            m3 = await inbox.wait(lambda m: m.topic == topics.head and head_of(m).batch == 3)
            manifests = {
                sm.manifest.batch: sm.manifest
                for sm in (SignedManifest.from_bytes(m.payload) for m in inbox.messages if m.topic == topics.batch)
            }
            head = head_of(m3)
            assert (head.last_seq, head.manifest) == (12, manifests[3].digest)
            assert SignedHead.from_bytes(m3.payload).key_id == key.key_id

            # Refreshed while nothing closes: newer issued times, same batch.
            later = head_of(await inbox.wait(lambda m: m.topic == topics.head and head_of(m).issued > head.issued))
            assert (later.batch, later.last_seq, later.manifest) == (3, 12, manifests[3].digest)

            # A platform that connects now gets it retained.
            late = await retained_head(mosquitto.url, topics)
            assert late.retain and head_of(late).batch == 3 and SignedHead.from_bytes(late.payload).verify(key)

            # Stopping closes the last records into batch 4; the head names it before the gateway says offline.
            await feed(parts, 2)
            await asyncio.sleep(0.1)
            assert await parts.gateway.stop(drain_timeout=10)
            parts.journal.close()
            await inbox.wait(lambda m: m.topic == topics.status and b"offline" in m.payload)
            at_stop = [i for i, m in enumerate(inbox.messages) if m.topic == topics.head][-1]
            offline = [i for i, m in enumerate(inbox.messages) if m.topic == topics.status][-1]
            assert at_stop < offline and head_of(inbox.messages[at_stop]).batch == 4

            # Forget the retained head, restart: the new process knows the head from its journal alone.
            pub = PahoPublisher(BrokerSettings.from_url(mosquitto.url, client_id="cleaner"))
            await pub.start()
            await pub.wait_connected(10)
            await (await pub.publish(topics.head, b"", 1, True))
            await pub.stop()
            parts = assemble(cfg, None)
            await parts.gateway.start()
            reborn = head_of(
                await inbox.wait(
                    lambda m: (
                        m.topic == topics.head
                        and m.payload != b""
                        and head_of(m).issued > head_of(inbox.messages[at_stop]).issued
                    )
                )
            )
            manifests = {
                sm.manifest.batch: sm.manifest
                for sm in (SignedManifest.from_bytes(m.payload) for m in inbox.messages if m.topic == topics.batch)
            }
            assert (reborn.batch, reborn.last_seq, reborn.manifest) == (4, 14, manifests[4].digest)
            late = await retained_head(mosquitto.url, topics)
            assert late.retain and head_of(late).batch == 4
            await parts.gateway.stop(drain_timeout=5)
            parts.journal.close()

            # Every head seen verifies, never moves backwards, and followed the manifest it names.
            heads = inbox.heads(key)
            assert [h.batch for h in heads] == sorted(h.batch for h in heads) and len(heads) >= 6
            for i, m in enumerate(inbox.messages):
                if m.topic == topics.head and m.payload and (n := head_of(m).batch):
                    assert any(
                        SignedManifest.from_bytes(b.payload).manifest.batch == n
                        for b in inbox.messages[:i]
                        if b.topic == topics.batch
                    )
            inbox.close()

    asyncio.run(main())


def test_the_birth_on_reconnect_restores_a_head_the_broker_lost(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    cfg = config(tmp_path, mosquitto.url, max_records=3, head_interval_s=3600)  # no refresh: only births
    topics = Topics(cfg.region, cfg.gateway_id)

    async def main() -> None:
        async with PahoSubscriber(BrokerSettings.from_url(mosquitto.url, client_id="platform"), topics.head) as sub:
            inbox = Inbox(sub)
            parts = assemble(cfg, None)
            await parts.gateway.start()
            await feed(parts, 3)
            await inbox.wait(lambda m: head_of(m).batch == 1)
            before = len(inbox.messages)
            mosquitto.stop()
            mosquitto.start()  # without persistence: every retained message is gone
            # No batch closes and the refresh is an hour away: only the birth can bring a head back.
            back = await inbox.wait(lambda m: True, after=before)
            assert head_of(back).batch == 1
            late = await retained_head(mosquitto.url, topics)
            assert late.retain and (head_of(late).batch, head_of(late).last_seq) == (1, 3)
            await parts.gateway.stop(drain_timeout=5)
            parts.journal.close()
            inbox.close()

    asyncio.run(main())


@dataclass
class DenyingMosquitto(Mosquitto):
    """A Mosquitto whose ACL refuses the batch topic: manifests are never acknowledged (MQTT 5 reason 135)."""

    def start(self) -> None:
        acl = self.workdir / "acl"
        acl.write_text(
            "".join(f"topic readwrite tiyi/v1/+/+/{t}\n" for t in ("data/#", "head", "status", "key"))
            + "topic read tiyi/v1/#\n"
        )
        conf = self.workdir / "mosquitto.conf"
        # As root, Mosquitto would drop to user "mosquitto" before reading the ACL in a private temp dir.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}"
            f"acl_file {acl}\nlog_dest file {self.workdir / 'mosquitto.log'}\n"
        )
        exe = mosquitto_binary()
        if exe is None:
            pytest.fail("mosquitto is not installed: run `make test` (it installs it) or apt-get install mosquitto")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)


@pytest.fixture
def denying_broker(tmp_path: Path) -> Iterator[DenyingMosquitto]:
    broker = DenyingMosquitto(port=free_port(), workdir=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_head_never_names_a_batch_the_broker_has_not_acknowledged(
    denying_broker: DenyingMosquitto, tmp_path: Path
) -> None:
    broker = denying_broker
    generate_keypair(tmp_path / "keys")
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())
    cfg = config(tmp_path, broker.url, max_records=3)
    topics = Topics(cfg.region, cfg.gateway_id)

    async def main() -> None:
        async with PahoSubscriber(BrokerSettings.from_url(broker.url, client_id="platform"), topics.all) as sub:
            inbox = Inbox(sub)
            parts = assemble(cfg, None)
            gw = parts.gateway
            await gw.start()
            await feed(parts, 6)
            await inbox.wait(lambda m: m.topic == topics.head and head_of(m).issued > 0 and gw.metrics.batches == 2)
            await asyncio.sleep(2.5)  # two refreshes, several refused manifest publishes
            await gw.stop(drain_timeout=1)
            parts.journal.close()
            heads = inbox.heads(key)
            assert gw.metrics.batches == 2 and gw.metrics.batches_published == 0
            assert gw.metrics.heads_published >= 3 and len(heads) >= 3
            assert all((h.batch, h.last_seq, h.manifest) == (0, 0, NO_MANIFEST) for h in heads)
            assert not any(m.topic == topics.batch for m in inbox.messages)
            inbox.close()

    asyncio.run(main())
