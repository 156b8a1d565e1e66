"""``tiyi verify``: a platform's independent check of everything a gateway published.

Listens on the broker (or reads a capture file), then hands the messages to the pure
:class:`anchoring.stream_verifier.StreamVerifier`, which trusts nothing it did not check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from anchoring.capture import read_capture, write_capture_item
from anchoring.chain import KeyPeriod
from anchoring.errors import CaptureError
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import StreamVerifier
from edge.errors import EdgeError
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from gateway.errors import ConfigError
from gateway.mqtt import BrokerSettings, PahoSubscriber


def trusted_keys(paths: list[Path]) -> dict[str, Verifier] | None:
    if not paths:
        return None
    keys: dict[str, Verifier] = {}
    for p in paths:
        try:
            v = load_public_key_pem(p.read_text(encoding="ascii"))
        except OSError as exc:
            raise ConfigError(f"--key {p}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"--key {p}: not an SM2 public key ({exc})") from exc
        keys[v.key_id] = v
    return keys


async def _listen(args: argparse.Namespace, verifier: StreamVerifier, save: BinaryIO | None) -> int:
    topic = f"tiyi/v1/{args.region}/{args.gateway}/#"
    settings = BrokerSettings.from_url(args.broker, client_id=f"tiyi-verify-{int(time.time())}")
    count = 0
    start = last = time.monotonic()
    sub = PahoSubscriber(settings, topic)
    async with sub:
        it = sub.__aiter__()
        while True:
            now = time.monotonic()
            if args.duration is not None and now - start >= args.duration:
                break
            wait = args.idle - (now - last)
            if args.duration is not None:
                wait = min(wait, args.duration - (now - start))
            if wait <= 0:
                break
            try:
                msg = await asyncio.wait_for(it.__anext__(), wait)
            except (TimeoutError, StopAsyncIteration):
                break
            last = time.monotonic()
            verifier.feed(msg.topic, msg.payload, msg.retain)
            if save is not None:
                write_capture_item(save, msg.topic, msg.payload, msg.retain, int(time.time() * 1000))
            count += 1
            if sys.stderr.isatty() and count % 100 == 0:
                print(f"\rreceived {count} messages", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return count


def anchor_checker(rpc: str | None) -> Callable[[AnchorReceipt], str | None] | None:
    if rpc is None:
        return None
    from anchoring.evm import EvmChainClient
    from anchoring.verify_anchor import check_receipt

    clients: dict[bytes, EvmChainClient] = {}

    def check(receipt: AnchorReceipt) -> str | None:
        client = clients.get(receipt.contract)
        if client is None:
            client = clients[receipt.contract] = EvmChainClient.reader(rpc, receipt.contract)
        if client.chain_id != receipt.chain_id:
            return f"receipt names chain {receipt.chain_id} but {rpc} is chain {client.chain_id}"
        return check_receipt(receipt, client)

    return check


def rollup_checker(specs: list[str] | None) -> Callable[[str, AnchorReceipt], str | None] | None:
    """``TARGET=URL`` pairs: each roll-up target's chain, to check roll-up anchors on."""
    if not specs:
        return None
    urls: dict[str, str] = {}
    for spec in specs:
        target, sep, url = spec.partition("=")
        if not sep or not target or not url:
            raise ConfigError(f"--rollup-rpc {spec!r}: expected TARGET=URL, e.g. health_supervision=http://node:8545")
        urls[target] = url
    checkers = {t: anchor_checker(u) for t, u in urls.items()}

    def check(target: str, receipt: AnchorReceipt) -> str | None:
        checker = checkers.get(target)
        if checker is None:
            return f"no --rollup-rpc given for {target}"
        return checker(receipt)

    return check


def registry_lookup(rpc: str, contract: str) -> Callable[[str], list[tuple[Verifier, KeyPeriod]]]:
    """Each gateway's key history from the Anchor contract's registry events: every key its operator
    vouched for and the blocks it covers. Unknown gateways have none; a revocation ends the last one."""
    from anchoring.chain import key_periods
    from anchoring.evm import EvmChainClient
    from edge.sm2 import GmsslSm2Verifier, Sm2PublicKey

    client = EvmChainClient.reader(rpc, contract)

    def lookup(gw: str) -> list[tuple[Verifier, KeyPeriod]]:
        out: list[tuple[Verifier, KeyPeriod]] = []
        for period in key_periods(client.gateway_key_events(gw)):
            if len(period.key) != 64:
                continue  # the contract enforces 64 bytes; anything else is not a key we can use
            try:
                out.append((GmsslSm2Verifier(Sm2PublicKey.from_point(b"\x04" + period.key)), period))
            except (EdgeError, ValueError):
                continue  # not a point on the curve: vouches for nothing
        return out

    return lookup


def verify_main(args: argparse.Namespace) -> int:
    if (args.broker is None) == (args.capture is None):
        raise ConfigError("give exactly one of --broker URL or --capture FILE")
    if args.registry is not None and args.rpc is None:
        raise ConfigError("--registry needs --rpc (the chain to read the gateway registry from)")
    keys = trusted_keys(args.key)
    registry = None if args.registry is None else registry_lookup(args.rpc, args.registry)
    verifier = StreamVerifier(trusted_keys=keys, load_key=None if keys else load_public_key_pem,
                              key_history=registry)
    if args.capture is not None:
        try:
            with args.capture.open("rb") as fh:
                n = 0
                for n, item in enumerate(read_capture(fh), start=1):  # noqa: B007 - n is the count afterwards
                    verifier.feed(item.topic, item.payload, item.retained)
        except OSError as exc:
            raise ConfigError(f"--capture {args.capture}: {exc.strerror}") from exc
        except CaptureError as exc:
            # Verify what was captured intact; the damage itself is reported, not hidden.
            print(f"warning: {exc}; verifying the {n} message(s) before it", file=sys.stderr)
    else:
        with contextlib.ExitStack() as stack:
            save: BinaryIO | None = stack.enter_context(args.save.open("ab")) if args.save else None
            n = asyncio.run(_listen(args, verifier, save))
    report = verifier.report(check_anchor=anchor_checker(args.rpc), require_complete=args.require_complete)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"{n} messages read")
        print(report.summary())
        if args.rpc is None:
            print("note: anchors were not checked against a chain (give --rpc URL)")
        if not keys and registry is None:
            print("note: gateway keys were trusted on first use from the retained key topic (pin with --key, or "
                  "use --registry ADDRESS to take them from the on-chain registry)")
    return 0 if report.ok else 1
