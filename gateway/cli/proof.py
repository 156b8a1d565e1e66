"""``tiyi proof export`` and ``tiyi verify --bundle``: one reading, proven to anyone."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from anchoring.bundle import verify_bundle
from gateway.cli.verify import VerifyOptions, chain_checker, rollup_checkers, trust_policy
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.journal import SqliteJournal
from gateway.keys import load_signer
from gateway.proofs import proof_for_seq


@dataclass(frozen=True, slots=True)
class ProofExportOptions:
    """``tiyi proof export``, parsed once (see ``gateway.cli.main`` for each option's help)."""

    config: Path
    seq: int
    output: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProofExportOptions:
        return cls(config=args.config, seq=args.seq, output=args.output)


def export_main(opts: ProofExportOptions) -> int:
    cfg = load_config(opts.config)
    journal = SqliteJournal.open(cfg.journal_path, cfg.gateway_id)
    try:
        proof = proof_for_seq(cfg, journal, opts.seq, lambda: load_signer(cfg.signing_key_path).public_key_pem())
    finally:
        journal.close()
    text = json.dumps(proof.bundle, indent=2) + "\n"
    if opts.output is None:
        sys.stdout.write(text)
    else:
        opts.output.write_text(text)
        print(
            f"wrote proof of seq {opts.seq} (batch {proof.batch}) to {opts.output}"
            + ("" if proof.anchored else "; warning: the batch is not anchored yet"),
            file=sys.stderr,
        )
    return 0


def verify_bundle_main(opts: VerifyOptions) -> int:
    if opts.bundle is None:
        raise ConfigError("give --bundle FILE")
    try:
        bundle = json.loads(opts.bundle.read_text())
    except OSError as exc:
        raise ConfigError(f"--bundle {opts.bundle}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"--bundle {opts.bundle}: not JSON ({exc})") from exc
    if not isinstance(bundle, dict):
        raise ConfigError(f"--bundle {opts.bundle}: not a proof bundle")
    chain = chain_checker(opts)
    result = verify_bundle(bundle, trust_policy(opts, chain), chain, rollup_checkers(opts.rollup_rpc))
    print(result.summary())
    return int(result.outcome)
