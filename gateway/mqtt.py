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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import BrokerUnavailable, ConfigError, PublishError

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
        check_tls_options(url, kw.get("ca_file"), kw.get("cert_file"), kw.get("key_file"))
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            **{k: v for k, v in kw.items() if v is not None},
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


# How a setting is called where the user wrote it: in the configuration file, or on `tiyi verify`'s command line.
CONFIG_NAMES: Mapping[str, str] = {
    k: f"[mqtt] {k}" for k in ("url", "username", "password_file", "ca_file", "cert_file", "key_file")
}
CLI_NAMES: Mapping[str, str] = {
    "url": "--broker",
    **{k: "--" + k.replace("_", "-") for k in ("username", "password_file", "ca_file", "cert_file", "key_file")},
}


def check_tls_options(
    url: str,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    names: Mapping[str, str] = CONFIG_NAMES,
) -> None:
    """TLS files belong to an ``mqtts://`` URL. With ``mqtt://`` they used to be dropped (or half-used),
    so a deployment that meant TLS ran in plain text without a word: now it is an error, and the URL's
    scheme alone decides whether TLS is on."""
    given = [
        names[k] for k, v in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)) if v is not None
    ]
    if given and not url.startswith("mqtts://"):
        raise ConfigError(
            f"{', '.join(given)} set, but {names['url']} {url} is plain MQTT: use mqtts://HOST:8883 "
            f"for TLS (or drop {', '.join(given)})"
        )
    if key_file is not None and cert_file is None:
        raise ConfigError(f"{names['key_file']} needs {names['cert_file']} (the client certificate it belongs to)")


