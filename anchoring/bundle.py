"""Proof bundles: everything needed to prove one reading to a third party, in one JSON file.

A bundle holds the record's exact bytes, its RFC 9162 inclusion path, the signed batch manifest, the
anchor receipt and, for each roll-up target the batch went to, the roll-up path from the batch root to
the roll-up root with that roll-up's receipt. Checking it offline needs only this file and the gateway's
public key; with a chain RPC endpoint per target the anchors are checked on the chains too. Pure: no
files, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anchoring.errors import AnchoringError, ReceiptError
from anchoring.receipt import AnchorReceipt
from edge.errors import EdgeError
from edge.manifest import SignedManifest
from edge.merkle import MAX_PROOF_LEN, MerkleTree, verify_inclusion
from edge.record import Record
from edge.rollup import Rollup, rollup_gw, verify_rollup_path
from edge.signing import Verifier

BUNDLE_VERSION = 1


class BundleError(AnchoringError, ValueError):
    """A bundle is malformed (not merely invalid: that is a verification result)."""


@dataclass(frozen=True)
class RollupProof:
    """A batch's place in one roll-up, for a bundle."""

    rollup: Rollup
    receipt: AnchorReceipt | None


def build_bundle(seq: int, batch_records: Sequence[bytes], signed: SignedManifest, receipt: AnchorReceipt | None,
                 public_key_pem: str | None = None, rollups: Sequence[RollupProof] = ()) -> dict[str, Any]:
    """The bundle for record ``seq`` of a batch whose records (in seq order) are ``batch_records``."""
    m = signed.manifest
    if not m.first_seq <= seq <= m.last_seq:
        raise BundleError(f"seq {seq} is not in batch {m.batch} ({m.first_seq}..{m.last_seq})")
    if len(batch_records) != m.count:
        raise BundleError(f"batch {m.batch} has {m.count} records, {len(batch_records)} given")
    tree = MerkleTree(batch_records)
    index = seq - m.first_seq
    bundle: dict[str, Any] = {
        "version": BUNDLE_VERSION,
        "hash": "sm3",
        "seq": seq,
        "gw": m.gw,
        "record": batch_records[index].hex(),
        "inclusion": {"index": index, "size": m.count, "path": [h.hex() for h in tree.inclusion_proof(index)]},
        "batch": {"manifest": signed.manifest_bytes.hex(), "sig": signed.sig.hex(), "key_id": signed.key_id},
        "anchor": None if receipt is None else {
            "receipt": bytes(receipt).hex(), "chain_id": receipt.chain_id, "contract": "0x" + receipt.contract.hex(),
            "tx": "0x" + receipt.tx.hex(), "block": receipt.block, "status": receipt.status},
    }
    if public_key_pem is not None:
        bundle["batch"]["public_key_pem"] = public_key_pem
    if rollups:
        bundle["rollups"] = [_rollup_entry(p, m.batch, m.root) for p in rollups]
    return bundle


def _rollup_entry(p: RollupProof, batch: int, root: bytes) -> dict[str, Any]:
    r = p.rollup
    index = batch - r.first_batch
    if not 0 <= index < len(r.roots) or r.roots[index] != root:
        raise BundleError(f"roll-up {r.number} for {r.target} does not hold batch {batch}'s root")
    return {"target": r.target, "rollup": r.number, "first_batch": r.first_batch, "index": index,
            "size": len(r.roots), "path": [h.hex() for h in r.path(batch)], "root": r.root.hex(),
            "receipt": None if p.receipt is None else bytes(p.receipt).hex()}


@dataclass
class BundleCheck:
    ok: bool
    steps: list[tuple[str, bool, str]]

    def summary(self) -> str:
        lines = [f"  {'ok  ' if good else 'FAIL'} {name}: {detail}" for name, good, detail in self.steps]
        return "\n".join([*lines, "RESULT: " + ("the reading is proven" if self.ok else "NOT proven")])


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError as exc:
        raise BundleError(f"{what} is not hex") from exc


