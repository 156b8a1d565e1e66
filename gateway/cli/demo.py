"""``tiyi demo``: the whole path on one machine with no configuration, verified at the end.

Simulated straps → gateway (journal, batches, SM2) → MQTT broker (embedded amqtt unless --broker) →
in-process EVM chain with the Anchor contract; an independent subscriber checks everything it received
exactly as a platform would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import json
import logging
import secrets
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cbor2

from anchoring.readers import point_verifier
from anchoring.stream_verifier import Outcome, StreamVerifier
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import AnchorChecker, ChainAnchorChecker
from edge.frame import Frame
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from firmware_sim.devices import MODELS, SimDevice
from firmware_sim.heart_rate_strap import HeartRateStrap
from firmware_sim.scenario import Chaos, Scenario
from gateway.audience_config import AudienceConfig
from gateway.cli.harness import StreamCollector, dev_chain, serve
from gateway.clock import monotonic, wall_ms
from gateway.config import (
    BatchConfig,
    ChainConfig,
    GatewayConfig,
    MqttConfig,
    PublishConfig,
    RollupConfig,
    load_config,
)
from gateway.errors import ConfigError, GatewayError
from gateway.keys import generate_keypair
from gateway.runtime import assemble, chain_account_key, secret_file
from gateway.service import Gateway
from gateway.stages.ports import NO_DEVICES

if TYPE_CHECKING:
    from bumble.controller import Controller

    from anchoring.evm import EvmChainClient
    from firmware_sim.air import Air
    from firmware_sim.bumble_devices import BumbleHeartRateStrap, BumbleSensor, Misbehaviour
    from firmware_sim.hub import DeviceSpec, Hub
    from gateway.ble.source import BleakSource

log = logging.getLogger("tiyi.demo")
SUPERVISION_TARGET = "health_supervision"
VERIFIER_SESSION_S = 3600  # how long the broker keeps the demo verifier's session while it is away


class Progress:
    """One status line, rewritten in place on a terminal, printed every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last_print = 0.0

    def show(self, text: str, final: bool = False) -> None:
        now = monotonic()
        if self.tty:
            sys.stdout.write("\r\033[K" + text + ("\n" if final else ""))
            sys.stdout.flush()
        elif final or now - self._last_print >= 5:
            print(text, flush=True)
            self._last_print = now


@dataclass(frozen=True)
class DemoOptions:
    """``tiyi demo`` and ``tiyi sim run``, parsed once (see ``gateway.cli.main`` for each option's help)."""

    devices: int = 5
    duration: float | None = None
    broker: str | None = None
    region: str = "shenzhen"
    gateway_id: str = "gw-demo-01"
    state_dir: Path | None = None
    batch_records: int = 200
    batch_seconds: float = 5.0
    speed: float = 1.0
    chain: str | None = None
    contract: str | None = None
    rollup_every: float = 10.0
    ble: bool = False
    hub: str | None = None
    processes: int = 2
    scenario: Scenario | None = None
    truth: Path | None = None
    audiences: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> DemoOptions:
        given = {f.name: v for f in dataclasses.fields(cls) if (v := vars(args).get(f.name)) is not None}
        return cls(**{**given, **overrides}).validated()

    def validated(self) -> DemoOptions:
        if self.devices < 1:
            raise ConfigError("--devices must be at least 1")
        if self.hub and not self.ble:
            raise ConfigError("--hub runs emulated Bluetooth devices in other processes; it needs --ble")
        if self.processes < 1 or self.rollup_every < 0:
            raise ConfigError("--processes must be at least 1 and --rollup-every not negative")
        return self