def owner_only(path: Path, name: str) -> None:
    """A secret (password, private key) lives in a file only its owner can read or write, as ssh demands
    of keys: anything looser is refused, with the command that fixes it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"{name} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigError(f"{name} {path} is open to other users (mode {mode:03o}); run: chmod 600 {path}")


def read_secret_file(path: Path, name: str) -> str:
    """The password in an owner-only file (see :func:`owner_only`), surrounding whitespace removed."""
    owner_only(path, name)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} {path}: not UTF-8 text") from exc
    if not text:
        raise ConfigError(f"{name} {path} is empty")
    return text


def client_settings(
    url: str,
    *,
    client_id: str,
    username: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    names: Mapping[str, str] = CONFIG_NAMES,
    **kw: Any,
) -> BrokerSettings:
    """The one way a gateway (``[mqtt]``) or ``tiyi verify`` (its options) turns user settings into
    :class:`BrokerSettings`: TLS only with ``mqtts://``, secrets only from owner-only files, and the TLS
    material loaded once here, so a wrong path or a key that does not fit its certificate is a one-line
    error now instead of a connection that keeps failing later."""
    check_tls_options(url, ca_file, cert_file, key_file, names)
    password = read_secret_file(password_file, names["password_file"]) if password_file is not None else None
    if password is not None and username is None:
        raise ConfigError(f"{names['password_file']} needs {names['username']}")
    if key_file is not None:
        owner_only(key_file, names["key_file"])
    if url.startswith("mqtts://"):
        _load_tls(ca_file, cert_file, key_file, names)
    return BrokerSettings.from_url(
        url,
        client_id=client_id,
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        **kw,
    )


def _load_tls(ca_file: Path | None, cert_file: Path | None, key_file: Path | None, names: Mapping[str, str]) -> None:
    ctx = ssl.create_default_context()
    for path, name in ((ca_file, "ca_file"), (cert_file, "cert_file"), (key_file, "key_file")):
        if path is not None and not path.is_file():
            raise ConfigError(f"{names[name]} {path}: no such file")
    try:
        if ca_file is not None:
            ctx.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{names['ca_file']} {ca_file}: not a PEM CA certificate ({exc})") from exc
    try:
        if cert_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file is not None else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{names['cert_file']} {cert_file}: not a PEM certificate with a matching private key ({exc})"
        ) from exc


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

    _reports_first_connect = False

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
        # Set when retrying looks futile (bad credentials, an untrusted certificate, nothing listening
        # after a few tries): a service keeps retrying regardless; a one-shot command gives up.
        self.hopeless = asyncio.Event()
        self._refused_in_a_row = 0

    @property
    def _retry_level(self) -> int:
        """Connection trouble is a warning for a service; a client that reports its first connect's
        failure itself (``PahoSubscriber.__aenter__``) logs it as detail until then."""
        return logging.INFO if self._reports_first_connect and self.connects == 0 else logging.WARNING

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
            c.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
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
                self._open(client)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._connect_failed(client, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not crypto
                delay = min(delay * 2, s.backoff_max)
                continue
            await self._wait_connack()
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
            self._refused_in_a_row = 0
            self.connects += 1
            self.protocol_in_use = "5" if self._use_v5 else "3.1.1"
            log.info("connected to %s (MQTT %s)", s.url, self.protocol_in_use)
            await self._set_up(client)
            await self._dropped.wait()
            self._teardown(client, self.last_error or "connection lost")
            if not self._closing:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311

    def _open(self, client: paho.Client) -> None:
        """A blocking TCP connect, bounded by connect_timeout; on a LAN it takes microseconds."""
        s = self.settings
        if not self._use_v5:
            client.connect(s.host, s.port, s.keepalive)
            return
        props = None
        if s.session_expiry_s > 0:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
        client.connect(s.host, s.port, s.keepalive, clean_start=s.session_expiry_s == 0, properties=props)

    def _connect_failed(self, client: paho.Client, exc: Exception, delay: float) -> None:
        self.last_error = f"connect to {self.settings.url} failed: {exc}"
        log.log(self._retry_level, "%s; retrying in %.1f s", self.last_error, delay)
        self._refused_in_a_row = self._refused_in_a_row + 1 if isinstance(exc, ConnectionRefusedError) else 0
        if isinstance(exc, ssl.SSLCertVerificationError) or self._refused_in_a_row >= 3:
            self.hopeless.set()
        self._teardown(client, "connect failed")

    async def _wait_connack(self) -> None:
        s = self.settings
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._connected, self._dropped)]
        _done, pending = await asyncio.wait(waiters, timeout=s.connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()
        if not (self._connected.is_set() or self._dropped.is_set()):
            self.last_error = f"no CONNACK from {s.url} within {s.connect_timeout} s"
            log.log(self._retry_level, "%s", self.last_error)

    async def _set_up(self, client: paho.Client) -> None:
        """The subclass's hook, then the owner's birth; ready only if the connection survived both."""
        try:
            await self._after_connect(client)
            if self.on_connect is not None:
                await self.on_connect()
        except PublishError as exc:
            log.warning("connection lost during set-up: %s", exc)
        else:
            if self._connected.is_set():
                self._ready.set()

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
            log.log(logging.INFO if fallback else self._retry_level, "%s", self.last_error)
            if rc.value in (0x86, 0x87):  # bad user name or password, not authorized (3.1.1's 4 and 5 map here)
                self.hopeless.set()
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

    _reports_first_connect = True

    def __init__(self, settings: BrokerSettings, topic_filter: str, qos: int = 1, connect_wait: float = 30.0) -> None:
        super().__init__(settings)
        self.topic_filter = topic_filter
        self.qos = qos
        self.connect_wait = connect_wait
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._suback: asyncio.Future[list[ReasonCode]] | None = None

    async def __aenter__(self) -> PahoSubscriber:
        """Connected and subscribed, or :class:`BrokerUnavailable` (after ``connect_wait`` seconds, or at
        once when retrying cannot help) saying why."""
        await self.start()
        waits = [asyncio.ensure_future(e.wait()) for e in (self._ready, self.hopeless)]
        await asyncio.wait(waits, timeout=self.connect_wait, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if not self._ready.is_set():
            await self.stop()
            why = self.last_error or f"no answer within {self.connect_wait:g} s"
            raise BrokerUnavailable(f"cannot subscribe to {self.topic_filter} at {self.settings.url}: {why}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _after_connect(self, client: paho.Client) -> None:
        """Subscribe and wait for the SUBACK: a broker's ACL refuses a subscription there (reason 0x80 or
        above), and a subscriber that went on regardless would wait for messages that never come."""
        loop = asyncio.get_running_loop()
        self._suback = suback = loop.create_future()
        client.on_subscribe = self._on_subscribe
        rc, _mid = client.subscribe(self.topic_filter, qos=self.qos)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise PublishError(f"subscribe to {self.topic_filter} failed: {paho.error_string(rc)}")
        try:
            codes = await asyncio.wait_for(asyncio.shield(suback), self.settings.connect_timeout)
        except TimeoutError:
            raise PublishError(f"no SUBACK for {self.topic_filter} within {self.settings.connect_timeout} s") from None
        refused = [c for c in codes if c.is_failure]
        if refused:
            self.last_error = f"the broker refused the subscription to {self.topic_filter}: {refused[0]}"
            self.hopeless.set()
            raise PublishError(self.last_error)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        if self._suback is not None and not self._suback.done():
            self._suback.set_result(list(codes))

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put_nowait(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def __aiter__(self) -> PahoSubscriber:
        return self

    async def __anext__(self) -> Message:
        # A plain method, not an async generator: a timeout around it must not close the iterator.
        return await self._queue.get()
