"""``seen.json``: unpaired devices nearby are listed briefly, bounded, and never by address at rest."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.registry import SEEN_FILE, DeviceRegistry, SeenDevices, seen_id

ADDRESS = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){5}", re.I)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def addr(i: int) -> str:
    return "D0:" + ":".join(f"{b:02X}" for b in i.to_bytes(5, "big"))


def test_a_thousand_passing_devices_keep_the_listing_bounded_brief_and_free_of_addresses(tmp_path: Path) -> None:
    clock, reg = Clock(), DeviceRegistry(tmp_path)
    seen = SeenDevices(ttl_s=600, max_count=200, clock=clock)
    sizes = []
    for i in range(1000):  # a busy street: a new phone every 2 s, each heard a few times
        for _ in range(3):
            seen[addr(i)] = f"Phone {i}"
        clock.now += 2
        if i % 50 == 0:  # the gateway writes the file every few seconds
            reg.write_seen(seen)
            sizes.append(len(json.loads((tmp_path / SEEN_FILE).read_text())))
    assert len(seen) <= 200 and max(sizes) <= 200
    reg.write_seen(seen)
    text = (tmp_path / SEEN_FILE).read_text()
    assert not ADDRESS.search(text) and not any(addr(i) in text for i in range(1000))
    assert "Phone 999" in text and 'Phone 0"' not in text  # the latest are listed, the first long forgotten
    clock.now += 601  # nobody passes for ten minutes
    reg.write_seen(seen)
    assert json.loads((tmp_path / SEEN_FILE).read_text()) == {} and len(seen) == 0


def test_the_count_bound_drops_the_least_recently_heard() -> None:
    clock = Clock()
    seen = SeenDevices(ttl_s=600, max_count=3, clock=clock)
    for i in range(4):
        seen[addr(i)] = None
        clock.now += 1
    seen[addr(1)] = "again"  # heard again: now the most recent
    seen[addr(9)] = None
    assert list(seen) == [addr(3), addr(1), addr(9)]


def test_hashes_at_rest_rotate_with_the_salt_so_listings_do_not_link(tmp_path: Path) -> None:
    clock, reg = Clock(), DeviceRegistry(tmp_path)
    seen = SeenDevices(ttl_s=60, max_count=10, clock=clock)
    seen[addr(7)] = "Strap"
    reg.write_seen(seen)
    first = set(json.loads((tmp_path / SEEN_FILE).read_text()))
    reg.write_seen(seen)
    assert set(json.loads((tmp_path / SEEN_FILE).read_text())) == first  # stable within one salt period
    clock.now += 59
    seen[addr(7)] = "Strap"  # still nearby
    clock.now += 1
    reg.write_seen(seen)
    second = set(json.loads((tmp_path / SEEN_FILE).read_text()))
    assert len(second) == 1 and second != first  # same device, new salt: a different id
    assert all(k.startswith("seen-") for k in first | second)
    assert seen_id(b"a" * 32, addr(7)) != seen_id(b"b" * 32, addr(7)) == seen_id(b"b" * 32, addr(7).lower())


def test_a_device_paired_meanwhile_is_left_out_of_the_listing(tmp_path: Path) -> None:
    reg = DeviceRegistry(tmp_path)
    reg.pair(addr(1))
    seen = SeenDevices()
    seen[addr(1)], seen[addr(2)] = "Paired now", "Stranger"
    reg.write_seen(seen)
    assert list(json.loads((tmp_path / SEEN_FILE).read_text()).values()) == ["Stranger"]


def test_a_plain_mapping_is_hashed_too_with_a_salt_of_its_own(tmp_path: Path) -> None:
    reg = DeviceRegistry(tmp_path)
    reg.write_seen({addr(3): "X"})
    a = (tmp_path / SEEN_FILE).read_text()
    reg.write_seen({addr(3): "X"})
    b = (tmp_path / SEEN_FILE).read_text()
    assert addr(3) not in a and a != b
