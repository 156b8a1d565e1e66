"""The cross-border policy table: may this flow go from a gateway's region to an audience's jurisdiction?

Pure and total: every (region, jurisdiction, flow, basis) gets a :class:`Decision`, and anything the table
does not explicitly allow is blocked (reason ``cross_border``). The rules (see docs/privacy.md, and
/work/shared/notes/privacy.md for the sources):

- PROOF (manifests, heads, anchors, receipts, view manifests) carries no personal data: always allowed.
- Within one jurisdiction everything is allowed (consent is still checked elsewhere, for every flow).
- AGGREGATE (an audience's per-person aggregate records: with ``sub`` and ``dev``; with n = 1 it *is* the
  reading) and READING (any individual reading, even minimised or encrypted: still personal information, PIPL
  Art. 73) across a border only with a legal basis valid for the pair:
  * ``gba_standard_contract``: between Hong Kong and the nine mainland Greater Bay Area cities, both ways
    (the GBA Standard Contract of 2023-12-13; it covers neither Macao nor the other 12 Guangdong cities).
    For Hong Kong → mainland, the table cannot see the recipient's city: declaring this basis is the
    operator's statement that the recipient is in one of the nine cities.
  * ``pipl_standard_contract``, ``cac_assessment``, ``pipl_certification``: mainland → outside (PIPL Art. 38).
  * ``recorded_basis``: Hong Kong or Macao → elsewhere, with the ground recorded in ``legal_basis_ref``.
- DEIDENTIFIED (de-identified aggregates: no ``sub``, no device, at least ``min_n`` readings, time coarsened
  to at least a minute; :func:`edge.view.build_view` makes them): allowed across a border without a basis.
  Consent is still required for every reading folded into one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge.regions import GUANGDONG_CITIES


class Jurisdiction(StrEnum):
    MAINLAND = "mainland"
    HONGKONG = "hongkong"
    MACAO = "macao"


class Flow(StrEnum):
    PROOF = "proof"
    AGGREGATE = "aggregate"  # per-person aggregates (sub, dev)
    DEIDENTIFIED = "deidentified"  # aggregates without sub or device, over at least min_n readings
    READING = "reading"


class LegalBasis(StrEnum):
    NONE = "none"
    GBA_STANDARD_CONTRACT = "gba_standard_contract"
    PIPL_STANDARD_CONTRACT = "pipl_standard_contract"
    CAC_ASSESSMENT = "cac_assessment"
    PIPL_CERTIFICATION = "pipl_certification"
    RECORDED_BASIS = "recorded_basis"


# The nine mainland cities of the Greater Bay Area: 广州 深圳 珠海 佛山 惠州 东莞 中山 江门 肇庆.
GBA_MAINLAND_CITIES = frozenset(
    {"guangzhou", "shenzhen", "zhuhai", "foshan", "huizhou", "dongguan", "zhongshan", "jiangmen", "zhaoqing"}
)
PIPL_EXPORT_BASES = frozenset(
    {LegalBasis.PIPL_STANDARD_CONTRACT, LegalBasis.CAC_ASSESSMENT, LegalBasis.PIPL_CERTIFICATION}
)
CROSS_BORDER = "cross_border"  # the reason code of every blocked flow (a withheld reason in view manifests)

assert set(GUANGDONG_CITIES) >= GBA_MAINLAND_CITIES


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason_code: str  # "proof", "same_jurisdiction", "deidentified", the basis's name, or "cross_border"
    explanation: str


def jurisdiction_of(region: str) -> Jurisdiction:
    """The jurisdiction of one of the 23 regions; ValueError for anything else (never a guess)."""
    if region == "hongkong":
        return Jurisdiction.HONGKONG
    if region == "macao":
        return Jurisdiction.MACAO
    if region in GUANGDONG_CITIES:
        return Jurisdiction.MAINLAND
    raise ValueError(f"unknown region {region!r}: not one of the 23 regions")


def decide(
    region: str,
    audience_jurisdiction: Jurisdiction | str,
    flow: Flow | str,
    basis: LegalBasis | str = LegalBasis.NONE,
    basis_ref: str = "",
) -> Decision:
    """Whether ``flow`` may go from a gateway in ``region`` to an audience in ``audience_jurisdiction``.

    Unknown names raise ValueError: a typo must never decide a flow.
    """
    src, dst = jurisdiction_of(region), Jurisdiction(audience_jurisdiction)
    flow, basis = Flow(flow), LegalBasis(basis)
    pair = f"{region} ({src}) -> {dst}"
    if flow is Flow.PROOF:
        return Decision(True, "proof", f"{pair}: proofs carry no personal data")
    if src is dst:
        return Decision(True, "same_jurisdiction", f"{pair}: same jurisdiction")
    if flow is Flow.DEIDENTIFIED:
        return Decision(True, "deidentified", f"{pair}: de-identified aggregates (no sub, no device) may cross")
    if basis is LegalBasis.GBA_STANDARD_CONTRACT:
        gba = {src, dst} == {Jurisdiction.HONGKONG, Jurisdiction.MAINLAND} and (
            src is Jurisdiction.HONGKONG or region in GBA_MAINLAND_CITIES
        )
        if gba:
            return Decision(True, basis.value, f"{pair}: GBA Standard Contract")
        why = "it covers only Hong Kong and the nine mainland GBA cities"
    elif basis in PIPL_EXPORT_BASES:
        if src is Jurisdiction.MAINLAND:
            return Decision(True, basis.value, f"{pair}: PIPL Art. 38 ({basis.value})")
        why = "PIPL Art. 38 bases cover exports from the mainland only"
    elif basis is LegalBasis.RECORDED_BASIS:
        if src is not Jurisdiction.MAINLAND and basis_ref.strip():
            return Decision(True, basis.value, f"{pair}: recorded basis ({basis_ref.strip()})")
        why = (
            "a recorded basis needs legal_basis_ref"
            if src is not Jurisdiction.MAINLAND
            else "a mainland export needs a PIPL Art. 38 basis"
        )
    else:
        why = "no legal basis is configured"
    what = "per-person aggregates" if flow is Flow.AGGREGATE else "individual readings"
    return Decision(False, CROSS_BORDER, f"{pair}: {what} blocked, {basis.value}: {why}")