def verify_bundle(bundle: Mapping[str, Any], trusted: Mapping[str, Verifier] | None,
                  load_key: Callable[[str], Verifier] | None = None,
                  check_anchor: Callable[[AnchorReceipt], str | None] | None = None,
                  check_rollup: Callable[[str, AnchorReceipt], str | None] | None = None) -> BundleCheck:
    """Check every link: record → Merkle root → signed manifest → key → anchor (→ chain), and for each
    roll-up: batch root → roll-up root → roll-up anchor (→ that target's chain, via ``check_rollup``)."""
    steps: list[tuple[str, bool, str]] = []
    try:
        if bundle.get("version") != BUNDLE_VERSION or bundle.get("hash") != "sm3":
            raise BundleError("unsupported bundle version or hash")
        record_bytes = _hex(bundle.get("record"), "record")
        inc = bundle.get("inclusion")
        b = bundle.get("batch")
        if not isinstance(inc, Mapping) or not isinstance(b, Mapping):
            raise BundleError("inclusion and batch must be objects")
        path_raw = inc.get("path")
        if not isinstance(path_raw, list) or len(path_raw) > MAX_PROOF_LEN:
            raise BundleError("inclusion.path must be a list of at most 64 hashes")
        path = [_hex(h, "inclusion.path[]") for h in path_raw]
        index, size = inc.get("index"), inc.get("size")
        if not isinstance(index, int) or not isinstance(size, int) or isinstance(index, bool):
            raise BundleError("inclusion.index and size must be integers")
        signed = SignedManifest(_hex(b.get("manifest"), "batch.manifest"), _hex(b.get("sig"), "batch.sig"),
                                str(b.get("key_id")))
        manifest = signed.manifest
        record = Record.from_bytes(record_bytes)
    except (EdgeError, BundleError) as exc:
        return BundleCheck(False, [("bundle format", False, str(exc))])

    steps.append(("record", True, f"{record.kind} from {record.dev} at seq {record.seq}, gateway {record.gw}"))
    place = (record.gw == manifest.gw and index == record.seq - manifest.first_seq and size == manifest.count)
    steps.append(("position", place, f"seq {record.seq} is leaf {index} of batch {manifest.batch} "
                  f"({manifest.first_seq}..{manifest.last_seq})"))
    included = verify_inclusion(record_bytes, index, size, path, manifest.root)
    steps.append(("Merkle inclusion", included, f"RFC 9162 path of {len(path)} SM3 hashes to root "
                  f"{manifest.root.hex()[:16]}…"))
    verifier: Verifier | None = None
    source = ""
    if trusted:
        verifier, source = trusted.get(signed.key_id), "pinned"
    elif load_key is not None and isinstance(b.get("public_key_pem"), str):
        try:
            verifier, source = load_key(b["public_key_pem"]), "embedded in the bundle (not pinned)"
        except (EdgeError, ValueError):
            verifier = None
    if verifier is None:
        steps.append(("signature", False, f"no trusted key for {signed.key_id}"))
    else:
        good = signed.verify(verifier)
        steps.append(("signature", good, f"SM2 over the manifest, key {signed.key_id} ({source})"))
    anchor = bundle.get("anchor")
    if not isinstance(anchor, Mapping):
        steps.append(("anchor", False, "the bundle has no anchor receipt"))
    else:
        try:
            receipt = AnchorReceipt.from_bytes(_hex(anchor.get("receipt"), "anchor.receipt"))
        except (ReceiptError, BundleError) as exc:
            steps.append(("anchor", False, f"malformed receipt: {exc}"))
        else:
            same = receipt.root == manifest.root and receipt.gw == manifest.gw and receipt.batch == manifest.batch
            steps.append(("anchor", same, f"tx 0x{receipt.tx.hex()[:16]}… in block {receipt.block} of chain "
                          f"{receipt.chain_id} names this batch's root"))
            if check_anchor is not None:
                why = check_anchor(receipt)
                steps.append(("on chain", why is None, why or "the chain confirms the anchor"))
    rollups = bundle.get("rollups", [])
    if not isinstance(rollups, list):
        steps.append(("roll-ups", False, "rollups must be a list"))
        rollups = []
    for entry in rollups:
        steps.extend(_check_rollup_entry(entry, manifest.gw, manifest.batch, manifest.root, check_rollup))
    return BundleCheck(all(good for _, good, _ in steps), steps)


def _int(entry: Mapping[str, Any], key: str) -> int:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"roll-up entry needs an integer {key}")
    return v


def _check_rollup_entry(entry: Any, gw: str, batch: int, batch_root: bytes,
                        check_rollup: Callable[[str, AnchorReceipt], str | None] | None) -> list[tuple[str, bool, str]]:
    try:
        if not isinstance(entry, Mapping):
            raise BundleError("a roll-up entry must be an object")
        target = entry.get("target")
        if not isinstance(target, str):
            raise BundleError("roll-up entry needs a target")
        number, first, index, size = (_int(entry, k) for k in ("rollup", "first_batch", "index", "size"))
        path_raw = entry.get("path")
        if not isinstance(path_raw, list) or len(path_raw) > MAX_PROOF_LEN:
            raise BundleError("roll-up path must be a list of at most 64 hashes")
        path = [_hex(h, "rollups[].path[]") for h in path_raw]
        root = _hex(entry.get("root"), "rollups[].root")
        receipt = None if entry.get("receipt") is None else AnchorReceipt.from_bytes(
            _hex(entry.get("receipt"), "rollups[].receipt"))
    except (BundleError, ReceiptError) as exc:
        return [("roll-up", False, f"malformed entry: {exc}")]
    name = f"roll-up {target}"
    steps = [(name, index == batch - first and verify_rollup_path(batch_root, index, size, path, root),
              f"batch {batch}'s root is leaf {index} of roll-up {number} ({size} batches), root {root.hex()[:16]}…")]
    if receipt is None:
        steps.append((f"{name} anchor", False, "the roll-up is not anchored yet"))
        return steps
    try:
        expected_gw = rollup_gw(gw)
    except EdgeError as exc:
        return [*steps, (f"{name} anchor", False, str(exc))]
    same = receipt.root == root and receipt.gw == expected_gw and receipt.batch == number
    steps.append((f"{name} anchor", same, f"tx 0x{receipt.tx.hex()[:16]}… in block {receipt.block} of chain "
                  f"{receipt.chain_id} names this roll-up's root"))
    if check_rollup is not None:
        why = check_rollup(target, receipt)
        steps.append((f"{name} on chain", why is None, why or f"the {target} chain confirms the roll-up"))
    return steps