def _chains(
    o: DemoOptions, account: bytes
) -> tuple[EvmChainClient, EvmChainClient | None, tuple[RollupConfig, ...], dict[str, EvmChainClient]]:
    """The per-batch chain and its administrator (None on a contract we do not administer), and the roll-up
    target: a second in-process chain, as a supervision chain would be, with one roll-up per period."""
    from anchoring.evm import EvmChainClient

    admin: EvmChainClient | None
    if o.chain is None:
        dev = dev_chain(account)
        chain, admin = dev.client, dev.chain.admin()
        where = "in-process EVM"
    else:
        chain = EvmChainClient.connect(o.chain, account, contract=o.contract)
        admin = None if o.contract else chain  # the deployer is the contract's administrator
        where = f"{o.chain}{'' if o.contract else ' (contract deployed now)'}"
    print(
        f"chain    {where}, chain id {chain.chain_id}, Anchor contract 0x{chain.contract.hex()}; "
        f"every batch (the {o.region} sub-chain)"
    )
    if o.rollup_every <= 0:
        return chain, admin, (), {}
    from anchoring.devchain import DEFAULT_CHAIN_ID

    sup = dev_chain(account, chain_id=DEFAULT_CHAIN_ID + 1).client  # never the anchor chain's id
    rollup = RollupConfig(
        SUPERVISION_TARGET, o.rollup_every, ChainConfig(kind="inproc", poll_s=0.2, target=SUPERVISION_TARGET)
    )
    print(
        f"chain    in-process EVM, chain id {sup.chain_id}: a roll-up every {o.rollup_every:g} s ({SUPERVISION_TARGET})"
    )
    return chain, admin, (rollup,), {SUPERVISION_TARGET: sup}


async def _demo(o: DemoOptions) -> int:
    with contextlib.ExitStack() as stack:
        state_dir: Path = o.state_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tiyi-demo-")))
        key_dir = state_dir / "keys"
        if not (key_dir / "gateway.key").exists():
            generate_keypair(key_dir)

        broker = None
        url = o.broker
        if url is None:
            from gateway.broker import EmbeddedBroker

            broker = EmbeddedBroker()
            url = await broker.start()
        print(f"broker   {url}{' (embedded amqtt, MQTT 3.1.1)' if broker else ''}")

        chain, admin, rollups, rollup_chains = _chains(o, chain_account_key(key_dir / "chain-account.key"))

        cfg = GatewayConfig(
            gateway_id=o.gateway_id,
            region=o.region,
            state_dir=state_dir,
            mqtt=MqttConfig(url=url, protocol="3.1.1" if broker else "auto"),
            batch=BatchConfig(max_records=o.batch_records, max_age_s=o.batch_seconds),
            publish=PublishConfig(),
            chain=ChainConfig(kind="inproc", poll_s=0.2),
            rollups=rollups,
            audiences=_audiences(o, state_dir),
        ).validated()
        topics = Topics(cfg.region, cfg.gateway_id)
        print(f"gateway  {cfg.gateway_id} in {cfg.region}, state in {state_dir}")
        print(f"topics   {topics.all}")

        # The alliance administrator approves an operator, who registers the gateway's key and anchoring account;
        # the platform then takes keys from the on-chain registry. On a contract we do not administer, the
        # platform pins the gateway's public key, obtained out of band (here: its file).
        pub = load_public_key_pem((key_dir / "gateway.pub").read_text(encoding="ascii"))
        if admin is not None:
            register_gateway(admin, cfg.gateway_id, pub.public_key.point[1:], chain.account)
            trust = TrustPolicy(registry=chain.gateway, point_verifier=point_verifier)
            print(
                f"registry {cfg.gateway_id} registered by operator 0x{admin.account.hex()}, anchoring from "
                f"0x{chain.account.hex()}"
            )
        else:
            trust = TrustPolicy(pinned={cfg.gateway_id: [pub]})
        # A persistent session under an id of this run's own (see StreamCollector).
        collector = StreamCollector(
            url,
            topics,
            cfg.gateway_id,
            cfg.mqtt.protocol,
            client_id=f"tiyi-demo-verifier-{secrets.token_hex(4)}",
            session_expiry_s=VERIFIER_SESSION_S,
        )
        await collector.start()  # subscribed before the gateway says anything

        scenario = o.scenario
        models: list[HeartRateStrap | SimDevice] = (
            scenario.build()
            if scenario
            else [HeartRateStrap(f"hr-strap-{i + 1:03d}", seed=1000 + i) for i in range(o.devices)]
        )
        chaos = scenario.chaos if scenario else Chaos()
        if o.ble:
            source: FrameCounter = await _bumble_source(models, chaos, o.speed, state_dir, o.hub, o.processes)
            how = "emulated Bluetooth peripherals (Bumble), collected through bleak" + (
                f"; devices in {o.processes} processes attached to a {o.hub} hub" if o.hub else ""
            )
        else:
            source = ModelSource(models, chaos, o.speed)
            how = "frames fed straight into the gateway"
        devices = source.source if isinstance(source, BumbleDemoSource | HubDemoSource) else NO_DEVICES
        parts = assemble(cfg, chain, url, rollup_chains, devices=devices)
        gw = parts.gateway
        await gw.start()
        what = (
            f"scenario '{scenario.name}': {scenario.device_count} devices"
            if scenario
            else f"{o.devices} simulated heart-rate straps"
        )
        print(f"devices  {what}, time x{o.speed:g}; {how}")
        print("Ctrl-C to stop" + (f"; stopping after {o.duration:g} s" if o.duration else ""))

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        progress = _Ticker(gw, collector, bool(rollups), o.duration, stop, lambda: source.emitting)
        await serve(gw, source, stop, progress.tick, quiesce=source.quiesce)
        drained = await gw.stop(drain_timeout=30)
        parts.journal.close()
        await collector.wait_end()  # the last receipts, roll-ups and the head reach the subscriber
        await collector.stop()
        if broker is not None:
            await broker.stop()

        checkers: dict[str, AnchorChecker] = {t: ChainAnchorChecker(t, c) for t, c in rollup_chains.items()}
        report = collector.report(
            StreamVerifier(trust),
            lambda v: v.report(
                ChainAnchorChecker(cfg.chain_target, chain),
                require_complete=True,
                rollup_targets=list(rollup_chains),
                rollup_chains=checkers,
            ),
        )
        audiences_ok = _verify_audiences(cfg, collector, trust, ChainAnchorChecker(cfg.chain_target, chain))
        print()
        lost = source.frames_emitted - source.frames_sent
        print(
            f"simulated frames sent {source.frames_emitted}"
            + (f" ({lost} lost as links ended, before reaching the gateway's radio)" if lost else "")
            + f", records journaled {gw.metrics.records} "
            f"({gw.metrics.frames_joined} notifications joined into multi-part records), "
            f"malformed {gw.metrics.malformed_frames}, delivered {gw.metrics.records_delivered}"
        )
        if isinstance(source, BumbleDemoSource) and chaos != Chaos():
            print(source.misbehaviour_summary())
        print(report.summary())
        if not drained:
            print("warning: the gateway could not finish all work before stopping", file=sys.stderr)
        if o.truth is not None:
            n = source.write_truth(o.truth)
            print(f"ground truth: {n} emitted frames (those that reached the gateway's radio) written to {o.truth}")
        # Every frame that reached the gateway's radio is a record, a part joined into one, or counted as
        # malformed: nothing vanishes.
        accounted = gw.metrics.records + gw.metrics.frames_joined + gw.metrics.malformed_frames
        complete = accounted == source.frames_sent
        if not complete:
            print(
                f"error: {source.frames_sent - accounted} simulated frame(s) were neither journaled nor reported",
                file=sys.stderr,
            )
        return 0 if report.outcome is Outcome.VERIFIED and drained and complete and audiences_ok else 1


