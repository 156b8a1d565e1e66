"""docs/mqtt-contract.md is what platforms implement from: its example, key bytes, selectors and topic are checked
against the code here, so the document cannot drift from the wire."""

from __future__ import annotations

import re
from pathlib import Path

from web3 import Web3

from anchoring.chain import anchor_artifact
from edge.gatt.registry import decode
from edge.merkle import leaf_hash
from edge.record import Record
from edge.signing import key_id_for
from edge.sm2 import generate_signer, load_public_key_pem

DOC = (Path(__file__).resolve().parents[3] / "docs" / "mqtt-contract.md").read_text()


def test_the_record_example_decodes_is_canonical_and_its_raw_gives_its_values() -> None:
    block = DOC.split("and its exact bytes (the salt is normally random):", 1)[1].split("```")[1]
    data = bytes.fromhex("".join(block.split()))
    rec = Record.from_bytes(data)  # refuses anything not canonical
    (reading,) = decode(0x2A37, rec.raw)
    assert rec.raw.hex() in DOC and (rec.kind, rec.val, rec.q) == (reading.kind, reading.val, reading.q)
    assert rec.val == {"heart_rate": 72, "rr_intervals": [0.974609375], "sensor_contact": True}
    assert leaf_hash(data).hex() in DOC


def test_a_key_rebuilt_from_the_registry_point_with_the_documented_prefix_has_the_key_id() -> None:
    prefix = re.search(r"prefix them with\s+`([0-9a-f]+)`", DOC)
    assert prefix is not None
    pk = load_public_key_pem(generate_signer().public_key_pem()).public_key
    spki = bytes.fromhex(prefix.group(1)) + pk.point[1:]
    assert len(spki) == 91 and spki == pk.spki_der() and key_id_for(spki) == pk.key_id


def test_every_selector_and_the_event_topic_are_the_contracts() -> None:
    rows = re.findall(r"\| (?:event|call|transaction) \| `([^`]+)`[^|]*\| `(0x[0-9a-f]+)`", DOC)
    assert len(rows) == 6
    abi = {i["name"]: i for i in anchor_artifact()["abi"] if i["type"] in ("function", "event")}
    for text, given in rows:
        name = text.split("(")[0]
        canonical = f"{name}({','.join(i['type'] for i in abi[name]['inputs'])})"
        digest = Web3.keccak(text=canonical).hex().removeprefix("0x")
        assert given == "0x" + (digest if abi[name]["type"] == "event" else digest[:8]), canonical
