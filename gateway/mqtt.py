"""A small typed asyncio surface over paho-mqtt 2.x, with no second thread.

paho's socket is wired into the running event loop (reader/writer callbacks call ``loop_read`` /
``loop_write``; a task calls ``loop_misc`` for keepalives), so every paho callback runs in the loop
thread and resolves futures directly. Each PUBACK resolves the future of its message id.

A **new paho client is created for every connection attempt**. paho keeps unacknowledged messages in
memory and re-sends them on reconnect; our durable journal is the source of truth for re-sends, and two
re-send mechanisms would only multiply duplicates. So a drop fails every pending future, and the owner
re-sends from its journal in the ``on_connect`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import ConfigError, PublishError

log = logging.getLogger("tiyi.mqtt")
ProtocolChoice = Literal["auto", "5", "3.1.1"]


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    client_id: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    # Must not exceed the broker's Receive Maximum (paho does not read it): EMQX drops clients that do.
    max_inflight: int = 100
    protocol: ProtocolChoice = "auto"
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 5.0
    # > 0 asks an MQTT 5 broker to keep this client's session (subscriptions and queued QoS 1 messages)
    # for that many seconds while it is away: what a platform subscriber wants. Publishers keep 0.
    session_expiry_s: int = 0
    will_topic: str | None = None
    will_payload: bytes = b""
    will_retain: bool = False

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> BrokerSettings:
        """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; other settings as keyword arguments."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r} has an invalid port") from exc
        if parts.username and "username" not in kw:
            kw["username"] = parts.username
        if parts.password and "password" not in kw:
            kw["password"] = parts.password
        tls = parts.scheme == "mqtts" or kw.get("ca_file") is not None
        return cls(host=parts.hostname, port=port, tls=tls, **{k: v for k, v in kw.items() if v is not None})

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class Publisher(Protocol):
    """What the gateway needs from a broker connection."""

    on_connect: Callable[[], Awaitable[None]] | None

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_connected(self, timeout: float | None) -> None: ...

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        """Wait for an in-flight slot, send, and return a future resolved by the broker's ack."""
        ...


