"""The anchor lifecycle, sans I/O: a job's state, what the chain was seen to say, and the step that follows.

The driver (in the gateway) asks the chain one question per job, turns the answer into an observation
(``observe_*`` below, pure), and stores the step ``next_step`` returns. Every rule is a row of ``TABLE``,
so the whole lifecycle can be read, and tested, without a chain node:

    pending ──Prepared──► signed ──Sent──► submitted ──Mined──► included ──Deep──► final
       ▲  └─AlreadyOurs──────────────────────────────────────────►┘  │
       │  └─AlreadyOther──► failed (a conflict for the operator)       │
       ├──── Stale (signed), Reverted (submitted), AdoptedLeft (included, we hold no tx)
       └ signed ◄── Left (included: the block is gone; the same transaction goes out again)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from anchoring.errors import AnchoringError


class AnchorState(StrEnum):
    PENDING = "pending"  # no transaction yet (or the last one can never be mined)
    SIGNED = "signed"  # a transaction is signed and kept, not yet accepted by a node
    SUBMITTED = "submitted"  # a node accepted it
    INCLUDED = "included"  # it is in a block, not yet deep enough
    FINAL = "final"  # deep enough: the receipt is kept and published
    FAILED = "failed"  # a conflict no retry can fix: the operator must look


OPEN_STATES = (AnchorState.PENDING, AnchorState.SIGNED, AnchorState.SUBMITTED, AnchorState.INCLUDED)


class Event(StrEnum):
    """What a step means, for counters and logs."""

    SIGNED = "signed"
    SENT = "sent"
    STALE = "stale"
    REVERTED = "reverted"
    INCLUDED = "included"
    ADOPTED = "adopted"
    CONFLICT = "conflict"
    FINAL = "final"
    LEFT_BLOCK = "left_block"
    WAITING = "waiting"


@dataclass(frozen=True, slots=True)
class Job:
    """One anchor job as the queue holds it: ``number`` is the batch or roll-up number."""

    number: int
    root: bytes
    count: int
    state: AnchorState
    raw_tx: bytes | None = None
    tx_hash: bytes | None = None
    block_number: int | None = None
    block_hash: bytes | None = None
    attempts: int = 0  # transactions given up on so far (reverted, stale, left their block)


# ---------------------------------------------------------------- observations: what the chain said
@dataclass(frozen=True, slots=True)
class Prepared:
    """A transaction for the job was signed (not sent): it is kept first, so a resend is the same tx."""

    raw_tx: bytes
    tx_hash: bytes


@dataclass(frozen=True, slots=True)
class AlreadyOurs:
    """The root is on chain, anchored by our account for this very number and count: adopt that anchor."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class AlreadyOther:
    """The root is on chain, anchored by our account as another number or count."""

    number: int
    count: int


@dataclass(frozen=True, slots=True)
class AlreadyGone:
    """The chain said "already anchored", but no such anchor of ours is there now (reorged away)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """A node accepted the stored transaction."""


@dataclass(frozen=True, slots=True)
class Stale:
    """The stored transaction can never be mined (its nonce is used): a new one must be signed."""


@dataclass(frozen=True, slots=True)
class NotMined:
    """No receipt yet."""


@dataclass(frozen=True, slots=True)
class Reverted:
    """The transaction was mined and failed."""


@dataclass(frozen=True, slots=True)
class Mined:
    """The transaction is in a block and succeeded."""

    block_number: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class Shallow:
    """Still in its block, not yet ``confirmations`` deep."""


@dataclass(frozen=True, slots=True)
class Deep:
    """Still in its block and deep enough: final. ``receipt`` is the receipt to keep and publish."""

    receipt: bytes


@dataclass(frozen=True, slots=True)
class Left:
    """The block the job was seen in is gone (reorg or revert)."""


Observation = (
    Prepared
    | AlreadyOurs
    | AlreadyOther
    | AlreadyGone
    | Sent
    | Stale
    | NotMined
    | Reverted
    | Mined
    | Shallow
    | Deep
    | Left
)


# ---------------------------------------------------------------- steps: what to store
@dataclass(frozen=True, slots=True)
class Step:
    """A job's new state and the fields that change with it (None: keep the stored value)."""

    state: AnchorState
    event: Event
    raw_tx: bytes | None = None
    tx_hash: bytes | None = None
    block_number: int | None = None
    block_hash: bytes | None = None
    receipt: bytes | None = None
    forget_tx: bool = False  # the stored transaction is given up on (a new one will be signed)
    forget_block: bool = False  # the block it was seen in no longer holds it
    retry: bool = False  # counts one more attempt

    @property
    def moves(self) -> bool:
        """Whether anything is stored (waiting steps store nothing)."""
        return self.event is not Event.WAITING


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: the state a job goes to and what it keeps, forgets or takes from the observation."""

    to: AnchorState
    event: Event
    take_tx: bool = False
    take_block: bool = False
    take_receipt: bool = False
    forget_tx: bool = False
    forget_block: bool = False
    retry: bool = False


S = AnchorState
TABLE: dict[tuple[AnchorState, type[Observation]], Rule] = {
    (S.PENDING, Prepared): Rule(S.SIGNED, Event.SIGNED, take_tx=True),
    (S.PENDING, AlreadyOurs): Rule(S.INCLUDED, Event.ADOPTED, take_tx=True, take_block=True),
    (S.PENDING, AlreadyOther): Rule(S.FAILED, Event.CONFLICT),
    (S.PENDING, AlreadyGone): Rule(S.PENDING, Event.WAITING),
    (S.SIGNED, Sent): Rule(S.SUBMITTED, Event.SENT),
    (S.SIGNED, Stale): Rule(S.PENDING, Event.STALE, forget_tx=True, forget_block=True, retry=True),
    (S.SUBMITTED, NotMined): Rule(S.SUBMITTED, Event.WAITING),
    (S.SUBMITTED, Reverted): Rule(S.PENDING, Event.REVERTED, forget_tx=True, forget_block=True, retry=True),
    (S.SUBMITTED, Mined): Rule(S.INCLUDED, Event.INCLUDED, take_block=True),
    (S.INCLUDED, Shallow): Rule(S.INCLUDED, Event.WAITING),
    (S.INCLUDED, Deep): Rule(S.FINAL, Event.FINAL, take_receipt=True),
    (S.INCLUDED, Left): Rule(S.SIGNED, Event.LEFT_BLOCK, forget_block=True, retry=True),
}
"""Every transition there is. A pair not in the table is a driver bug (``IllegalStep``)."""

ADOPTED_LEFT = Rule(S.PENDING, Event.LEFT_BLOCK, forget_tx=True, forget_block=True, retry=True)
"""(included, Left) for an adopted anchor: we never held its transaction, so a new one is signed."""


class IllegalStep(AnchoringError, LookupError):
    """An observation that cannot happen in the job's state (the driver asked the wrong question)."""


