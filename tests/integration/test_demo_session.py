"""The verifier inside ``tiyi demo`` and ``tiyi sim run`` keeps its MQTT session across a broker restart (issue 17:
with a persistent Mosquitto restarted mid-run it used to report records "never received" that the gateway had
published while the verifier was still reconnecting)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import Mosquitto, free_port
from edge.topics import Topics
from gateway.cli.demo import VERIFIER_SESSION_S
from gateway.cli.harness import StreamCollector

pytestmark = pytest.mark.slow
T = Topics("shenzhen", "gw-demo")


def publish(port: int, numbers: range) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{numbers.start}", protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in [c.publish(T.data("dev-1"), str(n).encode(), qos=1) for n in numbers]:
        i.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_the_verifier_reconnects_after_a_broker_restart_still_reach_it(
    tmp_path: Path, protocol: str
) -> None:
    broker = Mosquitto(port=free_port(), workdir=tmp_path, persistent=True)
    broker.start()

    async def scenario() -> None:
        collector = StreamCollector(
            broker.url, T, "gw-demo", protocol, client_id=f"verifier-{protocol}", session_expiry_s=VERIFIER_SESSION_S
        )  # as the demo's verifier
        await collector.start()

        def payloads() -> set[bytes]:
            return {p for _, p, _ in collector.messages}

        deadline = time.monotonic() + 10
        while not payloads() and time.monotonic() < deadline:  # subscribed once a message comes through
            await asyncio.to_thread(publish, broker.port, range(0, 1))
            await asyncio.sleep(0.2)
        for restart in range(3):
            await asyncio.to_thread(publish, broker.port, range(1000 * restart + 1, 1000 * restart + 101))
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            # The gateway is back first and publishes before the verifier has reconnected.
            await asyncio.to_thread(publish, broker.port, range(1000 * restart + 101, 1000 * restart + 201))
        want = {str(n).encode() for r in range(3) for n in range(1000 * r + 1, 1000 * r + 201)}
        deadline = time.monotonic() + 30
        while not want <= payloads() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a list
            await asyncio.sleep(0.1)
        await collector.stop()
        missing = want - payloads()
        assert not missing, f"{len(missing)} messages never reached the verifier"

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
