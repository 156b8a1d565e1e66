"""``python -m ingest`` / ``tiyi-ingest``: run one instance of the verifying store."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from anchoring.trust import TrustPolicy
from edge.errors import EdgeError
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from ingest.errors import IngestError, SettingsError


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tiyi-ingest", description="Verify gateway streams and store them in PostgreSQL.")
    p.add_argument("--broker", required=True, help="mqtt://HOST[:PORT]")
    p.add_argument("--db", required=True, help="PostgreSQL conninfo, e.g. 'host=127.0.0.1 dbname=tiyi'")
    p.add_argument("--group", default="tiyi-ingest", help="shared-subscription group (instances of one store)")
    p.add_argument("--client-id", default="tiyi-ingest-1", help="stable per instance: the broker keeps its session")
    p.add_argument("--key", action="append", default=[], metavar="GW=PEMFILE", help="pin a gateway's SM2 key")
    p.add_argument("--tofu", action="store_true", help="trust the key a gateway announces (recorded as such)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from ingest.service import Ingest, IngestSettings, wait_connected

        if args.tofu == bool(args.key):
            raise SettingsError("give exactly one trust root: --key GW=PEMFILE (repeatable) or --tofu")
        trust = TrustPolicy(tofu=load_public_key_pem) if args.tofu else TrustPolicy(pinned=_pins(args.key))
        ing = Ingest(IngestSettings(args.broker, args.db, args.group, args.client_id), trust)
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
    except OSError as exc:
        print(f"tiyi-ingest: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
