"""A minimal MQTT 5 QoS 1 publisher for load generation: PUBLISH packets encoded before the run and written many per
``sendall``, so the generator costs next to nothing beside what it loads (paho spends ~35 us of CPU per message on
this machine, more than the ingest it was meant to measure).

Only what a replay needs: CONNECT (clean start), the broker's Receive Maximum honoured as the in-flight window, QoS 1
PUBLISH with packet ids handed out in order, and PUBACKs read in bulk and checked (in order, success reason codes).
Anything unexpected from the broker raises ``RawMqttError``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PUBLISH_QOS1 = 0x32
PUBACK = 0x40
CONNACK = 0x20
DISCONNECT = b"\xe0\x00"
MAX_WINDOW = 1000  # in-flight PUBLISHes per connection, at most (and at most the broker's Receive Maximum)
MAX_WRITE = 256 * 1024  # bytes per sendall: large writes, a bounded burst


class RawMqttError(Exception):
    """The broker did something a replay does not expect (refused, wrong ack order, failure reason code)."""


def varint(n: int) -> bytes:
    """MQTT's Variable Byte Integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True, slots=True)
class Packet:
    """A QoS 1 PUBLISH without its packet id: ``head`` + id (2 bytes) + ``tail`` is the packet."""

    head: bytes
    tail: bytes


def publish_packet(topic: str, payload: bytes, retain: bool = False) -> Packet:
    t = topic.encode()
    body = len(t) + 2 + 2 + 1 + len(payload)  # topic, packet id, properties length (0), payload
    head = bytes([PUBLISH_QOS1 | int(retain)]) + varint(body) + struct.pack(">H", len(t)) + t
    return Packet(head, b"\x00" + payload)


# CONNACK property identifiers and the width of their values (-1: a UTF-8 string or binary data with a 2-byte
# length; -2: a string pair; 0: a Variable Byte Integer), as MQTT 5.0 section 2.2.2.2 defines them.
_PROPERTY_WIDTH = {
    0x11: 4,
    0x12: -1,
    0x13: 2,
    0x15: -1,
    0x16: -1,
    0x1A: -1,
    0x1C: -1,
    0x1F: -1,
    0x21: 2,
    0x22: 2,
    0x24: 1,
    0x25: 1,
    0x26: -2,
    0x27: 4,
    0x28: 1,
    0x29: 1,
    0x2A: 1,
}


def _read_varint(buf: bytes, p: int) -> tuple[int, int] | None:
    """(value, next position), or None when ``buf`` ends before the integer does."""
    n, shift = 0, 0
    for _ in range(4):
        if p >= len(buf):
            return None
        b = buf[p]
        n |= (b & 0x7F) << shift
        p += 1
        if not b & 0x80:
            return n, p
        shift += 7
    raise RawMqttError("malformed remaining length from the broker")


def receive_maximum(connack_body: bytes) -> int:
    """The Receive Maximum a CONNACK's variable header announces (65,535 when absent); raises when refused."""
    if len(connack_body) < 2 or connack_body[1] != 0:
        raise RawMqttError(f"the broker refused the connection (reason 0x{connack_body[1]:02x})")
    got = _read_varint(connack_body, 2)
    if got is None:
        return 65_535
    size, p = got
    end, value = p + size, 65_535
    while p < end:
        ident = connack_body[p]
        width = _PROPERTY_WIDTH.get(ident)
        if width is None:
            raise RawMqttError(f"unknown CONNACK property 0x{ident:02x}")
        p += 1
        if ident == 0x21:
            value = struct.unpack_from(">H", connack_body, p)[0]
        if width > 0:
            p += width
        else:
            for _ in range(-width):
                p += 2 + struct.unpack_from(">H", connack_body, p)[0]
    return value


