"""Proof bundles: everything needed to prove one reading to a third party, in one JSON file.

A bundle holds the record's exact bytes, its RFC 9162 inclusion path, the signed batch manifest, the
anchor receipt and, for each roll-up target the batch went to, the roll-up path from the batch root to
the roll-up root with that roll-up's receipt. Checking it offline needs only this file and the gateway's
public key; with a chain RPC endpoint per target the anchors are checked on the chains too. The key a bundle
carries is a convenience for reading it, never a reason to trust it: which key may sign comes from the caller's
``TrustPolicy``. Pure: no files, no network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.errors import AnchoringError, ReceiptError
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Outcome
from anchoring.trust import KeySource, TrustPolicy
from anchoring.verify_anchor import AnchorChecker
from edge.errors import EdgeError
from edge.manifest import SignedManifest
from edge.merkle import MAX_PROOF_LEN, MerkleTree, verify_inclusion
from edge.record import Record
from edge.rollup import Rollup, verify_rollup_path

BUNDLE_VERSION = 1


class BundleError(AnchoringError, ValueError):
    """A bundle is malformed (not merely invalid: that is a verification result)."""


@dataclass(frozen=True)
class RollupProof:
    """A batch's place in one roll-up, for a bundle."""

    rollup: Rollup
    receipt: AnchorReceipt | None


def build_bundle(
    seq: int,
    batch_records: Sequence[bytes],
    signed: SignedManifest,
    receipt: AnchorReceipt | None,
    public_key_pem: str | None = None,
    rollups: Sequence[RollupProof] = (),
) -> dict[str, Any]:
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
        "batch": {"manifest": signed.body.hex(), "sig": signed.sig.hex(), "key_id": signed.key_id},
        "anchor": None
        if receipt is None
        else {
            "receipt": bytes(receipt).hex(),
            "chain_id": receipt.chain_id,
            "contract": "0x" + receipt.contract.hex(),
            "tx": "0x" + receipt.tx.hex(),
            "block": receipt.block,
            "status": receipt.status,
        },
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
    return {
        "target": r.target,
        "rollup": r.number,
        "first_batch": r.first_batch,
        "index": index,
        "size": len(r.roots),
        "path": [h.hex() for h in r.path(batch)],
        "root": r.root.hex(),
        "receipt": None if p.receipt is None else bytes(p.receipt).hex(),
    }


@dataclass
class BundleCheck:
    ok: bool
    steps: list[tuple[str, bool, str]]
    unchecked: list[str] = field(default_factory=list)  # checks that could not run (no chain, trust on first use)

    @property
    def outcome(self) -> Outcome:
        if not self.ok:
            return Outcome.PROBLEMS
        return Outcome.UNCHECKED if self.unchecked else Outcome.VERIFIED

    def summary(self) -> str:
        lines = [f"  {'ok  ' if good else 'FAIL'} {name}: {detail}" for name, good, detail in self.steps]
        lines += [f"  NOT CHECKED: {u}" for u in self.unchecked]
        verdict = {
            Outcome.VERIFIED: "the reading is proven",
            Outcome.PROBLEMS: "NOT proven",
            Outcome.UNCHECKED: "no check failed, but the proof is incomplete (see NOT CHECKED)",
        }
        return "\n".join([*lines, "RESULT: " + verdict[self.outcome]])


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError as exc:
        raise BundleError(f"{what} is not hex") from exc


def verify_bundle(
    bundle: Mapping[str, Any],
    trust: TrustPolicy,
    chain: AnchorChecker | None = None,
    rollup_chains: Mapping[str, AnchorChecker] | None = None,
) -> BundleCheck:
    """Check every link: record → Merkle root → signed manifest → key → anchor (→ chain), and for each
    roll-up: batch root → roll-up root → roll-up anchor (→ that target's chain from ``rollup_chains``)."""
    if trust.uses_registry and chain is None:
        raise ValueError("registry trust needs the chain: a key's validity is judged at its anchor's block")
    steps: list[tuple[str, bool, str]] = []
    unchecked: list[str] = []
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
        signed = SignedManifest(
            _hex(b.get("manifest"), "batch.manifest"), _hex(b.get("sig"), "batch.sig"), str(b.get("key_id"))
        )
        manifest = signed.manifest
        record = Record.from_bytes(record_bytes)
        embedded = b.get("public_key_pem")
        if embedded is not None and not isinstance(embedded, str):
            raise BundleError("batch.public_key_pem must be a string")
    except (EdgeError, BundleError) as exc:
        return BundleCheck(False, [("bundle format", False, str(exc))])

    steps.append(("record", True, f"{record.kind} from {record.dev} at seq {record.seq}, gateway {record.gw}"))
    place = record.gw == manifest.gw and index == record.seq - manifest.first_seq and size == manifest.count
    steps.append(
        (
            "position",
            place,
            f"seq {record.seq} is leaf {index} of batch {manifest.batch} ({manifest.first_seq}..{manifest.last_seq})",
        )
    )
    included = verify_inclusion(record_bytes, index, size, path, manifest.root)
    steps.append(
        ("Merkle inclusion", included, f"RFC 9162 path of {len(path)} SM3 hashes to root {manifest.root.hex()[:16]}…")
    )
    anchor_info = _check_anchor(
        bundle.get("anchor"), manifest.gw, manifest.batch, manifest.count, manifest.root, chain, steps, unchecked
    )
    trusted = trust.key_for(manifest.gw, signed.key_id, anchor_info, 1, embedded)
    if isinstance(trusted, str):
        steps.append(("signature", False, trusted))
    else:
        good = signed.verify(trusted.verifier)
        by = "" if trusted.operator is None else f", operator 0x{trusted.operator.hex()}"
        steps.append(("signature", good, f"SM2 over the manifest, key {signed.key_id} ({trusted.source}{by})"))
        if trusted.source is KeySource.TOFU:
            unchecked.append("the key came from the bundle itself (trust on first use); pin it or use the registry")
    rollups = bundle.get("rollups", [])
    if not isinstance(rollups, list):
        steps.append(("roll-ups", False, "rollups must be a list"))
        rollups = []
    for entry in rollups:
        steps.extend(
            _check_rollup_entry(
                entry, manifest.gw, manifest.batch, manifest.root, trust, rollup_chains or {}, unchecked
            )
        )
    return BundleCheck(all(good for _, good, _ in steps), steps, unchecked)


