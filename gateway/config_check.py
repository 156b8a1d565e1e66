"""``tiyi config check FILE``: every problem of a configuration at once, then what it means, secrets left out.

The file is parsed by the same code as ``tiyi run`` (:func:`gateway.config.check_data`); the only
difference is that every problem is listed instead of the first. With ``files`` (the default) the files
``tiyi run`` opens at start — the signing key, the MQTT password and TLS material — are checked too, by
the functions that open them there, so "OK" means the gateway gets past its start-up checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gateway.audience_config import MinimiseConfig
from gateway.config import GatewayConfig, check_data, read_config_data
from gateway.errors import ConfigError, GatewayError


@dataclass(frozen=True, slots=True)
class CheckResult:
    config: GatewayConfig | None
    problems: tuple[str, ...]


def _without_origin(message: str, origin: str) -> str:
    return message.removeprefix(f"{origin}: ")


def file_problems(cfg: GatewayConfig) -> Iterator[str]:
    """What ``tiyi run`` would refuse at start about the files the configuration names."""
    from gateway.keys import load_signer
    from gateway.mqtt import client_settings

    try:
        load_signer(cfg.signing_key_path)
    except GatewayError as exc:
        yield f"[gateway] key_file: {exc}"
    m = cfg.mqtt
    try:  # the same call as gateway.runtime.broker_settings: reads the password file, loads the TLS files
        client_settings(
            m.url,
            client_id=f"tiyi-{cfg.gateway_id}",
            username=m.username,
            password_file=m.password_file,
            ca_file=m.ca_file,
            cert_file=m.cert_file,
            key_file=m.key_file,
            keepalive=m.keepalive_s,
            max_inflight=m.max_inflight,
            protocol=m.protocol,
        )
    except (GatewayError, OSError, ValueError) as exc:
        yield str(exc) if "[mqtt]" in str(exc) else f"[mqtt]: {exc}"
    if cfg.api is not None:
        from gateway.api_tls import check_api_tls

        try:
            check_api_tls(cfg.api)
        except ConfigError as exc:
            yield f"[api]: {exc}"
    from gateway.audience_keys import AudienceKeyring

    for i, a in enumerate(cfg.audiences):
        if a.encrypt:
            try:
                AudienceKeyring(cfg.audience_key_dir, a.id).current()
            except GatewayError as exc:
                yield f"audience[{i}].encrypt: {exc}"


def check_file(path: Path, *, files: bool = True) -> CheckResult:
    """Read and check one configuration file. An unreadable file raises ConfigError (nothing was checked)."""
    origin = str(path)
    try:
        data = read_config_data(path)
    except ConfigError as exc:
        if "invalid TOML" not in str(exc) and "not UTF-8" not in str(exc):
            raise
        return CheckResult(None, (_without_origin(str(exc), origin),))
    cfg, problems = check_data(data, origin)
    found = [_without_origin(str(p), origin) for p in problems]
    if cfg is not None and files:
        found += file_problems(cfg)
    return CheckResult(cfg if not found else None, tuple(found))


def redact_url(url: str | None) -> str:
    """A URL without its password and query values (tokens), for a summary that may be pasted anywhere."""
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        query = "&".join(f"{kv.split('=', 1)[0]}=***" for kv in parts.query.split("&") if kv)
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _allow_summary(allow: frozenset[str]) -> str:
    """Counts only: Bluetooth addresses and IRKs identify people's devices and never go to a screen or log."""
    irk = sum(e.startswith("irk:") for e in allow)
    names = sum(e.startswith("name:") for e in allow)
    other = len(allow) - irk - names
    return f"{len(allow)} allowed in the file ({other} address, {names} name, {irk} IRK)"


def summary(cfg: GatewayConfig) -> list[str]:
    """The effective settings, one line per area, secrets and device identities left out."""
    m, c, b = cfg.mqtt, cfg.chain, cfg.ble
    tls = "on" if m.url.startswith("mqtts://") else "off"
    lines = [
        f"gateway    {cfg.gateway_id} (region {cfg.region}, source {cfg.source})",
        f"state      {cfg.state_dir} (journal {cfg.journal_path})",
        f"keys       signing {cfg.signing_key_path}; chain account {cfg.chain_key_path}; "
        f"device pseudonyms {cfg.pseudonym_key_path}",
        f"mqtt       {redact_url(m.url)} (protocol {m.protocol}, TLS {tls}, user {m.username or '-'}, "
        f"password file {m.password_file or '-'}, max in flight {m.max_inflight})",
        f"chain      {c.kind} {redact_url(c.url)} (target {cfg.chain_target}, contract {c.contract or '-'}, "
        f"confirmations {c.confirmations})",
        f"batches    close at {cfg.batch.max_records} records or {cfg.batch.max_age_s:g} s; "
        f"signed head every {cfg.publish.head_interval_s:g} s",
    ]
    if cfg.source == "ble":
        lines.append(
            f"ble        {_allow_summary(b.allow)}; adapters {', '.join(b.adapters)}, "
            f"{b.max_connections} connections each"
        )
    else:
        radio = " on an emulated radio (recorded once paired)" if cfg.sim.radio else ""
        lines.append(f"sim        {cfg.sim.devices} simulated devices every {cfg.sim.interval_s:g} s{radio}")
    for r in cfg.rollups:
        lines.append(f"rollup     {r.target} every {r.period_s:g} s on {r.chain.kind} {redact_url(r.chain.url)}")
    if cfg.api is not None:
        a = cfg.api
        scheme = "https" if a.tls else "http (plain, allowed on purpose)" if not a.loopback else "http"
        lines.append(f"api        {scheme} on {a.listen}:{a.port}; tokens in {cfg.api_token_path}")
    for aud in cfg.audiences:
        rules = ", ".join(f"{kind}: " + " ".join(_rule_words(rule)) for kind, rule in aud.minimise if _rule_words(rule))
        lines.append(
            f"audience   {aud.id}: {aud.purpose}, {aud.jurisdiction}"
            + (f", legal basis {aud.legal_basis}" if aud.legal_basis else "")
            + (", SM4-GCM" if aud.encrypt else ", not encrypted")
            + (", unbound devices too" if aud.unbound else "")
            + (f"; {rules}" if rules else "")
        )
    return lines


def _rule_words(rule: MinimiseConfig) -> list[str]:
    words = ["no raw"] if rule.drop_raw else []
    if rule.time_s:
        words.append(f"time/{rule.time_s}s")
    if rule.round is not None:
        words.append(f"round {rule.round}")
    if rule.aggregate:
        words.append("aggregated")
    return words


def config_check_main(path: Path, *, files: bool = True) -> int:
    """Print the problems (exit 1) or OK and the summary (exit 0)."""
    result = check_file(path, files=files)
    if result.problems:
        for problem in result.problems:
            print(f"PROBLEM {problem}")
        n = len(result.problems)
        print(f"{path}: {n} problem{'s' if n != 1 else ''}; `tiyi run` would refuse this configuration")
        return 1
    assert result.config is not None
    print(f"{path}: OK" + ("" if files else " (files not checked)"))
    for line in summary(result.config):
        print(f"  {line}")
    return 0
