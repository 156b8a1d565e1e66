"""Assembling a gateway from its configuration, and ``tiyi run``.

This is the composition root: it is the only place that picks concrete adapters (SQLite journal,
paho publisher, EVM chain client, simulated source) for the roles the pipeline uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anchoring.chain import ChainClient
from gateway.config import ChainConfig, GatewayConfig, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.journal import SqliteJournal
from gateway.keys import load_signer
from gateway.mqtt import BrokerSettings, PahoPublisher, client_settings
from gateway.sdnotify import Notifier, watchdog_interval
from gateway.service import Gateway
from gateway.sources import SimulatedStrapSource
from gateway.stages.ports import NO_DEVICES, DeviceDirectory, FrameSource

if TYPE_CHECKING:
    from edge.signing import Signer
    from gateway.stages.view_maker import AudienceSetup

log = logging.getLogger("tiyi.runtime")


def broker_settings(cfg: GatewayConfig, url: str | None = None) -> BrokerSettings:
    """MQTT settings for this gateway, with the retained ``offline`` status as its last will."""
    from edge import cbor
    from edge.topics import Topics

    m = cfg.mqtt
    topics = Topics(cfg.region, cfg.gateway_id)
    will = cbor.dumps({"state": "offline", "t": 0, "gw": cfg.gateway_id})
    return client_settings(
        url or m.url,
        client_id=f"tiyi-{cfg.gateway_id}",
        username=m.username,
        password_file=m.password_file,
        ca_file=m.ca_file,
        cert_file=m.cert_file,
        key_file=m.key_file,
        keepalive=m.keepalive_s,
        max_inflight=m.max_inflight,
        protocol=m.protocol,
        will_topic=topics.status,
        will_payload=will,
        will_retain=True,
    )


def chain_account_key(path: Path) -> bytes:
    """The gateway's own secp256k1 account key for signing chain transactions (created 0600 if absent)."""
    return secret_file(path)


def secret_file(path: Path) -> bytes:
    """32 random bytes kept as hex in a 0600 file, created on first use."""
    import os
    import secrets

    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise GatewayError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        text = path.read_text(encoding="ascii").strip()
        try:
            key = bytes.fromhex(text.removeprefix("0x"))
        except ValueError as exc:
            raise GatewayError(f"{path}: not a hex private key") from exc
        if len(key) != 32:
            raise GatewayError(f"{path}: expected 32 bytes of hex")
        return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
    log.info("created secret %s (0600)", path)
    return key


def build_chain(cfg: GatewayConfig) -> ChainClient | None:
    """The client for the per-batch target ``[chain]``."""
    return _client(cfg.chain, cfg.chain_key_path, "chain")


def build_rollup_chains(cfg: GatewayConfig) -> dict[str, ChainClient]:
    """A client per ``[[rollup]]`` target; each account key defaults to the ``[chain]`` one (one gateway
    identity across chains), or is its own with ``account_key_file``."""
    out: dict[str, ChainClient] = {}
    for i, r in enumerate(cfg.rollups):
        client = _client(r.chain, r.chain.account_key_file or cfg.chain_key_path, f"rollup[{i}]")
        assert client is not None
        out[r.target] = client
    return out


def _client(chain: ChainConfig, account_key: Path, where: str) -> ChainClient | None:
    if chain.kind == "none":
        return None
    if chain.kind == "inproc":
        raise ConfigError(
            f"{where}.kind = 'inproc' exists only inside `tiyi demo`; a service needs kind = 'evm' "
            f"with {where}.url (for a local chain: a ganache or FISCO BCOS node's RPC URL)"
        )
    assert chain.url is not None
    if chain.kind == "fisco2":
        from anchoring.fisco2 import Fisco2ChainClient
        from gateway.keys import generate_keypair

        # A 国密 chain account is an SM2 key of its own, kept apart from the manifest-signing key.
        key_dir = account_key.parent / "fisco-account"
        if not (key_dir / "gateway.key").exists():
            generate_keypair(key_dir)
        assert chain.contract is not None
        return Fisco2ChainClient(
            chain.url,
            load_signer(key_dir / "gateway.key"),
            bytes.fromhex(chain.contract.removeprefix("0x")),
            chain.group_id,
            chain.fisco_chain_id,
        )
    from anchoring.evm import EvmChainClient

    return EvmChainClient.connect(chain.url, chain_account_key(account_key), contract=chain.contract)


