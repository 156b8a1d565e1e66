"""``tiyi proof export`` and ``tiyi verify --bundle``: one reading, proven to anyone."""

from __future__ import annotations

import argparse
import json
import sys

from anchoring.bundle import RollupProof, build_bundle, verify_bundle
from anchoring.receipt import AnchorReceipt
from edge.manifest import SignedManifest
from edge.rollup import Rollup
from gateway.cli.verify import chain_checker, rollup_checkers, trust_policy
from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError
from gateway.journal import SqliteJournal
from gateway.keys import load_signer


def export_main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    journal = SqliteJournal.open(cfg.journal_path, cfg.gateway_id)
    try:
        found = journal.batch_for_seq(args.seq)
        if found is None:
            raise GatewayError(f"seq {args.seq} is not in any closed batch yet (next seq is {journal.next_seq})")
        signed = SignedManifest.from_bytes(found[0])
        m = signed.manifest
        records = journal.records(m.first_seq, m.last_seq)
        rollups = []
        for r in cfg.rollups:
            held = journal.rollup_for_batch(r.target, m.batch)
            if held is None:
                continue  # not rolled up yet: the bundle proves against the batch anchor only
            number, first, last, rreceipt = held
            rollup = Rollup(cfg.gateway_id, r.target, number, first, tuple(journal.batch_roots(first, last)))
            rollups.append(RollupProof(rollup, None if rreceipt is None else AnchorReceipt.from_bytes(rreceipt)))
    finally:
        journal.close()
    receipt = None if found[1] is None else AnchorReceipt.from_bytes(found[1])
    pem = load_signer(cfg.signing_key_path).public_key_pem()
    bundle = build_bundle(args.seq, records, signed, receipt, pem, rollups)
    text = json.dumps(bundle, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(
            f"wrote proof of seq {args.seq} (batch {m.batch}) to {args.output}"
            + ("" if receipt else "; warning: the batch is not anchored yet"),
            file=sys.stderr,
        )
    return 0


def verify_bundle_main(args: argparse.Namespace) -> int:
    try:
        bundle = json.loads(args.bundle.read_text())
    except OSError as exc:
        raise ConfigError(f"--bundle {args.bundle}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"--bundle {args.bundle}: not JSON ({exc})") from exc
    if not isinstance(bundle, dict):
        raise ConfigError(f"--bundle {args.bundle}: not a proof bundle")
    chain = chain_checker(args)
    result = verify_bundle(bundle, trust_policy(args, chain), chain, rollup_checkers(args.rollup_rpc))
    print(result.summary())
    return int(result.outcome)
