"""Gateway configuration: TOML parsed once into frozen dataclasses, with errors that name the setting.

Every setting has a default that works for the demo, so a missing file section is never an error;
an unknown key is, because a typo silently ignored is a misconfigured clinic.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edge.errors import CodecError
from edge.record import check_id
from edge.regions import REGIONS, TARGETS, is_region, is_target
from gateway.audience_config import AudienceConfig, audience_problems, parse_audiences
from gateway.errors import ConfigError

ChainKind = Literal["inproc", "evm", "fisco2", "none"]
SourceKind = Literal["sim", "ble"]


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    max_inflight: int = 100
    keepalive_s: int = 30


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_records: int = 1000
    max_age_s: float = 10.0


@dataclass(frozen=True, slots=True)
class PublishConfig:
    # Records that arrive within this window share one MQTT message (fewer, larger messages).
    linger_ms: int = 20
    max_records_per_message: int = 256
    # The signed head (latest published batch) is re-signed with a fresh time this often even when no batch
    # closes, so a platform can tell a live gateway with nothing new from a stale or withheld head.
    head_interval_s: float = 60.0


@dataclass(frozen=True, slots=True)
class ChainConfig:
    kind: ChainKind = "inproc"
    # Which chain of the "2+23+X+M" topology this is (edge.regions.TARGETS); "" means the gateway's region.
    target: str = ""
    url: str | None = None
    contract: str | None = None
    account_key_file: Path | None = None
    poll_s: float = 0.5
    # Blocks on top of the anchor's block before it is final. 0 suits BFT chains (FISCO BCOS PBFT), where
    # an included transaction cannot be reverted; set it for proof-of-work/authority chains that can reorg.
    confirmations: int = 0
    # FISCO BCOS 2.x native RPC (kind = "fisco2", 国密 groups): the group and the chain's fiscoChainId.
    group_id: int = 1
    fisco_chain_id: int = 1


@dataclass(frozen=True, slots=True)
class RollupConfig:
    """A second anchor target that gets one roll-up per period instead of every batch (``[[rollup]]``)."""

    target: str
    period_s: float = 3600.0
    chain: ChainConfig = field(default_factory=ChainConfig)


@dataclass(frozen=True, slots=True)
class SimConfig:
    devices: int = 3
    interval_s: float = 1.0
    seed: int = 1
    radio: bool = False  # the straps on an emulated Bluetooth radio: listed as seen, recorded once paired


@dataclass(frozen=True, slots=True)
class BleConfig:
    # Addresses, "name:<advertised name>" or "irk:<hex>"; nothing else is ingested (devices are only listed).
    allow: frozenset[str] = frozenset()
    max_connections: int = 5  # about what an onboard Pi radio sustains; add USB adapters for more
    silence_s: float = 10.0
    connect_timeout_s: float = 10.0
    adapter: str = "hci0"  # the BlueZ adapter to use; "hci0,hci1" spreads devices over several
    scan_stall_s: float = 30.0  # no advertisements this long: restart discovery ...
    adapter_reset: bool = True  # ... and if that keeps failing while devices are awaited, power-cycle the adapter

    @property
    def adapters(self) -> list[str]:
        return [a.strip() for a in self.adapter.split(",") if a.strip()]


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long readings stay on the gateway once they are delivered and anchored final (PIPL Art. 19, 47)."""

    max_age_days: float = 30.0  # records older than this are purged, never before delivery and a final anchor
    interval_s: float = 3_600.0  # how often the retention pass runs
    seen_ttl_s: float = 600.0  # an unpaired device seen nearby is listed for this long, then forgotten
    seen_max: int = 200  # at most this many unpaired devices are listed (the most recently seen)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The admin API and dashboard, served by ``tiyi run`` only when an ``[api]`` section exists."""

    listen: str = "127.0.0.1"  # localhost unless the operator opens it up on purpose
    port: int = 8080
    token_file: Path | None = None  # hashed bearer tokens (``tiyi api token add``); default <state_dir>/api-tokens
    cert_file: Path | None = None  # HTTPS: the server's certificate (chain) in PEM ...
    key_file: Path | None = None  # ... and its private key (0600)
    # Off the loopback interface a bearer token over plain HTTP can be read by anyone on the gym's network:
    # without TLS the gateway refuses such a listen address unless this is set on purpose.
    allow_plain_http: bool = False

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def loopback(self) -> bool:
        """Whether ``listen`` is this machine only (127.0.0.0/8, ::1, localhost); a host name is not."""
        import ipaddress

        if self.listen == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.listen).is_loopback
        except ValueError:
            return False

    def problems(self) -> Iterator[ConfigError]:
        if not 1 <= self.port <= 65_535:
            yield ConfigError("api.port must be 1..65535")
        if (self.cert_file is None) != (self.key_file is None):
            yield ConfigError("api.cert_file and api.key_file go together: set both for HTTPS, or neither")
        elif not self.tls and not self.loopback and not self.allow_plain_http:
            yield ConfigError(
                f"api.listen = {self.listen!r} is reachable from the network but the API has no TLS: set "
                "api.cert_file and api.key_file, or api.allow_plain_http = true on purpose"
            )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    gateway_id: str = "gw-demo-01"
    region: str = "shenzhen"
    state_dir: Path = Path("/var/lib/tiyi")
    key_file: Path | None = None
    source: SourceKind = "sim"
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    ble: BleConfig = field(default_factory=BleConfig)
    rollups: tuple[RollupConfig, ...] = ()
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    api: ApiConfig | None = None
    audiences: tuple[AudienceConfig, ...] = ()  # [[audience]]: platforms that get a consent-filtered view

    @property
    def audience_key_dir(self) -> Path:
        """One directory per audience with its SM4 keys (``tiyi keys audience``)."""
        return self.state_dir / "keys" / "audience"

    @property
    def api_token_path(self) -> Path:
        return (self.api.token_file if self.api and self.api.token_file else None) or self.state_dir / "api-tokens"

    @property
    def chain_target(self) -> str:
        return self.chain.target or self.region

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.sqlite3"

    @property
    def signing_key_path(self) -> Path:
        return self.key_file or self.state_dir / "keys" / "gateway.key"

    @property
    def site_secret_path(self) -> Path:
        """The secret member pseudonyms (record ``sub``) are keyed with; never leaves this site."""
        return self.state_dir / "keys" / "site-subject.key"

    @property
    def pseudonym_key_path(self) -> Path:
        """Secret for device pseudonyms (HMAC of the Bluetooth address); losing it renames every device."""
        return self.state_dir / "keys" / "device-pseudonym.key"

    @property
    def chain_key_path(self) -> Path:
        return self.chain.account_key_file or self.state_dir / "keys" / "chain-account.key"

    def _target_problems(self) -> Iterator[ConfigError]:
        if self.chain.target and not is_target(self.chain.target):
            yield _target_error("chain.target", self.chain.target)
        seen: set[str] = set()
        for i, r in enumerate(self.rollups):
            where = f"rollup[{i}]"
            if not is_target(r.target):
                yield _target_error(f"{where}.target", r.target)
            if r.target in seen:
                yield ConfigError(f"{where}.target {r.target!r} is configured twice")
            seen.add(r.target)
            if r.period_s < 1:
                yield ConfigError(f"{where}.period_s must be at least 1 second")
            if r.chain.kind not in ("evm", "fisco2", "inproc"):
                yield ConfigError(f"{where}.kind must be evm or fisco2")
            if r.chain.kind in ("evm", "fisco2") and not r.chain.url:
                yield ConfigError(f"{where} (kind {r.chain.kind}) needs url, the node's JSON-RPC endpoint")
            if r.chain.kind == "fisco2" and not r.chain.contract:
                yield ConfigError(f"{where} (kind fisco2) needs contract")
        if self.rollups and self.chain.kind == "none":
            yield ConfigError("roll-ups need batches anchored first: [chain] kind must not be 'none'")

    def _range_problems(self) -> Iterator[ConfigError]:
        """Every duration is a finite number in a range that makes sense: TOML accepts ``nan`` and ``inf``,
        and ``nan`` passes every ``<``/``>`` check written for ordinary numbers."""
        values: list[tuple[str, float | int]] = [
            (f"{section}.{key}", getattr(getattr(self, section), key)) for section, key in _DURATIONS
        ]
        for i, r in enumerate(self.rollups):
            values += [(f"rollup[{i}].period_s", r.period_s), (f"rollup[{i}].poll_s", r.chain.poll_s)]
        for name, value in values:
            lo, hi, unit = _RANGES[name.split(".", 1)[1] if name.startswith("rollup[") else name]
            if not math.isfinite(value) or not lo <= value <= hi:
                yield ConfigError(f"{name} must be a finite number of {unit} from {lo:g} to {hi:g}, not {value!r}")

    def problems(self) -> Iterator[ConfigError]:
        """Every cross-field rule this configuration breaks, in order (``tiyi config check`` lists them all)."""
        try:
            check_id(self.gateway_id, "gateway.id")
        except CodecError as exc:
            yield ConfigError(str(exc))
        yield from self._range_problems()
        from gateway.mqtt import check_tls_options

        try:
            check_tls_options(self.mqtt.url, self.mqtt.ca_file, self.mqtt.cert_file, self.mqtt.key_file)
        except ConfigError as exc:
            yield exc
        if not is_region(self.region):
            yield ConfigError(
                f"gateway.region {self.region!r} is not one of the 23 regional sub-chains: {', '.join(REGIONS)}"
            )
        if self.batch.max_records < 1 or self.batch.max_age_s <= 0:
            yield ConfigError("batch.max_records must be >= 1 and batch.max_age_s > 0")
        if not 1 <= self.publish.max_records_per_message <= 10_000 or self.publish.linger_ms < 0:
            yield ConfigError("publish.max_records_per_message must be 1..10000 and linger_ms >= 0")
        if not 1 <= self.publish.head_interval_s <= 86_400:
            yield ConfigError("publish.head_interval_s must be 1..86400 seconds")
        if self.api is not None:
            yield from self.api.problems()
        if not 1 <= self.mqtt.max_inflight <= 65_535:
            yield ConfigError("mqtt.max_inflight must be 1..65535")
        yield from self._chain_problems()
        yield from self._target_problems()
        yield from self._source_problems()
        if is_region(self.region):
            yield from audience_problems(self.region, self.audiences)

    def _chain_problems(self) -> Iterator[ConfigError]:
        if self.chain.kind in ("evm", "fisco2") and not self.chain.url:
            yield ConfigError(f"chain.kind = '{self.chain.kind}' needs chain.url (the node's JSON-RPC endpoint)")
        if self.chain.kind == "fisco2" and not self.chain.contract:
            yield ConfigError(
                "chain.kind = 'fisco2' needs chain.contract: deploy Anchor with FISCO's 国密 toolchain "
                "(SM3 selectors) and give its address"
            )
        if not 0 <= self.chain.confirmations <= 10_000:
            yield ConfigError("chain.confirmations must be 0..10000")

    def _source_problems(self) -> Iterator[ConfigError]:
        if not 1 <= self.ble.max_connections <= 64 or self.ble.silence_s <= 0:
            yield ConfigError("ble.max_connections must be 1..64 and ble.silence_s > 0")
        names = self.ble.adapters
        if (
            self.ble.scan_stall_s < 5
            or not names
            or len(set(names)) != len(names)
            or not all(a.startswith("hci") and a[3:].isdigit() for a in names)
        ):
            yield ConfigError(
                "ble.scan_stall_s must be at least 5 and ble.adapter adapter names like hci0 "
                '(several: "hci0,hci1", each once)'
            )
        if self.sim.devices < 0 or self.sim.interval_s <= 0:
            yield ConfigError("sim.devices must be >= 0 and sim.interval_s > 0")
        if not 1 <= self.retention.seen_max <= 100_000:
            yield ConfigError("retention.seen_max must be 1..100000 (unpaired devices listed at once)")

    def validated(self) -> GatewayConfig:
        """Check cross-field rules (the first broken one is raised); returns self so it chains after construction."""
        for problem in self.problems():
            raise problem
        return self