@dataclass
class Assembled:
    gateway: Gateway
    journal: SqliteJournal


def assemble(
    cfg: GatewayConfig,
    chain: ChainClient | None,
    broker_url: str | None = None,
    rollup_chains: Mapping[str, ChainClient] | None = None,
    devices: DeviceDirectory = NO_DEVICES,
    anchoring: bool = True,
) -> Assembled:
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    journal = SqliteJournal.open(cfg.journal_path, cfg.gateway_id)
    if not cfg.signing_key_path.exists():
        raise GatewayError(
            f"no signing key at {cfg.signing_key_path}: run `tiyi keys generate --dir {cfg.signing_key_path.parent}`"
        )
    signer = load_signer(cfg.signing_key_path)
    _log_sm2_backend()
    publisher = PahoPublisher(broker_settings(cfg, broker_url))
    from gateway.binding import Bindings

    site_secret = secret_file(cfg.site_secret_path)
    subjects = Bindings(cfg.state_dir, site_secret).subjects
    setup = audience_setup(cfg, signer, site_secret) if cfg.audiences else None
    return Assembled(
        Gateway(cfg, journal, publisher, signer, chain, rollup_chains, devices, anchoring, subjects, setup), journal
    )


def audience_setup(cfg: GatewayConfig, signer: Signer, site_secret: bytes) -> AudienceSetup:
    """The consent ledger and the keyrings; an encrypting audience without a key stops the start (fail closed:
    its views would otherwise wait, or worse, go out in clear)."""
    from gateway.audience_keys import AudienceKeyring
    from gateway.consent import ConsentLedger
    from gateway.stages.view_maker import AudienceSetup

    rings = {a.id: AudienceKeyring(cfg.audience_key_dir, a.id) for a in cfg.audiences}
    if any(a.encrypt for a in cfg.audiences):
        from edge.sealing import check_backend

        check_backend()  # SM4-GCM missing from this OpenSSL/cryptography: refuse to start, never send in clear
    for a in cfg.audiences:
        if a.encrypt:
            rings[a.id].current()
    return AudienceSetup(ConsentLedger(cfg.state_dir, cfg.gateway_id, signer), site_secret, rings)


def _log_sm2_backend() -> None:
    """Say which SM2 implementation signs; the gmssl fallback leaks nonce lengths through timing."""
    from edge.sm2 import default_backend

    sm2 = default_backend()
    if sm2.name == "libcrypto":
        log.info("SM2 signing through %s", sm2.note)
    else:
        log.warning("SM2 signing through %s (%s)", sm2.name, sm2.note)


def make_source(cfg: GatewayConfig) -> tuple[FrameSource, DeviceDirectory]:
    """The configured frame source, and what it knows about its devices."""
    if cfg.source == "ble":
        from gateway.ble.adapter import BluezAdapter
        from gateway.ble.source import BleakSource, BleSettings, DeviceClaims, MultiAdapterSource
        from gateway.registry import DeviceRegistry, SeenDevices

        b = cfg.ble
        settings = BleSettings(
            allow=b.allow,
            max_connections=b.max_connections,
            silence_s=b.silence_s,
            connect_timeout_s=b.connect_timeout_s,
            scan_stall_s=b.scan_stall_s,
        )
        key = secret_file(cfg.pseudonym_key_path)
        claims = DeviceClaims() if len(b.adapters) > 1 else None
        seen = SeenDevices(cfg.retention.seen_ttl_s, cfg.retention.seen_max)
        sources = [
            BleakSource(
                settings,
                key,
                {"adapter": name},
                registry=DeviceRegistry(cfg.state_dir),
                adapter=BluezAdapter(name) if b.adapter_reset else None,
                name=name,
                claims=claims,
                unknown_seen=seen,
            )
            for name in b.adapters
        ]
        source = sources[0] if len(sources) == 1 else MultiAdapterSource(sources)
        return source, source
    if cfg.sim.radio:
        from gateway.sim_radio import EmulatedRadioSource

        radio = EmulatedRadioSource(cfg, secret_file(cfg.pseudonym_key_path))
        return radio, radio
    return SimulatedStrapSource(cfg.sim.devices, cfg.sim.interval_s, cfg.sim.seed), NO_DEVICES


async def device_state_loop(gw: Gateway, every_s: float = 5.0) -> None:
    """Publish each device's retained state topic when it changes (sources that track devices only)."""
    while True:
        await asyncio.sleep(every_s)
        await gw.publish_device_states()


