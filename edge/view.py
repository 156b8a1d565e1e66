"""An audience's view of a batch: the records it may receive, minimised and optionally sealed, and the signed
view manifest that binds them to the anchored source batch (contract 1.3, docs/mqtt-contract.md).

:func:`build_view` decides everything from its arguments: consent per record (the caller's ledger, as a
function), unbound devices, the cross-border table, the audience's minimisation rules and aggregation. It
does no I/O and reads no clock, so the same inputs give the same bytes: a view rebuilt after a restart is
byte-identical and its root does not change.

A view record is a normal :class:`~edge.record.Record` with the source record's gw, seq, dev, kind, sub and
q, a fresh salt (view leaves reveal nothing about source leaves), time and values minimised by the rule for
its kind, and, when the audience encrypts, ``val = {}``, ``raw = b""`` and ``enc`` (see :mod:`edge.sealing`).

An **aggregate record** replaces the readings of one (dev, sub, kind) in a batch when that kind's rule says
``aggregate``: ``kind = "<kind>_agg"``, ``seq`` and ``t`` of the first covered reading, ``raw = b""``,
``q`` the sorted union of the covered readings' flags, and ``val``:

- ``n``: the number of covered readings; ``last_seq``: the last covered seq; ``t_end``: its (coarsened) time;
- for each numeric field ``f`` of the readings' ``val`` (booleans are left out; a list contributes each of its
  items): ``f_min``, ``f_max`` and ``f_mean`` (mean as a float; all three rounded like the rule says).

The covered seqs other than the aggregate's own ``seq`` appear in the manifest's ``withheld`` ranges with
reason ``aggregated``, so every source seq is accounted for exactly once.

Across a border **without** a legal basis valid for the pair, a per-person aggregate is personal information
(with n = 1 it is the reading itself; PIPL Art. 73), so only **de-identified aggregates** flow: one per kind per
batch over every consented reading of that kind (consent is checked on each source record before its ``sub``
is dropped), with ``sub`` absent, ``dev`` = ``deidentified``, ``t`` and ``t_end`` floored to
``max(time_s, 60)`` seconds, and only when its readings come from at least the audience's ``min_n`` distinct
wearers (default 5); a smaller group is withheld with reason ``cross_border``.

``min_n`` counts **people, not readings**: one member with 50 readings is one wearer, so a threshold of readings
would let a lone person's readings through as an "aggregate" of many. Wearers are told apart by ``sub`` (one
member has one ``sub`` at a site, also across several devices). Readings of unbound devices (no ``sub``; only
for an audience with ``unbound``) are folded in but never counted: a device is not a person (one person may
carry several, and nothing says who wore an unbound one), so counting devices could make one person pass
for several. The count may only err low: a group it cannot vouch for is withheld.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge import cbor, envelope
from edge.consent import PURPOSES
from edge.crossborder import Decision, Flow, Jurisdiction, LegalBasis, decide
from edge.errors import CodecError
from edge.merkle import MerkleTree
from edge.record import MAX_VAL_FIELDS, SALT_BYTES, Record, Value, check_id
from edge.sealing import SM4_KEY_BYTES, derive_iv, hmac_sm3, labelled, open_sealed, seal
from edge.signing import Signer
from edge.sm3 import DIGEST_SIZE

VIEW_TYPE = "view"
AGG_SUFFIX = "_agg"
# Why a source seq is not a view record of its own (the manifest's withheld ranges).
NO_CONSENT, UNBOUND, CROSS_BORDER, AGGREGATED = "no_consent", "unbound", "cross_border", "aggregated"
WITHHELD_REASONS = (NO_CONSENT, UNBOUND, CROSS_BORDER, AGGREGATED)
MAX_VIEW_BYTES = 1 << 20  # a view manifest (its withheld list grows with alternating reasons only)
MAX_SIGNED_VIEW_BYTES = MAX_VIEW_BYTES + 256
MAX_ROUND_DIGITS = 9
DEIDENTIFIED_DEV = "deidentified"  # the dev of a de-identified aggregate (it covers many devices)
DEIDENTIFIED_MIN_TIME_S = 60  # a de-identified aggregate's times are floored to at least a minute
DEFAULT_MIN_N = 5
MAX_MIN_N = 100_000
_SALT_LABEL = b"tiyi-view-salt"
_FIELDS = {
    "type",
    "gw",
    "aud",
    "n",
    "src_root",
    "first",
    "last",
    "root",
    "count",
    "withheld",
    "consent_n",
    "purpose",
    "kid",
    "consent_count",
    "since",
}


def derive_view_salt(site_secret: bytes, aud: str, gw: str, seq: int) -> bytes:
    """The salt of view record ``seq`` for audience ``aud``: HMAC-SM3(site secret, label, aud, gw, seq)[:16].

    Deterministic (a rebuilt view is identical) and unlinkable to the source record's random salt.
    """
    if not isinstance(site_secret, bytes) or len(site_secret) < 16:
        raise CodecError("a site secret is at least 16 bytes")
    return hmac_sm3(site_secret, labelled(_SALT_LABEL, aud, gw, seq))[:SALT_BYTES]


@dataclass(frozen=True, slots=True)
class ViewRule:
    """How one kind of reading is minimised for an audience (identity by default)."""

    drop_raw: bool = False
    time_s: int = 0  # t floored to a multiple of time_s seconds; 0 keeps the millisecond
    round_digits: int | None = None  # numbers in val rounded to this many decimals (negative: tens, ...)
    aggregate: bool = False  # send one aggregate record per (dev, sub, kind) per batch instead

    def __post_init__(self) -> None:
        if type(self.drop_raw) is not bool or type(self.aggregate) is not bool:
            raise CodecError("view rule: drop_raw and aggregate are true or false")
        if type(self.time_s) is not int or not 0 <= self.time_s <= 86_400:
            raise CodecError("view rule: time_s is 0..86400 seconds")
        if self.round_digits is not None and (
            type(self.round_digits) is not int or not -MAX_ROUND_DIGITS <= self.round_digits <= MAX_ROUND_DIGITS
        ):
            raise CodecError(f"view rule: round_digits is {-MAX_ROUND_DIGITS}..{MAX_ROUND_DIGITS} or unset")

    def coarse_t(self, t: int) -> int:
        step = self.time_s * 1000
        return t - t % step if step else t

    def number(self, v: int | float) -> int | float:
        return v if self.round_digits is None else round(v, self.round_digits)


IDENTITY = ViewRule()


@dataclass(frozen=True, slots=True)
class AudienceSpec:
    """What :func:`build_view` needs to know about one audience (the gateway builds it from its config)."""

    aud: str
    purpose: str
    rules: Mapping[str, ViewRule] = field(default_factory=dict)  # by kind, "*" the default
    unbound: bool = False  # records of unbound devices (no sub) go to this audience only when true
    jurisdiction: Jurisdiction = Jurisdiction.MAINLAND
    legal_basis: LegalBasis = LegalBasis.NONE
    key: tuple[str, bytes] | None = None  # (kid, 16-byte SM4 key) when the audience's records are sealed
    legal_basis_ref: str = ""  # the recorded ground of a recorded_basis
    min_n: int = DEFAULT_MIN_N  # fewest distinct wearers (subs) in a de-identified aggregate (cross-border, no basis)

    def __post_init__(self) -> None:
        check_id(self.aud, "audience id")
        if self.purpose not in PURPOSES:
            raise CodecError(f"audience {self.aud}: purpose {self.purpose!r} is not one of {', '.join(PURPOSES)}")
        object.__setattr__(self, "jurisdiction", Jurisdiction(self.jurisdiction))
        object.__setattr__(self, "legal_basis", LegalBasis(self.legal_basis))
        if type(self.min_n) is not int or not 1 <= self.min_n <= MAX_MIN_N:
            raise CodecError(f"audience {self.aud}: min_n is 1..{MAX_MIN_N} wearers")
        for kind, rule in self.rules.items():
            if not isinstance(rule, ViewRule) or not isinstance(kind, str):
                raise CodecError(f"audience {self.aud}: rules map a kind (or '*') to a ViewRule")
        if self.key is not None:
            kid, key = self.key
            check_id(kid, "key id")
            if not isinstance(key, bytes) or len(key) != SM4_KEY_BYTES:
                raise CodecError(f"audience {self.aud}: an SM4 key is exactly {SM4_KEY_BYTES} bytes")

    def rule(self, kind: str) -> ViewRule:
        return self.rules.get(kind) or self.rules.get("*") or IDENTITY

    def decide(self, region: str, flow: Flow) -> Decision:
        return decide(region, self.jurisdiction, flow, self.legal_basis, self.legal_basis_ref)


Withheld = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class ViewManifest:
    gw: str
    aud: str
    n: int  # the source batch number
    src_root: bytes  # the source batch's (anchored) Merkle root
    first: int  # the source batch's seq range
    last: int
    root: bytes  # Merkle root over the view records' bytes, in seq order
    count: int  # number of view records (aggregates included)
    withheld: tuple[Withheld, ...]  # (reason, first_seq, last_seq), sorted, non-overlapping
    consent_n: int  # the consent ledger's head number when the view was built
    purpose: str
    kid: str  # the key id of sealed records, "" when not sealed
    # Consent events of the view's purpose numbered <= consent_n: the audience must have received that many,
    # or a withdrawal may have been dropped on the way.
    consent_count: int
    since: int  # the first source batch of this audience's stream: views since..n are the whole stream

    def __post_init__(self) -> None:
        check_id(self.gw, "view.gw")
        check_id(self.aud, "view.aud")
        for name in ("n", "first", "last", "count", "consent_n", "consent_count", "since"):
            cbor.check_u64(getattr(self, name), f"view.{name}")
        if self.n < 1 or self.last < self.first:
            raise CodecError("view: n counts from 1 and first..last must not be empty")
        if not 1 <= self.since <= self.n:
            raise CodecError("view.since: the audience's first batch is 1..n")
        if self.consent_count > self.consent_n:
            raise CodecError("view.consent_count: more events than the ledger head's number")
        for name in ("src_root", "root"):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != DIGEST_SIZE:
                raise CodecError(f"view.{name}: expected {DIGEST_SIZE} bytes")
        if self.purpose not in PURPOSES:
            raise CodecError(f"view.purpose: {self.purpose!r} is not one of {', '.join(PURPOSES)}")
        if self.kid != "":
            check_id(self.kid, "view.kid")
        object.__setattr__(self, "withheld", _check_withheld(self.withheld, self.first, self.last))
        if self.count > self.last - self.first + 1:
            raise CodecError("view.count: more view records than source records")

    def __bytes__(self) -> bytes:
        return cbor.dumps(
            {
                "type": VIEW_TYPE,
                "gw": self.gw,
                "aud": self.aud,
                "n": self.n,
                "src_root": self.src_root,
                "first": self.first,
                "last": self.last,
                "root": self.root,
                "count": self.count,
                "withheld": [list(w) for w in self.withheld],
                "consent_n": self.consent_n,
                "purpose": self.purpose,
                "kid": self.kid,
                "consent_count": self.consent_count,
                "since": self.since,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ViewManifest:
        w = "view"
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) > MAX_VIEW_BYTES:
            raise CodecError(f"view: expected at most {MAX_VIEW_BYTES} bytes")
        m = cbor.expect_map(cbor.loads(data), w, _FIELDS)
        if cbor.field(m, "type", str, w) != VIEW_TYPE:
            raise CodecError(f"view.type: expected {VIEW_TYPE!r}")
        withheld = cbor.field(m, "withheld", list, w)
        return cls(
            gw=cbor.field(m, "gw", str, w),
            aud=cbor.field(m, "aud", str, w),
            n=cbor.uint(m, "n", w),
            src_root=cbor.field(m, "src_root", bytes, w),
            first=cbor.uint(m, "first", w),
            last=cbor.uint(m, "last", w),
            root=cbor.field(m, "root", bytes, w),
            count=cbor.uint(m, "count", w),
            withheld=tuple(_withheld_item(x) for x in withheld),
            consent_n=cbor.uint(m, "consent_n", w),
            purpose=cbor.field(m, "purpose", str, w),
            kid=cbor.field(m, "kid", str, w),
            consent_count=cbor.uint(m, "consent_count", w),
            since=cbor.uint(m, "since", w),
        )


def _withheld_item(x: Any) -> Withheld:
    if not isinstance(x, list) or len(x) != 3:
        raise CodecError("view.withheld: each entry is [reason, first_seq, last_seq]")
    reason, a, b = x
    if not isinstance(reason, str):
        raise CodecError("view.withheld: the reason is text")
    return reason, a, b


def _check_withheld(items: Any, first: int, last: int) -> tuple[Withheld, ...]:
    if not isinstance(items, tuple | list):
        raise CodecError("view.withheld: expected a sequence of ranges")
    out: list[Withheld] = []
    after = first - 1
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 3:
            raise CodecError("view.withheld: each entry is (reason, first_seq, last_seq)")
        reason, a, b = item
        if reason not in WITHHELD_REASONS:
            raise CodecError(f"view.withheld: unknown reason {reason!r}")
        cbor.check_u64(a, "view.withheld first_seq")
        cbor.check_u64(b, "view.withheld last_seq")
        if not after < a <= b <= last:
            raise CodecError("view.withheld: ranges must be sorted, non-overlapping and inside first..last")
        out.append((reason, a, b))
        after = b
    return tuple(out)


class SignedView(envelope.Signed[ViewManifest]):
    """The ``aud/{aud}/view`` payload: the view manifest's bytes as signed, the DER signature, the key id."""

    __slots__ = ()
    BODY_KEY = VIEW_TYPE
    WHAT = "signed view"
    MAX_BYTES = MAX_SIGNED_VIEW_BYTES

    def _parse(self, body: bytes) -> ViewManifest:
        return ViewManifest.from_bytes(body)

    @property
    def manifest(self) -> ViewManifest:
        return self._parsed


