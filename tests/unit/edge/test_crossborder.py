"""The cross-border table: every region x audience jurisdiction x flow x legal basis has the decision written here."""

from __future__ import annotations

import itertools

import pytest

from edge.crossborder import (
    GBA_MAINLAND_CITIES,
    Decision,
    Flow,
    Jurisdiction,
    LegalBasis,
    decide,
    jurisdiction_of,
)
from edge.regions import GUANGDONG_CITIES, REGIONS

B = LegalBasis
ALL_BASES = tuple(LegalBasis)
PIPL = (B.PIPL_STANDARD_CONTRACT, B.CAC_ASSESSMENT, B.PIPL_CERTIFICATION)

# Cross-border READING: (source class, destination) -> the bases that allow it. Everything else is blocked.
# Source classes: hk, macao, gba (the nine mainland GBA cities), gd (the other 12 Guangdong cities).
READING_ALLOWED: dict[tuple[str, Jurisdiction], frozenset[LegalBasis]] = {
    ("hk", Jurisdiction.MAINLAND): frozenset({B.GBA_STANDARD_CONTRACT, B.RECORDED_BASIS}),
    ("hk", Jurisdiction.MACAO): frozenset({B.RECORDED_BASIS}),
    ("macao", Jurisdiction.MAINLAND): frozenset({B.RECORDED_BASIS}),
    ("macao", Jurisdiction.HONGKONG): frozenset({B.RECORDED_BASIS}),
    ("gba", Jurisdiction.HONGKONG): frozenset({B.GBA_STANDARD_CONTRACT, *PIPL}),
    ("gba", Jurisdiction.MACAO): frozenset(PIPL),
    ("gd", Jurisdiction.HONGKONG): frozenset(PIPL),
    ("gd", Jurisdiction.MACAO): frozenset(PIPL),
}


def source_class(region: str) -> str:
    if region == "hongkong":
        return "hk"
    if region == "macao":
        return "macao"
    return "gba" if region in GBA_MAINLAND_CITIES else "gd"


def expected(region: str, dst: Jurisdiction, flow: Flow, basis: LegalBasis) -> bool:
    if flow in (Flow.PROOF, Flow.DEIDENTIFIED) or jurisdiction_of(region) is dst:
        return True
    return basis in READING_ALLOWED[(source_class(region), dst)]


def test_regions_map_to_jurisdictions() -> None:
    assert jurisdiction_of("hongkong") is Jurisdiction.HONGKONG
    assert jurisdiction_of("macao") is Jurisdiction.MACAO
    assert all(jurisdiction_of(c) is Jurisdiction.MAINLAND for c in GUANGDONG_CITIES)
    assert len(GBA_MAINLAND_CITIES) == 9 and set(GUANGDONG_CITIES) > GBA_MAINLAND_CITIES
    assert "shantou" not in GBA_MAINLAND_CITIES and "shenzhen" in GBA_MAINLAND_CITIES


@pytest.mark.parametrize(
    ("region", "dst", "flow", "basis"), list(itertools.product(REGIONS, Jurisdiction, Flow, ALL_BASES))
)
def test_every_combination(region: str, dst: Jurisdiction, flow: Flow, basis: LegalBasis) -> None:
    d = decide(region, dst, flow, basis, basis_ref="PDPO s.33 assessment 2026-11" if basis is B.RECORDED_BASIS else "")
    assert isinstance(d, Decision)
    assert d.allowed is expected(region, dst, flow, basis), d.explanation
    if not d.allowed:
        assert d.reason_code == "cross_border" and region in d.explanation
    elif flow is Flow.PROOF:
        assert d.reason_code == "proof"
    elif jurisdiction_of(region) is dst:
        assert d.reason_code == "same_jurisdiction"
    elif flow is Flow.DEIDENTIFIED:
        assert d.reason_code == "deidentified"
    else:
        assert d.reason_code == basis.value


def test_a_recorded_basis_without_its_reference_is_blocked() -> None:
    assert decide("hongkong", "mainland", "reading", "recorded_basis", basis_ref="x").allowed
    for ref in ("", "   "):
        d = decide("hongkong", "mainland", "reading", "recorded_basis", basis_ref=ref)
        assert not d.allowed and "legal_basis_ref" in d.explanation


def test_the_examples_of_the_issue() -> None:
    """A Hong Kong audience without a legal basis gets no readings and no per-person aggregates from Shenzhen,
    only de-identified aggregates and proofs (PIPL Art. 73: an aggregate with sub and n = 1 is the reading)."""
    assert not decide("shenzhen", "hongkong", "reading").allowed
    assert not decide("shenzhen", "hongkong", "aggregate").allowed
    assert decide("shenzhen", "hongkong", "deidentified").allowed
    assert decide("shenzhen", "hongkong", "aggregate", "gba_standard_contract").allowed
    assert decide("shenzhen", "mainland", "aggregate").allowed
    assert decide("shenzhen", "hongkong", "proof").allowed
    assert decide("shenzhen", "hongkong", "reading", "gba_standard_contract").allowed
    assert not decide("shantou", "hongkong", "reading", "gba_standard_contract").allowed
    assert not decide("macao", "mainland", "reading", "gba_standard_contract").allowed


@pytest.mark.parametrize(
    "args",
    [
        ("atlantis", "mainland", "reading", "none"),
        ("shenzhen", "taiwan", "reading", "none"),
        ("shenzhen", "hongkong", "gossip", "none"),
        ("shenzhen", "hongkong", "reading", "handshake"),
        ("Shenzhen", "hongkong", "proof", "none"),
    ],
)
def test_unknown_names_never_decide_a_flow(args: tuple[str, str, str, str]) -> None:
    with pytest.raises(ValueError, match=r"not a valid|unknown region"):
        decide(*args)