def _verify_audiences(cfg: GatewayConfig, collector: StreamCollector, trust: TrustPolicy, chain: AnchorChecker) -> bool:
    """Each audience's stream checked as its platform would (``tiyi verify --audience``), with its keys."""
    from anchoring.view_verify import AudienceVerifier
    from gateway.audience_keys import AudienceKeyring

    ok = True
    for a in cfg.audiences:
        keys = {k.kid: k.key for k in AudienceKeyring(cfg.audience_key_dir, a.id).load()} if a.encrypt else None
        verifier = AudienceVerifier(trust, a.id, a.purpose, keys)
        for topic, payload, retained in collector.messages:
            verifier.feed(topic, payload, retained)
        report = verifier.report(chain)
        print()
        print(report.summary())
        ok &= report.outcome is Outcome.VERIFIED
    return ok


def _audiences(o: DemoOptions, state_dir: Path) -> tuple[AudienceConfig, ...]:
    """The ``[[audience]]`` tables of ``--audiences FILE``: a gateway configuration for this very gateway (its
    id and state directory), the one ``tiyi members`` and ``tiyi keys audience`` are given."""
    if o.audiences is None:
        return ()
    cfg = load_config(o.audiences)
    if cfg.gateway_id != o.gateway_id or cfg.state_dir.resolve() != state_dir.resolve():
        raise ConfigError(
            f"{o.audiences}: [gateway] id and state_dir must be this run's ({o.gateway_id}, --state-dir "
            f"{state_dir}): its bindings, consent and audience keys live there"
        )
    for a in cfg.audiences:
        print(f"audience {a.id}: {a.purpose}, {a.jurisdiction}{', SM4-GCM' if a.encrypt else ''}")
    return cfg.audiences


