"""The shipped broker configuration (deploy/mosquitto/) on a real Mosquitto: a gateway writes only under its
own region and id, a platform account only reads, anonymous clients get nothing.

The files are copied as shipped; only the listener port, the certificate, password, ACL and persistence
paths are pointed at the test's temporary directory, and an ``observer`` account that may read and write
everything is appended to the ACL copy, to see whether anything forbidden got through.

Mosquitto's ACL file (2.0.11 here, unchanged up to 2.0.20) never refuses a SUBSCRIBE: its default ACL check
returns success for subscriptions and enforces read access when it delivers each message. So a subscription
without read rights is granted and then receives nothing; the tests accept a refusal (SUBACK 0x80 on
3.1.1, 0x87 on 5, what brokers with subscribe ACLs send) and otherwise prove that nothing arrives.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bench.services import free_port
from gateway.broker_acl import parse_audience, parse_gateway, parse_platform, render_acl
from tests.conftest import ROOT
from tests.integration.private_broker import Pki, make_pki, mosquitto_with, password_file

DEPLOY = ROOT / "deploy" / "mosquitto"
GW, OTHER_GW, PLATFORM = "gw-sz-futian-001", "gw-gz-tianhe-001", "platform-health-bureau"
AUDIENCE, HK_AUDIENCE = "platform-health", "hku-research"  # every region; Hong Kong and Shenzhen only
PASSWORDS = {
    GW: "gw-pass",
    OTHER_GW: "other-pass",
    PLATFORM: "platform-pass",
    AUDIENCE: "audience-pass",
    HK_AUDIENCE: "hk-pass",
    "observer": "observer-pass",
}
OWN = f"tiyi/v1/shenzhen/{GW}"
PROTOCOLS = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}
_ids = itertools.count()


def test_the_shipped_acl_is_what_the_generator_writes() -> None:
    """The file in deploy/ is `tiyi broker acl` output, not hand-edited: the test below runs what ships."""
    expected = render_acl(
        [parse_gateway(f"shenzhen/{GW}"), parse_gateway(f"guangzhou/{OTHER_GW}")],
        [parse_platform(PLATFORM)],
        [parse_audience(AUDIENCE), parse_audience(f"{HK_AUDIENCE}=hongkong,shenzhen")],
    )
    assert (DEPLOY / "tiyi.acl").read_text() == expected
    assert "pattern" not in "\n".join(x for x in expected.splitlines() if not x.startswith("#"))


@dataclass
class Broker:
    port: int
    pki: Pki


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    d = tmp_path_factory.mktemp("acl")
    pki = make_pki(d / "pki")
    port = free_port()
    acl = d / "tiyi.acl"
    acl.write_text((DEPLOY / "tiyi.acl").read_text() + "\nuser observer\ntopic readwrite #\n")
    conf = (DEPLOY / "tiyi.conf").read_text()
    for shipped, ours in (
        ("listener 8883", f"listener {port} 127.0.0.1"),
        ("/etc/mosquitto/certs/broker.crt", str(pki.server_cert)),
        ("/etc/mosquitto/certs/broker.key", str(pki.server_key)),
        ("/etc/mosquitto/certs/ca.crt", str(pki.ca)),
        ("/etc/mosquitto/tiyi.passwd", str(password_file(d / "tiyi.passwd", PASSWORDS))),
        ("/etc/mosquitto/tiyi.acl", str(acl)),
    ):
        assert shipped in conf, f"the shipped tiyi.conf no longer has {shipped!r}"
        conf = conf.replace(shipped, ours)
    with mosquitto_with(conf + f"\npersistence_location {d}/\n", d, port):
        yield Broker(port, pki)


@dataclass
class Client:
    """A paho client (its own network thread) that records CONNACK, SUBACKs, PUBACKs and messages."""

    c: paho.Client
    connack: ReasonCode | None = None
    connected: threading.Event = field(default_factory=threading.Event)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, topic: str) -> ReasonCode:
        _rc, mid = self.c.subscribe(topic, qos=1)
        _wait(lambda: mid in self.subacks)
        (code,) = self.subacks[mid]
        return code

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1)
        _wait(lambda: info.mid in self.pubacks)
        return self.pubacks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("no answer from the broker")
        time.sleep(0.01)


def connect(broker: Broker, user: str | None, protocol: str = "5", password: str | None = None) -> Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}-{next(_ids)}", protocol=PROTOCOLS[protocol])
    c.tls_set(ca_certs=str(broker.pki.ca))
    if user is not None:
        c.username_pw_set(user, password or PASSWORDS[user])
    cl = Client(c)

    def on_connect(_c: paho.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        cl.connack = rc
        cl.connected.set()

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with cl.lock:
            cl.messages.append((msg.topic, bytes(msg.payload)))

    c.on_connect = on_connect
    c.on_subscribe = lambda _c, _u, mid, codes, _p: cl.subacks.__setitem__(mid, list(codes))
    c.on_publish = lambda _c, _u, mid, rc, _p: cl.pubacks.__setitem__(mid, rc)
    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert cl.connected.wait(10), "no CONNACK"
    return cl


@pytest.fixture
def observer(broker: Broker) -> Iterator[Client]:
    obs = connect(broker, "observer")
    assert not obs.subscribe("#").is_failure
    yield obs
    obs.close()


def _fenced(observer: Client, gateway: Client, marker: bytes) -> list[tuple[str, bytes]]:
    """Everything the observer got up to an allowed message the gateway sends last (the broker handles
    one connection's packets in order, and every earlier publish was acknowledged before it)."""
    assert not gateway.publish(f"{OWN}/status", marker).is_failure
    _wait(lambda: (f"{OWN}/status", marker) in observer.received())
    time.sleep(0.3)  # the same message's copies to other subscribers leave in the same broker loop
    return observer.received()


def refused_or_granted_empty(code: ReasonCode) -> None:
    """A subscription without read rights: refused, or (Mosquitto's ACL file) granted; the caller then
    checks that nothing arrives on it."""
    assert code.value in (0x80, 0x87) or not code.is_failure, code


FORBIDDEN_FOR_GATEWAY = [
    "tiyi/v1/shenzhen/gw-sz-other/batch",  # another gateway's id, same region
    f"tiyi/v1/guangzhou/{OTHER_GW}/batch",  # a real other gateway
    f"tiyi/v1/guangzhou/{GW}/batch",  # its own id under another region
    f"tiyi/v1/{PLATFORM}/x/batch",
    "tiyi/v1",
    "elsewhere/topic",
]
FORBIDDEN_FOR_PLATFORM = [
    f"{OWN}/batch",
    f"{OWN}/key",
    f"tiyi/v1/shenzhen/{PLATFORM}/batch",
    f"tiyi/v1/{PLATFORM}/gw/data/x",
    "elsewhere/topic",
]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_gateway_writes_only_under_its_own_region_and_id(broker: Broker, observer: Client, protocol: str) -> None:
    gw = connect(broker, GW, protocol)
    try:
        assert gw.connack is not None and not gw.connack.is_failure
        assert not gw.publish(f"{OWN}/data/ble-1", b"allowed").is_failure
        for topic in FORBIDDEN_FOR_GATEWAY:
            ack = gw.publish(topic, b"forged")
            # MQTT 5 is told (PUBACK 135 "Not authorized"); 3.1.1 gets a success ack and the message vanishes.
            assert ack.is_failure if protocol == "5" else True, (topic, ack)
        got = _fenced(observer, gw, f"fence-{protocol}".encode())
        assert (f"{OWN}/data/ble-1", b"allowed") in got
        assert not [m for m in got if m[1] == b"forged"]
    finally:
        gw.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_gateway_reads_nothing_not_even_another_gateways_topics(
    broker: Broker, observer: Client, protocol: str
) -> None:
    gw, other = connect(broker, GW, protocol), connect(broker, OTHER_GW)
    try:
        for topic in (f"tiyi/v1/guangzhou/{OTHER_GW}/#", "tiyi/v1/+/+/#", "#", "elsewhere/#"):
            refused_or_granted_empty(gw.subscribe(topic))
        assert not other.publish(f"tiyi/v1/guangzhou/{OTHER_GW}/data/ble-9", b"theirs").is_failure
        assert not observer.publish("elsewhere/topic", b"theirs").is_failure
        got = _fenced(observer, gw, f"read-fence-{protocol}".encode())
        assert (f"tiyi/v1/guangzhou/{OTHER_GW}/data/ble-9", b"theirs") in got  # it was sent, and it is readable
        assert gw.received() == []  # ... but not by a gateway, not even its own messages
    finally:
        gw.close()
        other.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_platform_account_only_reads(broker: Broker, observer: Client, protocol: str) -> None:
    platform = connect(broker, PLATFORM, protocol)
    gw = connect(broker, GW)
    try:
        granted = platform.subscribe("tiyi/v1/+/+/#")
        assert not granted.is_failure and granted.value == 1
        for topic in ("#", "$SYS/#", "elsewhere/#"):
            refused_or_granted_empty(platform.subscribe(topic))
        for topic in FORBIDDEN_FOR_PLATFORM:
            ack = platform.publish(topic, b"forged")
            assert ack.is_failure if protocol == "5" else True, (topic, ack)
        assert not observer.publish("elsewhere/topic", b"not for platforms").is_failure
        marker = f"platform-fence-{protocol}".encode()
        got = _fenced(observer, gw, marker)
        assert not [m for m in got if m[1] == b"forged"]
        assert (f"{OWN}/status", marker) in platform.received()  # it reads what gateways write ...
        assert {t for t, _ in platform.received()} <= {f"{OWN}/status"}  # ... and nothing else
    finally:
        platform.close()
        gw.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_anonymous_clients_and_wrong_passwords_are_refused(broker: Broker, protocol: str) -> None:
    for user, password in ((None, None), (GW, "not the password"), ("nobody", "x")):
        c = connect(broker, user, protocol, password)
        try:
            assert c.connack is not None and c.connack.is_failure, (user, c.connack)
            assert c.connack.value in (0x86, 0x87), c.connack  # bad user name or password / not authorized
        finally:
            c.close()


OTHER = f"tiyi/v1/guangzhou/{OTHER_GW}"
# What the two gateways publish in the audience test: (topic, may platform-health read it, may hku-research).
AUDIENCE_TOPICS = [
    (f"{OWN}/aud/{AUDIENCE}/data/ble-1", True, False),
    (f"{OWN}/aud/{AUDIENCE}/view", True, False),
    (f"{OWN}/aud/{AUDIENCE}/consent", True, False),
    (f"{OWN}/aud/{HK_AUDIENCE}/data/ble-1", False, True),
    (f"{OWN}/aud/{HK_AUDIENCE}/view", False, True),
    (f"{OWN}/batch", True, True),
    (f"{OWN}/head", True, True),
    (f"{OWN}/anchor", True, True),
    (f"{OWN}/anchor/state", True, True),
    (f"{OWN}/key", True, True),
    (f"{OWN}/rollup/health_supervision", True, True),
    (f"{OWN}/data/ble-1", False, False),  # readings: the site owner's platform only
    (f"{OWN}/devices/ble-1/state", False, False),
    (f"{OWN}/aud/{AUDIENCE}x/view", False, False),  # a look-alike audience id
    (f"{OTHER}/aud/{AUDIENCE}/view", True, False),  # guangzhou: not a region hku-research may read
    (f"{OTHER}/batch", True, False),
    (f"{OTHER}/data/ble-9", False, False),
]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_audience_reads_only_its_own_view_and_the_proofs(broker: Broker, observer: Client, protocol: str) -> None:
    """Subscribed to everything it may ask for, each audience account receives exactly its rows of the table."""
    health, hk = connect(broker, AUDIENCE, protocol), connect(broker, HK_AUDIENCE, protocol)
    gw, other = connect(broker, GW), connect(broker, OTHER_GW)
    try:
        for account in (health, hk):
            assert account.connack is not None and not account.connack.is_failure
            for topic in ("tiyi/v1/#", "#", f"{OWN}/data/#", f"{OWN}/aud/+/#"):
                refused_or_granted_empty(account.subscribe(topic))
        payload = f"aud-{protocol}".encode()
        for topic, _, _ in AUDIENCE_TOPICS:
            sender = gw if topic.startswith(OWN) else other
            assert not sender.publish(topic, payload).is_failure, topic
        for account in (health, hk):  # an audience writes nothing, not even to its own topics
            ack = account.publish(f"{OWN}/aud/{AUDIENCE}/view", b"forged")
            assert ack.is_failure if protocol == "5" else True
        got = _fenced(observer, gw, f"aud-fence-{protocol}".encode())
        assert all((t, payload) in got for t, _, _ in AUDIENCE_TOPICS)  # every message was really sent
        assert not [m for m in got if m[1] == b"forged"]
        # Delivery to one subscriber follows the broker's order for that connection: the fence arrives last
        # to the observer; a marker on a proof topic fences the audience accounts.
        marker = f"aud-marker-{protocol}".encode()
        assert not gw.publish(f"{OWN}/head", marker).is_failure
        _wait(lambda: (f"{OWN}/head", marker) in health.received() and (f"{OWN}/head", marker) in hk.received())
        for account, column in ((health, 1), (hk, 2)):
            seen = {t for t, p in account.received() if p == payload}
            assert seen == {row[0] for row in AUDIENCE_TOPICS if row[column]}, account.c._client_id
    finally:
        for c in (health, hk, gw, other):
            c.close()
