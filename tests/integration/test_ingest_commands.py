"""What a platform gets back out of the store: ``tiyi proof export --db`` gives the bundle ``tiyi verify --bundle``
proves against the real chain (and a record altered in the database fails it); ``tiyi export`` writes FHIR R4 that
an R4 model library accepts, SenML JSON/CBOR and CSV, filtered, and never a rejected record."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import cbor2
import psycopg
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhirclient.models.observation import Observation as R4Observation

from anchoring.chain import AnchorKind
from bench.services import Ganache
from edge.manifest import SignedManifest
from edge.record import Record
from gateway.cli import main as tiyi
from tests.integration.chainkit import Alliance, anchor
from tests.integration.test_ingest_states import GW, SIGNER, batch_msgs, feed, ingest, view
from tests.unit.anchoring.test_stream_verifier import Stream

pytestmark = pytest.mark.slow


def store_anchored(ganache: Ganache, dsn: str) -> tuple[Alliance, Stream]:
    """An honest gateway's batches 1..3 anchored on ganache and ingested to final; batch 4 arrives with seq 35
    altered (stored rejected); the records of batch 5 arrive without their manifest (received)."""
    alliance = Alliance(ganache.url)
    gateway = alliance.account()
    s = Stream.honest(n=50)
    for n in (1, 2, 3):
        m = SignedManifest.from_bytes(s.batches[n - 1]).manifest
        s.receipts[n - 1] = bytes(anchor(gateway, AnchorKind.BATCH, GW, m.root, m.batch, m.count))
    ing = ingest(dsn, chain=view(alliance))
    feed(ing, [m for n in (1, 2, 3) for m in batch_msgs(s, n, with_receipt=True)])
    ing.check_chain()
    honest35 = s.records[35]
    s.records[35] = bytes(replace(Record.from_bytes(honest35), val={"heart_rate": 199}))
    feed(ing, batch_msgs(s, 4) + batch_msgs(s, 5)[:-1])
    s.records[35] = honest35
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT batch, state FROM batches ORDER BY batch").fetchall() == [
            (1, "final"),
            (2, "final"),
            (3, "final"),
            (4, "rejected"),
        ]
        assert c.execute("SELECT count(*) FROM records WHERE state = 'received'").fetchall() == [(10,)]
    return alliance, s


def test_a_proof_from_the_database_verifies_on_chain_and_an_altered_row_does_not(
    ganache: Ganache, database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alliance, _ = store_anchored(ganache, database)
    pem = tmp_path / "gw.pub"
    pem.write_text(SIGNER.public_key_pem())
    out = tmp_path / "proof.json"
    assert tiyi(["proof", "export", "--db", database, "--gw", GW, "--seq", "17", "-o", str(out)]) == 0
    bundle = json.loads(out.read_text())
    assert bundle["seq"] == 17 and bundle["anchor"] is not None
    check = [
        "verify",
        "--bundle",
        str(out),
        "--key",
        f"{GW}={pem}",
        "--rpc",
        alliance.url,
        "--contract",
        alliance.contract,
    ]
    assert tiyi(check) == 0, capsys.readouterr()
    # Someone with write access to the database alters the stored reading: the proof it gives no longer holds.
    with psycopg.connect(database) as c:
        data = bytes(c.execute("SELECT data FROM records WHERE gw = %s AND seq = 17", (GW,)).fetchone()[0])  # type: ignore[index]
        altered = bytes(replace(Record.from_bytes(data), val={"heart_rate": 40}))
        c.execute("UPDATE record_rows SET data = %s WHERE gw = %s AND seq = 17", (altered, GW))  # the table
    assert tiyi(["proof", "export", "--db", database, "--gw", GW, "--seq", "17", "-o", str(out)]) == 0
    assert tiyi(check) == 1
    assert "NOT proven" in capsys.readouterr().out


def test_no_proof_for_a_rejected_unknown_or_unproven_record(
    ganache: Ganache, database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store_anchored(ganache, database)
    capsys.readouterr()
    for seq, why in ((35, "was rejected (root_mismatch)"), (999, "is not stored"), (41, "is not proven yet")):
        assert tiyi(["proof", "export", "--db", database, "--gw", GW, "--seq", str(seq)]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err


def test_exports_validate_filter_and_never_contain_a_rejected_record(
    ganache: Ganache, database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_anchored(ganache, database)
    out = tmp_path / "obs.json"
    assert (
        tiyi(["export", "--db", database, "--format", "fhir", "--gw", GW, "--subject", "Patient/p-1", "-o", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    Bundle.model_validate(doc)  # R4B's Bundle
    entries = [e["resource"] for e in doc["entry"]]
    assert len(entries) == 30  # one heart-rate value per proven record: batch 4 (rejected) and 5 (unproven) absent
    for o in entries:
        model = R4Observation(o, strict=True)  # FHIR R4 (4.0.1) models: unknown keys and wrong types raise
        assert model.code.coding[0].code == "8867-4" and model.status == "final"
        assert "anchor tx 0x" in model.note[0].text
    assert tiyi(["export", "--db", database, "--format", "csv", "-o", str(tmp_path / "a.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "a.csv").read_text())))
    assert {r["state"] for r in rows} == {"final"}
    assert all(r["anchor_tx"].startswith("0x") for r in rows)
    assert len(rows) == 30
    assert (
        tiyi(["export", "--db", database, "--format", "csv", "--include-unproven", "-o", str(tmp_path / "b.csv")]) == 0
    )
    assert {r["state"] for r in csv.DictReader(io.StringIO((tmp_path / "b.csv").read_text()))} == {"final", "received"}
    assert (
        tiyi(["export", "--db", database, "--format", "senml-cbor", "--dev", "dev-1", "-o", str(tmp_path / "s.cbor")])
        == 0
    )
    items = cbor2.loads((tmp_path / "s.cbor").read_bytes())
    assert items and all(i[-2].endswith(":dev-1:") and i[0] == "heart_rate" and i[1] == "beat/min" for i in items)
    assert (
        tiyi(
            [
                "export",
                "--db",
                database,
                "--format",
                "senml",
                "--since",
                "2023-11-14T22:13:20.011Z",
                "--until",
                "2023-11-14T22:13:20.021Z",
            ]
        )
        == 0
    )
    assert len(json.loads(capsys.readouterr().out)) == 10
    assert tiyi(["export", "--db", database, "--format", "csv", "--since", "yesterday"]) == 2
    assert "expected an ISO 8601 time" in capsys.readouterr().err
