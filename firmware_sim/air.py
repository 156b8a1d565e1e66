"""The emulated air: Bumble's ``LocalLink`` that also records which data reached the other end.

``LocalLink`` hands a controller's data to the peer's controller one loop turn later, and the peer drops it
when it closed the connection meanwhile (a central that disconnected while a device's notification was on
its way). A device's own controller likewise drops what its host queued after the link went down (a read
answered just as the device disconnected). Real radios lose data at a link's end the same way, and the
sender cannot tell. A simulator that compares what its devices sent with what a gateway received must
therefore count what *arrived*: this link records, per sending controller, the value of every ATT
notification, indication and read response that reached a live connection, and of every one cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from bumble.controller import Controller
from bumble.core import PhysicalTransport
from bumble.hci import Address
from bumble.link import LocalLink

ATT_CID = 0x0004
READ_RESPONSE, NOTIFICATION, INDICATION = 0x0B, 0x1B, 0x1D


def att_value(l2cap_pdu: bytes) -> bytes | None:
    """The characteristic value an L2CAP PDU carries if it is ATT data a central's GATT client hands on (a
    notification, an indication or a read response), else None (requests, discovery, signalling)."""
    if len(l2cap_pdu) < 5 or int.from_bytes(l2cap_pdu[2:4], "little") != ATT_CID:
        return None
    opcode = l2cap_pdu[4]
    if opcode == READ_RESPONSE:
        return l2cap_pdu[5:]
    if opcode in (NOTIFICATION, INDICATION) and len(l2cap_pdu) >= 7:
        return l2cap_pdu[7:]  # after the opcode and the 2-byte attribute handle
    return None


class Air(LocalLink):
    """A ``LocalLink`` that records, per sending controller, the ATT data values that arrived and those cut off."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._arrived: dict[Controller, list[bytes]] = {}
        self._cut_off: dict[Controller, list[bytes]] = {}

    def arrived(self, controller: Controller) -> list[bytes]:
        """Values ``controller`` sent that reached a live connection, in arrival order."""
        return self._arrived.get(controller, [])

    def cut_off(self, controller: Controller) -> list[bytes]:
        """Values ``controller`` sent that the peer no longer had a connection for."""
        return self._cut_off.get(controller, [])

    def send_acl_data(
        self, sender_controller: Controller, destination_address: Address, transport: PhysicalTransport, data: bytes
    ) -> None:
        if transport != PhysicalTransport.LE:
            super().send_acl_data(sender_controller, destination_address, transport, data)
            return
        # As LocalLink does: the receiver is looked up now, the data handed over a loop turn later, when the
        # receiver may have closed the connection (then it drops the data, and here it is counted as cut off).
        receiver = self.find_le_controller(destination_address)
        source = sender_controller.random_address
        asyncio.get_running_loop().call_soon(self._hand_over, sender_controller, receiver, source, data)

    def _hand_over(self, sender: Controller, receiver: Controller | None, source: Address, data: bytes) -> None:
        value = att_value(data)
        live = receiver is not None and receiver.le_connections.get(source) is not None
        if value is not None:
            (self._arrived if live else self._cut_off).setdefault(sender, []).append(value)
        if receiver is not None:
            receiver.on_link_acl_data(source, PhysicalTransport.LE, data)


def arrived_frames(emitted: Iterable[tuple[int, bytes]], arrived: Iterable[bytes]) -> list[tuple[int, bytes]]:
    """The (characteristic, bytes) frames of ``emitted`` that arrived: each arrived value taken from the emitted
    frames with those bytes (a device's frames with equal bytes are interchangeable for a comparison)."""
    by_value: dict[bytes, list[int]] = {}
    for char, data in emitted:
        by_value.setdefault(data, []).append(char)
    out: list[tuple[int, bytes]] = []
    for value in arrived:
        chars = by_value.get(value)
        if chars:
            out.append((chars.pop(0), value))
    return out
