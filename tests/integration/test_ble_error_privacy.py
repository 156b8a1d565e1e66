"""A device's Bluetooth address never leaves the gateway through an error.

Real bleak and bleak-retry-connector, an emulated strap (Bumble), a real Mosquitto: the client backend
fails the way BlueZ does, with the address in the text (bleak-retry-connector adds it once more), and
the retained device state carries only an error code while every log line is free of the address.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bleak.exc import BleakDBusError, BleakError
from bumble.link import LocalLink

from edge import cbor
from edge.sm2 import generate_signer
from edge.topics import Topics
from firmware_sim.bumble_devices import BumbleHeartRateStrap
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
from gateway.ble.failures import ERROR_CODES
from gateway.ble.redact import ScrubFilter
from gateway.ble.source import BleakSource, BleSettings
from gateway.config import GatewayConfig
from gateway.journal import SqliteJournal
from gateway.mqtt import BrokerSettings, PahoPublisher, PahoSubscriber
from gateway.service import Gateway
from tests.conftest import Mosquitto

ADDRESS = "F2:1A:2B:3C:4D:5E"
DBUS_PATH = "/org/bluez/hci0/dev_F2_1A_2B_3C_4D_5E"
# Every way the address turned up in library text, any case.
FORMS = [
    "F2:1A:2B:3C:4D:5E",
    "f2:1a:2b:3c:4d:5e",
    "F2-1A-2B-3C-4D-5E",
    "f2_1a_2b_3c_4d_5e",
    "F21A2B3C4D5E",
    "f21a2b3c4d5e",
]
LEAK = re.compile("|".join(re.escape(f) for f in FORMS) + "|" + re.escape("dev_F2_1A_2B_3C_4D_5E"), re.IGNORECASE)


class FailingClient(BumbleClient):
    """Connects through Bumble, but first fails as configured (at connect, or while subscribing)."""

    on_connect: ClassVar[BaseException | None] = None
    on_subscribe: ClassVar[BaseException | None] = None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if FailingClient.on_connect is not None:
            raise FailingClient.on_connect
        await super().connect(pair, **kwargs)

    async def start_notify(self, *args: Any, **kwargs: Any) -> None:
        if FailingClient.on_subscribe is not None:
            raise FailingClient.on_subscribe
        await super().start_notify(*args, **kwargs)


CASES = [
    # bleak-retry-connector turns a connect timeout into "not found", naming the address once more
    pytest.param(TimeoutError(f"no answer from {ADDRESS}"), None, "not_found", id="timeout-upper-case"),
    pytest.param(
        BleakDBusError("org.bluez.Error.NotReady", [f"Resource Not Ready: {DBUS_PATH}"]),
        None,
        "adapter_error",
        id="dbus-path",
    ),
    pytest.param(
        BleakDBusError("org.bluez.Error.Failed", [f"le-connection-abort-by-local {ADDRESS.lower()}"]),
        None,
        "refused",
        id="abort-lower-case",
    ),
    pytest.param(
        OSError(errno.EBUSY, f"hci0 busy with {ADDRESS.replace(':', '-')}"), None, "adapter_error", id="dash-form"
    ),
    pytest.param(BleakError(f"peer {ADDRESS.replace(':', '').lower()} misbehaved"), None, "other", id="bare-hex"),
    pytest.param(
        None,
        BleakDBusError("org.bluez.Error.Failed", [f"ATT error 0x0e on {DBUS_PATH.lower()}/char000d"]),
        "gatt_error",
        id="gatt-dbus-path",
    ),
]


async def _collect_one_failure(connect_exc: BaseException | None, subscribe_exc: BaseException | None) -> BleakSource:
    FailingClient.on_connect, FailingClient.on_subscribe = connect_exc, subscribe_exc
    link = LocalLink()
    strap = BumbleHeartRateStrap(link, ADDRESS, HeartRateStrap("strap", seed=1), 0.1)
    await strap.start()
    source = BleakSource(
        BleSettings(allow=frozenset({ADDRESS}), connect_attempts=1, backoff_min_s=60),
        b"k" * 32,
        {"central": BumbleCentral(link)},
        BumbleScanner,
        FailingClient,
    )

    async def submit(_f: object) -> None:
        pass

    task = asyncio.create_task(source.run(submit))
    try:
        async with asyncio.timeout(30):
            while not any(st.failures for st in source.devices.values()):  # noqa: ASYNC110 - polls a plain field
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await strap.stop()
    return source


async def _publish_and_read(mosquitto: Mosquitto, tmp_path: Path, states: dict[str, dict[str, Any]]) -> bytes:
    cfg = GatewayConfig(gateway_id="gw-priv", state_dir=tmp_path).validated()
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-priv")
    publisher = PahoPublisher(BrokerSettings.from_url(mosquitto.url, client_id="gw-priv"))
    gw = Gateway(cfg, journal, publisher, generate_signer(), chain=None)
    await publisher.start()
    try:
        await publisher.wait_connected(10)
        await gw.publish_device_states(states)
    finally:
        await publisher.stop()
        journal.close()
    (dev,) = states
    async with PahoSubscriber(
        BrokerSettings.from_url(mosquitto.url, client_id="platform"), Topics(cfg.region, "gw-priv").device_state(dev)
    ) as sub:
        msg = await asyncio.wait_for(sub.__anext__(), 10)
    assert msg.retain
    return msg.payload


@pytest.fixture
def unfiltered_root() -> Iterator[None]:
    """Records as the libraries log them: without a ScrubFilter another test's `tiyi` run left on a root
    handler (it rewrites records in place, before the capture sees them)."""
    removed = [(h, f) for h in logging.getLogger().handlers for f in h.filters if isinstance(f, ScrubFilter)]
    for h, f in removed:
        h.removeFilter(f)
    yield
    for h, f in removed:
        h.addFilter(f)


@pytest.mark.usefixtures("unfiltered_root")
@pytest.mark.parametrize("connect_exc,subscribe_exc,code", CASES)
def test_a_failing_link_publishes_a_code_and_logs_no_address(
    connect_exc: BaseException | None,
    subscribe_exc: BaseException | None,
    code: str,
    mosquitto: Mosquitto,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    for name in ("tiyi", "bleak", "bleak_retry_connector"):
        caplog.set_level(logging.DEBUG, name)
    source = asyncio.run(_collect_one_failure(connect_exc, subscribe_exc))
    states = source.device_states()
    (state,) = states.values()
    assert state["error"] == code and code in ERROR_CODES
    payload = asyncio.run(_publish_and_read(mosquitto, tmp_path, states))
    assert cbor.loads(payload)["error"] == code
    assert not LEAK.search(payload.decode("latin-1"))
    # The gateway's own log lines carry the library's text, scrubbed ...
    ours = [r for r in caplog.records if r.name.startswith("tiyi")]
    assert any(code in r.getMessage() for r in ours)
    assert not [r.getMessage() for r in ours if LEAK.search(r.getMessage())]
    # ... and bleak-retry-connector's own lines (it logs the address itself) are scrubbed by the filter
    # `tiyi` puts on its log handlers.
    assert any(LEAK.search(r.getMessage()) for r in caplog.records if r.name.startswith("bleak_retry"))
    scrubbed = []
    for r in caplog.records:
        assert ScrubFilter().filter(r)
        scrubbed.append(logging.Formatter().format(r))
    assert not [line for line in scrubbed if LEAK.search(line)]