START_WAIT_S = 60.0  # after the first reading, how long a run's duration waits for every device to connect


class _Ticker:
    """The live progress line, once a second; sets ``stop`` when the duration is up."""

    def __init__(
        self,
        gw: Gateway,
        collector: StreamCollector,
        rollups: bool,
        duration: float | None,
        stop: asyncio.Event,
        emitting: Callable[[], bool],
    ) -> None:
        self._gw, self._collector, self._rollups, self._duration, self._stop = gw, collector, rollups, duration, stop
        self._emitting = emitting
        self._progress = Progress()
        self._start = self._last_t = monotonic()
        self._last_records = 0
        self._first_record: float | None = None  # when readings began to arrive
        self._waited = False  # gave up waiting for every device to connect

    def tick(self) -> None:
        now = monotonic()
        m = self._gw.metrics
        if m.records and self._first_record is None:
            self._first_record = now
        if not self._waited and not self._emitting():
            # Devices still starting (in other processes, on a busy CPU: seconds): the duration waits for them,
            # but not for ever for a device that never connects (refusing, out of range) once others send.
            if self._first_record is None or now - self._first_record <= START_WAIT_S:
                self._start = now
            else:
                self._waited = True
                log.warning(
                    "not every device connected within %.0f s of the first reading; the run goes on", START_WAIT_S
                )
        rate = (m.records - self._last_records) / max(now - self._last_t, 1e-6)
        self._last_records, self._last_t = m.records, now
        self._progress.show(
            f"{now - self._start:6.1f}s  {rate:7.1f} readings/s  records {m.records}  delivered "
            f"{m.records_delivered}  batches {m.batches}  anchored {m.anchors_final}  "
            + (f"roll-ups {m.rollups_final}  " if self._rollups else "")
            + f"messages seen by verifier {len(self._collector.messages)}"
        )
        if self._duration is not None and now - self._start >= self._duration:
            self._stop.set()
        if self._stop.is_set():
            self._progress.show("stopping: finishing batches and anchors ...", final=True)


def register_gateway(admin: EvmChainClient, gw: str, point: bytes, anchorer: bytes) -> None:
    """As the administrator: approve ourselves as an operator (once), then register ``gw``."""
    if not admin.is_operator(admin.account):
        admin.approve_operator(admin.account)
    admin.register_gateway(gw, point, anchorer)


class FrameCounter(Protocol):
    """A demo source: runs, can stop emitting before it is cancelled, and counts what it emitted."""

    @property
    def frames_emitted(self) -> int:
        """Frames the devices sent (notifications, indications, values read)."""
        ...

    @property
    def frames_sent(self) -> int:
        """Of those, the frames that reached the gateway's radio: what the gateway must account for. Over an
        emulated radio a frame on its way when a link ended is lost on the air (``firmware_sim.air``)."""
        ...

    @property
    def emitting(self) -> bool:
        """Whether every device emits to the gateway (a run's duration counts from then, not from slow set-up)."""
        ...

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None: ...

    async def quiesce(self) -> None: ...

    def write_truth(self, path: Path) -> int: ...


def _write_truth(path: Path, items: list[tuple[str, int, bytes, int | None]]) -> int:
    """Ground truth as a CBOR sequence of [dev, characteristic, raw bytes, t_ms or null]."""
    with path.open("wb") as fh:
        for item in items:
            fh.write(cbor2.dumps(list(item)))
    return len(items)


