"""The anchor lifecycle, every transition, without a chain node: each (state, observation) pair either has
exactly the step below or is refused as a driver bug."""

from __future__ import annotations

import itertools
import typing

import pytest

from anchoring.lifecycle import (
    TABLE,
    AlreadyGone,
    AlreadyOther,
    AlreadyOurs,
    AnchorState,
    Deep,
    Event,
    IllegalStep,
    Job,
    Left,
    Mined,
    NotMined,
    Observation,
    Prepared,
    Reverted,
    Sent,
    Shallow,
    Stale,
    Step,
    apply,
    next_step,
    observe_depth,
    observe_own_anchor,
    observe_receipt,
)

S = AnchorState
RAW, TX, TX2 = b"raw-tx", b"\x11" * 32, b"\x22" * 32
BH, BH2 = b"\xb1" * 32, b"\xb2" * 32
ROOT = b"\x01" * 32

PENDING = Job(7, ROOT, 10, S.PENDING)
SIGNED = Job(7, ROOT, 10, S.SIGNED, RAW, TX)
SUBMITTED = Job(7, ROOT, 10, S.SUBMITTED, RAW, TX)
INCLUDED = Job(7, ROOT, 10, S.INCLUDED, RAW, TX, 40, BH)
ADOPTED = Job(7, ROOT, 10, S.INCLUDED, None, TX2, 40, BH)

EXPECTED: list[tuple[Job, Observation, Step]] = [
    (PENDING, Prepared(RAW, TX), Step(S.SIGNED, Event.SIGNED, raw_tx=RAW, tx_hash=TX)),
    (PENDING, AlreadyOurs(TX2, 40, BH), Step(S.INCLUDED, Event.ADOPTED, tx_hash=TX2, block_number=40, block_hash=BH)),
    (PENDING, AlreadyOther(6, 10), Step(S.FAILED, Event.CONFLICT)),
    (PENDING, AlreadyGone(), Step(S.PENDING, Event.WAITING)),
    (SIGNED, Sent(), Step(S.SUBMITTED, Event.SENT)),
    (SIGNED, Stale(), Step(S.PENDING, Event.STALE, forget_tx=True, forget_block=True, retry=True)),
    (SUBMITTED, NotMined(), Step(S.SUBMITTED, Event.WAITING)),
    (SUBMITTED, Reverted(), Step(S.PENDING, Event.REVERTED, forget_tx=True, forget_block=True, retry=True)),
    (SUBMITTED, Mined(40, BH), Step(S.INCLUDED, Event.INCLUDED, block_number=40, block_hash=BH)),
    (INCLUDED, Shallow(), Step(S.INCLUDED, Event.WAITING)),
    (INCLUDED, Deep(b"receipt"), Step(S.FINAL, Event.FINAL, receipt=b"receipt")),
    (INCLUDED, Left(), Step(S.SIGNED, Event.LEFT_BLOCK, forget_block=True, retry=True)),  # resubmit the same tx
    (ADOPTED, Left(), Step(S.PENDING, Event.LEFT_BLOCK, forget_tx=True, forget_block=True, retry=True)),
]

SAMPLES: list[Observation] = [
    Prepared(RAW, TX),
    AlreadyOurs(TX, 1, BH),
    AlreadyOther(1, 1),
    AlreadyGone(),
    Sent(),
    Stale(),
    NotMined(),
    Reverted(),
    Mined(1, BH),
    Shallow(),
    Deep(b"r"),
    Left(),
]


@pytest.mark.parametrize(("job", "seen", "step"), EXPECTED, ids=lambda x: type(x).__name__)
def test_each_transition_is_exactly(job: Job, seen: Observation, step: Step) -> None:
    assert next_step(job, seen) == step


def test_the_table_is_covered_and_every_other_pair_is_refused() -> None:
    assert {type(s) for s in SAMPLES} == set(typing.get_args(Observation))
    covered = {(job.state, type(seen)) for job, seen, _ in EXPECTED}
    assert covered == set(TABLE)
    for state, seen in itertools.product(S, SAMPLES):
        job = Job(1, ROOT, 1, state, RAW, TX, 1, BH)
        if (state, type(seen)) in TABLE:
            next_step(job, seen)
        else:
            with pytest.raises(IllegalStep, match=str(state)):
                next_step(job, seen)


@pytest.mark.parametrize("state", [S.FINAL, S.FAILED])
def test_final_and_failed_jobs_never_move(state: AnchorState) -> None:
    for seen in SAMPLES:
        with pytest.raises(IllegalStep):
            next_step(Job(1, ROOT, 1, state), seen)


def test_a_job_walks_from_pending_to_final_and_keeps_its_fields() -> None:
    job = PENDING
    for seen in (Prepared(RAW, TX), Sent(), Mined(40, BH), Shallow(), Deep(b"receipt")):
        job = apply(job, next_step(job, seen))
    assert job == Job(7, ROOT, 10, S.FINAL, RAW, TX, 40, BH, attempts=0)


def test_a_reorg_resends_the_same_transaction_and_a_revert_signs_a_new_one() -> None:
    left = apply(INCLUDED, next_step(INCLUDED, Left()))
    assert (left.state, left.raw_tx, left.tx_hash, left.block_number, left.attempts) == (S.SIGNED, RAW, TX, None, 1)
    reverted = apply(SUBMITTED, next_step(SUBMITTED, Reverted()))
    assert (reverted.state, reverted.raw_tx, reverted.tx_hash, reverted.attempts) == (S.PENDING, None, None, 1)


def test_waiting_steps_store_nothing() -> None:
    assert not next_step(SUBMITTED, NotMined()).moves and not next_step(INCLUDED, Shallow()).moves
    assert next_step(SIGNED, Sent()).moves


# ---------------------------------------------------------------- reading the chain's answers
def test_a_receipt_reads_as_not_mined_reverted_or_mined() -> None:
    assert observe_receipt(None, None, None) == NotMined()
    assert observe_receipt(False, 40, BH) == Reverted()
    assert observe_receipt(True, None, None) == Reverted()  # a success without a block is no inclusion
    assert observe_receipt(True, 40, BH) == Mined(40, BH)


def test_depth_is_only_counted_in_the_block_the_job_was_seen_in() -> None:
    assert observe_depth(INCLUDED, None, None, None, 2, None) == Left()  # receipt gone
    assert observe_depth(INCLUDED, False, BH, 5, 2, b"r") == Left()  # reverted
    assert observe_depth(INCLUDED, True, BH2, 5, 2, b"r") == Left()  # mined again, in another block
    assert observe_depth(INCLUDED, True, BH, 1, 2, b"r") == Shallow()
    assert observe_depth(INCLUDED, True, BH, 2, 2, None) == Shallow()  # no receipt to keep: not final
    assert observe_depth(INCLUDED, True, BH, 2, 2, b"r") == Deep(b"r")
    assert observe_depth(INCLUDED, True, BH, 0, 0, b"r") == Deep(b"r")


def test_only_our_anchor_of_this_very_number_and_count_is_adopted() -> None:
    assert observe_own_anchor(PENDING, None) == AlreadyGone()
    assert observe_own_anchor(PENDING, (7, 10, TX2, 40, BH)) == AlreadyOurs(TX2, 40, BH)
    assert observe_own_anchor(PENDING, (6, 10, TX2, 40, BH)) == AlreadyOther(6, 10)
    assert observe_own_anchor(PENDING, (7, 9, TX2, 40, BH)) == AlreadyOther(7, 9)