def next_step(job: Job, seen: Observation) -> Step:
    """The step that follows ``seen`` for ``job``; raises ``IllegalStep`` for a pair outside the table."""
    rule = TABLE.get((job.state, type(seen)))
    if rule is None:
        raise IllegalStep(f"{type(seen).__name__} cannot happen to an anchor job in state {job.state}")
    if isinstance(seen, Left) and job.raw_tx is None:
        rule = ADOPTED_LEFT
    step = Step(rule.to, rule.event, forget_tx=rule.forget_tx, forget_block=rule.forget_block, retry=rule.retry)
    if rule.take_tx and isinstance(seen, Prepared | AlreadyOurs):
        raw = seen.raw_tx if isinstance(seen, Prepared) else None
        step = replace(step, raw_tx=raw, tx_hash=seen.tx_hash)
    if rule.take_block and isinstance(seen, Mined | AlreadyOurs):
        step = replace(step, block_number=seen.block_number, block_hash=seen.block_hash)
    if rule.take_receipt and isinstance(seen, Deep):
        step = replace(step, receipt=seen.receipt)
    return step


def apply(job: Job, step: Step) -> Job:
    """The job as the queue holds it after ``step`` (what the journal's one update does, for tests and fakes)."""
    raw = None if step.forget_tx else step.raw_tx if step.raw_tx is not None else job.raw_tx
    tx_hash = None if step.forget_tx else step.tx_hash if step.tx_hash is not None else job.tx_hash
    block = None if step.forget_block else step.block_number if step.block_number is not None else job.block_number
    bhash = None if step.forget_block else step.block_hash if step.block_hash is not None else job.block_hash
    return replace(
        job,
        state=step.state,
        raw_tx=raw,
        tx_hash=tx_hash,
        block_number=block,
        block_hash=bhash,
        attempts=job.attempts + step.retry,
    )


# ---------------------------------------------------------------- reading the chain's answers (pure)
def observe_receipt(ok: bool | None, block_number: int | None, block_hash: bytes | None) -> Observation:
    """A submitted job's receipt (``ok`` None: no receipt yet)."""
    if ok is None:
        return NotMined()
    if not ok or block_number is None or block_hash is None:
        return Reverted()
    return Mined(block_number, block_hash)


def observe_depth(
    job: Job, ok: bool | None, block_hash: bytes | None, depth: int | None, confirmations: int, receipt: bytes | None
) -> Observation:
    """An included job re-checked: ``Left`` unless its receipt still names the block it was seen in; then
    ``Deep`` once ``depth`` reaches ``confirmations`` (``receipt`` is what to keep), else ``Shallow``."""
    if not ok or block_hash is None or block_hash != job.block_hash:
        return Left()
    if depth is None or depth < confirmations or receipt is None:
        return Shallow()
    return Deep(receipt)


def observe_own_anchor(job: Job, found: tuple[int, int, bytes, int, bytes] | None) -> Observation:
    """After "already anchored": our own anchor of the root as (number, count, tx hash, block, block hash)."""
    if found is None:
        return AlreadyGone()
    number, count, tx_hash, block, block_hash = found
    if (number, count) == (job.number, job.count):
        return AlreadyOurs(tx_hash, block, block_hash)
    return AlreadyOther(number, count)
