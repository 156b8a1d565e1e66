"""Resolvable private addresses: the spec's sample vector, and agreement with Bumble's own generator."""

from __future__ import annotations

import secrets

import pytest
from bumble.hci import Address

from gateway.ble.privacy import IrkResolver, ah, is_resolvable, resolves

IRK = bytes.fromhex("ec0234a357c8ad05341010a60a397d9b")  # most significant byte first, as the spec writes it
# Bumble (like SMP on the wire) keeps keys least significant byte first, hence IRK[::-1] below.


def test_ah_matches_the_core_specification_sample() -> None:
    # Core spec Vol 3 Part H, Appendix D: ah(IRK, 0x708194) = 0x0dfbaa
    assert ah(IRK, bytes.fromhex("708194")) == bytes.fromhex("0dfbaa")
    assert resolves(IRK, "70:81:94:0D:FB:AA")
    assert not resolves(IRK, "70:81:94:0D:FB:AB")
    assert not resolves(bytes(16), "70:81:94:0D:FB:AA")


def test_addresses_made_by_bumble_resolve_with_their_irk_only() -> None:
    other = secrets.token_bytes(16)
    for _ in range(50):
        rpa = str(Address.generate_private_address(IRK[::-1])).split("/")[0]
        assert is_resolvable(rpa) and resolves(IRK, rpa) and not resolves(other, rpa)


def test_static_and_public_addresses_never_resolve() -> None:
    assert not is_resolvable("C0:11:22:33:44:55")  # static random: top bits 11
    assert not resolves(IRK, "F2:00:00:00:00:01")


def test_resolver_caches_and_forgets_when_keys_change() -> None:
    rpa = str(Address.generate_private_address(IRK[::-1])).split("/")[0]
    r = IrkResolver([])
    assert r.resolve(rpa) is None
    r.update([secrets.token_bytes(16), IRK])
    assert r.resolve(rpa) == IRK and r.resolve(rpa.lower()) == IRK
    r.update([])
    assert r.resolve(rpa) is None


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        ah(IRK[:8], b"\x00\x00\x00")
    with pytest.raises(ValueError):
        resolves(IRK, "70:81:94")
