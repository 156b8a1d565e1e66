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


def test_the_sealed_view_record_example_opens_with_the_documented_key_and_iv() -> None:
    """Contract 1.3: the sealed example is what build_view makes of the record example, and opens as documented."""
    from dataclasses import replace

    from edge.sealing import derive_iv, open_sealed
    from edge.view import AudienceSpec, ViewRule, build_view

    section = DOC.split("### Sealed records (SM4-GCM)", 1)[1].split("### View manifest", 1)[0]
    data = bytes.fromhex("".join(section.split("```")[1].split()))
    key = bytes.fromhex(re.search(r"key\s+`([0-9a-f]{32})` \(id `k1`\)", section).group(1))  # type: ignore[union-attr]
    iv = re.search(r"its IV is\s+`([0-9a-f]{24})`", section).group(1)  # type: ignore[union-attr]
    plain = re.search(r"its plaintext\s+`([0-9a-f]+)`", section).group(1)  # type: ignore[union-attr]
    rec = Record.from_bytes(data)
    aad = bytes(replace(rec, enc=None))
    derived = derive_iv(key, "health-platform", rec.gw, rec.seq, plaintext=bytes.fromhex(plain), aad=aad)
    assert rec.enc is not None and rec.enc["iv"].hex() == iv == derived.hex()
    assert open_sealed({"k1": key}, rec.enc, bytes(replace(rec, enc=None))).hex() == plain
    block = DOC.split("and its exact bytes (the salt is normally random):", 1)[1].split("```")[1]
    source = replace(Record.from_bytes(bytes.fromhex("".join(block.split()))), sub="sub-0123456789abcdef")
    spec = AudienceSpec("health-platform", "health_management", {"*": ViewRule(drop_raw=True)}, key=("k1", key))
    salt = bytes.fromhex("101112131415161718191a1b1c1d1e1f")
    records, _ = build_view(
        [source], 1, bytes(32), spec, "shenzhen", lambda s, p: True, 1, lambda q: salt, consent_count=1, since=1
    )
    assert records == [data]
