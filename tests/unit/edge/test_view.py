"""Audience views: consent, unbound devices, the cross-border table, minimisation, aggregates and the signed manifest,
all decided by build_view from its arguments alone."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.crossborder import Jurisdiction, LegalBasis
from edge.errors import CodecError, EdgeError
from edge.merkle import MerkleTree, empty_root
from edge.record import Record
from edge.sealing import SealError, open_sealed
from edge.sm2 import generate_signer
from edge.view import (
    AudienceSpec,
    SignedView,
    ViewManifest,
    ViewRule,
    build_view,
    derive_view_salt,
    open_view_record,
    sign_view,
)

ANN, BOB = "sub-000000000000a001", "sub-000000000000b002"
SECRET = bytes(range(32))
KEY = bytes(range(16))
SRC_ROOT = bytes(32)
T0 = 1_795_000_123_456


def rec(seq: int, dev: str = "hr-1", sub: str | None = ANN, kind: str = "heart_rate", **val: object) -> Record:
    v = val or {"heart_rate": 60 + seq, "rr": [0.5 + seq / 1024]}
    return Record("gw-1", seq, dev, T0 + seq * 1000, kind, v, b"\x16\x48", bytes([seq % 256]) * 16, (), sub)


def salts(aud: str) -> object:
    return lambda seq: derive_view_salt(SECRET, aud, "gw-1", seq)


def view(
    source: Sequence[Record],
    spec: AudienceSpec,
    *,
    region: str = "shenzhen",
    granted: frozenset[tuple[str, str]] = frozenset({(ANN, "research"), (BOB, "research")}),
) -> tuple[list[bytes], ViewManifest]:
    return build_view(
        source,
        3,
        SRC_ROOT,
        spec,
        region,
        lambda sub, purpose: (sub, purpose) in granted,
        17,
        lambda seq: derive_view_salt(SECRET, spec.aud, "gw-1", seq),
        consent_count=9,
        since=2,
    )


PLAIN = AudienceSpec("research-hk", "research", jurisdiction=Jurisdiction.MAINLAND)


def test_everything_consented_and_local_goes_out_with_fresh_salts() -> None:
    source = [rec(s) for s in range(10, 14)]
    records, m = view(source, PLAIN)
    got = [Record.from_bytes(b) for b in records]
    assert [r.seq for r in got] == [10, 11, 12, 13]
    for g, s in zip(got, source, strict=True):
        assert (g.val, g.raw, g.t, g.sub, g.dev, g.kind) == (s.val, s.raw, s.t, s.sub, s.dev, s.kind)
        assert g.salt != s.salt
    assert (m.first, m.last, m.count, m.withheld, m.n, m.consent_n, m.kid) == (10, 13, 4, (), 3, 17, "")
    assert (m.consent_count, m.since) == (9, 2)  # the caller's counts, signed into the manifest
    assert m.root == MerkleTree(records).root and m.src_root == SRC_ROOT and m.purpose == "research"


def test_the_same_inputs_give_identical_bytes() -> None:
    spec = replace(PLAIN, key=("k1", KEY), rules={"*": ViewRule(time_s=60, round_digits=0)})
    source = [rec(s, sub=ANN if s % 2 else None) for s in range(1, 30)]
    spec = replace(spec, unbound=True)
    a, b = view(source, spec), view(list(source), spec)
    assert a[0] == b[0] and bytes(a[1]) == bytes(b[1])


def test_withheld_reasons_no_consent_and_unbound() -> None:
    source = [rec(1), rec(2, sub=BOB), rec(3, sub=None), rec(4, sub=None), rec(5)]
    records, m = view(source, PLAIN, granted=frozenset({(ANN, "research"), (BOB, "insurance")}))
    assert [Record.from_bytes(b).seq for b in records] == [1, 5]
    assert m.withheld == (("no_consent", 2, 2), ("unbound", 3, 4))
    records, m = view(source, replace(PLAIN, unbound=True), granted=frozenset({(ANN, "research")}))
    assert [Record.from_bytes(b).seq for b in records] == [1, 3, 4, 5]
    assert m.withheld == (("no_consent", 2, 2),)


def test_a_withdrawal_is_honoured_by_the_next_view_built() -> None:
    source = [rec(1), rec(2)]
    ledger = {(ANN, "research"): True}
    consent = lambda sub, purpose: ledger.get((sub, purpose), False)  # noqa: E731
    salt = salts("a")
    assert build_view(source, 1, SRC_ROOT, PLAIN, "shenzhen", consent, 1, salt, consent_count=1, since=1)[1].count == 2  # type: ignore[arg-type]
    ledger[(ANN, "research")] = False
    _, m = build_view(
        source,
        1,
        SRC_ROOT,
        PLAIN,
        "shenzhen",
        consent,
        2,
        salt,
        consent_count=2,
        since=1,  # type: ignore[arg-type]
    )
    assert m.count == 0 and m.withheld == (("no_consent", 1, 2),) and m.root == empty_root() and m.consent_n == 2


def test_cross_border_readings_are_withheld_and_per_person_aggregates_need_a_basis() -> None:
    hk = AudienceSpec("research-hk", "research", jurisdiction=Jurisdiction.HONGKONG)
    source = [rec(1), rec(2, kind="temperature", temperature=36.6), rec(3)]
    records, m = view(source, hk)
    assert records == [] and m.withheld == (("cross_border", 1, 3),)
    with_basis = replace(hk, legal_basis=LegalBasis.GBA_STANDARD_CONTRACT)
    assert view(source, with_basis)[1].count == 3
    assert view(source, with_basis, region="shantou")[1].withheld == (("cross_border", 1, 3),)
    # With a basis valid for the pair, aggregates are per person as within one jurisdiction.
    agg = replace(with_basis, rules={"heart_rate": ViewRule(aggregate=True)})
    (a, t), m = view(source, agg)
    assert (Record.from_bytes(a).kind, Record.from_bytes(a).sub, Record.from_bytes(a).dev) == (
        "heart_rate_agg",
        ANN,
        "hr-1",
    )
    assert Record.from_bytes(t).kind == "temperature" and m.withheld == (("aggregated", 3, 3),)


def test_the_reviewers_single_reading_aggregate_does_not_cross_a_border_without_a_basis() -> None:
    """Forged input of the review (d1): aggregate rule, n = 1, sub and exact t to Hong Kong with no basis. The
    'aggregate' is the reading itself (PIPL Art. 73): it is withheld, from Shantou and from Macao alike."""
    source = [
        Record("gw-1", 1, "dev-0", 1_700_000_123_456, "heart_rate", {"heart_rate": 87}, b"\x01", bytes(16), (), ANN),
        Record(
            "gw-1", 2, "dev-1", 1_700_000_124_000, "temperature", {"temperature": 38.7}, b"\x02", bytes(16), (), ANN
        ),
    ]
    spec = AudienceSpec("hk-lab", "research", {"*": ViewRule(aggregate=True)}, jurisdiction=Jurisdiction.HONGKONG)
    for region in ("shantou", "macao"):
        records, m = view(source, spec, region=region)
        assert records == [] and m.withheld == (("cross_border", 1, 2),) and m.count == 0


def test_cross_border_without_a_basis_only_deidentified_aggregates_flow() -> None:
    """No sub, no device, at least min_n readings, times floored to at least a minute; consent first."""
    hk = AudienceSpec(
        "research-hk", "research", {"heart_rate": ViewRule(aggregate=True, time_s=10)}, jurisdiction="hongkong"
    )
    source = [
        rec(1, heart_rate=60, rr=[]),
        rec(2, dev="hr-2", sub=BOB, heart_rate=90, rr=[]),
        rec(3, sub="sub-000000000000c003", heart_rate=200, rr=[]),  # no consent: never folded in
        rec(4, kind="temperature", temperature=36.6),
        rec(5, heart_rate=70, rr=[]),
        rec(6, dev="hr-2", sub=BOB, heart_rate=80, rr=[]),
    ]
    records, m = view(source, replace(hk, min_n=2))  # four consented readings of two wearers
    (agg,) = map(Record.from_bytes, records)
    assert agg.sub is None and agg.dev == "deidentified" and agg.kind == "heart_rate_agg" and agg.seq == 1
    assert agg.t == (T0 + 1000) // 60_000 * 60_000 and agg.val["t_end"] == (T0 + 6000) // 60_000 * 60_000
    assert agg.val == {**agg.val, "n": 4, "last_seq": 6, "heart_rate_min": 60, "heart_rate_max": 90}
    assert agg.val["heart_rate_mean"] == 75.0
    assert m.withheld == (
        ("aggregated", 2, 2),
        ("no_consent", 3, 3),
        ("cross_border", 4, 4),
        ("aggregated", 5, 6),
    )
    assert ANN.encode() not in records[0] and BOB.encode() not in records[0] and b"hr-1" not in records[0]
    # Below min_n wearers the group is withheld as cross_border: four readings are still only two people.
    for few in (hk, replace(hk, min_n=3), replace(hk, min_n=4)):
        records, m = view(source, few)
        assert records == [] and m.withheld == (("cross_border", 1, 2), ("no_consent", 3, 3), ("cross_border", 4, 6))
    # A coarser rule than a minute stays as configured.
    hour = replace(hk, rules={"heart_rate": ViewRule(aggregate=True, time_s=3600)}, min_n=1)
    assert Record.from_bytes(view(source, hour)[0][0]).t == (T0 + 1000) // 3_600_000 * 3_600_000


HK_AGG = AudienceSpec("research-hk", "research", {"heart_rate": ViewRule(aggregate=True)}, jurisdiction="hongkong")


def test_one_person_with_many_readings_is_one_wearer_however_they_are_spread() -> None:
    """Forged input for a k-anonymity threshold of 5: one member's 50 readings, the same member on five
    straps, or five unbound straps (no way to tell they are five people) never make a de-identified
    aggregate: each is withheld whole as cross_border."""
    one_person = [rec(s) for s in range(1, 51)]
    five_straps = [rec(s, dev=f"hr-{s % 5}") for s in range(1, 51)]
    unbound = [rec(s, dev=f"hr-{s % 5}", sub=None) for s in range(1, 51)]
    for source, spec in ((one_person, HK_AGG), (five_straps, HK_AGG), (unbound, replace(HK_AGG, unbound=True))):
        records, m = view(source, spec)
        assert records == [] and m.count == 0 and m.withheld == (("cross_border", 1, 50),)
    # With a fifth consenting member the same readings are an aggregate of five wearers; readings of unbound
    # devices are folded in (they are allowed to this audience) without counting as anyone.
    subs = [f"sub-00000000000000{i:02x}" for i in range(5)]
    granted = frozenset((s, "research") for s in subs)
    source = [rec(s, dev=f"hr-{s % 5}", sub=subs[s % 5]) for s in range(1, 51)] + [rec(51, dev="x", sub=None)]
    (agg,) = map(Record.from_bytes, view(source, replace(HK_AGG, unbound=True), granted=granted)[0])
    assert (agg.sub, agg.dev, agg.val["n"], agg.val["last_seq"]) == (None, "deidentified", 51, 51)
    four = granted - {(subs[0], "research")}
    records, m = view(source, replace(HK_AGG, unbound=True), granted=four)
    assert records == [] and {w[0] for w in m.withheld} == {"cross_border", "no_consent"}


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=40),
    st.integers(1, 6),
)
def test_a_deidentified_aggregate_exists_exactly_when_min_n_distinct_wearers_consented(
    readings: list[tuple[int, int]], min_n: int
) -> None:
    """Wearer 0 has no sub (an unbound device), wearer 5 no consent; the rest consent. Whatever the readings'
    spread over wearers and devices, the aggregate covers every consented reading and is made only when they
    come from at least min_n distinct subs."""
    subs = [None] + [f"sub-00000000000000{i:02x}" for i in range(1, 6)]
    granted = frozenset((s, "research") for s in subs[1:5] if s is not None)
    source = [rec(i + 1, dev=f"d{d}", sub=subs[w]) for i, (w, d) in enumerate(readings)]
    records, m = view(source, replace(HK_AGG, unbound=True, min_n=min_n), granted=granted)
    folded = [r for r in source if r.sub != subs[5]]
    people = len({r.sub for r in folded if r.sub is not None})
    if people >= min_n:
        (agg,) = map(Record.from_bytes, records)
        assert agg.val["n"] == len(folded) and agg.sub is None
    else:
        assert records == []
        withheld = {s for reason, a, b in m.withheld if reason == "cross_border" for s in range(a, b + 1)}
        assert withheld == {r.seq for r in folded}


def test_consent_is_decided_before_the_border() -> None:
    hk = AudienceSpec("research-hk", "research", jurisdiction=Jurisdiction.HONGKONG)
    _, m = view([rec(1, sub=BOB)], hk, granted=frozenset())
    assert m.withheld == (("no_consent", 1, 1),)


def test_minimisation_drop_raw_time_and_rounding() -> None:
    spec = replace(PLAIN, rules={"heart_rate": ViewRule(drop_raw=True, time_s=60, round_digits=1)})
    source = [rec(1, heart_rate=71, rr=[0.98765, 1.04321], contact=True), rec(2, kind="temperature", t=36.66)]
    a, b = (Record.from_bytes(x) for x in view(source, spec)[0])
    assert a.raw == b"" and a.t == (T0 + 1000) // 60_000 * 60_000
    assert a.val == {"heart_rate": 71, "rr": [1.0, 1.0], "contact": True}
    assert b.raw == source[1].raw and b.val == {"t": 36.66} and b.t == source[1].t  # no rule, no "*": as is
    star = replace(PLAIN, rules={"*": ViewRule(round_digits=0), "heart_rate": ViewRule()})
    a, b = (Record.from_bytes(x) for x in view(source, star)[0])
    assert a.val == source[0].val and b.val == {"t": 37.0}


def test_aggregate_fields() -> None:
    spec = replace(PLAIN, rules={"heart_rate": ViewRule(aggregate=True, time_s=10, round_digits=2)}, unbound=True)
    source = [
        rec(1, heart_rate=60, rr=[1.0, 0.5], contact=True),
        rec(2, dev="hr-2", sub=BOB, heart_rate=90, rr=[0.6]),
        rec(3, heart_rate=70, rr=[0.75], contact=False),
        rec(4, kind="temperature", t=36.5),
        replace(rec(5, heart_rate=80, rr=[2.0]), q=("low_signal",)),
        rec(6, sub=None, heart_rate=100, rr=[]),
    ]
    records, m = view(source, spec)
    got = {r.seq: r for r in map(Record.from_bytes, records)}
    assert sorted(got) == [1, 2, 4, 6]
    ann = got[1]
    assert ann.kind == "heart_rate_agg" and ann.sub == ANN and ann.dev == "hr-1" and ann.raw == b""
    assert ann.t == (T0 + 1000) // 10_000 * 10_000 and ann.q == ("low_signal",)
    assert ann.val == {
        "n": 3,
        "last_seq": 5,
        "t_end": (T0 + 5000) // 10_000 * 10_000,
        "heart_rate_min": 60,
        "heart_rate_max": 80,
        "heart_rate_mean": 70.0,
        "rr_min": 0.5,
        "rr_max": 2.0,
        "rr_mean": 1.06,  # (1.0 + 0.5 + 0.75 + 2.0) / 4 = 1.0625, rounded to 2 decimals
    }
    assert got[2].val["n"] == 1 and got[2].sub == BOB and got[2].val["last_seq"] == 2
    assert got[6].sub is None and "rr_min" not in got[6].val  # an empty list contributes nothing
    assert got[4].kind == "temperature"
    assert m.withheld == (("aggregated", 3, 3), ("aggregated", 5, 5)) and m.count == 4


def test_sealed_records_open_with_the_key_and_only_with_it() -> None:
    spec = replace(PLAIN, key=("k1", KEY), rules={"*": ViewRule(drop_raw=True)})
    source = [rec(1, heart_rate=72, rr=[0.8])]
    (data,), m = view(source, spec)
    r = Record.from_bytes(data)
    assert r.val == {} and r.raw == b"" and r.enc is not None and r.enc["kid"] == "k1" and m.kid == "k1"
    assert cbor2.dumps({"heart_rate": 72})[1:] not in data and b"\x62rr" not in data  # the kind stays readable
    assert open_view_record(r, {"k1": KEY}) == ({"heart_rate": 72, "rr": [0.8]}, b"")
    with pytest.raises(SealError):
        open_view_record(r, {"k2": KEY})
    ct = bytearray(r.enc["ct"])
    ct[0] ^= 0x80
    with pytest.raises(SealError, match="tag does not verify"):
        open_view_record(replace(r, enc={**r.enc, "ct": bytes(ct)}), {"k1": KEY})
    with pytest.raises(SealError, match="tag does not verify"):
        open_view_record(replace(r, seq=2), {"k1": KEY})


def test_view_salts_are_deterministic_per_audience() -> None:
    assert derive_view_salt(SECRET, "a", "gw-1", 5) == derive_view_salt(SECRET, "a", "gw-1", 5)
    assert derive_view_salt(SECRET, "a", "gw-1", 5) != derive_view_salt(SECRET, "b", "gw-1", 5)
    assert len(derive_view_salt(SECRET, "a", "gw-1", 5)) == 16
    with pytest.raises(CodecError):
        derive_view_salt(b"short", "a", "gw-1", 5)


@pytest.mark.parametrize(
    "source",
    [[], [rec(1), rec(3)], [rec(2), rec(1)], [rec(1), replace(rec(2), gw="gw-2")]],
)
def test_a_source_must_be_one_gateways_consecutive_records(source: list[Record]) -> None:
    with pytest.raises(CodecError):
        view(source, PLAIN)


# ----------------------------------------------------------------------------- the manifest

SIGNER, OTHER = generate_signer(), generate_signer()


def manifest(**change: object) -> ViewManifest:
    base = ViewManifest("gw-1", "aud-1", 3, SRC_ROOT, 10, 20, empty_root(), 0, (), 5, "research", "", 4, 1)
    return replace(base, **change)  # type: ignore[arg-type]


def test_manifest_round_trip_sign_verify() -> None:
    m = manifest(withheld=(("no_consent", 10, 12), ("aggregated", 13, 13), ("unbound", 15, 20)), count=2)
    assert ViewManifest.from_bytes(bytes(m)) == m
    assert cbor2.loads(bytes(m))["type"] == "view"
    s = sign_view(m, SIGNER)
    again = SignedView.from_bytes(bytes(s))
    assert again == s and again.manifest == m and again.verify(SIGNER) and not again.verify(OTHER)
    forged = sign_view(replace(m, consent_n=m.consent_n + 1), OTHER)  # well formed, signed by someone else
    assert not SignedView(forged.body, s.sig, s.key_id).verify(SIGNER)
    assert not SignedView(s.body, s.sig, OTHER.key_id).verify(OTHER)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"withheld": (("no_consent", 12, 11),)}, "sorted"),
        ({"withheld": (("no_consent", 9, 10),)}, "inside"),
        ({"withheld": (("no_consent", 20, 21),)}, "inside"),
        ({"withheld": (("no_consent", 10, 12), ("unbound", 12, 13))}, "non-overlapping"),
        ({"withheld": (("no_consent", 13, 14), ("unbound", 10, 11))}, "sorted"),
        ({"withheld": (("forgotten", 10, 10),)}, "unknown reason"),
        ({"count": 12}, "more view records"),
        ({"last": 9}, "empty"),
        ({"n": 0}, "n counts"),
        ({"root": bytes(31)}, "root"),
        ({"purpose": "marketing"}, "purpose"),
        ({"kid": "bad kid"}, "kid"),
        ({"since": 0}, "since"),
        ({"since": 4}, "since"),
        ({"consent_count": 6}, "consent_count"),
    ],
)
def test_manifest_rules(change: dict[str, object], match: str) -> None:
    with pytest.raises(CodecError, match=match):
        manifest(**change)


def test_a_manifest_of_another_type_is_refused() -> None:
    m = cbor2.loads(bytes(manifest()))
    for bad in ({**m, "type": "manifest"}, {k: v for k, v in m.items() if k != "kid"}, {**m, "extra": 1}):
        with pytest.raises(CodecError):
            ViewManifest.from_bytes(cbor2.dumps(bad, canonical=True))
    with pytest.raises(CodecError):
        ViewManifest.from_bytes(bytes(2 << 20))


def test_an_audience_spec_is_checked() -> None:
    with pytest.raises(CodecError):
        AudienceSpec("a", "marketing")
    with pytest.raises(CodecError):
        AudienceSpec("a", "research", key=("k1", bytes(15)))
    with pytest.raises(ValueError):
        AudienceSpec("a", "research", jurisdiction="taiwan")  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        ViewRule(time_s=-1)
    with pytest.raises(CodecError):
        ViewRule(round_digits=99)
    for min_n in (0, -1, True, 10**9):
        with pytest.raises(CodecError, match="min_n"):
            AudienceSpec("a", "research", min_n=min_n)


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(
        lambda d: cbor2.dumps(d, canonical=True),
        st.dictionaries(
            st.sampled_from(["type", "gw", "aud", "n", "src_root", "first", "last", "root", "withheld", "kid", "x"]),
            st.integers(min_value=-3, max_value=2**65)
            | st.binary(max_size=40)
            | st.text(max_size=10)
            | st.lists(st.lists(st.integers(0, 5) | st.text(max_size=12), max_size=3), max_size=3),
            max_size=13,
        ),
    )
)
def test_views_from_the_network_fail_only_with_our_errors(data: bytes) -> None:
    for parse in (ViewManifest.from_bytes, SignedView.from_bytes):
        with contextlib.suppress(EdgeError):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["kid", "iv", "ct", "x"]), st.binary(max_size=40) | st.text(max_size=8)))
def test_sealed_values_from_the_network_fail_only_with_seal_errors(enc: dict[str, object]) -> None:
    with contextlib.suppress(SealError):
        open_sealed({"k1": KEY}, enc, b"aad")


def test_one_seq_sealed_twice_with_other_associated_data_never_reuses_an_iv() -> None:
    """Review d6: same seq and same minimised value but another t (journal restored, rule changed): the IV bound
    only the plaintext, so GCM saw one IV with two associated data (same keystream, two tags). SM3(aad) is in the
    IV now."""
    spec = replace(PLAIN, key=("k1", KEY), rules={"*": ViewRule(drop_raw=True, round_digits=0)})
    ivs = []
    for t in (1_700_000_000_000, 1_700_000_555_000):
        source = [Record("gw-1", 7, "dev-0", t, "heart_rate", {"heart_rate": 72.4}, b"\x01", bytes(16), (), ANN)]
        enc = Record.from_bytes(view(source, spec)[0][0]).enc
        assert enc is not None
        ivs.append(enc["iv"])
    assert ivs[0] != ivs[1]
