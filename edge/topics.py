"""The MQTT topic tree of the platform contract (see docs/mqtt-contract.md).

``tiyi/v1/{region}/{gw}/{channel}`` with channels data/{dev}, batch, head, anchor, status, key, and per
audience (contract 1.3) aud/{aud}/data/{dev}, aud/{aud}/view, aud/{aud}/consent. Pure values, so
publishers and verifiers share one definition and it is tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.errors import CodecError
from edge.record import check_id

ROOT = "tiyi/v1"
CHANNELS = ("data", "batch", "head", "anchor", "rollup", "status", "key", "devices")
# An audience's own channels under aud/{aud}/, parsed as channel "aud_<name>" so that a consumer that knows
# only the site's full stream never mistakes an audience's view records for it.
AUD_CHANNELS = ("data", "view", "consent")


@dataclass(frozen=True, slots=True)
class Topics:
    region: str
    gw: str

    def __post_init__(self) -> None:
        check_id(self.region, "region")
        check_id(self.gw, "gateway id")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.region}/{self.gw}"

    def data(self, dev: str) -> str:
        return f"{self.base}/data/{check_id(dev, 'device id')}"

    @property
    def batch(self) -> str:
        return f"{self.base}/batch"

    @property
    def head(self) -> str:
        """Retained signed head: the latest batch the gateway has published (see edge.head)."""
        return f"{self.base}/head"

    @property
    def anchor(self) -> str:
        return f"{self.base}/anchor"

    @property
    def anchor_state(self) -> str:
        """Each anchor job's state changes (pending → signed → submitted → included → final), as they happen."""
        return f"{self.base}/anchor/state"

    def rollup(self, target: str) -> str:
        """Final roll-ups anchored on another chain of the topology (``target``), with their batch roots."""
        return f"{self.base}/rollup/{check_id(target, 'target')}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def key(self) -> str:
        return f"{self.base}/key"

    def device_state(self, dev: str) -> str:
        """Retained per-device state (connection, battery, RSSI): operations data, not readings."""
        return f"{self.base}/devices/{check_id(dev, 'device id')}/state"

    def aud_base(self, aud: str) -> str:
        return f"{self.base}/aud/{check_id(aud, 'audience id')}"

    def aud_data(self, aud: str, dev: str) -> str:
        """An audience's view records of one device (same framing as ``data``)."""
        return f"{self.aud_base(aud)}/data/{check_id(dev, 'device id')}"

    def aud_view(self, aud: str) -> str:
        """An audience's signed view manifests, one per source batch."""
        return f"{self.aud_base(aud)}/view"

    def aud_consent(self, aud: str) -> str:
        """Signed consent events for the audience's purpose."""
        return f"{self.aud_base(aud)}/consent"

    @property
    def all(self) -> str:
        """Subscription filter for everything this gateway publishes."""
        return f"{self.base}/#"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    region: str
    gw: str
    channel: str
    dev: str | None = None
    target: str | None = None  # the chain a roll-up message is about
    aud: str | None = None  # the audience of an aud_data / aud_view / aud_consent message


def parse_topic(topic: str) -> ParsedTopic:
    """Split a received topic; raises :class:`CodecError` for anything outside the contract."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != ROOT:
        raise CodecError(f"topic {topic!r} is not under {ROOT}/")
    region, gw, channel = parts[2], parts[3], parts[4]
    check_id(region, "region")
    check_id(gw, "gateway id")
    if channel == "data":
        if len(parts) != 6:
            raise CodecError(f"data topic {topic!r} must end in /data/<device>")
        return ParsedTopic(region, gw, channel, check_id(parts[5], "device id"))
    if channel == "aud":
        return _parse_aud(topic, parts, region, gw)
    if channel == "devices":
        if len(parts) != 7 or parts[6] != "state":
            raise CodecError(f"device topic {topic!r} must end in /devices/<device>/state")
        return ParsedTopic(region, gw, channel, check_id(parts[5], "device id"))
    if channel == "anchor" and len(parts) == 6:
        if parts[5] != "state":
            raise CodecError(f"anchor topic {topic!r} must be /anchor or /anchor/state")
        return ParsedTopic(region, gw, "anchor_state")
    if channel == "rollup":
        if len(parts) != 6:
            raise CodecError(f"roll-up topic {topic!r} must end in /rollup/<target>")
        return ParsedTopic(region, gw, channel, target=check_id(parts[5], "target"))
    if channel not in CHANNELS or len(parts) != 5:
        raise CodecError(f"topic {topic!r} has an unknown channel")
    return ParsedTopic(region, gw, channel)


def _parse_aud(topic: str, parts: list[str], region: str, gw: str) -> ParsedTopic:
    if len(parts) < 7 or parts[6] not in AUD_CHANNELS:
        raise CodecError(f"audience topic {topic!r} must be /aud/<audience>/data/<device>, /view or /consent")
    aud, sub = check_id(parts[5], "audience id"), parts[6]
    if sub == "data":
        if len(parts) != 8:
            raise CodecError(f"audience data topic {topic!r} must end in /aud/<audience>/data/<device>")
        return ParsedTopic(region, gw, "aud_data", check_id(parts[7], "device id"), aud=aud)
    if len(parts) != 7:
        raise CodecError(f"audience topic {topic!r} has extra levels")
    return ParsedTopic(region, gw, f"aud_{sub}", aud=aud)
