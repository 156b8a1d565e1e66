"""Consent events: strict, signed, chained; a platform can prove consent and see a withheld withdrawal."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest

from edge.consent import ConsentEvent, SignedConsent, check_consent_chain, sign_consent
from edge.errors import CodecError
from edge.manifest import GENESIS_PREV
from edge.sm2 import generate_signer

SIGNER, OTHER = generate_signer(), generate_signer()
SUB = "sub-0123456789abcdef"


def chain(*steps: tuple[str, bool], gw: str = "gw-1") -> list[bytes]:
    out, prev = [], GENESIS_PREV
    for n, (purpose, granted) in enumerate(steps, 1):
        e = ConsentEvent(gw, n, 1_700_000_000_000 + n, SUB, purpose, granted, prev)
        out.append(bytes(sign_consent(e, SIGNER)))
        prev = e.digest
    return out


def test_a_grant_then_a_withdrawal_verifies_and_the_withdrawal_is_in_force() -> None:
    events = chain(("research", True), ("fitness_service", True), ("research", False))
    assert check_consent_chain(events, "gw-1", SIGNER) == {(SUB, "research"): False, (SUB, "fitness_service"): True}
    s = SignedConsent.from_bytes(events[0])
    assert SignedConsent.from_bytes(bytes(s)) == s and s.event.purpose == "research"


def test_a_withheld_withdrawal_shows_as_a_gap() -> None:
    events = chain(("research", True), ("research", False), ("insurance", True))
    with pytest.raises(CodecError, match="does not continue"):
        check_consent_chain([events[0], events[2]], "gw-1", SIGNER)
    with pytest.raises(CodecError, match="does not continue"):
        check_consent_chain([events[1], events[0], events[2]], "gw-1", SIGNER)  # reordered


def test_a_forged_or_foreign_event_is_refused() -> None:
    events = chain(("research", True))
    s = SignedConsent.from_bytes(events[0])
    forged = replace(s.event, granted=False)
    with pytest.raises(CodecError, match="signature"):
        check_consent_chain([bytes(SignedConsent(bytes(forged), s.sig, s.key_id))], "gw-1", SIGNER)
    with pytest.raises(CodecError, match="signature"):
        check_consent_chain(events, "gw-1", OTHER)
    with pytest.raises(CodecError, match="gateway"):
        check_consent_chain(chain(("research", True), gw="gw-2"), "gw-1", SIGNER)


@pytest.mark.parametrize(
    "change",
    [
        {"purpose": "marketing"},
        {"sub": "member-42"},
        {"sub": "sub-0123456789ABCDEF"},
        {"n": 0},
        {"granted": 1},
        {"prev": b"\x01" * 32},  # the first event must start from genesis
        {"prev": b"\x00" * 31},
    ],
)
def test_malformed_events_are_refused(change: dict[str, object]) -> None:
    e = ConsentEvent("gw-1", 1, 1, SUB, "research", True, GENESIS_PREV)
    m = {**cbor2.loads(bytes(e)), **change}
    with pytest.raises(CodecError):
        ConsentEvent.from_bytes(cbor2.dumps(m, canonical=True))


def test_unknown_keys_oversized_and_non_canonical_input_is_refused() -> None:
    e = ConsentEvent("gw-1", 1, 1, SUB, "research", True, GENESIS_PREV)
    m = cbor2.loads(bytes(e))
    for bad in (
        cbor2.dumps({**m, "extra": 1}, canonical=True),
        cbor2.dumps(dict(reversed(list(m.items())))),
        bytes(e) + b"\x00" * 300,
        cbor2.dumps({**m, "type": "head"}, canonical=True),
    ):
        with pytest.raises(CodecError):
            ConsentEvent.from_bytes(bad)
    with pytest.raises(CodecError):
        SignedConsent.from_bytes(b"\xa0" * 600)
