"""The emulated adapter withdraws a connect that is given up, even when Python 3.11 loses the cancel.

Bumble waits for each HCI command's answer with ``asyncio.wait_for``; on 3.11 a cancel that arrives in the
same loop pass as the answer is dropped and the connect goes on waiting, for a device that has moved to a
new private address and will never answer. Seen under a busy CPU: the connect stayed pending in the
emulated host for good, and every later connect was refused ('connection already pending').
"""

from __future__ import annotations

import asyncio
import contextlib

from bleak.backends.device import BLEDevice
from bumble import hci
from bumble.link import LocalLink

from firmware_sim.bumble_devices import BumbleHeartRateStrap
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.ble.bumble_backend import BumbleCentral, BumbleClient

CREATE_CONNECTION = {hci.HCI_LE_CREATE_CONNECTION_COMMAND, hci.HCI_LE_EXTENDED_CREATE_CONNECTION_COMMAND}


def device(address: str) -> BLEDevice:
    return BLEDevice(address, None, hci.Address(address))


def test_a_connect_cancelled_as_its_command_is_answered_ends_and_frees_the_adapter() -> None:
    async def main() -> tuple[bool, bool, bool]:
        link = LocalLink()  # type: ignore[no-untyped-call]
        strap = BumbleHeartRateStrap(link, "F2:00:00:00:00:01", HeartRateStrap("strap-1", seed=1), 0.1)
        await strap.start()
        central = BumbleCentral(link)
        await central.start()
        host = central.device.host
        answer = host.on_hci_command_status_event
        caller: list[asyncio.Task[None]] = []

        def answered_and_cancelled(event: hci.HCI_Command_Status_Event) -> None:
            answer(event)  # the connect's command is answered ...
            if event.command_opcode in CREATE_CONNECTION:
                caller[0].cancel()  # ... and, in the same loop pass, the connect is given up

        host.on_hci_command_status_event = answered_and_cancelled  # type: ignore[method-assign]
        # Nobody advertises from this address (the device has moved on): only a withdrawal ends the connect.
        caller.append(asyncio.create_task(BumbleClient(device("F2:00:00:00:00:77"), central=central).connect(False)))
        done, _ = await asyncio.wait(caller, timeout=5.0)
        ended = bool(done) and caller[0].cancelled()
        host.on_hci_command_status_event = answer  # type: ignore[method-assign]
        # The adapter is free again: a connect to a device that does advertise completes.
        client = BumbleClient(device("F2:00:00:00:00:01"), central=central)
        with contextlib.suppress(Exception):  # reported by the assertion below
            await asyncio.wait_for(client.connect(False), 5.0)
        connected = client.is_connected
        await client.disconnect()
        await strap.stop()
        return ended, not central.device.is_le_connecting, connected

    ended, idle, connected = asyncio.run(main())
    assert ended, "the given-up connect never ended"
    assert idle and connected
