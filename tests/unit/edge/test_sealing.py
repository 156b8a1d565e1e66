"""SM4-GCM sealing: a published test vector, round trips, and every alteration refused with SealError."""

from __future__ import annotations

from dataclasses import replace

import cbor2
import pytest

from edge.errors import CodecError
from edge.record import MAX_ENC_CT_BYTES, Record, encode_record
from edge.sealing import SM4_KEY_BYTES, SealError, derive_iv, open_sealed, seal

KEY = bytes(range(16))
OTHER_KEY = bytes(range(1, 17))
BARE = Record("gw-1", 7, "hr-001", 1_795_000_000_000, "heart_rate", {}, b"", bytes(16), sub="sub-0123456789abcdef")


def test_rfc_8998_sm4_gcm_vector() -> None:
    """RFC 8998 Appendix A.1 (SM4-GCM): the library's bytes equal the published ciphertext and tag."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    iv = bytes.fromhex("00001234567800000000ABCD")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    expected_ct = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    expected_tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    enc = seal(key, "rfc8998", iv, plaintext, aad)
    assert enc == {"kid": "rfc8998", "iv": iv, "ct": expected_ct + expected_tag}
    assert open_sealed({"rfc8998": key}, enc, aad) == plaintext


def test_round_trip_and_the_sealed_record_parses() -> None:
    aad = bytes(BARE)
    enc = seal(KEY, "k1", derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a"), b"\xa2craw@cval\xa0", aad)
    sealed = replace(BARE, enc=enc)
    data = bytes(sealed)
    assert data == cbor2.dumps(sealed.to_map(), canonical=True)
    again = Record.from_bytes(data)
    assert again == sealed
    assert open_sealed({"k1": KEY}, again.enc or {}, bytes(replace(again, enc=None))) == b"\xa2craw@cval\xa0"


def test_iv_is_deterministic_and_differs_per_audience_gateway_seq_key_and_plaintext() -> None:
    iv = derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a")
    assert len(iv) == 12 and iv == derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a")
    others = {
        derive_iv(KEY, "aud-2", "gw-1", 7, plaintext=b"p", aad=b"a"),
        derive_iv(KEY, "aud-1", "gw-2", 7, plaintext=b"p", aad=b"a"),
        derive_iv(KEY, "aud-1", "gw-1", 8, plaintext=b"p", aad=b"a"),
        derive_iv(OTHER_KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a"),
        derive_iv(
            KEY, "aud-1g", "w-1", 7, plaintext=b"p", aad=b"a"
        ),  # separators keep "aud-1"+"gw-1" apart from "aud-1g"+"w-1"
        derive_iv(
            KEY, "aud-1", "gw-1", 7, plaintext=b"q", aad=b"a"
        ),  # other content for the same seq: never the same IV
        derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"b"),  # same content, another record (t, q, ...)
    }
    assert iv not in others and len(others) == 7


@pytest.mark.parametrize("where", ["ciphertext", "tag", "iv"])
def test_a_flipped_byte_anywhere_is_refused(where: str) -> None:
    aad = bytes(BARE)
    enc = seal(KEY, "k1", derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a"), b"the reading", aad)
    field, at = {"ciphertext": ("ct", 0), "tag": ("ct", -1), "iv": ("iv", 3)}[where]
    b = bytearray(enc[field])
    b[at] ^= 0x01
    with pytest.raises(SealError, match="tag does not verify"):
        open_sealed({"k1": KEY}, {**enc, field: bytes(b)}, aad)


def test_altered_associated_data_is_refused() -> None:
    """The record's own bytes are the associated data: moving a ciphertext to another seq or subject fails."""
    enc = seal(KEY, "k1", derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a"), b"the reading", bytes(BARE))
    for other in (replace(BARE, seq=8), replace(BARE, sub="sub-fedcba9876543210"), replace(BARE, t=BARE.t + 1)):
        with pytest.raises(SealError, match="tag does not verify"):
            open_sealed({"k1": KEY}, enc, bytes(other))


def test_unknown_kid_wrong_key_and_bad_sizes() -> None:
    aad = bytes(BARE)
    enc = seal(KEY, "k1", derive_iv(KEY, "aud-1", "gw-1", 7, plaintext=b"p", aad=b"a"), b"x", aad)
    with pytest.raises(SealError, match="no key with id 'k1'"):
        open_sealed({"k2": KEY}, enc, aad)
    with pytest.raises(SealError, match="tag does not verify"):
        open_sealed({"k1": OTHER_KEY}, enc, aad)
    with pytest.raises(SealError, match="exactly 16 bytes"):
        open_sealed({"k1": KEY[:15]}, enc, aad)
    bad_maps = ({**enc, "iv": bytes(11)}, {**enc, "ct": bytes(15)}, {**enc, "extra": 1}, {"kid": "k1", "iv": bytes(12)})
    for bad in bad_maps:
        with pytest.raises(SealError):
            open_sealed({"k1": KEY}, bad, aad)
    with pytest.raises(SealError):
        seal(KEY[: SM4_KEY_BYTES - 1], "k1", bytes(12), b"", b"")
    with pytest.raises(SealError):
        seal(KEY, "k1", bytes(16), b"", b"")
    with pytest.raises(CodecError):
        seal(KEY, "bad kid", bytes(12), b"", b"")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"val": {"hr": 1}}, r"val = \{\}"),
        ({"raw": b"\x01"}, r"val = \{\}"),
        ({"enc": {"kid": "k1", "iv": bytes(12)}}, "missing"),
        ({"enc": {"kid": "k1", "iv": bytes(12), "ct": bytes(16), "x": 1}}, "unexpected"),
        ({"enc": {"kid": "k1", "iv": bytes(13), "ct": bytes(16)}}, "iv"),
        ({"enc": {"kid": "k1", "iv": bytes(12), "ct": bytes(15)}}, "ct"),
        ({"enc": {"kid": "k1", "iv": bytes(12), "ct": bytes(MAX_ENC_CT_BYTES + 1)}}, "ct"),
        ({"enc": {"kid": "", "iv": bytes(12), "ct": bytes(16)}}, "kid"),
        ({"enc": {"kid": "k1", "iv": "not bytes", "ct": bytes(16)}}, "iv"),
    ],
)
def test_the_enc_field_is_validated_strictly(change: dict[str, object], match: str) -> None:
    base = {"kid": "k1", "iv": bytes(12), "ct": bytes(16)}
    kwargs = {"enc": base, **change}
    with pytest.raises(CodecError, match=match):
        replace(BARE, **kwargs)  # type: ignore[arg-type]
    m = replace(BARE, enc=base).to_map()
    m.update(kwargs)
    with pytest.raises(CodecError, match=match):
        Record.from_bytes(cbor2.dumps(m, canonical=True))


def test_encode_record_with_enc_matches_the_record_and_checks_it_the_same_way() -> None:
    enc = {"kid": "k1", "iv": bytes(12), "ct": bytes(20)}
    r = replace(BARE, enc=enc, q=("low_signal",))
    assert encode_record(r.gw, r.seq, r.dev, r.t, r.kind, {}, b"", r.salt, r.q, r.sub, enc) == bytes(r)
    assert bytes(r) == cbor2.dumps(r.to_map(), canonical=True)
    with pytest.raises(CodecError, match=r"val = \{\}"):
        encode_record(r.gw, r.seq, r.dev, r.t, r.kind, {"hr": 1}, b"", r.salt, r.q, r.sub, enc)


def test_a_record_without_enc_is_unchanged_by_contract_1_3() -> None:
    r = Record("gw-1", 1, "hr-001", 5, "heart_rate", {"heart_rate": 70}, b"\x00", bytes(16))
    assert "enc" not in r.to_map() and bytes(r) == cbor2.dumps(r.to_map(), canonical=True)