# Durations: (lowest, highest, unit). Generous, but finite and never negative.
_RANGES: dict[str, tuple[float, float, str]] = {
    "batch.max_age_s": (0.01, 86_400, "seconds"),
    "publish.linger_ms": (0, 10_000, "milliseconds"),
    "mqtt.keepalive_s": (1, 65_535, "seconds"),  # MQTT's keep alive is a 16-bit number of seconds
    "chain.poll_s": (0.01, 3_600, "seconds"),
    "sim.interval_s": (0.001, 3_600, "seconds"),
    "ble.silence_s": (0.1, 3_600, "seconds"),
    "ble.connect_timeout_s": (1, 300, "seconds"),
    "ble.scan_stall_s": (5, 86_400, "seconds"),
    "retention.max_age_days": (0.001, 3_660, "days"),
    "retention.interval_s": (1, 86_400, "seconds"),
    "retention.seen_ttl_s": (1, 86_400, "seconds"),
    "period_s": (1, 366 * 86_400, "seconds"),  # rollup[i].period_s
    "poll_s": (0.01, 3_600, "seconds"),  # rollup[i].poll_s
}
_DURATIONS = [tuple(k.split(".")) for k in _RANGES if "." in k]

_SECTIONS: dict[str, type] = {
    "mqtt": MqttConfig,
    "batch": BatchConfig,
    "publish": PublishConfig,
    "chain": ChainConfig,
    "sim": SimConfig,
    "ble": BleConfig,
    "retention": RetentionConfig,
    "api": ApiConfig,
}
_TOP_KEYS = {
    "id": "gateway_id",
    "region": "region",
    "state_dir": "state_dir",
    "key_file": "key_file",
    "source": "source",
}