def sign_view(manifest: ViewManifest, signer: Signer) -> SignedView:
    return SignedView.sign(bytes(manifest), signer)


# ----------------------------------------------------------------------------- building a view


def _minimise_val(val: Mapping[str, Value], rule: ViewRule) -> dict[str, Value]:
    if rule.round_digits is None:
        return dict(val)
    out: dict[str, Value] = {}
    for k, v in val.items():
        if isinstance(v, bool):
            out[k] = v
        elif isinstance(v, list):
            out[k] = [rule.number(x) for x in v]
        else:
            out[k] = rule.number(v)
    return out


def sealed_plaintext(val: Mapping[str, Value], raw: bytes) -> bytes:
    """What a sealed view record encrypts: canonical CBOR ``{"raw": raw, "val": val}``."""
    return cbor.dumps({"raw": raw, "val": dict(val)})


def _emit(rec: Record, spec: AudienceSpec) -> bytes:
    """The record's bytes for the audience: as is, or with ``val``/``raw`` sealed into ``enc``."""
    if spec.key is None:
        return bytes(rec)
    kid, key = spec.key
    bare = Record(rec.gw, rec.seq, rec.dev, rec.t, rec.kind, {}, b"", rec.salt, rec.q, rec.sub)
    aad = bytes(bare)
    plain = sealed_plaintext(rec.val, rec.raw)
    enc = seal(key, kid, derive_iv(key, spec.aud, rec.gw, rec.seq, plaintext=plain, aad=aad), plain, aad)
    return bytes(Record(rec.gw, rec.seq, rec.dev, rec.t, rec.kind, {}, b"", rec.salt, rec.q, rec.sub, enc))


