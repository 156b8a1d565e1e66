"""The committed Anchor artifact is exactly what solc-js produces from Anchor.sol."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "anchoring" / "contracts"


def test_artifact_matches_a_fresh_compile() -> None:
    if not (ROOT / "tools" / "node_modules" / "solc").exists():
        pytest.fail("solc-js is not installed: run `make test` (it runs npm ci in tools/)")
    out = subprocess.run(["node", str(CONTRACTS / "compile.mjs")], capture_output=True, check=True, cwd=ROOT)
    committed = (CONTRACTS / "build" / "Anchor.json").read_text()
    assert out.stdout.decode() == committed, (
        "Anchor.sol changed: run `node anchoring/contracts/compile.mjs "
        "anchoring/contracts/build/Anchor.json` and commit the artifact"
    )
    art = json.loads(committed)
    assert art["evmVersion"] == "london"
    names = {x.get("name") for x in art["abi"]}
    assert {
        "anchor",
        "anchoredAt",
        "latestAnchored",
        "Anchored",
        "approveOperator",
        "registerGateway",
        "gatewayKey",
    } <= names