def _target_error(where: str, name: str) -> ConfigError:
    return ConfigError(f"{where} {name!r} is not a chain of the alliance topology; use one of: {', '.join(TARGETS)}")


def _allow_entry(entry: str, origin: str) -> str:
    from gateway.registry import RegistryError, normalise

    try:
        return normalise(entry)
    except RegistryError as exc:
        raise ConfigError(f"{origin}: [ble] allow: {exc}") from None


def _coerce_value(cls: type, section: str, key: str, value: Any, origin: str) -> Any:
    """One setting of a section, checked against its field's type (raises ConfigError naming it)."""
    known = {f.name: f for f in fields(cls)}
    if key not in known:
        raise ConfigError(f"{origin}: unknown setting [{section}] {key} (known: {', '.join(sorted(known))})")
    default = getattr(cls(), key)
    if isinstance(default, frozenset):
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"{origin}: [{section}] {key} must be a list of strings")
        value = frozenset(_allow_entry(x, origin) for x in value)
    elif isinstance(default, Path) or key.endswith(("_file", "_dir")):
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: [{section}] {key} must be a path string")
        value = Path(value)
    elif isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{origin}: [{section}] {key} must be true or false")
    elif isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: [{section}] {key} must be an integer")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{origin}: [{section}] {key} must be a number")
        value = float(value)
    elif (isinstance(default, str) or default is None) and not isinstance(value, str):
        raise ConfigError(f"{origin}: [{section}] {key} must be a string")
    return value


