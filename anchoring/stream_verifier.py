"""The platform-side verifier: feed it what arrived on ``tiyi/v1/{region}/{gw}/#``, get a report.

A client of the incremental engine (``anchoring.engine``), where every check lives: ``feed`` only collects and never
raises on bad input — a malformed payload is a finding — and ``report`` runs the batch-level checks. Records are let
go as soon as their batch's Merkle root has been checked, so memory follows what is still unproven. It trusts nothing
it did not verify: which key may sign for a gateway comes from the caller's ``TrustPolicy``, and which block an
anchor is in comes from the chain, never from a receipt. No number inside a message sizes an allocation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from anchoring.engine import VerificationEngine
from anchoring.findings import (
    ANCHOR_STATES,
    MAX_PROBLEMS_PER_REASON,
    GatewayReport,
    Outcome,
    Problem,
    Reason,
    VerificationReport,
    missing_ranges,
)
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import AnchorChecker

__all__ = [
    "ANCHOR_STATES",
    "MAX_PROBLEMS_PER_REASON",
    "GatewayReport",
    "Outcome",
    "Problem",
    "Reason",
    "StreamVerifier",
    "VerificationReport",
    "missing_ranges",
]


class StreamVerifier:
    """Collect a whole stream, then report (``tiyi verify``, the demo, ``tiyi sim run``)."""

    def __init__(self, trust: TrustPolicy, late_join: bool = False) -> None:
        self.trust = trust
        self.engine = VerificationEngine(trust, late_join=late_join)

    @property
    def messages(self) -> int:
        return self.engine.messages

    def feed(self, topic: str, payload: bytes, retained: bool = False) -> None:
        self.engine.feed(topic, payload, retained)

    def report(
        self,
        chain: AnchorChecker | None = None,
        require_complete: bool = False,
        rollup_targets: Collection[str] = (),
        rollup_chains: Mapping[str, AnchorChecker] | None = None,
    ) -> VerificationReport:
        """``chain``: the batches' chain; ``rollup_chains``: each roll-up target's chain; ``rollup_targets``:
        chains every batch must be rolled up to (checked with ``require_complete``)."""
        return self.engine.report(chain, require_complete, rollup_targets, rollup_chains)