def _check_anchor(
    anchor: Any,
    gw: str,
    batch: int,
    count: int,
    root: bytes,
    chain: AnchorChecker | None,
    steps: list[tuple[str, bool, str]],
    unchecked: list[str],
) -> AnchorInfo | None:
    """The batch's anchor as the chain records it (None when absent, wrong or unconfirmed: a step says why)."""
    if not isinstance(anchor, Mapping):
        steps.append(("anchor", False, "the bundle has no anchor receipt"))
        return None
    try:
        receipt = AnchorReceipt.from_bytes(_hex(anchor.get("receipt"), "anchor.receipt"))
    except (ReceiptError, BundleError) as exc:
        steps.append(("anchor", False, f"malformed receipt: {exc}"))
        return None
    same = (
        receipt.kind is AnchorKind.BATCH
        and receipt.root == root
        and receipt.gw == gw
        and receipt.number == batch
        and receipt.count == count
    )
    steps.append(
        (
            "anchor",
            same,
            f"tx 0x{receipt.tx.hex()[:16]}… in block {receipt.block} of chain "
            f"{receipt.chain_id} names this batch's root",
        )
    )
    if chain is None:
        unchecked.append("the anchor was not checked on a chain (give --rpc)")
        return None
    got = chain.confirm(receipt)
    if isinstance(got, str):
        steps.append(("on chain", False, got))
        return None
    steps.append(
        (
            "on chain",
            same,
            f"the chain confirms the anchor: block {got.block_number} of {chain.name}, sent by 0x{got.anchorer.hex()}",
        )
    )
    return got if same else None


def _int(entry: Mapping[str, Any], key: str) -> int:
    v = entry.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"roll-up entry needs an integer {key}")
    return v


def _check_rollup_entry(
    entry: Any,
    gw: str,
    batch: int,
    batch_root: bytes,
    trust: TrustPolicy,
    rollup_chains: Mapping[str, AnchorChecker],
    unchecked: list[str],
) -> list[tuple[str, bool, str]]:
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
        receipt = (
            None
            if entry.get("receipt") is None
            else AnchorReceipt.from_bytes(_hex(entry.get("receipt"), "rollups[].receipt"))
        )
    except (BundleError, ReceiptError) as exc:
        return [("roll-up", False, f"malformed entry: {exc}")]
    name = f"roll-up {target}"
    steps = [
        (
            name,
            index == batch - first and verify_rollup_path(batch_root, index, size, path, root),
            f"batch {batch}'s root is leaf {index} of roll-up {number} ({size} batches), root {root.hex()[:16]}…",
        )
    ]
    if receipt is None:
        steps.append((f"{name} anchor", False, "the roll-up is not anchored yet"))
        return steps
    same = (
        receipt.kind is AnchorKind.ROLLUP
        and receipt.root == root
        and receipt.gw == gw
        and receipt.number == number
        and receipt.count == size
    )
    steps.append(
        (
            f"{name} anchor",
            same,
            f"tx 0x{receipt.tx.hex()[:16]}… in block {receipt.block} of chain "
            f"{receipt.chain_id} names this roll-up's root",
        )
    )
    checker = rollup_chains.get(target)
    if checker is None:
        unchecked.append(f"the roll-up on {target} was not checked on that chain (give --rollup-rpc {target}=URL)")
        return steps
    got = checker.confirm(receipt)
    if isinstance(got, str):
        steps.append((f"{name} on chain", False, got))
    elif trust.uses_registry and got.anchorer not in trust.anchorers(gw):
        steps.append(
            (
                f"{name} on chain",
                False,
                f"anchored by 0x{got.anchorer.hex()}, an account the registry does not name for {gw}",
            )
        )
    else:
        steps.append((f"{name} on chain", True, f"the {target} chain confirms the roll-up"))
    return steps
