"""``[sim] radio = true``: simulated chest straps on an emulated Bluetooth radio, read by the real BLE source.

The plain simulator hands frames straight to the pipeline, so every simulated device is recorded. Here the
straps are Bumble peripherals on an in-process link and the gateway reaches them through the same
``BleakSource`` as real hardware: they advertise, are listed as seen, and only paired ones (``[ble] allow``,
``tiyi devices pair`` or the dashboard) are connected and recorded. That lets staff rehearse the whole
install-and-pair procedure, and the tests walk through it, without a radio.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from edge.frame import Frame
from gateway.config import GatewayConfig

SIM_ADDRESS = "F3:00:00:00:00:{:02X}"  # strap i's address; its advertised name is strap-{i}


def sim_address(i: int) -> str:
    return SIM_ADDRESS.format(i)


class EmulatedRadioSource:
    """Frame source and device directory; build it inside the running event loop (Bumble needs one)."""

    def __init__(self, cfg: GatewayConfig, pseudonym_key: bytes) -> None:
        from bumble.link import LocalLink

        from firmware_sim.bumble_devices import BumbleHeartRateStrap
        from firmware_sim.heart_rate_strap import HeartRateStrap
        from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
        from gateway.ble.source import BleakSource, BleSettings
        from gateway.registry import DeviceRegistry, SeenDevices

        logging.getLogger("bumble").setLevel(logging.WARNING)
        link = LocalLink()  # type: ignore[no-untyped-call]
        s = cfg.sim
        self.straps = [
            BumbleHeartRateStrap(link, sim_address(i), HeartRateStrap(f"strap-{i}", seed=s.seed + i), s.interval_s)
            for i in range(s.devices)
        ]
        # The emulated link connects in milliseconds: short timeouts and back-off, as in `tiyi demo --ble`.
        settings = BleSettings(
            allow=cfg.ble.allow,
            max_connections=max(cfg.ble.max_connections, min(s.devices, 64)),
            silence_s=max(cfg.ble.silence_s, 3 * s.interval_s),
            connect_timeout_s=2.0,
            backoff_min_s=0.2,
        )
        self.source = BleakSource(
            settings,
            pseudonym_key,
            {"central": BumbleCentral(link)},
            BumbleScanner,
            BumbleClient,
            registry=DeviceRegistry(cfg.state_dir),
            unknown_seen=SeenDevices(cfg.retention.seen_ttl_s, cfg.retention.seen_max),
        )

    async def run(self, submit: Callable[[Frame], Awaitable[None]]) -> None:
        try:
            for strap in self.straps:
                await strap.start()
            await self.source.run(submit)
        finally:
            for strap in self.straps:
                await strap.stop()

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None:
        return self.source.decode_quirks(dev)

    def device_states(self) -> dict[str, dict[str, Any]]:
        return self.source.device_states()
