"""The benchmark's raw MQTT publisher (bench/rawmqtt.py) on a real Mosquitto: every packet arrives as published, in
order, retained where asked, within the broker's Receive Maximum; and what it must refuse, it refuses."""

from __future__ import annotations

import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.rawmqtt import RawMqttError, RawPublisher, publish_packet, receive_maximum, varint
from bench.services import Mosquitto

pytestmark = pytest.mark.slow


def test_every_packet_arrives_as_published_in_order(mosquitto: Mosquitto) -> None:
    got: list[tuple[str, bytes, bool]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="loadgen-sub", protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *_: c.subscribe("x/#", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, m: got.append((m.topic, bytes(m.payload), bool(m.retain)))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        sent = [(f"x/{i % 7}", os.urandom(i % 300), False) for i in range(3000)]  # 0..299 bytes: 1- and 2-byte lengths
        sent.append(("x/big", os.urandom(70_000), False))  # a 3-byte remaining length
        pub = RawPublisher(mosquitto.port, "loadgen-pub")
        assert 0 < pub.window <= 1000  # the broker's Receive Maximum (100 here), never more than 1000
        pub.send([publish_packet(t, p, r) for t, p, r in sent])
        pub.close()
        deadline = time.monotonic() + 30
        while len(got) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)  # delivery to the subscriber is asynchronous; the loop ends on the count
        assert got == sent
        pub = RawPublisher(mosquitto.port, "loadgen-pub-2")
        pub.send([publish_packet("x/kept", b"last", retain=True)])
        pub.close()
        assert receive_retained(mosquitto, "x/kept") == b"last"
    finally:
        sub.loop_stop()
        sub.disconnect()


def receive_retained(broker: Mosquitto, topic: str) -> bytes:
    box: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="loadgen-retained", protocol=mqtt.MQTTv5)
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_message = lambda _c, _u, m: box.append(bytes(m.payload)) if m.retain else None
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not box and time.monotonic() < deadline:
            time.sleep(0.05)
        return box[0]
    finally:
        c.loop_stop()
        c.disconnect()


def test_connack_properties_and_refusals_are_read() -> None:
    assert varint(0) == b"\x00" and varint(127) == b"\x7f" and varint(128) == b"\x80\x01"
    assert varint(2_097_152) == b"\x80\x80\x80\x01"
    # flags, reason 0, properties: Session Expiry (4 bytes), Assigned Client Identifier (string), Receive Maximum 20
    props = b"\x11\x00\x00\x00\x3c" + b"\x12\x00\x03abc" + b"\x21\x00\x14"
    assert receive_maximum(b"\x00\x00" + varint(len(props)) + props) == 20
    assert receive_maximum(b"\x00\x00\x00") == 65_535  # absent: the protocol's default
    with pytest.raises(RawMqttError, match="refused"):
        receive_maximum(b"\x00\x87\x00")  # not authorized
    with pytest.raises(RawMqttError, match="unknown CONNACK property"):
        receive_maximum(b"\x00\x00\x02\x7f\x00")


@pytest.mark.parametrize(
    ("puback", "error"),
    [
        (b"\x40\x03\x00\x01\x97", "refused packet 1"),  # reason 0x97: quota exceeded
        (b"\x40\x02\x00\x02", "PUBACK for packet 2, expected 1"),
        (b"\x20\x02\x00\x00", "expected PUBACK"),
    ],
)
def test_a_failed_or_unexpected_acknowledgement_stops_the_replay(puback: bytes, error: str) -> None:
    """A fake broker: CONNACK, then the given answer to the first PUBLISH."""
    import socket

    server = socket.create_server(("127.0.0.1", 0))

    def broker() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)  # CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK: success, no properties
            conn.recv(1024)  # the PUBLISH
            conn.sendall(puback)
            conn.recv(1024)  # until the client closes

    th = threading.Thread(target=broker, daemon=True)
    th.start()
    pub = RawPublisher(server.getsockname()[1], "loadgen-fake")
    try:
        with pytest.raises(RawMqttError, match=error):
            pub.send([publish_packet("x/1", b"payload")])
    finally:
        pub.close()
        th.join(5)
        server.close()
