"""A simulated gym spread over processes: a hub owns the emulated radio link, device processes attach.

The hub holds a Bumble ``LocalLink`` and, per slot, a controller whose HCI side listens on a TCP or
WebSocket transport. A device process opens the client end of a slot and runs an ordinary Bumble host
and GATT server over it (``BumbleSensor`` with ``hci=``), so its bytes cross a real socket and a real
HCI packet stream before they reach the link. The gateway's emulated adapter sits on the same link in
the hub's process. Devices spread over several processes escape the GIL of one; a crashed device process
is a device that vanished from the air, exactly what the gateway must survive.

Worker protocol (``python -m firmware_sim.hub worker``): one line on stdin, a JSON list of device specs; it
prints ``{"ready": n}`` once its devices run, and runs until a second line (``stop``), the end of stdin, SIGTERM
or SIGINT. Then it stops notifying, waits until every notification it counted has left for the hub, and only
then prints one JSON line (its final count). Stopping through stdin is the handshake: a worker asked to stop
while still starting reads the request only once it can answer it, where a signal would kill it unanswered.
``{"sent": {dev: {"frames": [hex of each frame sent or battery value read], "chars": [its characteristic]}}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import Transport

from firmware_sim.bumble_devices import BumbleHeartRateStrap, BumbleSensor, Misbehaviour
from firmware_sim.devices import MODELS
from firmware_sim.heart_rate_strap import HeartRateStrap

Kind = Literal["tcp", "ws"]
SPECS_LINE_LIMIT = 1 << 24  # the specs line from the hub's side: about 300 bytes a device, so a large gym fits


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the OS has just handed out (and released): free unless someone else races for them."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Hub:
    """Listening HCI transports, one controller on the shared link behind each."""

    link: LocalLink
    kind: Kind
    host: str
    ports: list[int]
    transports: list[Transport] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)

    @classmethod
    async def open(cls, link: LocalLink, slots: int, kind: Kind = "tcp", host: str = "127.0.0.1") -> Hub:
        hub = cls(link, kind, host, free_ports(slots, host))
        for i, port in enumerate(hub.ports):
            t = await open_transport(f"{kind}-server:{host}:{port}")
            hub.transports.append(t)
            hub.controllers.append(
                Controller(
                    f"hub-{i}",
                    host_source=t.source,
                    host_sink=t.sink,
                    link=link,
                    public_address=f"F5:00:00:00:{i // 256:02X}:{i % 256:02X}",
                )
            )
        return hub

    def client_spec(self, slot: int) -> str:
        """The transport a device process opens to take ``slot``."""
        port = self.ports[slot]
        return f"tcp-client:{self.host}:{port}" if self.kind == "tcp" else f"ws-client:ws://{self.host}:{port}"

    async def close(self) -> None:
        for t in self.transports:
            with contextlib.suppress(Exception):
                await t.close()


@dataclass(frozen=True)
class DeviceSpec:
    """One device for a worker process: what it is, where it attaches, how it misbehaves."""

    transport: str
    model: str  # hr_strap or a key of firmware_sim.devices.MODELS
    dev_id: str
    seed: int
    address: str
    speed: float = 1.0
    interval_s: float | None = None
    misbehaviour: dict[str, Any] = field(default_factory=dict)
    irk_hex: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _attach(spec: DeviceSpec) -> BumbleSensor:
    hci = await open_transport(spec.transport)
    mis = Misbehaviour(**spec.misbehaviour)
    irk = bytes.fromhex(spec.irk_hex) if spec.irk_hex else None
    if spec.model == "hr_strap":
        return BumbleHeartRateStrap(
            None,
            spec.address,
            HeartRateStrap(spec.dev_id, seed=spec.seed),
            spec.interval_s or 1.0,
            spec.speed,
            mis,
            irk=irk,
            hci=hci,
        )
    model = MODELS[spec.model](spec.dev_id, seed=spec.seed)
    if spec.interval_s is not None:
        model.interval_s = spec.interval_s
    return BumbleSensor(None, spec.address, model, spec.speed, mis, irk=irk, hci=hci)


async def run_worker(commands: asyncio.StreamReader | None = None) -> dict[str, dict[str, Any]]:
    """Read the specs from ``commands`` (stdin unless given), attach every device, run until told to stop, and
    return what each one sent."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if commands is None:
        commands = asyncio.StreamReader(limit=SPECS_LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    specs = [DeviceSpec(**d) for d in json.loads(await commands.readline())]
    devices = [await _attach(s) for s in specs]
    for d in devices:
        await d.start()
    print(json.dumps({"ready": len(devices)}), flush=True)
    asked = asyncio.ensure_future(commands.readline())  # 'stop', or b'' at the end of stdin
    signalled = asyncio.ensure_future(stop.wait())
    await asyncio.wait({asked, signalled}, return_when=asyncio.FIRST_COMPLETED)
    asked.cancel()
    signalled.cancel()
    # Each device's count is final once it stopped: its notifications in flight were counted and handed to
    # the hub's controller. The reply below is the handshake the hub's side waits for.
    await asyncio.gather(*(d.stop_notifying() for d in devices))
    out: dict[str, dict[str, Any]] = {}
    for d in devices:
        emitted = d.emitted()
        out[d.dev_id] = {"frames": [x.hex() for _, x in emitted], "chars": [c for c, _ in emitted]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m firmware_sim.hub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("role", choices=["worker"], help="worker: run the devices given as JSON on stdin")
    p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    sent = asyncio.run(run_worker())
    print(json.dumps({"sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
