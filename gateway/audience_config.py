"""``[[audience]]``: the platforms that receive a minimised, consent-filtered view of the site's readings.

Each audience is a platform account with one purpose (what its members consented to), a jurisdiction (where
it processes data: the cross-border policy compares it with the gateway's region), an optional legal basis
for cross-border readings, and minimisation rules per record kind (``"*"``: every other kind). Parsed once
into frozen dataclasses; every bad key is reported with its place (``audience[1].minimise.heart_rate.round``).

    [[audience]]
    id = "platform-health"           # its broker account and topic level: tiyi/v1/{region}/{gw}/aud/{id}/...
    purpose = "health_management"
    jurisdiction = "mainland"        # mainland, hongkong or macao
    encrypt = true                   # SM4-GCM under the audience's key (tiyi keys audience new ID)
    min_n = 5                        # across a border without a legal basis only de-identified aggregates of
                                     # the readings of at least this many distinct wearers flow (default 5)
    [audience.minimise."*"]
    drop_raw = true
    time_s = 60                      # times floored to whole minutes
    round = 0                        # values rounded to whole numbers
    [audience.minimise.heart_rate]
    aggregate = true                 # one summary per device and wearer per batch instead of each reading
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from edge.consent import PURPOSES
from edge.errors import CodecError
from edge.record import check_id
from edge.view import DEFAULT_MIN_N, MAX_MIN_N
from gateway.errors import ConfigError

JURISDICTIONS = ("mainland", "hongkong", "macao")
# The legal grounds a cross-border flow of individual readings may rest on (docs/privacy.md, the
# cross-border table); which pairs each one covers is decided by edge.crossborder.
LEGAL_BASES = (
    "gba_standard_contract",
    "pipl_standard_contract",
    "cac_assessment",
    "pipl_certification",
    "recorded_basis",
)
MAX_ROUND_DIGITS = 9
MAX_TIME_S = 86_400
MAX_LEGAL_REF = 200
MAX_AUDIENCES = 32
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class MinimiseConfig:
    """One kind's rule; the defaults change nothing."""

    drop_raw: bool = False
    time_s: int = 0  # 0: times as recorded; else floored to a multiple of this many seconds
    round: int | None = None  # decimals kept in every number of ``val``; None: as recorded
    aggregate: bool = False  # one aggregate record per (device, wearer) per batch instead of each reading


@dataclass(frozen=True, slots=True)
class AudienceConfig:
    id: str
    purpose: str
    jurisdiction: str
    legal_basis: str = ""  # "" (none), or one of LEGAL_BASES
    legal_basis_ref: str = ""  # the operator's record of the ground (contract number, filing); required for some
    unbound: bool = False  # records of devices nobody is bound to: withheld unless true
    encrypt: bool = False
    minimise: tuple[tuple[str, MinimiseConfig], ...] = ()  # (kind or "*", rule), sorted by kind
    # Fewest readings in a de-identified aggregate, the only thing that crosses a border without a legal basis
    # (fewer are withheld: a small group would single a member out).
    min_n: int = DEFAULT_MIN_N

    @property
    def rules(self) -> dict[str, MinimiseConfig]:
        return dict(self.minimise)


_REQUIRED = ("id", "purpose", "jurisdiction")
_KNOWN = {f.name for f in fields(AudienceConfig)}
_RULE_KNOWN = {f.name for f in fields(MinimiseConfig)}


def _rule(raw: Any, where: str) -> tuple[MinimiseConfig | None, list[ConfigError]]:
    if not isinstance(raw, dict):
        return None, [ConfigError(f"{where} must be a table")]
    problems: list[ConfigError] = []
    kw: dict[str, Any] = {}
    for key, v in raw.items():
        name = f"{where}.{key}"
        if key not in _RULE_KNOWN:
            problems.append(ConfigError(f"unknown setting {name} (known: {', '.join(sorted(_RULE_KNOWN))})"))
        elif key in ("drop_raw", "aggregate"):
            if not isinstance(v, bool):
                problems.append(ConfigError(f"{name} must be true or false"))
            else:
                kw[key] = v
        elif key == "time_s":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TIME_S:
                problems.append(ConfigError(f"{name} must be a whole number of seconds from 0 to {MAX_TIME_S}"))
            else:
                kw[key] = v
        elif isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ROUND_DIGITS:
            problems.append(ConfigError(f"{name} must be a number of decimals from 0 to {MAX_ROUND_DIGITS}"))
        else:
            kw[key] = v
    return MinimiseConfig(**kw), problems


def _minimise(raw: Any, where: str) -> tuple[tuple[tuple[str, MinimiseConfig], ...], list[ConfigError]]:
    if not isinstance(raw, dict):
        return (), [ConfigError(f"{where} must be a table of rules per record kind ([audience.minimise.<kind>])")]
    out: list[tuple[str, MinimiseConfig]] = []
    problems: list[ConfigError] = []
    for kind, rule_raw in raw.items():
        if kind != "*" and not _KIND.match(kind):
            problems.append(ConfigError(f'{where}.{kind}: a record kind is snake_case (e.g. heart_rate) or "*"'))
            continue
        rule, found = _rule(rule_raw, f"{where}.{kind}")
        problems += found
        if rule is not None:
            out.append((kind, rule))
    return tuple(sorted(out, key=lambda kv: kv[0])), problems


def _text(raw: Mapping[str, Any], key: str, where: str, problems: list[ConfigError]) -> str:
    v = raw.get(key, "")
    if not isinstance(v, str):
        problems.append(ConfigError(f"{where}.{key} must be a string"))
        return ""
    return v


