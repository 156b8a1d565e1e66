"""The device registry (TinyDB with atomic writes) and the `tiyi devices` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.registry import DeviceRegistry, RegistryError, normalise, pseudonym


def test_pair_list_forget(tmp_path: Path) -> None:
    reg = DeviceRegistry(tmp_path)
    assert reg.allowed() == frozenset()
    reg.pair("c8:3f:0a:11:22:33", model="Polar H10")
    reg.pair("name:HRM-Pro 12345")
    reg.pair("C8:3F:0A:11:22:33", note="front desk")  # same device: updated, not duplicated
    assert [p.entry for p in reg.paired()] == ["C8:3F:0A:11:22:33", "name:HRM-Pro 12345"]
    assert reg.allowed() == frozenset({"C8:3F:0A:11:22:33", "name:HRM-Pro 12345"})
    assert reg.forget("c8:3f:0a:11:22:33") and not reg.forget("c8:3f:0a:11:22:33")
    assert reg.allowed() == frozenset({"name:HRM-Pro 12345"})
    json.loads((tmp_path / "devices.json").read_text())  # a whole JSON document, written atomically
    assert not list(tmp_path.glob(".devices-*"))  # no temporary files left behind


@pytest.mark.parametrize("bad", ["", "AA:BB", "GG:00:00:00:00:00", "name:", "AA-BB-CC-DD-EE-FF"])
def test_bad_entries(bad: str) -> None:
    with pytest.raises(RegistryError):
        normalise(bad)


def test_pseudonyms_are_stable_keyed_and_hide_the_address() -> None:
    a = pseudonym(b"k" * 32, "c8:3f:0a:11:22:33")
    assert a == pseudonym(b"k" * 32, "C8:3F:0A:11:22:33") != pseudonym(b"j" * 32, "C8:3F:0A:11:22:33")
    assert a.startswith("ble-") and "c83f" not in a.lower()


def test_devices_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[ble]\nallow = ["name:Fixed"]\n')
    assert main(["devices", "pair", "--config", str(cfg), "aa:bb:cc:dd:ee:ff", "--model", "H10"]) == 0
    DeviceRegistry(tmp_path / "state").write_seen({"11:22:33:44:55:66": "Stranger", "AA:BB:CC:DD:EE:FF": "H10"})
    assert main(["devices", "list", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "name:Fixed" in out and "AA:BB:CC:DD:EE:FF" in out and "id ble-" in out
    assert "seen, not paired (1)" in out and "Stranger" in out
    assert main(["devices", "forget", "--config", str(cfg), "aa:bb:cc:dd:ee:ff"]) == 0
    assert main(["devices", "forget", "--config", str(cfg), "aa:bb:cc:dd:ee:ff"]) == 1
    assert main(["devices", "pair", "--config", str(cfg), "not-an-address"]) == 2


def test_quirks_are_stored_validated_and_listed(tmp_path: Path) -> None:
    reg = DeviceRegistry(tmp_path)
    reg.pair("aa:bb:cc:dd:ee:ff", model="RowerX", quirks={"ftms_variant": "current"})
    reg.pair("name:Strap")
    assert reg.quirks() == {"AA:BB:CC:DD:EE:FF": {"ftms_variant": "current"}}
    with pytest.raises(RegistryError, match="unknown quirk"):
        reg.pair("aa:bb:cc:dd:ee:01", quirks={"colour": "red"})


def test_vendor_entries_and_profiles(tmp_path: Path) -> None:
    from gateway.registry import DeviceRegistry, RegistryError, normalise

    assert normalise("vendor:0x006B") == normalise("vendor:107") == "vendor:006b"
    for bad in ("vendor:", "vendor:0x10000", "vendor:polar"):
        with pytest.raises(RegistryError):
            normalise(bad)
    reg = DeviceRegistry(tmp_path)
    p = reg.pair("AA:BB:CC:DD:EE:FF", profiles=["2a37", "0x2A19"])
    assert p.profiles == (0x2A19, 0x2A37)
    assert reg.profiles() == {"AA:BB:CC:DD:EE:FF": frozenset({0x2A19, 0x2A37})}
    with pytest.raises(RegistryError, match="does not decode"):
        reg.pair("AA:BB:CC:DD:EE:FF", profiles=["2a00"])
    with pytest.raises(RegistryError):
        reg.pair("AA:BB:CC:DD:EE:FF", profiles=["not-a-uuid"])
