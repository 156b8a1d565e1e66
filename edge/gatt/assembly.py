"""Records that arrive in several notifications: FTMS "More Data" parts and multi-packet body composition.

Over the air every part is a complete characteristic value. The assembler joins the parts of one record
into one payload: the parts' bytes concatenated in arrival order. The record therefore keeps exactly
what the device sent, and the decoders read a joined payload part by part (``Layout.decode_joined``),
so anyone re-decoding ``raw`` gets the same reading.

Pure and sans-IO: the caller passes the monotonic time and an opaque tag per part (the gateway's
receive time); the assembler hands back payloads ready to decode, each with the tag of its last part.
Nothing is ever dropped here: a part that cannot be joined leaves on its own and is decoded (and
flagged, or counted as malformed) like any other frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from edge.errors import MalformedFrame
from edge.gatt import ftms, health
from edge.gatt.layout import Raw

Tag = TypeVar("Tag")

FTMS_CHARS = frozenset({0x2ACD, 0x2AD2, 0x2AD1, 0x2ACE})
BODY_COMPOSITION = 0x2A9C
JOINABLE = FTMS_CHARS | {BODY_COMPOSITION}
DEFAULT_HOLD_S = 2.0  # parts of one record follow each other within a connection interval or two
MAX_PARTS = 8  # a record never needs more (FTMS's largest record fits in three 20-byte parts)


@dataclass
class _Held(Generic[Tag]):
    parts: list[bytes]
    fields: dict[str, Raw]
    tag: Tag
    since: float


@dataclass(frozen=True, slots=True)
class Joined(Generic[Tag]):
    """A payload ready to decode: one part, or several joined; ``tag`` is its last part's."""

    dev: str
    char: int
    data: bytes
    tag: Tag
    parts: int


@dataclass
class RecordAssembler(Generic[Tag]):
    """Holds the parts of unfinished records per (device, characteristic) until the record is whole.

    FTMS: a part with More Data set is held; the part with it clear completes the record. Body
    composition: packets with the multiple-packet bit are held until a packet that cannot belong to the
    same measurement arrives, or until ``hold_s`` passes (the profile has no "last packet" marker).
    A part that repeats a field already held starts a new record, so a lost part never glues two
    records together; the unfinished one leaves as it is and its decoder flags it.
    """

    hold_s: float = DEFAULT_HOLD_S
    max_parts: int = MAX_PARTS
    _held: dict[tuple[str, int], _Held[Tag]] = field(default_factory=dict)

    @property
    def holding(self) -> int:
        """Parts held right now (not yet handed back)."""
        return sum(len(h.parts) for h in self._held.values())

    def next_deadline(self) -> float | None:
        return min((h.since + self.hold_s for h in self._held.values()), default=None)

    def feed(
        self, dev: str, char: int, data: bytes, tag: Tag, now: float, quirks: Mapping[str, str] | None = None
    ) -> list[Joined[Tag]]:
        if char not in JOINABLE:
            return [Joined(dev, char, data, tag, 1)]
        key = (dev, char)
        if char == BODY_COMPOSITION:
            layout, bit, shared, bit_ends = (
                health.BODY_COMPOSITION,
                health.BODY_COMPOSITION_MULTI_PACKET,
                health.BODY_COMPOSITION_SHARED,
                False,
            )
        else:
            layout, bit, shared, bit_ends = ftms.layout_for(char, quirks), 0x0001, frozenset[str](), True
        out: list[Joined[Tag]] = []
        try:
            flags, fields = layout.decode(data)
        except MalformedFrame:
            # Not a part of anything: whatever is held leaves first (arrival order), then this frame.
            out += self._release(key)
            out.append(Joined(dev, char, data, tag, 1))
            return out
        held = self._held.get(key)
        if held is not None and (len(held.parts) >= self.max_parts or _clashes(held.fields, fields, shared)):
            out += self._release(key)
            held = None
        if flags & bit:
            if held is None:
                self._held[key] = _Held([data], dict(fields), tag, now)
            else:
                held.parts.append(data)
                held.fields.update(fields)
                held.tag = tag
            return out
        # The bit is clear: for FTMS this part completes the held record; for body composition it is a
        # single-packet measurement, and anything held was a different one.
        if held is not None and bit_ends:
            del self._held[key]
            out.append(Joined(dev, char, b"".join([*held.parts, data]), tag, len(held.parts) + 1))
            return out
        out += self._release(key)
        out.append(Joined(dev, char, data, tag, 1))
        return out

    def expire(self, now: float) -> list[Joined[Tag]]:
        """Hand back records whose next part did not come within ``hold_s``."""
        out: list[Joined[Tag]] = []
        for key in [k for k, h in self._held.items() if now - h.since >= self.hold_s]:
            out += self._release(key)
        return out

    def flush(self) -> list[Joined[Tag]]:
        """Hand back everything held (at shutdown: nothing stays behind)."""
        out: list[Joined[Tag]] = []
        for key in list(self._held):
            out += self._release(key)
        return out

    def _release(self, key: tuple[str, int]) -> list[Joined[Tag]]:
        held = self._held.pop(key, None)
        if held is None:
            return []
        return [Joined(key[0], key[1], b"".join(held.parts), held.tag, len(held.parts))]


def _clashes(held: Mapping[str, Raw], new: Mapping[str, Raw], shared: frozenset[str]) -> bool:
    return any(name in held and (name not in shared or held[name] != value) for name, value in new.items())
