"""``python -m ingest`` / ``tiyi-ingest``: run one instance of the verifying store."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from anchoring.errors import AnchoringError
from anchoring.readers import address, open_reader, point_verifier
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import ChainAnchorChecker
from edge.errors import EdgeError
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from ingest.errors import IngestError, SettingsError

if TYPE_CHECKING:
    from ingest.service import ChainView


def _pins(specs: list[str]) -> dict[str, list[Verifier]]:
    out: dict[str, list[Verifier]] = {}
    for spec in specs:
        gw, sep, path = spec.partition("=")
        if not sep or not gw or not path:
            raise SettingsError(f"--key takes GW=PEMFILE, got {spec!r}")
        try:
            out.setdefault(gw, []).append(load_public_key_pem(Path(path).read_text()))
        except (OSError, EdgeError, ValueError) as exc:
            raise SettingsError(f"--key {spec}: {exc}") from exc
    return out


def _chain(args: argparse.Namespace) -> ChainView | None:
    """The batches' chain, with the operator's own pin of the contract."""
    from ingest.service import ChainView

    if args.rpc is None:
        if args.contract or args.registry:
            raise SettingsError("--contract and --registry need --rpc (the chain they are on)")
        return None
    if args.contract and args.registry and args.contract != args.registry:
        raise SettingsError("--registry and --contract name different contracts; anchors and registry live in one")
    contract = args.contract or args.registry
    if contract is None:
        raise SettingsError("--rpc needs --contract ADDRESS (or --registry ADDRESS): the Anchor contract to trust")
    reader = open_reader(args.rpc, address(contract, "--contract"))
    return ChainView(ChainAnchorChecker(f"anchor chain {args.rpc}", reader), reader.block_number)


def _trust(args: argparse.Namespace, chain: ChainView | None) -> TrustPolicy:
    """Exactly one trust root: pinned keys, the on-chain registry, or an explicit --tofu."""
    roots = [
        n
        for n, given in (("--key", bool(args.key)), ("--registry", bool(args.registry)), ("--tofu", args.tofu))
        if given
    ]
    if len(roots) != 1:
        raise SettingsError(
            "give exactly one trust root: --key GW=PEMFILE (repeatable), --registry CONTRACT (with "
            "--rpc) or --tofu" + (f"; got {' and '.join(roots)}" if roots else "")
        )
    if args.operator and not args.registry:
        raise SettingsError("--operator needs --registry")
    if args.registry:
        assert chain is not None and isinstance(chain.checker, ChainAnchorChecker)
        operator = None if args.operator is None else address(args.operator, "--operator")
        return TrustPolicy(registry=chain.checker.client.gateway, point_verifier=point_verifier, operator=operator)
    if args.tofu:
        return TrustPolicy(tofu=load_public_key_pem)
    return TrustPolicy(pinned=_pins(args.key))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tiyi-ingest", description="Verify gateway streams and store them in PostgreSQL.")
    p.add_argument("--broker", required=True, help="mqtt://HOST[:PORT]")
    p.add_argument("--db", required=True, help="PostgreSQL conninfo, e.g. 'host=127.0.0.1 dbname=tiyi'")
    p.add_argument("--group", default="tiyi-ingest", help="shared-subscription group (instances of one store)")
    p.add_argument("--client-id", default="tiyi-ingest-1", help="stable per instance: the broker keeps its session")
    p.add_argument("--key", action="append", default=[], metavar="GW=PEMFILE", help="pin a gateway's SM2 key")
    p.add_argument("--tofu", action="store_true", help="trust the key a gateway announces (recorded as such)")
    p.add_argument(
        "--rpc", help="the batches' chain node (http(s)://… or fisco2+http(s)://…): records become anchored, then final"
    )
    p.add_argument("--contract", help="the Anchor contract on --rpc (0x…), pinned by you, never by a receipt")
    p.add_argument("--registry", help="trust keys from the on-chain gateway registry in this contract (with --rpc)")
    p.add_argument("--operator", help="with --registry: only gateways this operator account registered")
    p.add_argument(
        "--final-depth",
        type=int,
        default=0,
        metavar="BLOCKS",
        help="blocks on top of an anchor before it is final (0 for BFT chains such as FISCO BCOS)",
    )
    p.add_argument(
        "--late-join",
        action="store_true",
        help="a gateway may start at a trusted signed head or an anchored manifest instead of batch 1",
    )
    p.add_argument(
        "--gap-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long a missing batch, record or tail may be in flight before it is stated as a problem",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from ingest.service import Ingest, IngestSettings, wait_connected

        chain = _chain(args)
        trust = _trust(args, chain)
        settings = IngestSettings(
            args.broker,
            args.db,
            args.group,
            args.client_id,
            late_join=args.late_join,
            gap_timeout_s=args.gap_timeout,
            final_depth=args.final_depth,
        )
        ing = Ingest(settings, trust, chain)
        signal.signal(signal.SIGTERM, lambda *_: ing.stop())
        signal.signal(signal.SIGINT, lambda *_: ing.stop())
        ing.start()
        wait_connected(ing)
        try:
            ing.run()
        finally:
            ing.close()
    except IngestError as exc:
        print(f"tiyi-ingest: {exc}", file=sys.stderr)
        return 2
    except (OSError, AnchoringError) as exc:
        print(f"tiyi-ingest: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
