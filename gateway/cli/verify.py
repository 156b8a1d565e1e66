"""``tiyi verify``: a platform's independent check of everything a gateway published.

Listens on the broker (or reads a capture file), then hands the messages to the pure
:class:`anchoring.stream_verifier.StreamVerifier`, which trusts nothing it did not check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from anchoring.capture import read_capture, write_capture_item
from anchoring.errors import CaptureError
from anchoring.readers import address, open_reader, point_verifier
from anchoring.stream_verifier import StreamVerifier, VerificationReport
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import AnchorChecker, ChainAnchorChecker
from anchoring.view_verify import AudienceReport, AudienceVerifier, parse_audience_keys
from edge import cbor
from edge.consent import PURPOSES
from edge.errors import EdgeError
from edge.record import check_id
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from gateway.errors import ConfigError
from gateway.mqtt import CLI_NAMES, PahoSubscriber, client_settings, read_secret_file


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """``tiyi verify`` (and ``--bundle``), parsed once (see ``gateway.cli.main`` for each option's help)."""

    broker: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    region: str = "+"
    gateway: str = "+"
    capture: Path | None = None
    bundle: Path | None = None
    save: Path | None = None
    rpc: str | None = None
    contract: str | None = None
    rollup_rpc: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    registry: str | None = None
    operator: str | None = None
    tofu: bool = False
    idle: float = 5.0
    wait: float = 60.0
    duration: float | None = None
    require_complete: bool = False
    json: bool = False
    audience: str | None = None  # verify this audience's view stream (contract 1.3) instead of the full stream
    audience_purpose: str | None = None  # the purpose agreed with the gateway: never taken from a message
    audience_key: Path | None = None  # the audience's SM4 keys, lines "kid hex"
    audience_clear: bool = False  # with keys: accept views in clear (kid "") instead of reporting not_sealed
    audience_from: int | None = None  # a late joiner's declared first batch (views before it: not checked)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> VerifyOptions:
        a = vars(args)
        return cls(
            broker=a["broker"],
            ca_file=a["ca_file"],
            cert_file=a["cert_file"],
            key_file=a["key_file"],
            username=a["username"],
            password_file=a["password_file"],
            region=a["region"],
            gateway=a["gateway"],
            capture=a["capture"],
            bundle=a["bundle"],
            save=a["save"],
            rpc=a["rpc"],
            contract=a["contract"],
            rollup_rpc=tuple(a["rollup_rpc"]),
            key=tuple(a["key"]),
            registry=a["registry"],
            operator=a["operator"],
            tofu=a["tofu"],
            idle=a["idle"],
            wait=a["wait"],
            duration=a["duration"],
            require_complete=a["require_complete"],
            json=a["json"],
            audience=a.get("audience"),
            audience_purpose=a.get("audience_purpose"),
            audience_key=a.get("audience_key"),
            audience_clear=bool(a.get("audience_clear", False)),
            audience_from=a.get("audience_from"),
        )


def _load_pem_key(path: Path, what: str) -> Verifier:
    try:
        return load_public_key_pem(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: not an SM2 public key ({exc})") from exc


def pinned_keys(specs: Iterable[str]) -> tuple[dict[str, list[Verifier]], list[Verifier]]:
    """``--key GW=FILE`` pins a key for one gateway; a bare ``--key FILE`` binds to the only gateway in view."""
    pinned: dict[str, list[Verifier]] = {}
    unbound: list[Verifier] = []
    for spec in specs:
        gw, sep, path = spec.partition("=")
        if sep and gw and path:
            try:
                check_id(gw, "--key gateway id")
            except EdgeError as exc:
                raise ConfigError(str(exc)) from exc
            pinned.setdefault(gw, []).append(_load_pem_key(Path(path), "--key"))
        else:
            unbound.append(_load_pem_key(Path(spec), "--key"))
    return pinned, unbound


def chain_checker(opts: VerifyOptions) -> AnchorChecker | None:
    """The batches' chain, with the platform's own pin of the contract: a receipt never chooses it."""
    if opts.rpc is None:
        if opts.contract is not None:
            raise ConfigError("--contract needs --rpc (the chain the contract is on)")
        return None
    contract = opts.contract or opts.registry
    if contract is None:
        raise ConfigError("--rpc needs --contract ADDRESS (or --registry ADDRESS): the Anchor contract to trust")
    if opts.registry is not None and opts.contract is not None and opts.registry != opts.contract:
        raise ConfigError("--registry and --contract name different contracts; anchors and registry live in one")
    return ChainAnchorChecker(f"anchor chain {opts.rpc}", open_reader(opts.rpc, address(contract, "--rpc contract")))


def rollup_checkers(specs: Iterable[str]) -> dict[str, AnchorChecker]:
    """``TARGET=CONTRACT@URL``: each roll-up target's chain and the Anchor contract on it."""
    out: dict[str, AnchorChecker] = {}
    for spec in specs:
        target, sep, rest = spec.partition("=")
        contract, at, url = rest.partition("@")
        if not sep or not target or not at or not contract or not url:
            raise ConfigError(
                f"--rollup-rpc {spec!r}: expected TARGET=CONTRACT@URL, e.g. "
                "health_supervision=0x5FbD…0aa3@http://node:8545"
            )
        if target in out:
            raise ConfigError(f"--rollup-rpc: {target} given twice")
        out[target] = ChainAnchorChecker(
            f"{target} {url}",
            open_reader(url, address(contract, f"--rollup-rpc {target} contract"), f"--rollup-rpc {target}"),
        )
    return out


def trust_policy(opts: VerifyOptions, chain: AnchorChecker | None) -> TrustPolicy:
    """Exactly one trust root: pinned keys, the on-chain registry, or an explicit --tofu."""
    roots = [
        name
        for name, given in (("--key", bool(opts.key)), ("--registry", opts.registry is not None), ("--tofu", opts.tofu))
        if given
    ]
    if len(roots) != 1:
        raise ConfigError(
            "give exactly one trust root: --key [GW=]FILE (pinned), --registry CONTRACT (on-chain, "
            "with --rpc), or --tofu (trust the key the gateway announces: never counts as verified)"
            + (f"; got {' and '.join(roots)}" if roots else "")
        )
    if opts.operator is not None and opts.registry is None:
        raise ConfigError("--operator needs --registry")
    if opts.registry is not None:
        if chain is None:
            raise ConfigError(
                "--registry needs --rpc: a key is judged at the block the chain says its batch was anchored in"
            )
        reader = chain.client if isinstance(chain, ChainAnchorChecker) else None
        assert reader is not None
        operator = None if opts.operator is None else address(opts.operator, "--operator")
        return TrustPolicy(registry=reader.gateway, point_verifier=point_verifier, operator=operator)
    if opts.tofu:
        return TrustPolicy(tofu=load_public_key_pem)
    pinned, unbound = pinned_keys(opts.key)
    return TrustPolicy(pinned=pinned, unbound=unbound)


class Liveness:
    """Whether the gateways heard so far could still be sending, from their own status messages.

    Quiet time only means "the stream is over" while every gateway heard is up or stopped cleanly. A
    gateway whose last status is its last will (``offline`` with ``t`` 0: it died) comes back and re-sends
    what it still holds; before anything was heard, the stream has not started. Either way the listener is
    waiting for a gateway, not watching a quiet stream (seen on a starved CPU: a verifier that gave up
    during a run of crashes and restarts, or before the first gateway connected).
    """

    def __init__(self) -> None:
        self.heard = False
        self._down: set[str] = set()

    def feed(self, topic: str, payload: bytes) -> None:
        self.heard = True
        if not topic.endswith("/status"):
            return
        try:
            msg = cbor.loads(payload)
        except ValueError:
            return  # the verifier reports it; here it says nothing about liveness
        if not isinstance(msg, dict):
            return
        gw = topic.rsplit("/", 2)[-2]
        if msg.get("state") == "offline" and msg.get("t") == 0:
            self._down.add(gw)
        else:
            self._down.discard(gw)

    @property
    def waiting(self) -> bool:
        """True while nothing was heard or some gateway is down by its last will."""
        return not self.heard or bool(self._down)


class _Sink(Protocol):
    def feed(self, topic: str, payload: bytes, retained: bool = False) -> None: ...


def audience_verifier(opts: VerifyOptions, trust: TrustPolicy) -> AudienceVerifier:
    """``--audience AUD --audience-purpose P [--audience-key FILE]``: the audience and its purpose are the
    platform's own settings; the key file is a secret (owner-only, like a password file)."""
    assert opts.audience is not None
    if opts.audience_purpose not in PURPOSES:
        raise ConfigError(f"--audience needs --audience-purpose, one of: {', '.join(PURPOSES)}")
    if opts.rollup_rpc or opts.require_complete:
        raise ConfigError("--rollup-rpc and --require-complete check the full stream; they do not apply to --audience")
    try:
        check_id(opts.audience, "--audience")
        if opts.gateway != "+":
            check_id(opts.gateway, "--gateway")
    except EdgeError as exc:
        raise ConfigError(str(exc)) from exc
    keys = None
    if opts.audience_key is not None:
        try:
            keys = parse_audience_keys(read_secret_file(opts.audience_key, "--audience-key"))
        except EdgeError as exc:
            raise ConfigError(f"--audience-key {opts.audience_key}: {exc}") from exc
    if opts.audience_from is not None and (type(opts.audience_from) is not int or opts.audience_from < 1):
        raise ConfigError(f"--audience-from is a batch number from 1, not {opts.audience_from!r}")
    # --gateway restricts what is verified on a capture as on a broker (there it is the subscription too).
    gateways = None if opts.gateway == "+" else frozenset({opts.gateway})
    return AudienceVerifier(
        trust,
        opts.audience,
        opts.audience_purpose,
        keys,
        clear=opts.audience_clear,
        start=opts.audience_from,
        gateways=gateways,
    )


async def _listen(opts: VerifyOptions, verifier: _Sink, save: BinaryIO | None) -> int:
    if opts.broker is None:
        raise ConfigError("give exactly one of --broker URL or --capture FILE")
    topic = f"tiyi/v1/{opts.region}/{opts.gateway}/#"
    settings = client_settings(
        opts.broker,
        client_id=f"tiyi-verify-{int(time.time())}",
        username=opts.username,
        password_file=opts.password_file,
        ca_file=opts.ca_file,
        cert_file=opts.cert_file,
        key_file=opts.key_file,
        names=CLI_NAMES,
    )
    count = 0
    start = time.monotonic()
    live = Liveness()
    sub = PahoSubscriber(settings, topic)
    async with sub:
        print(f"listening on {topic} at {opts.broker}", file=sys.stderr, flush=True)  # a caller may wait for it
        it = sub.__aiter__()
        last = time.monotonic()  # quiet time counts from the subscription, not from before the connect
        while True:
            now = time.monotonic()
            if opts.duration is not None and now - start >= opts.duration:
                break
            wait = (opts.wait if live.waiting else opts.idle) - (now - last)
            if opts.duration is not None:
                wait = min(wait, opts.duration - (now - start))
            if wait <= 0:
                break
            try:
                msg = await asyncio.wait_for(it.__anext__(), wait)
            except TimeoutError:
                continue  # quiet for the whole limit: the loop's check ends it
            except StopAsyncIteration:
                break
            last = time.monotonic()
            live.feed(msg.topic, msg.payload)
            verifier.feed(msg.topic, msg.payload, msg.retain)
            if save is not None:
                write_capture_item(save, msg.topic, msg.payload, msg.retain, int(time.time() * 1000))
            count += 1
            if sys.stderr.isatty() and count % 100 == 0:
                print(f"\rreceived {count} messages", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return count


def verify_main(opts: VerifyOptions) -> int:
    if (opts.broker is None) == (opts.capture is None):
        raise ConfigError("give exactly one of --broker URL or --capture FILE")
    for flag, value in (("--idle", opts.idle), ("--wait", opts.wait), ("--duration", opts.duration)):
        if value is not None and not (math.isfinite(value) and 0 < value <= 86_400):
            raise ConfigError(f"{flag} must be a number of seconds from 0 to 86400, not {value!r}")
    if opts.audience is None and (
        opts.audience_purpose is not None
        or opts.audience_key is not None
        or opts.audience_clear
        or opts.audience_from is not None
    ):
        raise ConfigError("--audience-purpose, --audience-key, --audience-clear and --audience-from go with --audience")
    chain = chain_checker(opts)
    trust = trust_policy(opts, chain)
    verifier: StreamVerifier | AudienceVerifier = (
        audience_verifier(opts, trust) if opts.audience is not None else StreamVerifier(trust)
    )
    rollups = rollup_checkers(opts.rollup_rpc)
    if opts.capture is not None:
        try:
            with opts.capture.open("rb") as fh:
                n = 0
                for n, item in enumerate(read_capture(fh), start=1):  # noqa: B007 - n is the count afterwards
                    verifier.feed(item.topic, item.payload, item.retained)
        except OSError as exc:
            raise ConfigError(f"--capture {opts.capture}: {exc.strerror}") from exc
        except CaptureError as exc:
            # Verify what was captured intact; the damage itself is reported, not hidden.
            print(f"warning: {exc}; verifying the {n} message(s) before it", file=sys.stderr)
    else:
        with contextlib.ExitStack() as stack:
            save: BinaryIO | None = stack.enter_context(opts.save.open("ab")) if opts.save else None
            n = asyncio.run(_listen(opts, verifier, save))
    report: VerificationReport | AudienceReport
    if isinstance(verifier, AudienceVerifier):
        report = verifier.report(chain)
    else:
        report = verifier.report(
            chain, require_complete=opts.require_complete, rollup_targets=list(rollups), rollup_chains=rollups
        )
    if opts.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"{n} messages read")
        print(report.summary())
    return int(report.outcome)