def _coerce(
    cls: type, section: str, raw: dict[str, Any], origin: str, problems: list[ConfigError] | None = None
) -> Any:
    """A section's dataclass. With ``problems``, bad settings are collected there and left at their default."""
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            kwargs[key] = _coerce_value(cls, section, key, value, origin)
        except ConfigError as exc:
            if problems is None:
                raise
            problems.append(exc)
    return cls(**kwargs)


def _rollup(raw: dict[str, Any], i: int, origin: str) -> RollupConfig:
    rest = dict(raw)
    target = rest.pop("target", None)
    if not isinstance(target, str):
        raise ConfigError(f'{origin}: rollup[{i}] needs target = "<chain name>" (e.g. health_supervision)')
    period = rest.pop("period_s", 3600.0)
    if isinstance(period, bool) or not isinstance(period, int | float):
        raise ConfigError(f"{origin}: rollup[{i}].period_s must be a number")
    if "target" in rest:
        raise ConfigError(f"{origin}: rollup[{i}] sets target twice")
    chain = _coerce(ChainConfig, f"rollup[{i}]", rest, origin)
    if chain.kind not in ("evm", "fisco2", "inproc", "none"):
        raise ConfigError(f"{origin}: rollup[{i}].kind must be evm or fisco2")
    return RollupConfig(target, float(period), replace(chain, target=target))


