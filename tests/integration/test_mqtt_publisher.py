"""The asyncio paho publisher against a real Mosquitto (and amqtt for the MQTT 3.1.1 fallback)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.broker import EmbeddedBroker
from gateway.errors import ConfigError, PublishError
from gateway.mqtt import BrokerSettings, Message, PahoPublisher, PahoSubscriber
from tests.conftest import Mosquitto


async def take(sub: PahoSubscriber, n: int, timeout: float = 20) -> list[Message]:
    out: list[Message] = []

    async def run() -> None:
        async for m in sub:
            out.append(m)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


def test_ten_thousand_qos1_messages_all_acked_and_received(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        async with PahoSubscriber(BrokerSettings.from_url(mosquitto.url, client_id="sub"), "t/#") as sub:
            pub = PahoPublisher(BrokerSettings.from_url(mosquitto.url, client_id="pub"))
            await pub.start()
            await pub.wait_connected(10)
            assert pub.protocol_in_use == "5"
            start = time.monotonic()
            futs = [await pub.publish("t/x", i.to_bytes(4, "big")) for i in range(10_000)]
            await asyncio.gather(*futs)
            print(f"acked {10_000 / (time.monotonic() - start):.0f} msg/s (QoS 1, max_inflight 100)")
            got = await take(sub, 10_000)
            assert sorted(int.from_bytes(m.payload, "big") for m in got) == list(range(10_000))
            await pub.stop()

    asyncio.run(main())


def test_last_will_is_published_when_the_connection_dies(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        settings = BrokerSettings.from_url(
            mosquitto.url, client_id="gw", will_topic="s/status", will_payload=b"offline", will_retain=True, keepalive=5
        )
        pub = PahoPublisher(settings)
        await pub.start()
        await pub.wait_connected(10)
        await (await pub.publish("s/status", b"online", retain=True))
        async with PahoSubscriber(BrokerSettings.from_url(mosquitto.url, client_id="s1"), "s/#") as sub:
            (first,) = await take(sub, 1)
            assert (first.payload, first.retain) == (b"online", True)
            # Drop the TCP connection without DISCONNECT, as a power cut would.
            assert pub._client is not None
            sock = pub._client.socket()
            assert sock is not None
            sock.close()
            (will,) = await take(sub, 1)
            assert will.payload == b"offline"
        await pub.stop()

    asyncio.run(main())


def test_broker_restart_fails_pending_then_reconnects_and_reruns_the_hook(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        pub = PahoPublisher(BrokerSettings.from_url(mosquitto.url, client_id="pub", backoff_min=0.2, backoff_max=1))
        hooks = []

        async def on_connect() -> None:
            hooks.append(time.monotonic())

        pub.on_connect = on_connect
        await pub.start()
        await pub.wait_connected(10)
        futs = [await pub.publish("t/x", b"x") for _ in range(50)]
        mosquitto.stop()
        results = await asyncio.gather(*futs, return_exceptions=True)
        # Every future settles: acked before the stop, or failed with PublishError; none hangs.
        assert all(r is None or isinstance(r, PublishError) for r in results)
        with pytest.raises(PublishError):
            await pub.publish("t/x", b"while down")
        mosquitto.start()
        await pub.wait_connected(20)
        await asyncio.sleep(0.1)
        assert len(hooks) == 2
        await (await pub.publish("t/x", b"after restart"))
        await pub.stop()

    asyncio.run(main())


def test_forced_mqtt_311(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        pub = PahoPublisher(BrokerSettings.from_url(mosquitto.url, client_id="p311", protocol="3.1.1"))
        await pub.start()
        await pub.wait_connected(10)
        assert pub.protocol_in_use == "3.1.1"
        await (await pub.publish("t/y", b"ok"))
        await pub.stop()

    asyncio.run(main())


def test_auto_falls_back_to_311_on_amqtt() -> None:
    async def main() -> None:
        broker = EmbeddedBroker()
        url = await broker.start()
        try:
            pub = PahoPublisher(BrokerSettings.from_url(url, client_id="pa", connect_timeout=3))
            await pub.start()
            await pub.wait_connected(20)
            assert pub.protocol_in_use == "3.1.1"
            await (await pub.publish("t/z", b"ok"))
            await pub.stop()
        finally:
            await broker.stop()

    asyncio.run(main())


@pytest.mark.parametrize("url", ["http://x", "mqtt://", "mqtt://h:99999", "tcp://h:1883"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        BrokerSettings.from_url(url, client_id="x")


def test_password_never_in_repr() -> None:
    s = BrokerSettings.from_url("mqtt://u:sekret@h:1883", client_id="x")
    assert s.password == "sekret" and "sekret" not in repr(s)
