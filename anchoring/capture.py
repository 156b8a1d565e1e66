"""Capture files: what a subscriber received, for offline verification (``tiyi verify --capture``).

A CBOR sequence (RFC 8742) of ``[topic, payload, retained, t_ms]`` items, appended as they arrive. A
capture cut short by a crash ends in a truncated item: everything before it is still returned, and the
reader says where the damage is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import cbor2

from anchoring.errors import CaptureError

MAX_ITEM_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class CaptureItem:
    topic: str
    payload: bytes
    retained: bool
    t_ms: int


def write_capture_item(fp: BinaryIO, topic: str, payload: bytes, retained: bool, t_ms: int) -> None:
    fp.write(cbor2.dumps([topic, payload, retained, t_ms]))


def read_capture(fp: BinaryIO) -> Iterator[CaptureItem]:
    """Yield items; raise ``CaptureError`` at the first damaged one (earlier items were already yielded)."""
    data = fp.read()
    buf = io.BytesIO(data)
    index = 0
    while buf.tell() < len(data):
        start = buf.tell()
        try:
            item = cbor2.CBORDecoder(buf).decode()
        except Exception as exc:
            raise CaptureError(f"capture item {index} at byte {start} is truncated or corrupt: {exc}") from exc
        if (
            not isinstance(item, list)
            or len(item) != 4
            or not isinstance(item[0], str)
            or not isinstance(item[1], bytes)
            or not isinstance(item[2], bool)
            or not isinstance(item[3], int)
            or len(item[1]) > MAX_ITEM_BYTES
        ):
            raise CaptureError(f"capture item {index} at byte {start} is not [topic, payload, retained, t_ms]")
        yield CaptureItem(item[0], item[1], item[2], item[3])
        index += 1
