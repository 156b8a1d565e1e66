"""The verifier inside ``tiyi demo`` and ``tiyi sim run`` keeps its MQTT session across a broker restart (issue 17:
with a persistent Mosquitto restarted mid-run it used to report records "never received" that the gateway had
published while the verifier was still reconnecting)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.services import Mosquitto, free_port
from edge.topics import Topics
from gateway.demo import _collect

pytestmark = pytest.mark.slow
T = Topics("shenzhen", "gw-demo")


class Recorder:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.want: set[bytes] = set()
        self.complete = asyncio.Event()

    def feed(self, _topic: str, payload: bytes, _retained: bool = False) -> None:
        self.payloads.append(payload)
        if self.want and self.want <= set(self.payloads):
            self.complete.set()


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
        tmp_path: Path, protocol: str) -> None:
    broker = Mosquitto(port=free_port(), workdir=tmp_path, persistent=True)
    broker.start()
    rec = Recorder()

    async def scenario() -> None:
        task = asyncio.create_task(_collect(broker.url, protocol, T, rec, [0]))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not rec.payloads and time.monotonic() < deadline:  # subscribed once a message comes through
            await asyncio.to_thread(publish, broker.port, range(0, 1))
            await asyncio.sleep(0.2)
        for restart in range(3):
            await asyncio.to_thread(publish, broker.port, range(1000 * restart + 1, 1000 * restart + 101))
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            # The gateway is back first and publishes before the verifier has reconnected.
            await asyncio.to_thread(publish, broker.port, range(1000 * restart + 101, 1000 * restart + 201))
        want = rec.want = {str(n).encode() for r in range(3) for n in range(1000 * r + 1, 1000 * r + 201)}
        rec.feed("", b"")  # whatever already came
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.complete.wait(), 30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        missing = want - set(rec.payloads)
        assert not missing, f"{len(missing)} messages never reached the verifier"

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