def _flag(raw: Mapping[str, Any], key: str, where: str, problems: list[ConfigError]) -> bool:
    v = raw.get(key, False)
    if not isinstance(v, bool):
        problems.append(ConfigError(f"{where}.{key} must be true or false"))
        return False
    return v


def _legal_basis(raw: Mapping[str, Any], where: str, problems: list[ConfigError]) -> tuple[str, str]:
    basis = _text(raw, "legal_basis", where, problems)
    if basis and basis not in LEGAL_BASES:
        problems.append(ConfigError(f"{where}.legal_basis {basis!r} is not one of: {', '.join(LEGAL_BASES)}"))
    ref = _text(raw, "legal_basis_ref", where, problems)
    if len(ref) > MAX_LEGAL_REF or any(not c.isprintable() for c in ref):
        problems.append(ConfigError(f"{where}.legal_basis_ref must be at most {MAX_LEGAL_REF} printable characters"))
    if basis == "recorded_basis" and not ref.strip():
        problems.append(ConfigError(f"{where}.legal_basis_ref is required with legal_basis = 'recorded_basis'"))
    if ref and not basis:
        problems.append(ConfigError(f"{where}.legal_basis_ref is set but legal_basis is not"))
    return basis, ref


def _min_n(raw: Mapping[str, Any], where: str, problems: list[ConfigError]) -> int:
    v = raw.get("min_n", DEFAULT_MIN_N)
    if type(v) is not int or not 1 <= v <= MAX_MIN_N:
        problems.append(ConfigError(f"{where}.min_n must be a whole number of wearers, 1..{MAX_MIN_N}"))
        return DEFAULT_MIN_N
    return v


def parse_audience(raw: Any, i: int) -> tuple[AudienceConfig | None, list[ConfigError]]:
    """One ``[[audience]]`` table: the audience, or None, and every problem found (each naming its key)."""
    where = f"audience[{i}]"
    if not isinstance(raw, dict):
        return None, [ConfigError(f"{where} must be a table ([[audience]])")]
    problems = [
        ConfigError(f"unknown setting {where}.{k} (known: {', '.join(sorted(_KNOWN))})") for k in raw if k not in _KNOWN
    ]
    for key in _REQUIRED:
        if key not in raw:
            problems.append(ConfigError(f"{where} needs {key}"))
    aud = _text(raw, "id", where, problems)
    if "id" in raw and isinstance(raw["id"], str):
        try:
            check_id(aud, f"{where}.id")
        except CodecError as exc:
            problems.append(ConfigError(str(exc)))
    purpose = _text(raw, "purpose", where, problems)
    if "purpose" in raw and isinstance(raw["purpose"], str) and purpose not in PURPOSES:
        problems.append(ConfigError(f"{where}.purpose {purpose!r} is not one of: {', '.join(PURPOSES)}"))
    jur = _text(raw, "jurisdiction", where, problems)
    if "jurisdiction" in raw and isinstance(raw["jurisdiction"], str) and jur not in JURISDICTIONS:
        problems.append(ConfigError(f"{where}.jurisdiction {jur!r} is not one of: {', '.join(JURISDICTIONS)}"))
    basis, ref = _legal_basis(raw, where, problems)
    unbound = _flag(raw, "unbound", where, problems)
    encrypt = _flag(raw, "encrypt", where, problems)
    min_n = _min_n(raw, where, problems)
    minimise, found = _minimise(raw.get("minimise", {}), f"{where}.minimise")
    problems += found
    if problems:
        return None, problems
    return AudienceConfig(aud, purpose, jur, basis, ref, unbound, encrypt, minimise, min_n), []


def parse_audiences(raw: Any) -> tuple[tuple[AudienceConfig, ...], list[ConfigError]]:
    """The ``audience`` array of tables; ids must be distinct (each is a broker account and a topic level)."""
    if not isinstance(raw, list):
        return (), [ConfigError("audience must be an array of tables ([[audience]])")]
    if len(raw) > MAX_AUDIENCES:
        return (), [ConfigError(f"at most {MAX_AUDIENCES} audiences (each one costs a view per batch)")]
    out: list[AudienceConfig] = []
    problems: list[ConfigError] = []
    for i, item in enumerate(raw):
        aud, found = parse_audience(item, i)
        problems += found
        if aud is not None:
            if any(a.id == aud.id for a in out):
                problems.append(ConfigError(f"audience[{i}].id {aud.id!r} is configured twice"))
            out.append(aud)
    return tuple(out), problems


def audience_problems(region: str, audiences: tuple[AudienceConfig, ...]) -> Iterator[ConfigError]:
    """Cross-field rules that need the gateway's region: a legal basis that cannot cover this flow."""
    for i, a in enumerate(audiences):
        if not a.legal_basis:
            continue
        from edge.crossborder import Flow, decide, jurisdiction_of

        try:
            home = jurisdiction_of(region)
        except (CodecError, ValueError, KeyError):
            return  # an unknown region is reported on its own
        if str(home) == a.jurisdiction:
            yield ConfigError(
                f"audience[{i}].legal_basis {a.legal_basis!r} is set, but {region} and the audience are both "
                f"in {a.jurisdiction}: no cross-border flow needs it (remove it)"
            )
            continue
        decision = decide(region, a.jurisdiction, Flow.READING, a.legal_basis, a.legal_basis_ref)
        if not decision.allowed:
            yield ConfigError(
                f"audience[{i}].legal_basis {a.legal_basis!r} does not cover readings from {region} to "
                f"{a.jurisdiction}: {decision.explanation}"
            )