class _LoopClient:
    """Connection management shared by the publisher and the subscriber."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.on_connect: Callable[[], Awaitable[None]] | None = None
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._ready = asyncio.Event()  # connected and the on_connect hook has run
        self._closing = False
        self._runner: asyncio.Task[None] | None = None
        self._misc: asyncio.Task[None] | None = None
        self._dropped = asyncio.Event()
        self._use_v5 = settings.protocol != "3.1.1"
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._slots = asyncio.Semaphore(settings.max_inflight)
        self.protocol_in_use: str | None = None
        self.last_error: str | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = asyncio.create_task(self._run(), name="mqtt-connection")
        self._misc = asyncio.create_task(self._misc_loop(), name="mqtt-misc")

    async def wait_connected(self, timeout: float | None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        self._closing = True
        client = self._client
        if client is not None and self._connected.is_set():
            with contextlib.suppress(Exception):
                client.disconnect()
                await asyncio.sleep(0.05)
        for task in (self._runner, self._misc):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._runner, self._misc) if t is not None), return_exceptions=True)
        self._teardown(client, "publisher stopped")

    # -------------------------------------------------------------- internals
    def _new_client(self) -> paho.Client:
        s = self.settings
        proto = paho.MQTTv5 if self._use_v5 else paho.MQTTv311
        kwargs: dict[str, Any] = {"client_id": s.client_id, "protocol": proto}
        if not self._use_v5:
            kwargs["clean_session"] = s.session_expiry_s == 0
        c = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        c.connect_timeout = s.connect_timeout
        c.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                      certfile=str(s.cert_file) if s.cert_file else None,
                      keyfile=str(s.key_file) if s.key_file else None, cert_reqs=ssl.CERT_REQUIRED)
        if s.will_topic is not None:
            c.will_set(s.will_topic, s.will_payload, qos=1, retain=s.will_retain)
        loop = self._loop
        assert loop is not None

        def on_open(cl: paho.Client, _u: Any, sock: Any) -> None:
            # Small QoS 1 packets and their acks must not wait on Nagle's algorithm (paho leaves it on): with
            # the peer's delayed ACK, a publish behind an unacknowledged one can sit for 40 ms.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            loop.add_reader(sock, cl.loop_read)

        c.on_socket_open = on_open
        c.on_socket_close = lambda _c, _u, sock: self._forget_socket(sock)
        c.on_socket_register_write = lambda cl, _u, sock: loop.add_writer(sock, cl.loop_write)

        def on_unregister_write(_c: paho.Client, _u: Any, sock: Any) -> None:
            loop.remove_writer(sock)

        c.on_socket_unregister_write = on_unregister_write
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        return c

    def _forget_socket(self, sock: socket.socket | Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(Exception):
            loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            loop.remove_writer(sock)

    async def _run(self) -> None:
        delay = self.settings.backoff_min
        while not self._closing:
            self._dropped.clear()
            client = self._new_client()
            self._client = client
            s = self.settings
            try:
                # A blocking TCP connect, bounded by connect_timeout; on a LAN it takes microseconds.
                if self._use_v5:
                    props = None
                    if s.session_expiry_s > 0:
                        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                        props.SessionExpiryInterval = s.session_expiry_s
                    client.connect(s.host, s.port, s.keepalive, clean_start=s.session_expiry_s == 0,
                                   properties=props)
                else:
                    client.connect(s.host, s.port, s.keepalive)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.last_error = f"connect to {s.url} failed: {exc}"
                log.warning("%s; retrying in %.1f s", self.last_error, delay)
                self._teardown(client, "connect failed")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, s.backoff_max)
                continue
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._dropped)]
            _done, pending = await asyncio.wait(waiters, timeout=s.connect_timeout,
                                                return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
            if not (self._connected.is_set() or self._dropped.is_set()):
                self.last_error = f"no CONNACK from {s.url} within {s.connect_timeout} s"
                log.warning("%s", self.last_error)
            if not self._connected.is_set():
                self._teardown(client, "not connected")
                if self.settings.protocol == "auto" and self._use_v5 and self.protocol_in_use is None:
                    log.info("broker at %s refused MQTT 5; falling back to MQTT 3.1.1", s.url)
                    self._use_v5 = False
                    continue
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311
                delay = min(delay * 2, s.backoff_max)
                continue
            delay = s.backoff_min
            self.connects += 1
            self.protocol_in_use = "5" if self._use_v5 else "3.1.1"
            log.info("connected to %s (MQTT %s)", s.url, self.protocol_in_use)
            try:
                await self._after_connect(client)
                if self.on_connect is not None:
                    await self.on_connect()
            except PublishError as exc:
                log.warning("connection lost during set-up: %s", exc)
            else:
                if self._connected.is_set():
                    self._ready.set()
            await self._dropped.wait()
            self._teardown(client, self.last_error or "connection lost")
            if not self._closing:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311

    async def _after_connect(self, client: paho.Client) -> None:
        """Hook for subclasses (the subscriber subscribes here)."""

    def _teardown(self, client: paho.Client | None, why: str) -> None:
        self._connected.clear()
        self._ready.clear()
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(PublishError(f"not acknowledged: {why}"))
        if client is not None:
            sock = client.socket()
            if sock is not None:
                self._forget_socket(sock)
                with contextlib.suppress(Exception):
                    sock.close()

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            client = self._client
            if client is not None and client.socket() is not None:
                client.loop_misc()

    # paho callbacks: all run in the loop thread.
    def _on_connect(self, _c: paho.Client, _u: Any, _flags: Any, rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            self.last_error = f"broker refused the connection: {rc}"
            fallback = self.settings.protocol == "auto" and self._use_v5 and self.protocol_in_use is None
            log.log(logging.INFO if fallback else logging.WARNING, "%s", self.last_error)
            self._dropped.set()
            return
        self._connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None) -> None:
        if not self._closing and self._connected.is_set():
            self.last_error = f"disconnected: {rc}"
            log.warning("broker connection lost (%s)", rc)
        self._connected.clear()
        self._ready.clear()
        self._dropped.set()

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if rc.is_failure:
            fut.set_exception(PublishError(f"broker rejected message {mid}: {rc}"))
        else:
            fut.set_result(None)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        """Subscribers override."""


class PahoPublisher(_LoopClient):
    """QoS 1 publishing with an in-flight budget: ``publish`` waits for a slot, the future for the ack."""

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future[None]:
        await self._slots.acquire()
        client = self._client
        if client is None or not self._connected.is_set():
            self._slots.release()
            # Never hand paho a message while disconnected: it would queue it in memory and send it later.
            raise PublishError("not connected to the broker")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        fut.add_done_callback(lambda _f: self._slots.release())
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            fut.set_exception(PublishError(f"publish failed: {paho.error_string(info.rc)}"))
            return fut
        if qos == 0:
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        return fut


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class PahoSubscriber(_LoopClient):
    """``async with PahoSubscriber(settings, "tiyi/v1/+/+/#") as sub: async for msg in sub: ...``"""

    def __init__(self, settings: BrokerSettings, topic_filter: str, qos: int = 1) -> None:
        super().__init__(settings)
        self.topic_filter = topic_filter
        self.qos = qos
        self._queue: asyncio.Queue[Message] = asyncio.Queue()

    async def __aenter__(self) -> PahoSubscriber:
        await self.start()
        await self.wait_connected(30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _after_connect(self, client: paho.Client) -> None:
        rc, _mid = client.subscribe(self.topic_filter, qos=self.qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"subscribe to {self.topic_filter} failed: {paho.error_string(rc)}")

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put_nowait(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def __aiter__(self) -> PahoSubscriber:
        return self

    async def __anext__(self) -> Message:
        # A plain method, not an async generator: a timeout around it must not close the iterator.
        return await self._queue.get()