def settle_heap() -> None:
    """Move everything alive after start-up (web3, py-evm, bleak and their module graphs: a few hundred
    thousand objects) out of the cyclic collector's reach. Otherwise every full collection walks them all,
    tens of milliseconds of a busy gateway's one core each time; they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


async def serve(cfg: GatewayConfig, duration: float | None, drain_timeout: float) -> bool:
    if cfg.api is not None:  # before anything starts: a bad certificate must not leave a half-started gateway
        from gateway.api_tls import check_api_tls

        check_api_tls(cfg.api)
    chain = build_chain(cfg)
    source, devices = make_source(cfg)  # before settling the heap: it imports the radio stack (bleak, dbus-fast)
    parts = assemble(cfg, chain, rollup_chains=build_rollup_chains(cfg), devices=devices)
    gw = parts.gateway
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    settle_heap()
    await gw.start()
    src = asyncio.create_task(source.run(gw.submit), name="source")
    states = asyncio.create_task(device_state_loop(gw), name="device-states")
    api: ApiTask | None = None
    notifier = Notifier.from_environment()
    dog: asyncio.Task[None] | None = None
    try:
        api = await start_api(
            cfg, gw, lambda: "not configured" if cfg.source != "ble" else "down" if src.done() else "ok"
        )
        dog = start_watchdog(notifier, gw, src)
        notifier.ready(f"gateway {cfg.gateway_id} running")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        notifier.stopping()
        if dog is not None:
            dog.cancel()
        if api is not None:
            await api.stop()
        src.cancel()
        states.cancel()
        await asyncio.gather(src, states, return_exceptions=True)
        drained = await gw.stop(drain_timeout)
        parts.journal.close()
    return drained


def start_watchdog(notifier: Notifier, gw: Gateway, source: asyncio.Task[None]) -> asyncio.Task[None] | None:
    """Feed systemd's watchdog when the unit asks for one (``WatchdogSec=``), only while everything progresses."""
    interval = watchdog_interval()
    if interval is None or not notifier.enabled:
        return None
    from gateway.watchdog import feed_watchdog

    loops = {**gw.loops, "source": source}
    chains = [t.worker for t in gw.anchoring.targets]
    return asyncio.create_task(
        feed_watchdog(notifier, interval, lambda: gw.worker.call(_nothing), loops, gw.health.beats, chains),
        name="watchdog",
    )


def _nothing() -> None:
    """The journal thread's liveness probe."""


class ApiTask:
    """The admin API's server running in the gateway's loop."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.task = asyncio.create_task(server.serve(), name="api")

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 5)


async def start_api(cfg: GatewayConfig, gw: Gateway, radio: Callable[[], Any]) -> ApiTask | None:
    """Serve the admin API when ``[api]`` is configured; a port that cannot be bound stops the start-up."""
    if cfg.api is None:
        return None
    from gateway.api import ApiState, api_server
    from gateway.api_tls import check_api_tls
    from gateway.registry import DeviceRegistry

    check_api_tls(cfg.api)
    key = secret_file(cfg.pseudonym_key_path)
    state = ApiState(gw, cfg.api_token_path, DeviceRegistry(cfg.state_dir), key, radio)
    server = api_server(state, cfg.api.listen, cfg.api.port, cfg.api.cert_file, cfg.api.key_file)
    api = ApiTask(server)
    while not server.started:
        if api.task.done():
            raise GatewayError(f"the admin API could not listen on {cfg.api.listen}:{cfg.api.port}")
        await asyncio.sleep(0.02)
    scheme = "https" if cfg.api.tls else "http"
    log.info("admin API on %s://%s:%d/ (token file %s)", scheme, cfg.api.listen, cfg.api.port, cfg.api_token_path)
    return api


@dataclass(frozen=True, slots=True)
class RunOptions:
    """``tiyi run``, parsed once (see ``gateway.cli.main`` for each option's help)."""

    config: Path
    duration: float | None = None
    drain_timeout: float = 30.0
    verbose: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(config=args.config, duration=args.duration, drain_timeout=args.drain_timeout, verbose=args.verbose)


def run_main(opts: RunOptions) -> int:
    if opts.verbose == 0:
        logging.getLogger().setLevel(logging.INFO)
    cfg = load_config(opts.config)
    drained = asyncio.run(serve(cfg, opts.duration, opts.drain_timeout))
    return 0 if drained else 1
