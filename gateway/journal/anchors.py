"""One anchor queue for every target, keyed by (queue, number): batch anchors and roll-up anchors."""

from __future__ import annotations

from collections.abc import Collection

from anchoring.lifecycle import AnchorState, Job, Step
from gateway.errors import JournalError
from gateway.journal.batches import BatchStore
from gateway.journal.file import JournalFile, opt
from gateway.journal.schema import ADD_JOB, BATCH_QUEUE, JOB_COLUMNS


class AnchorQueue:
    """Anchor jobs and their lifecycle steps (what the anchor driver works through and announcements publish)."""

    def __init__(self, file: JournalFile, batches: BatchStore) -> None:
        self._f, self._batches = file, batches

    def anchor_jobs(self, states: Collection[str], queue: str = BATCH_QUEUE) -> list[Job]:
        """``queue``'s jobs in ``states``, by number (``queue``: BATCH_QUEUE or a roll-up target's name)."""
        marks = ",".join("?" * len(states))
        rows = self._f.query(
            f"SELECT {JOB_COLUMNS} FROM anchor_jobs WHERE queue = ? AND state IN ({marks}) "  # noqa: S608
            "ORDER BY number",
            (queue, *states),
        )
        return [
            Job(
                int(n),
                bytes(r),
                int(c),
                AnchorState(s),
                opt(raw, bytes),
                opt(h, bytes),
                opt(bn, int),
                opt(bh, bytes),
                int(a),
            )
            for n, r, c, s, raw, h, bn, bh, a in rows
        ]

    def advance(self, number: int, step: Step, queue: str = BATCH_QUEUE) -> None:
        """Store one lifecycle step of a job: its state and the fields the step sets, keeps or forgets."""
        self._f.tx(
            [
                (
                    "UPDATE anchor_jobs SET state = ?, "
                    "raw_tx = CASE WHEN ? THEN NULL ELSE COALESCE(?, raw_tx) END, "
                    "tx_hash = CASE WHEN ? THEN NULL ELSE COALESCE(?, tx_hash) END, "
                    "block_number = CASE WHEN ? THEN NULL ELSE COALESCE(?, block_number) END, "
                    "block_hash = CASE WHEN ? THEN NULL ELSE COALESCE(?, block_hash) END, "
                    "receipt = COALESCE(?, receipt), attempts = attempts + ? WHERE queue = ? AND number = ?",
                    (
                        str(step.state),
                        step.forget_tx,
                        step.raw_tx,
                        step.forget_tx,
                        step.tx_hash,
                        step.forget_block,
                        step.block_number,
                        step.forget_block,
                        step.block_hash,
                        step.receipt,
                        int(step.retry),
                        queue,
                        number,
                    ),
                    False,
                )
            ]
        )

    def unpublished_receipts(self, queue: str = BATCH_QUEUE) -> list[tuple[int, bytes]]:
        rows = self._f.query(
            "SELECT number, receipt FROM anchor_jobs WHERE queue = ? AND receipt IS NOT NULL AND "
            "published = 0 ORDER BY number",
            (queue,),
        )
        return [(int(b), bytes(r)) for b, r in rows]

    def mark_receipt_published(self, number: int, queue: str = BATCH_QUEUE) -> None:
        self._f.tx([("UPDATE anchor_jobs SET published = 1 WHERE queue = ? AND number = ?", (queue, number), False)])

    # ------------------------------------------------------------------ roll-ups (second anchor targets)
    def last_rollup(self, target: str) -> tuple[int, int] | None:
        """(number, last batch) of ``target``'s latest roll-up."""
        rows = self._f.query(
            "SELECT number, last_batch FROM anchor_jobs WHERE queue = ? ORDER BY number DESC LIMIT 1", (target,)
        )
        return None if not rows else (int(rows[0][0]), int(rows[0][1]))

    def add_rollup(self, target: str, rollup: int, first_batch: int, last_batch: int, root: bytes) -> None:
        """Store a roll-up's pending anchor job, checking it continues the previous one exactly."""
        if target == BATCH_QUEUE:
            raise JournalError(f"{target!r} is the batch queue, not a roll-up target")
        prev = self.last_rollup(target)
        exp_number, exp_first = (1, 1) if prev is None else (prev[0] + 1, prev[1] + 1)
        if (rollup, first_batch) != (exp_number, exp_first):
            raise JournalError(
                f"roll-up {rollup} for {target} from batch {first_batch} breaks continuity: expected "
                f"roll-up {exp_number} from batch {exp_first}"
            )
        last = self._batches.last_batch()
        if last is None or last_batch > last.batch or last_batch < first_batch:
            raise JournalError(f"roll-up {rollup} covers batches {first_batch}..{last_batch} that do not exist")
        self._f.tx([(ADD_JOB, (target, rollup, first_batch, last_batch, root, last_batch - first_batch + 1), False)])

    def rollup_range(self, target: str, rollup: int) -> tuple[int, int]:
        rows = self._f.query(
            "SELECT first_batch, last_batch FROM anchor_jobs WHERE queue = ? AND number = ?", (target, rollup)
        )
        if not rows or target == BATCH_QUEUE:
            raise JournalError(f"no roll-up {rollup} for {target}")
        return int(rows[0][0]), int(rows[0][1])

    def rollup_for_batch(self, target: str, batch: int) -> tuple[int, int, int, bytes | None] | None:
        """(roll-up number, first batch, last batch, final receipt or None) of the roll-up holding ``batch``."""
        rows = self._f.query(
            "SELECT number, first_batch, last_batch, receipt FROM anchor_jobs WHERE queue = ? AND "
            "? BETWEEN first_batch AND last_batch",
            (target, batch),
        )
        if not rows or target == BATCH_QUEUE:
            return None
        n, f, last, rc = rows[0]
        return int(n), int(f), int(last), None if rc is None else bytes(rc)

    def rollups_open(self) -> int:
        """Roll-ups not yet final, or final but not yet published."""
        return int(
            self._f.query(
                "SELECT COUNT(*) FROM anchor_jobs WHERE queue != ? AND (state != 'final' OR published = 0)",
                (BATCH_QUEUE,),
            )[0][0]
        )

    def anchor_states(self) -> dict[tuple[str, str], int]:
        """Anchor jobs per (queue, state), over every queue (batches and each roll-up target)."""
        rows = self._f.query("SELECT queue, state, COUNT(*) FROM anchor_jobs GROUP BY queue, state")
        return {(str(q), str(s)): int(n) for q, s, n in rows}