def _top_setting(key: str, v: Any, origin: str) -> tuple[str, Any]:
    if key not in _TOP_KEYS:
        raise ConfigError(f"{origin}: unknown setting [gateway] {key} (known: {', '.join(_TOP_KEYS)})")
    name = _TOP_KEYS[key]
    if name in ("state_dir", "key_file"):
        if not isinstance(v, str):
            raise ConfigError(f"{origin}: [gateway] {key} must be a path string")
        v = Path(v)
    elif not isinstance(v, str):
        raise ConfigError(f"{origin}: [gateway] {key} must be a string")
    if name == "source" and v not in ("sim", "ble"):
        raise ConfigError(f"{origin}: [gateway] source must be 'ble' (bleak, the platform's adapter) or 'sim'")
    return name, v


def _gateway_section(value: Any, origin: str, top: dict[str, Any], problems: list[ConfigError]) -> None:
    if not isinstance(value, dict):
        problems.append(ConfigError(f"{origin}: [gateway] must be a table"))
        return
    for key, v in value.items():
        try:
            name, top[name] = _top_setting(key, v, origin)
        except ConfigError as exc:
            problems.append(exc)


def _rollup_section(value: Any, origin: str, top: dict[str, Any], problems: list[ConfigError]) -> None:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(ConfigError(f"{origin}: rollup must be an array of tables ([[rollup]])"))
        return
    rollups: list[RollupConfig] = []
    for i, v in enumerate(value):
        try:
            rollups.append(_rollup(v, i, origin))
        except ConfigError as exc:
            problems.append(exc)
    top["rollups"] = tuple(rollups)


def check_data(data: dict[str, Any], origin: str = "<config>") -> tuple[GatewayConfig | None, list[ConfigError]]:
    """Every problem of a parsed TOML document, each naming its setting, and the configuration when there is none.

    A setting with the wrong type or value is reported and left at its default so that the rest can still
    be checked; the cross-field rules then run on what remains. ``tiyi run`` raises the first problem.
    """
    problems: list[ConfigError] = []
    top: dict[str, Any] = {}
    for section, value in data.items():
        if section == "gateway":
            _gateway_section(value, origin, top, problems)
        elif section == "rollup":
            _rollup_section(value, origin, top, problems)
        elif section == "audience":
            top["audiences"], found = parse_audiences(value)
            problems += (ConfigError(f"{origin}: {p}") for p in found)
        elif section in _SECTIONS:
            if not isinstance(value, dict):
                problems.append(ConfigError(f"{origin}: [{section}] must be a table"))
                continue
            top[section] = _coerce(_SECTIONS[section], section, value, origin, problems)
        else:
            problems.append(
                ConfigError(
                    f"{origin}: unknown section [{section}] "
                    f"(known: gateway, {', '.join(_SECTIONS)}, [[rollup]], [[audience]])"
                )
            )
    if "chain" in top and top["chain"].kind not in ("inproc", "evm", "fisco2", "none"):
        problems.append(ConfigError(f"{origin}: [chain] kind must be one of evm, fisco2, none (inproc: demo only)"))
        top["chain"] = replace(top["chain"], kind=ChainConfig().kind)
    if "mqtt" in top and top["mqtt"].protocol not in ("auto", "5", "3.1.1"):
        problems.append(ConfigError(f"{origin}: [mqtt] protocol must be one of auto, 5, 3.1.1"))
        top["mqtt"] = replace(top["mqtt"], protocol=MqttConfig().protocol)
    cfg = GatewayConfig(**top)
    problems += (ConfigError(f"{origin}: {exc}") for exc in cfg.problems())
    return (None if problems else cfg), problems


def parse_config(data: dict[str, Any], origin: str = "<config>") -> GatewayConfig:
    """Build a validated config from parsed TOML (the first problem is raised)."""
    cfg, problems = check_data(data, origin)
    if problems:
        raise problems[0]
    assert cfg is not None
    return cfg


def read_config_data(path: Path) -> dict[str, Any]:
    """The TOML document of a config file; unreadable, non-UTF-8 or invalid TOML is one ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_config(path: Path) -> GatewayConfig:
    return parse_config(read_config_data(path), str(path))