def _numbers(val: Mapping[str, Value]) -> dict[str, list[int | float]]:
    out: dict[str, list[int | float]] = {}
    for k, v in val.items():
        if isinstance(v, bool):
            continue
        out.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    return out


def _aggregate(group: list[Record], rule: ViewRule, salt: bytes, deidentified: bool = False) -> Record:
    """One aggregate record over ``group`` (seq order); de-identified: no sub, no device, times >= a minute."""
    head, tail = group[0], group[-1]
    if deidentified:
        rule = ViewRule(rule.drop_raw, max(rule.time_s, DEIDENTIFIED_MIN_TIME_S), rule.round_digits, True)
    stats: dict[str, list[int | float]] = {}
    for r in group:
        for k, xs in _numbers(r.val).items():
            stats.setdefault(k, []).extend(xs)
    val: dict[str, Value] = {"n": len(group), "last_seq": tail.seq, "t_end": rule.coarse_t(tail.t)}
    for k, xs in stats.items():
        if not xs:
            continue
        val[f"{k}_min"] = rule.number(min(xs))
        val[f"{k}_max"] = rule.number(max(xs))
        val[f"{k}_mean"] = rule.number(math.fsum(x / len(xs) for x in xs))  # x / n first: no overflow
    if len(val) > MAX_VAL_FIELDS:
        raise CodecError(f"{head.kind}: too many numeric fields to aggregate ({len(stats)})")
    q = tuple(sorted({f for r in group for f in r.q}))
    dev, sub = (DEIDENTIFIED_DEV, None) if deidentified else (head.dev, head.sub)
    return Record(head.gw, head.seq, dev, rule.coarse_t(head.t), head.kind + AGG_SUFFIX, val, b"", salt, q, sub)