class RawPublisher:
    """One connection: ``send`` writes packets as fast as the window allows and returns when all are acknowledged."""

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # protocol name, level 5, flags (clean start), keep alive 600 s, no properties, client id
        var = b"\x00\x04MQTT\x05\x02" + struct.pack(">H", 600) + b"\x00" + struct.pack(">H", len(cid)) + cid
        self.sock.sendall(b"\x10" + varint(len(var)) + var)
        self._buf = b""
        kind, body = self._packet()
        if kind != CONNACK:
            raise RawMqttError(f"expected CONNACK, got packet type 0x{kind:02x}")
        self.window = min(MAX_WINDOW, receive_maximum(body))
        self._next_id = 1  # the id of the next PUBLISH; PUBACKs must come back in the same order
        self._acked_id = 1  # the id the next PUBACK must carry

    def _fill(self) -> None:
        data = self.sock.recv(65_536)
        if not data:
            raise RawMqttError("the broker closed the connection")
        self._buf += data

    def _packet(self) -> tuple[int, bytes]:
        """The next whole packet: (type nibble << 4, body)."""
        while True:
            if self._buf:
                got = _read_varint(self._buf, 1)
                if got is not None and len(self._buf) >= got[1] + got[0]:
                    size, p = got
                    kind, body = self._buf[0] & 0xF0, self._buf[p : p + size]
                    self._buf = self._buf[p + size :]
                    return kind, body
            self._fill()

    def _acks(self) -> int:
        """Read what the broker sent (blocking for at least one PUBACK); how many PUBACKs it was."""
        n = 0
        while n == 0:
            self._fill()
            buf, p = self._buf, 0
            while len(buf) - p >= 4:  # a PUBACK is at least 4 bytes
                if buf[p] != PUBACK:
                    raise RawMqttError(f"expected PUBACK, got packet type 0x{buf[p] & 0xF0:02x}")
                size = buf[p + 1]
                if size > 127 or len(buf) - p < 2 + size:
                    if size > 127:
                        raise RawMqttError("a PUBACK with properties beyond a replay's needs")
                    break
                pid = (buf[p + 2] << 8) | buf[p + 3]
                if pid != self._acked_id:
                    raise RawMqttError(f"PUBACK for packet {pid}, expected {self._acked_id}")
                if size >= 3 and buf[p + 4] >= 0x80:
                    raise RawMqttError(f"the broker refused packet {pid} (reason 0x{buf[p + 4]:02x})")
                self._acked_id = self._acked_id % 65_535 + 1
                p += 2 + size
                n += 1
            self._buf = buf[p:]
        return n

    def send(
        self,
        packets: Sequence[Packet],
        allowed: Callable[[int], int] | None = None,
        sent: Callable[[int, int], None] | None = None,
    ) -> None:
        """Publish ``packets`` in order. ``allowed(i)``: how many of the packets from ``i`` on may go now (pacing; 0
        means wait a little); ``sent(i, j)``: packets ``i..j-1`` are about to be written."""
        i, inflight, total = 0, 0, len(packets)
        refill = max(1, self.window // 2)  # write when half the window is free: fewer, larger writes and reads
        while i < total or inflight:
            room = min(self.window - inflight, total - i)
            if room < refill and i + room < total:
                room = 0  # wait for more acknowledgements first
            if allowed is not None and room > 0:
                room = min(room, allowed(i))
            if room > 0:
                parts: list[bytes] = []
                size, j = 0, i
                while j < i + room and size < MAX_WRITE:
                    pk = packets[j]
                    parts += (pk.head, self._next_id.to_bytes(2, "big"), pk.tail)
                    size += len(pk.head) + len(pk.tail) + 2
                    self._next_id = self._next_id % 65_535 + 1
                    j += 1
                if sent is not None:
                    sent(i, j)
                self.sock.sendall(b"".join(parts))
                inflight += j - i
                i = j
            elif inflight:
                inflight -= self._acks()
            else:
                time.sleep(0.001)  # paced: nothing due and nothing to wait for

    def close(self) -> None:
        try:
            self.sock.sendall(DISCONNECT)
        finally:
            self.sock.close()