class ModelSource:
    """Direct mode: every model's frames go straight to the gateway, on the models' own schedules."""

    def __init__(self, models: list[HeartRateStrap | SimDevice], chaos: Chaos, speed: float) -> None:
        self.models = models
        self.chaos = chaos
        self.speed = speed
        self.emitted: list[tuple[str, int, bytes, int | None]] = []

    @property
    def frames_emitted(self) -> int:
        return len(self.emitted)

    @property
    def frames_sent(self) -> int:
        return len(self.emitted)  # handed straight to the gateway: nothing is lost on the way

    @property
    def emitting(self) -> bool:
        return True

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = len(self.models)
        due = [(((i + 0.5) / n) * _interval(m), i) for i, m in enumerate(self.models)]  # spread, not in lockstep
        heapq.heapify(due)
        count = 0
        while True:
            t, i = heapq.heappop(due)
            await asyncio.sleep(max(0.0, start + t / self.speed - loop.time()))
            m = self.models[i]
            for f in _frames(m, t):
                count += 1
                if self.chaos.malformed_every and count % self.chaos.malformed_every == 0:
                    f = Frame(f.dev, f.char, f.data[:1])  # flags without the fields they announce
                copies = 2 if self.chaos.duplicate_every and count % self.chaos.duplicate_every == 0 else 1
                for _ in range(copies):
                    self.emitted.append((f.dev, f.char, f.data, wall_ms()))
                    await submit(f)
            heapq.heappush(due, (t + _interval(m), i))

    async def quiesce(self) -> None:
        """Nothing in flight: frames are submitted synchronously."""

    def write_truth(self, path: Path) -> int:
        return _write_truth(path, self.emitted)


def _interval(m: HeartRateStrap | SimDevice) -> float:
    return 1.0 if isinstance(m, HeartRateStrap) else m.interval_s


def _frames(m: HeartRateStrap | SimDevice, t: float) -> list[Frame]:
    return [m.frame_at(t)] if isinstance(m, HeartRateStrap) else m.frames_at(t)


class _Handed:
    """Frames handed to the gateway, so a stopping demo waits for the ones still crossing the emulated radio
    (and queued in the BLE source) instead of sleeping a fixed time that a starved CPU can outlast."""

    STALL_S = 3.0  # no frame arrived for this long: the rest were lost on the way, and the demo says so

    def __init__(self) -> None:
        self.count = 0

    def counting(self, submit: Callable[[Frame], Awaitable[None]]) -> Callable[[Frame], Awaitable[None]]:
        async def counted(frame: Frame) -> None:
            await submit(frame)
            self.count += 1

        return counted

    async def until(self, sent: Callable[[], int]) -> None:
        """Until every frame sent was handed over, or none arrived for ``STALL_S``."""
        seen, since = self.count, monotonic()
        while self.count < sent() and monotonic() - since < self.STALL_S:
            await asyncio.sleep(0.02)
            if self.count != seen:
                seen, since = self.count, monotonic()


class BumbleDemoSource:
    """Devices as Bumble peripherals on an emulated link, collected by the gateway's BleakSource."""

    def __init__(self, peripherals: list[BumbleHeartRateStrap | BumbleSensor], source: BleakSource, air: Air) -> None:
        self.peripherals = peripherals
        self.source = source
        self.air = air
        self.handed = _Handed()

    @property
    def frames_emitted(self) -> int:
        return sum(p.frames_emitted for p in self.peripherals)

    @property
    def frames_sent(self) -> int:
        return sum(len(self._arrived(p)) for p in self.peripherals)

    def _arrived(self, p: BumbleSensor) -> list[bytes]:
        return [] if p.controller is None else self.air.arrived(p.controller)

    @property
    def emitting(self) -> bool:
        """The gateway has connected to every device (or the device switched itself off first): a busy CPU
        takes seconds to start a dozen devices and connect them one after another, which a short run's
        duration must not count (seen: chaos runs of 8 s on a busy CPU that ended before the first frame)."""
        connected = sum(1 for st in self.source.devices.values() if st.connects)
        return connected + sum(p.switched_off for p in self.peripherals) >= len(self.peripherals)

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        for p in self.peripherals:
            await p.start()
        await self.source.run(self.handed.counting(submit))

    async def quiesce(self) -> None:
        for p in self.peripherals:
            await p.stop_notifying()
        await self.handed.until(lambda: self.frames_sent)  # the last notifications cross the link

    def write_truth(self, path: Path) -> int:
        from firmware_sim.air import arrived_frames

        return _write_truth(
            path,
            [
                (p.dev_id, c, d, None)
                for p in self.peripherals
                for c, d in arrived_frames(p.emitted(), self._arrived(p))
            ],
        )

    def misbehaviour_summary(self) -> str:
        ps = self.peripherals
        return (
            f"misbehaviour: {sum(p.refused for p in ps)} connections refused, {sum(p.renames for p in ps)} "
            f"renames, {sum(len(p.addresses) - 1 for p in ps)} private-address rotations, "
            f"{sum(p.switched_off for p in ps)} devices switched off (battery empty); "
            f"gateway connects {sum(s.connects for s in self.source.devices.values())}"
        )


