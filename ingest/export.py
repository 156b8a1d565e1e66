"""Exports of stored records: HL7 FHIR R4 ``Observation`` (vital-signs where a LOINC code applies), SenML (RFC 8428,
JSON and CBOR) and CSV. Each carries the record's provenance (gateway, seq, batch, state) so an auditor can go from an
exported value back to its proof. Only fields named in ``VITALS`` become coded observations; anything else is exported
with a local code and no vital-signs category, never dressed up as a LOINC measurement."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cbor2

from edge.record import Record

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PROVENANCE_SYSTEM = "urn:tiyi:record"  # identifier value: {gw}/{seq}

# value field → (LOINC code, display, UCUM unit, SenML unit (RFC 8428 §12.1 / RFC 8798))
VITALS: dict[str, tuple[str, str, str, str]] = {
    "heart_rate": ("8867-4", "Heart rate", "/min", "beat/min"),
    "pulse_rate": ("8867-4", "Heart rate", "/min", "beat/min"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    "systolic": ("8480-6", "Systolic blood pressure", "mm[Hg]", "mmHg"),
    "diastolic": ("8462-4", "Diastolic blood pressure", "mm[Hg]", "mmHg"),
    "temperature": ("8310-5", "Body temperature", "Cel", "Cel"),
    "weight": ("29463-7", "Body weight", "kg", "kg"),
    "respiratory_rate": ("9279-1", "Respiratory rate", "/min", "1/min"),
}


@dataclass(frozen=True, slots=True)
class StoredRecord:
    record: Record
    state: str
    batch: int | None
    anchor_tx: bytes | None = None  # the transaction the chain confirmed for the record's batch


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fhir_observations(r: StoredRecord, subject: str | None = None) -> list[dict[str, Any]]:
    """One Observation per numeric value field of the record."""
    rec = r.record
    out: list[dict[str, Any]] = []
    for name, value in sorted(rec.val.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        vital = VITALS.get(name)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{rec.gw}-{rec.seq}-{name}".replace("_", "-")[:64],
            "status": "final" if r.state in ("proven", "anchored", "final") else "preliminary",
            "identifier": [{"system": PROVENANCE_SYSTEM, "value": f"{rec.gw}/{rec.seq}"}],
            "effectiveDateTime": _iso(rec.t),
            "device": {"display": f"{rec.gw}/{rec.dev}"},
            "note": [
                {
                    "text": f"tiyi provenance: gateway {rec.gw}, seq {rec.seq}, batch {r.batch}, state {r.state}"
                    + (f", anchor tx 0x{r.anchor_tx.hex()}" if r.anchor_tx else "")
                }
            ],
        }
        if subject:
            obs["subject"] = {"reference": subject}
        if vital is not None:
            code, display, ucum, _ = vital
            obs["meta"] = {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]}
            obs["category"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ]
            obs["code"] = {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}
            obs["valueQuantity"] = {"value": value, "unit": ucum, "system": UCUM, "code": ucum}
        else:
            obs["code"] = {"coding": [{"system": "urn:tiyi:field", "code": name}], "text": name}
            obs["valueQuantity"] = {"value": value}
        out.append(obs)
    return out


def senml_records(records: Iterable[StoredRecord]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in records:
        rec = r.record
        for name, value in sorted(rec.val.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            item: dict[str, Any] = {"bn": f"urn:dev:tiyi:{rec.gw}:{rec.dev}:", "n": name, "v": value, "t": rec.t / 1000}
            vital = VITALS.get(name)
            if vital is not None:
                item["u"] = vital[3]
            out.append(item)
    return out


_SENML_LABELS = {"bn": -2, "bt": -3, "bu": -4, "n": 0, "u": 1, "v": 2, "t": 6}


def senml_json(records: Iterable[StoredRecord]) -> str:
    return json.dumps(senml_records(records))


def senml_cbor(records: Iterable[StoredRecord]) -> bytes:
    return cbor2.dumps([{_SENML_LABELS[k]: v for k, v in item.items()} for item in senml_records(records)])


def csv_text(records: Iterable[StoredRecord]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["gw", "seq", "dev", "time", "kind", "field", "value", "batch", "state", "anchor_tx"])
    for r in records:
        rec = r.record
        tx = f"0x{r.anchor_tx.hex()}" if r.anchor_tx else ""
        for name, value in sorted(rec.val.items()):
            w.writerow([rec.gw, rec.seq, rec.dev, _iso(rec.t), rec.kind, name, value, r.batch, r.state, tx])
    return buf.getvalue()


def fhir_bundle(records: Iterable[StoredRecord], subject: str | None = None) -> dict[str, Any]:
    """The Observations as one FHIR ``Bundle`` of type collection (what a FHIR server imports in one request)."""
    entries = [
        {"fullUrl": f"urn:tiyi:observation:{o['id']}", "resource": o}
        for r in records
        for o in fhir_observations(r, subject)
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def query(
    conn: Any,
    gw: str | None = None,
    dev: str | None = None,
    kind: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    states: Iterable[str] = ("proven", "anchored", "final"),
) -> Iterator[StoredRecord]:
    """Stored records matching the filters, in (gw, seq) order, streamed from the database (only the given states:
    by default what has been proven; rejected records are never exported). Records are read in chunks by a
    server-side cursor, so an export of millions of rows does not hold them all."""
    allowed = [s for s in states if s in ("received", "proven", "anchored", "final")]
    with conn.transaction(), conn.cursor(name="tiyi_export") as cur:
        cur.itersize = 2000
        cur.execute(
            "SELECT r.data, coalesce(b.state, 'received'), r.batch, b.anchor_tx FROM record_rows r LEFT JOIN batches b "
            "ON b.gw = r.gw AND b.batch = r.batch WHERE coalesce(b.state, 'received') = ANY(%(states)s) AND "
            "(%(gw)s::text IS NULL OR r.gw = %(gw)s) AND "
            "(%(dev)s::text IS NULL OR r.dev = %(dev)s) AND (%(kind)s::text IS NULL OR r.kind = %(kind)s) AND "
            "(%(since)s::bigint IS NULL OR r.t >= %(since)s) AND (%(until)s::bigint IS NULL OR r.t < %(until)s) "
            "ORDER BY r.gw, r.seq",
            {"states": allowed, "gw": gw, "dev": dev, "kind": kind, "since": since_ms, "until": until_ms},
        )
        for d, st, b, tx in cur:
            yield StoredRecord(Record.from_bytes(bytes(d)), st, b, None if tx is None else bytes(tx))
