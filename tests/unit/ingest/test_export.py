"""Exports: FHIR Observations validated by a real FHIR model library, SenML JSON and CBOR with RFC 8428 labels, CSV."""

from __future__ import annotations

import json
from dataclasses import replace

import cbor2
import pytest
from fhir.resources.R4B.observation import Observation
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.observation import Observation as R4Observation

from edge.record import Record
from ingest.export import VITALS, StoredRecord, csv_text, fhir_observations, senml_cbor, senml_json


def stored(kind: str, val: dict[str, int | float], seq: int = 7) -> StoredRecord:
    rec = Record(gw="gw-1", seq=seq, dev="cuff-1", t=1_700_000_000_123, kind=kind, val=val, raw=b"\x00", salt=bytes(16))
    return StoredRecord(rec, "proven", 3)


def test_vital_signs_become_coded_observations_that_validate() -> None:
    bp = stored("blood_pressure", {"systolic": 121, "diastolic": 79})
    obs = fhir_observations(bp, subject="Patient/p-1")
    assert {o["code"]["coding"][0]["code"] for o in obs} == {"8480-6", "8462-4"}
    for o in obs:
        model = Observation.model_validate(o)  # raises on any structural or type error
        assert model.valueQuantity.system == "http://unitsofmeasure.org"
        assert model.valueQuantity.code == "mm[Hg]" and model.category[0].coding[0].code == "vital-signs"
        assert model.identifier[0].value == "gw-1/7" and "batch 3" in model.note[0].text


def test_every_listed_vital_maps_to_its_loinc_code_and_validates() -> None:
    codes = {
        "heart_rate": "8867-4",
        "spo2": "59408-5",
        "temperature": "8310-5",
        "weight": "29463-7",
        "respiratory_rate": "9279-1",
    }
    for name, code in codes.items():
        (o,) = fhir_observations(stored(name, {name: 36.5}))
        Observation.model_validate(o)
        assert o["code"]["coding"][0]["code"] == code == VITALS[name][0]


def test_an_unknown_field_is_not_dressed_up_as_a_vital_sign() -> None:
    (o,) = fhir_observations(stored("cadence", {"cadence": 80}))
    Observation.model_validate(o)
    assert "category" not in o and o["code"]["coding"][0]["system"] != "http://loinc.org"


def test_senml_json_and_cbor_carry_the_same_pack() -> None:
    recs = [stored("heart_rate", {"heart_rate": 72})]
    pack = json.loads(senml_json(recs))
    assert pack == [
        {"bn": "urn:dev:tiyi:gw-1:cuff-1:", "n": "heart_rate", "v": 72, "t": 1_700_000_000.123, "u": "beat/min"}
    ]
    assert cbor2.loads(senml_cbor(recs)) == [
        {-2: "urn:dev:tiyi:gw-1:cuff-1:", 0: "heart_rate", 2: 72, 6: 1_700_000_000.123, 1: "beat/min"}
    ]


def test_csv_has_one_row_per_value_with_provenance() -> None:
    lines = csv_text([stored("blood_pressure", {"systolic": 121, "diastolic": 79})]).splitlines()
    assert lines[0] == "gw,seq,dev,time,kind,field,value,batch,state,anchor_tx"
    assert lines[1] == "gw-1,7,cuff-1,2023-11-14T22:13:20.123Z,blood_pressure,diastolic,79,3,proven,"


def test_the_anchor_tx_travels_with_every_export_so_an_auditor_can_find_the_proof() -> None:
    r = replace(stored("heart_rate", {"heart_rate": 61}), state="final", anchor_tx=b"\xab" * 32)
    assert csv_text([r]).splitlines()[1].endswith(",final,0x" + "ab" * 32)
    (o,) = fhir_observations(r)
    assert o["status"] == "final" and o["note"][0]["text"].endswith("anchor tx 0x" + "ab" * 32)
    R4Observation(o, strict=True)  # FHIR R4 (4.0.1)


def test_an_observation_that_is_not_r4_is_refused_by_the_r4_models() -> None:
    (o,) = fhir_observations(stored("heart_rate", {"heart_rate": 61}))
    with pytest.raises(FHIRValidationError):
        R4Observation({**o, "valueQuantity": {"value": "sixty-one"}}, strict=True)
    with pytest.raises(FHIRValidationError):
        R4Observation({**o, "triggeredBy": []}, strict=True)  # an R5 element