async def _bumble_source(
    models: list[HeartRateStrap | SimDevice],
    chaos: Chaos,
    speed: float,
    state_dir: Path,
    hub: str | None = None,
    processes: int = 2,
) -> FrameCounter:
    from firmware_sim.air import Air
    from firmware_sim.bumble_devices import BumbleHeartRateStrap, BumbleSensor, Misbehaviour
    from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
    from gateway.ble.source import BleakSource, BleSettings

    logging.getLogger("bumble").setLevel(logging.WARNING)
    link = Air()
    allow: set[str] = set()
    silent_every = round(1 / chaos.silent_fraction) if chaos.silent_fraction else 0
    plan: list[tuple[HeartRateStrap | SimDevice, str, Misbehaviour, bytes | None]] = []
    for i, m in enumerate(models):
        address = f"F3:00:00:00:{i // 256:02X}:{i % 256:02X}"
        misbehave = Misbehaviour(
            silent=bool(silent_every) and i % silent_every == 0,
            malformed_every=chaos.malformed_every,
            duplicate_every=chaos.duplicate_every,
            battery_drain_per_min=chaos.battery_drain_per_min,
            rename_every_s=chaos.rename_every_s,
            rotate_address_every_s=chaos.rotate_address_every_s,
            refuse_connections=chaos.refuse_connections,
            disconnect_every_s=chaos.disconnect_every_s,
            seed=i + 1,
        )
        # A device that rotates private addresses is paired by its IRK, as a phone or watch would be.
        irk = hashlib.sha256(f"tiyi-sim-irk-{i}".encode()).digest()[:16] if chaos.rotate_address_every_s else None
        allow.add(f"irk:{irk.hex()}" if irk else address)
        plan.append((m, address, misbehave, irk))
    # The emulated radio connects in milliseconds: a short timeout keeps a connect to an address that just
    # rotated away (a private-address device) from holding the adapter's connect slot for long.
    settings = BleSettings(
        allow=frozenset(allow),
        max_connections=max(5, len(allow)),
        backoff_min_s=0.2,
        connect_timeout_s=2.0,
        silence_s=max(10.0, 3 * max(_interval(m) for m in models) / speed),
    )
    source = BleakSource(
        settings,
        secret_file(state_dir / "keys" / "device-pseudonym.key"),
        {"central": BumbleCentral(link)},
        BumbleScanner,
        BumbleClient,
    )
    if hub is not None:
        return await _hub_source(link, plan, speed, hub, processes, source)
    peripherals: list[BumbleHeartRateStrap | BumbleSensor] = []
    for m, address, misbehave, irk in plan:
        if isinstance(m, HeartRateStrap):
            peripherals.append(BumbleHeartRateStrap(link, address, m, 1.0, speed, misbehaviour=misbehave, irk=irk))
        else:
            peripherals.append(BumbleSensor(link, address, m, speed, misbehaviour=misbehave, irk=irk))
    return BumbleDemoSource(peripherals, source, link)