def wearers(group: Sequence[Record]) -> int:
    """The distinct people a de-identified aggregate over ``group`` is known to cover: its distinct ``sub``s.
    Readings without one (unbound devices) add nobody, since a device is not a person (see the module)."""
    return len({r.sub for r in group if r.sub is not None})


def _ranges(marks: list[tuple[int, str]]) -> tuple[Withheld, ...]:
    """Sorted (seq, reason) marks → ranges of consecutive seqs with the same reason."""
    out: list[list[Any]] = []
    for seq, reason in sorted(marks):
        if out and out[-1][0] == reason and out[-1][2] == seq - 1:
            out[-1][2] = seq
        else:
            out.append([reason, seq, seq])
    return tuple((r, a, b) for r, a, b in out)


def build_view(
    source: Sequence[Record],
    n: int,
    src_root: bytes,
    spec: AudienceSpec,
    region: str,
    consent: Callable[[str, str], bool],
    consent_n: int,
    salt_for: Callable[[int], bytes],
    *,
    consent_count: int,
    since: int,
) -> tuple[list[bytes], ViewManifest]:
    """The audience's view of source batch ``n`` (its records in seq order, consecutive): the view records'
    canonical bytes in seq order and the unsigned view manifest.

    ``consent(sub, purpose)`` answers from the consent ledger at head ``consent_n``; ``salt_for(seq)`` gives
    the view salt of a seq (see :func:`derive_view_salt`). ``consent_count`` is the number of consent events
    of the audience's purpose numbered <= ``consent_n`` (the gateway counts them in its ledger), ``since`` the
    first source batch of this audience's stream; both are signed into the manifest so the audience can tell a
    dropped withdrawal or a dropped start of its stream. Nothing else is consulted.
    """
    if not source:
        raise CodecError("a view needs a non-empty source batch")
    gw, first = source[0].gw, source[0].seq
    for i, r in enumerate(source):
        if r.gw != gw or r.seq != first + i:
            raise CodecError("a view's source must be one gateway's consecutive records in seq order")
    reading = spec.decide(region, Flow.READING)
    aggregate = spec.decide(region, Flow.AGGREGATE)
    # Across a border without a basis only de-identified aggregates may flow (the table still has the last word).
    deidentified = not aggregate.allowed and spec.decide(region, Flow.DEIDENTIFIED).allowed
    marks: list[tuple[int, str]] = []
    singles: list[Record] = []
    groups: dict[tuple[str, str | None, str], list[Record]] = {}
    for r in source:
        rule = spec.rule(r.kind)
        if r.sub is None and not spec.unbound:
            marks.append((r.seq, UNBOUND))
        elif r.sub is not None and not consent(r.sub, spec.purpose):
            marks.append((r.seq, NO_CONSENT))
        elif rule.aggregate and deidentified:
            groups.setdefault(("", None, r.kind), []).append(r)  # consent checked above, sub dropped below
        elif not (aggregate if rule.aggregate else reading).allowed:
            marks.append((r.seq, CROSS_BORDER))
        elif rule.aggregate:
            groups.setdefault((r.dev, r.sub, r.kind), []).append(r)
        else:
            t, val = rule.coarse_t(r.t), _minimise_val(r.val, rule)
            raw = b"" if rule.drop_raw else r.raw
            singles.append(Record(r.gw, r.seq, r.dev, t, r.kind, val, raw, salt_for(r.seq), r.q, r.sub))
    for (_dev, _sub, kind), group in groups.items():
        if deidentified and wearers(group) < spec.min_n:
            marks.extend((r.seq, CROSS_BORDER) for r in group)
            continue
        agg = _aggregate(group, spec.rule(kind), salt_for(group[0].seq), deidentified)
        singles.append(agg)
        marks.extend((r.seq, AGGREGATED) for r in group[1:])
    singles.sort(key=lambda rec: rec.seq)
    records = [_emit(rec, spec) for rec in singles]
    manifest = ViewManifest(
        gw=gw,
        aud=spec.aud,
        n=n,
        src_root=src_root,
        first=first,
        last=source[-1].seq,
        root=MerkleTree(records).root,
        count=len(records),
        withheld=_ranges(marks),
        consent_n=consent_n,
        purpose=spec.purpose,
        kid=spec.key[0] if spec.key is not None else "",
        consent_count=consent_count,
        since=since,
    )
    return records, manifest


def open_view_record(rec: Record, keys: Mapping[str, bytes]) -> tuple[dict[str, Value], bytes]:
    """The (val, raw) of a view record: as carried, or opened from ``enc`` with the audience's keys
    (:class:`~edge.sealing.SealError` on an unknown key id or a tag that does not verify)."""
    if rec.enc is None:
        return dict(rec.val), rec.raw
    bare = Record(rec.gw, rec.seq, rec.dev, rec.t, rec.kind, {}, b"", rec.salt, rec.q, rec.sub)
    plain = open_sealed(keys, rec.enc, bytes(bare))
    m = cbor.expect_map(cbor.loads(plain), "sealed content", {"raw", "val"})
    raw, val = cbor.field(m, "raw", bytes, "sealed content"), cbor.field(m, "val", dict, "sealed content")
    checked = Record(rec.gw, rec.seq, rec.dev, rec.t, rec.kind, val, raw, rec.salt, rec.q, rec.sub)
    return dict(checked.val), checked.raw
