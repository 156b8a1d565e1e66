"""Typed gateway messages: one ``decode_message`` turns a topic and payload from ``tiyi/v1/{region}/{gw}/#`` into a
value, with the same checks the verifier has always applied (a platform gets the typed value or a one-line error).

Pure. Decoding proves nothing: a ``Manifest`` is not yet signed by anyone trusted, a ``Receipt`` is a claim until a
chain confirms it. That is the verifier's job (``anchoring.engine``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anchoring.errors import ReceiptError
from anchoring.findings import ANCHOR_STATES
from anchoring.receipt import AnchorReceipt
from edge import cbor
from edge.consent import SignedConsent
from edge.errors import CodecError, EdgeError
from edge.head import SignedHead
from edge.manifest import SignedManifest
from edge.record import Record, RecordFields, decode_data_message, read_record
from edge.rollup import Rollup
from edge.topics import ParsedTopic, parse_topic
from edge.view import SignedView


class MessageError(CodecError):
    """A payload that does not decode as its channel's message (``topic_ok`` false: the topic itself is wrong)."""

    def __init__(self, message: str, topic_ok: bool = True) -> None:
        super().__init__(message)
        self.topic_ok = topic_ok


@dataclass(frozen=True, slots=True)
class DataMessage:
    """One data message: records of one device, each still raw (a bad one does not spoil its neighbours)."""

    gw: str
    dev: str
    raw: tuple[bytes, ...]

    def records(self) -> Iterator[tuple[bytes, Record | EdgeError]]:
        for data in self.raw:
            try:
                yield data, Record.from_bytes(data)
            except EdgeError as exc:
                yield data, exc

    def fields(self) -> Iterator[tuple[bytes, RecordFields | EdgeError]]:
        """Like ``records``, without a ``Record`` per record: (gw, seq, dev, t, kind, ...) once all are checked."""
        for data in self.raw:
            try:
                yield data, read_record(data)
            except EdgeError as exc:
                yield data, exc


@dataclass(frozen=True, slots=True)
class ManifestMessage:
    gw: str
    signed: SignedManifest
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReceiptMessage:
    gw: str
    receipt: AnchorReceipt


@dataclass(frozen=True, slots=True)
class AnchorStateMessage:
    gw: str
    state: str


@dataclass(frozen=True, slots=True)
class RollupMessage:
    gw: str
    target: str
    rollup: Rollup
    receipt: AnchorReceipt


@dataclass(frozen=True, slots=True)
class HeadMessage:
    gw: str
    signed: SignedHead
    payload: bytes


@dataclass(frozen=True, slots=True)
class KeyMessage:
    gw: str
    key_id: str
    pem: str


@dataclass(frozen=True, slots=True)
class StatusMessage:
    gw: str
    state: str  # online | offline


@dataclass(frozen=True, slots=True)
class DeviceStateMessage:
    gw: str
    dev: str
    state: dict[Any, Any]


@dataclass(frozen=True, slots=True)
class AudDataMessage:
    """An audience's view records of one device (``aud/{aud}/data/{dev}``), each still raw."""

    gw: str
    aud: str
    dev: str
    raw: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ViewMessage:
    """An audience's signed view manifest (``aud/{aud}/view``)."""

    gw: str
    aud: str
    signed: SignedView
    payload: bytes


@dataclass(frozen=True, slots=True)
class AudConsentMessage:
    """A signed consent event published for an audience's purpose (``aud/{aud}/consent``)."""

    gw: str
    aud: str
    signed: SignedConsent
    payload: bytes


Message = (
    DataMessage
    | ManifestMessage
    | ReceiptMessage
    | AnchorStateMessage
    | RollupMessage
    | HeadMessage
    | KeyMessage
    | StatusMessage
    | DeviceStateMessage
    | AudDataMessage
    | ViewMessage
    | AudConsentMessage
)


def decode_topic(topic: str) -> ParsedTopic:
    try:
        return parse_topic(topic)
    except EdgeError as exc:
        raise MessageError(f"{topic!r}: {exc}", topic_ok=False) from exc


def decode_message(topic: str, payload: bytes) -> Message:
    """The typed message, or ``MessageError`` (never another exception, whatever the bytes)."""
    t = decode_topic(topic)
    try:
        return (_decode_aud if t.channel.startswith("aud_") else _decode)(t, payload)
    except (EdgeError, ReceiptError) as exc:
        raise MessageError(f"{topic}: {exc}") from exc


def _anchor_state(t: ParsedTopic, payload: bytes) -> Message:
    """Progress reports: not part of any proof, but well formed."""
    m = cbor.loads(payload)
    if not isinstance(m, dict) or m.get("state") not in ANCHOR_STATES:
        raise CodecError("anchor state message must be a map with a known state")
    return AnchorStateMessage(t.gw, m["state"])


def _decode(t: ParsedTopic, payload: bytes) -> Message:
    if t.channel == "data":
        raw = tuple(decode_data_message(payload))
        if not raw:  # a gateway never sends one: it proves nothing and could only pad a stream
            raise CodecError("a data message must hold at least one record")
        return DataMessage(t.gw, t.dev or "", raw)
    if t.channel == "batch":
        return ManifestMessage(t.gw, SignedManifest.from_bytes(payload), payload)
    if t.channel == "anchor":
        return ReceiptMessage(t.gw, AnchorReceipt.from_bytes(payload))
    if t.channel == "anchor_state":
        return _anchor_state(t, payload)
    if t.channel == "rollup":
        m = cbor.expect_map(cbor.loads(payload), "rollup message", {"rollup", "receipt"})
        return RollupMessage(
            t.gw,
            t.target or "",
            Rollup.from_bytes(cbor.field(m, "rollup", bytes, "rollup message")),
            AnchorReceipt.from_bytes(cbor.field(m, "receipt", bytes, "rollup message")),
        )
    if t.channel == "head":
        return HeadMessage(t.gw, SignedHead.from_bytes(payload), payload)
    if t.channel == "key":
        m = cbor.expect_map(cbor.loads(payload), "key message", {"key_id", "pem"})
        return KeyMessage(t.gw, cbor.field(m, "key_id", str, "key"), cbor.field(m, "pem", str, "key"))
    if t.channel == "devices":  # operations data: not part of the proof, but must be well formed
        m = cbor.loads(payload)
        if not isinstance(m, dict):
            raise CodecError("device state must be a CBOR map")
        return DeviceStateMessage(t.gw, t.dev or "", m)
    m = cbor.loads(payload)  # status: informational, but it must still be well formed
    if not isinstance(m, dict) or m.get("state") not in ("online", "offline"):
        raise CodecError("status message must be a map with state online|offline")
    return StatusMessage(t.gw, m["state"])


def _decode_aud(t: ParsedTopic, payload: bytes) -> Message:
    aud = t.aud or ""
    if t.channel == "aud_data":
        raw = tuple(decode_data_message(payload))
        if not raw:
            raise CodecError("a data message must hold at least one record")
        return AudDataMessage(t.gw, aud, t.dev or "", raw)
    if t.channel == "aud_view":
        return ViewMessage(t.gw, aud, SignedView.from_bytes(payload), payload)
    return AudConsentMessage(t.gw, aud, SignedConsent.from_bytes(payload), payload)
