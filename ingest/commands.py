"""``tiyi export`` and ``tiyi proof export --db``: what a platform gets back out of the verifying store.

Both read only what ``tiyi-ingest`` proved: an export never contains a rejected record (nor, unless asked, one still
unproven), and a proof bundle is refused for a record that has none. The bundle is the same one a gateway's journal
gives, so ``tiyi verify --bundle`` checks it against the same trust roots and chain.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from anchoring.bundle import BundleError, RollupProof, build_bundle
from anchoring.errors import AnchoringError
from anchoring.receipt import AnchorReceipt
from edge import cbor
from edge.errors import EdgeError
from edge.manifest import SignedManifest
from edge.record import check_id
from edge.rollup import Rollup
from ingest.errors import IngestError, SettingsError
from ingest.export import csv_text, fhir_bundle, query, senml_cbor, senml_json
from ingest.store import connect


def bundle_from_db(conn: Any, gw: str, seq: int) -> dict[str, Any]:
    """The proof bundle of stored record (gw, seq): its batch's records and signed manifest from the rows, the
    receipt whose anchor the chain confirmed (else any receipt that names the batch's root, unconfirmed), the key
    the gateway announced, and every stored roll-up that holds the batch."""
    with conn.transaction():
        row = conn.execute("SELECT state, reason, batch FROM records WHERE gw = %s AND seq = %s", (gw, seq)).fetchone()
        if row is None:
            raise IngestError(f"{gw} seq {seq} is not stored")
        state, reason, batch = row
        if state == "rejected":
            raise IngestError(f"{gw} seq {seq} was rejected ({reason}): there is no proof of it")
        if state == "received" or batch is None:
            raise IngestError(f"{gw} seq {seq} is not proven yet: its batch has not been received complete")
        b = conn.execute(
            "SELECT payload, first_seq, last_seq, anchor_tx, root, count FROM batches WHERE gw = %s AND batch = %s",
            (gw, batch),
        ).fetchone()
        assert b is not None
        payload, first, last, anchor_tx, root, count = bytes(b[0]), b[1], b[2], b[3], bytes(b[4]), b[5]
        records = [
            bytes(d)
            for (d,) in conn.execute(
                "SELECT data FROM records WHERE gw = %s AND seq BETWEEN %s AND %s ORDER BY seq", (gw, first, last)
            )
        ]
        receipts = [
            AnchorReceipt.from_bytes(bytes(p))
            for (p,) in conn.execute(
                "SELECT payload FROM receipts WHERE gw = %s AND batch = %s ORDER BY (tx = %s) DESC NULLS LAST, tx",
                (gw, batch, anchor_tx),
            )
        ]
        key = conn.execute("SELECT pem FROM keys WHERE gw = %s", (gw,)).fetchone()
        rollups: list[RollupProof] = []
        for (p,) in conn.execute("SELECT payload FROM rollups WHERE gw = %s ORDER BY target, number", (gw,)):
            m = cbor.expect_map(cbor.loads(bytes(p)), "rollup message", {"rollup", "receipt"})
            rollup = Rollup.from_bytes(cbor.field(m, "rollup", bytes, "rollup message"))
            if rollup.first_batch <= batch < rollup.first_batch + len(rollup.roots):
                rollups.append(
                    RollupProof(rollup, AnchorReceipt.from_bytes(cbor.field(m, "receipt", bytes, "rollup message")))
                )
    receipt = next((r for r in receipts if r.root == root and r.count == count), None)
    return build_bundle(seq, records, SignedManifest.from_bytes(payload), receipt, key[0] if key else None, rollups)


def proof_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tiyi proof export --db",
        description="Write the proof bundle of one stored record, from the tiyi-ingest database.",
    )
    p.add_argument("--db", required=True, help="PostgreSQL conninfo of the tiyi-ingest store")
    p.add_argument("--gw", required=True, help="the gateway id")
    p.add_argument("--seq", type=int, required=True, help="the record's sequence number")
    p.add_argument("-o", "--output", type=Path, help="write the bundle here (default: stdout)")
    args = p.parse_args(argv)
    try:
        check_id(args.gw, "--gw")
        conn = connect(args.db)
        try:
            bundle = bundle_from_db(conn, args.gw, args.seq)
        finally:
            conn.close()
        text = json.dumps(bundle, indent=2) + "\n"
        if args.output is None:
            sys.stdout.write(text)
        else:
            args.output.write_text(text)
            print(
                f"wrote proof of {args.gw} seq {args.seq} to {args.output}"
                + ("" if bundle["anchor"] else "; warning: no anchor receipt is stored for its batch"),
                file=sys.stderr,
            )
    except (IngestError, EdgeError, AnchoringError, BundleError, OSError) as exc:
        print(f"tiyi proof export: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"tiyi proof export: the database refused: {_first_line(exc)}", file=sys.stderr)
        return 2
    return 0


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


FORMATS = ("fhir", "senml", "senml-cbor", "csv")


def _time_ms(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SettingsError(f"{what} {text!r}: expected an ISO 8601 time, e.g. 2026-11-30T08:00:00Z") from exc
    if t.tzinfo is None:
        raise SettingsError(f"{what} {text!r}: give a time zone (Z or +08:00): records are stamped in UTC")
    return int(t.timestamp() * 1000)


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tiyi export",
        description="Export proven records from the tiyi-ingest "
        "database as FHIR R4 Observations (a collection Bundle), SenML or CSV.",
    )
    p.add_argument("--db", required=True, help="PostgreSQL conninfo of the tiyi-ingest store")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--gw", help="only this gateway")
    p.add_argument("--dev", help="only this device")
    p.add_argument("--kind", help="only this kind of reading (e.g. heart_rate)")
    p.add_argument("--since", help="records at or after this time (ISO 8601 with a zone)")
    p.add_argument("--until", help="records before this time (ISO 8601 with a zone)")
    p.add_argument(
        "--include-unproven",
        action="store_true",
        help="also records still waiting for their batch (FHIR status preliminary); never rejected ones",
    )
    p.add_argument("--subject", help="FHIR: the Observation subject reference, e.g. Patient/123")
    p.add_argument("-o", "--output", type=Path, help="write here (default: stdout)")
    args = p.parse_args(argv)
    try:
        for value, what in ((args.gw, "--gw"), (args.dev, "--dev")):
            if value is not None:
                check_id(value, what)
        since, until = _time_ms(args.since, "--since"), _time_ms(args.until, "--until")
        states = (
            ("received", "proven", "anchored", "final") if args.include_unproven else ("proven", "anchored", "final")
        )
        conn = connect(args.db)
        try:
            rows = query(conn, args.gw, args.dev, args.kind, since, until, states)
            out: str | bytes
            if args.format == "fhir":
                out = json.dumps(fhir_bundle(rows, args.subject), indent=1) + "\n"
            elif args.format == "senml":
                out = senml_json(rows) + "\n"
            elif args.format == "senml-cbor":
                out = senml_cbor(rows)
            else:
                out = csv_text(rows)
        finally:
            conn.close()
        if isinstance(out, bytes):
            if args.output is None:
                sys.stdout.buffer.write(out)
            else:
                args.output.write_bytes(out)
        elif args.output is None:
            sys.stdout.write(out)
        else:
            args.output.write_text(out)
    except (IngestError, EdgeError, OSError) as exc:
        print(f"tiyi export: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"tiyi export: the database refused: {_first_line(exc)}", file=sys.stderr)
        return 2
    return 0