class HubDemoSource:
    """Devices in worker processes, attached over TCP or WebSocket to a hub that shares this process's link."""

    def __init__(
        self,
        hub: Hub,
        groups: list[list[DeviceSpec]],
        source: BleakSource,
        air: Air,
        controllers: dict[str, Controller],
    ) -> None:
        """``controllers``: each device's controller, the hub's in its slot, whose data ``air`` records."""
        self.hub = hub
        self.groups = groups
        self.source = source
        self.air = air
        self.controllers = controllers
        self.procs: list[asyncio.subprocess.Process] = []
        self.sent: dict[str, dict[str, Any]] = {}
        self.handed = _Handed()
        self._stopping = False  # quiesce began: start no further device process
        self._spawned = asyncio.Event()  # every device process that will run was started (or starting failed)

    @property
    def frames_emitted(self) -> int:
        return sum(len(d["frames"]) for d in self.sent.values())

    @property
    def frames_sent(self) -> int:
        return sum(len(self.air.arrived(c)) for c in self.controllers.values())

    @property
    def emitting(self) -> bool:
        """Every device process runs and the gateway has connected to every device: devices in other
        processes connect one after another, which on a busy CPU takes seconds of a short run."""
        connected = sum(1 for st in self.source.devices.values() if st.connects)
        return self._spawned.is_set() and connected >= sum(len(g) for g in self.groups)

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        try:
            await self._spawn()
            await self.source.run(self.handed.counting(submit))
        finally:
            for p in self.procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()

    async def _spawn(self) -> None:
        try:
            for group in self.groups:
                if self._stopping:
                    break
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "firmware_sim.hub",
                    "worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                self.procs.append(proc)
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps([s.to_json() for s in group]).encode() + b"\n")
                await proc.stdin.drain()  # stdin stays open: closing it asks the worker to stop and report
                ready = await asyncio.wait_for(proc.stdout.readline(), 60)
                if not ready.startswith(b'{"ready"'):
                    raise RuntimeError(f"a device process failed to start: {ready[:200]!r}")
        finally:
            self._spawned.set()

    async def quiesce(self) -> None:
        """Stop every device process and take its final count: a process reports what it sent only after its
        devices stopped emitting and their last notifications left for the hub. A process that exits without
        that report leaves the count unknown, which is an error, not zero."""
        self._stopping = True
        await self._spawned.wait()  # a process being started now is asked too, once it can answer
        for p in self.procs:
            assert p.stdin is not None
            with contextlib.suppress(ConnectionError):  # a process already gone: its report is missing below
                p.stdin.write(b"stop\n")
                p.stdin.close()  # the end of stdin also asks, should the line not arrive
        for i, p in enumerate(self.procs):
            assert p.stdout is not None
            out, _ = await asyncio.wait_for(p.communicate(), 30)
            reports = [json.loads(line)["sent"] for line in out.decode().splitlines() if line.startswith('{"sent"')]
            if len(reports) != 1:
                raise GatewayError(f"device process {i + 1} exited ({p.returncode}) without reporting what it sent")
            self.sent.update(reports[0])
        await self.handed.until(lambda: self.frames_sent)  # the last notifications reach the gateway
        await self.hub.close()

    def write_truth(self, path: Path) -> int:
        from firmware_sim.air import arrived_frames

        return _write_truth(
            path,
            [
                (dev, c, data, None)
                for dev, d in self.sent.items()
                for c, data in arrived_frames(
                    zip(d["chars"], map(bytes.fromhex, d["frames"]), strict=True),
                    self.air.arrived(self.controllers[dev]),
                )
            ],
        )


async def _hub_source(
    link: Air,
    plan: list[tuple[HeartRateStrap | SimDevice, str, Misbehaviour, bytes | None]],
    speed: float,
    kind: str,
    processes: int,
    source: BleakSource,
) -> HubDemoSource:
    from firmware_sim.hub import DeviceSpec, Hub

    if kind not in ("tcp", "ws"):
        raise ValueError("--hub must be tcp or ws")
    hub = await Hub.open(link, len(plan), "tcp" if kind == "tcp" else "ws")
    specs = []
    controllers: dict[str, Controller] = {}
    for slot, (m, address, misbehave, irk) in enumerate(plan):
        controllers[m.dev_id] = hub.controllers[slot]
        name = "hr_strap" if isinstance(m, HeartRateStrap) else next(k for k, v in MODELS.items() if type(m) is v)
        specs.append(
            DeviceSpec(
                hub.client_spec(slot),
                name,
                m.dev_id,
                m.seed,
                address,
                speed,
                None if isinstance(m, HeartRateStrap) else m.interval_s,
                dataclasses.asdict(misbehave),
                irk.hex() if irk else None,
            )
        )
    n = max(1, min(processes, len(specs)))
    return HubDemoSource(hub, [specs[i::n] for i in range(n)], source, link, controllers)


def demo_main(options: DemoOptions) -> int:
    return asyncio.run(_demo(options))
