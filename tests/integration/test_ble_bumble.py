"""BLE collection through bleak, driven against Bumble-emulated peripherals (no radio needed).

The gateway code under test is the real ``BleakSource`` with bleak's real facades; only bleak's backend
is swapped for one over Bumble, whose peripherals send real Heart Rate Measurement bytes.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from bumble.link import LocalLink

from edge.errors import MalformedFrame
from edge.frame import Frame
from edge.gatt import decode
from firmware_sim.bumble_devices import BumbleHeartRateStrap, Misbehaviour
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
from gateway.ble.source import BleakSource, BleSettings, DeviceState

KEY = b"k" * 32


def address(i: int) -> str:
    return f"F2:00:00:00:00:{i:02X}"


Straps = list[BumbleHeartRateStrap]


# A run that makes no progress at all (no new frame, connect or newly seen stranger) for this long
# is stuck, not slow: the bound is on progress, so a starved CPU only makes a run longer, never a failure.
STALL_S = 20.0
Done = Callable[[BleakSource, list[Frame], Straps], bool]


def progress(source: BleakSource, frames: list[Frame]) -> tuple[int, ...]:
    """What moves while collection goes on; unchanged for ``STALL_S`` means the run is stuck."""
    connects = sum(st.connects for st in source.devices.values())
    return len(frames), connects, len(source.unknown_seen)


async def until(done: Callable[[], bool], moved: Callable[[], object], what: str) -> None:
    """Until ``done()``; fails only when ``moved()`` stays the same for ``STALL_S`` (a wall-clock window
    would count the time a busy CPU did not run us, and fail a run that was merely slow)."""
    loop = asyncio.get_running_loop()
    last, since = moved(), loop.time()
    while not done():
        await asyncio.sleep(0.05)
        now, seen = loop.time(), moved()
        if seen != last:
            last, since = seen, now
        elif now - since > STALL_S:
            raise AssertionError(f"no progress for {STALL_S:.0f} s while waiting for {what} ({seen})")


def run_until(
    done: Done,
    make: Callable[[LocalLink], Straps],
    settings: BleSettings,
    during: Callable[[BleakSource, Straps], Awaitable[None]] | None = None,
) -> tuple[BleakSource, list[Frame], Straps]:
    """Collect from emulated straps until ``done(source, frames, straps)`` holds, however slowly; ``during`` runs
    beside the collection (a test's own actions)."""
    return asyncio.run(_run_until(done, make, settings, during))


async def _run_until(
    done: Done,
    make: Callable[[LocalLink], Straps],
    settings: BleSettings,
    during: Callable[[BleakSource, Straps], Awaitable[None]] | None,
) -> tuple[BleakSource, list[Frame], Straps]:
    link = LocalLink()
    devs = make(link)
    central = BumbleCentral(link)
    for s in devs:
        await s.start()
    source = BleakSource(settings, KEY, {"central": central}, BumbleScanner, BumbleClient)
    frames: list[Frame] = []

    async def submit(f: Frame) -> None:
        frames.append(f)

    task = asyncio.create_task(source.run(submit))
    helper = asyncio.create_task(during(source, devs)) if during is not None else None
    try:
        await until(lambda: done(source, frames, devs), lambda: progress(source, frames), "the run's condition")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if helper is not None:
            helper.cancel()
            await asyncio.gather(helper, return_exceptions=True)
        for s in devs:
            await s.stop()
    return source, frames, devs


def linked(source: BleakSource) -> bool:
    st = source.devices.get(address(0))
    return st is not None and st.connected


def hr_of(frames: list[Frame], dev: str | None = None) -> list[bytes]:
    return [f.data for f in frames if f.char == 0x2A37 and (dev is None or f.dev == dev)]


def straps(n: int, **kw: object) -> Callable[[LocalLink], Straps]:
    return lambda link: [
        BumbleHeartRateStrap(link, address(i), HeartRateStrap(f"strap-{i}", seed=i), 0.1, **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]


def test_only_allowed_devices_are_ingested_with_pseudonymous_ids() -> None:
    allow = frozenset({address(0), address(1), "name:strap-2"})  # strap-3 is a stranger's

    def allowed_collected(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        ids = [source.dev_id(address(i)) for i in range(3)]
        batteries = {f.dev for f in frames if f.char == 0x2A19}
        return all(len(hr_of(frames, d)) >= 5 and d in batteries for d in ids) and address(3) in source.unknown_seen

    source, frames, devs = run_until(allowed_collected, straps(4), BleSettings(allow=allow))
    ids = {source.dev_id(address(i)) for i in range(3)}
    assert {f.dev for f in frames} == ids
    assert all(f.dev.startswith("ble-") and "F2" not in f.dev for f in frames)  # no MAC address leaves
    assert address(3) in source.unknown_seen
    hr = [f for f in frames if f.char == 0x2A37]
    assert len(hr) >= 15
    for f in hr:
        (reading,) = decode(f.char, f.data)
        assert 40 <= reading.val["heart_rate"] <= 200
    assert {f.char for f in frames} == {0x2A37, 0x2A19}  # battery read once per connection
    for i in range(3):
        sent = devs[i].sent
        got = [f.data for f in hr if f.dev == source.dev_id(address(i))]
        assert got == sent[: len(got)] and len(sent) - len(got) <= 1  # in order; at most the last one in flight


def test_peripheral_disconnect_then_reconnect() -> None:
    async def drop(source: BleakSource, devs: Straps) -> None:
        await until(lambda: linked(source), lambda: progress(source, []), "the first link")
        await devs[0].drop_connections()

    def back(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        st = source.devices.get(address(0))
        return st is not None and st.connects >= 2 and len(frames) > 15

    settings = BleSettings(allow=frozenset({address(0)}), backoff_min_s=0.2)
    source, frames, _ = run_until(back, straps(1), settings, drop)
    st = source.devices[address(0)]
    assert st.connects >= 2
    assert len(frames) > 15


def test_a_silent_peripheral_is_dropped_and_reconnected() -> None:
    def dropped_for_silence(source: BleakSource, _frames: list[Frame], _devs: Straps) -> bool:
        st = source.devices.get(address(0))
        return st is not None and st.connects >= 2 and st.last_error == "silent"

    source, _, _ = run_until(
        dropped_for_silence,
        straps(1, misbehaviour=Misbehaviour(silent=True)),
        BleSettings(allow=frozenset({address(0)}), silence_s=0.5, silence_floor_s=0.3, backoff_min_s=0.1),
    )
    st = source.devices[address(0)]
    assert st.connects >= 2 and st.last_error == "silent"


def test_more_devices_than_slots() -> None:
    peak = [0]

    async def watch(source: BleakSource, _devs: Straps) -> None:
        async def loop() -> None:
            while True:
                peak[0] = max(peak[0], sum(1 for s in source.devices.values() if s.connected))
                await asyncio.sleep(0.02)

        await loop()

    def two_collected(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        return sum(len(hr_of(frames, source.dev_id(address(i)))) >= 5 for i in range(4)) >= 2

    _source, frames, _ = run_until(
        two_collected, straps(4), BleSettings(allow=frozenset(address(i) for i in range(4)), max_connections=2), watch
    )
    assert peak[0] == 2
    assert len({f.dev for f in frames}) == 2  # the others wait for a free slot


@pytest.mark.parametrize("every", [2])
def test_malformed_frames_pass_through_untouched_for_the_gateway_to_count(every: int) -> None:
    def malformed(frames: list[Frame]) -> list[Frame]:
        return [f for f in frames if f.char == 0x2A37 and len(f.data) == 1]  # flags whose fields never follow

    _, frames, _ = run_until(
        lambda _s, frames, _d: len(malformed(frames)) >= 3,
        straps(1, misbehaviour=Misbehaviour(malformed_every=every)),
        BleSettings(allow=frozenset({address(0)})),
    )
    bad = malformed(frames)
    assert len(bad) >= 3
    for f in bad:
        with pytest.raises(MalformedFrame):
            decode(f.char, f.data)


def test_pairing_while_running_takes_effect(tmp_path: Path) -> None:
    from gateway.registry import DeviceRegistry

    registry = DeviceRegistry(tmp_path)

    paired = asyncio.Event()

    async def pair_later(source: BleakSource, _devs: Straps) -> None:
        source.registry = registry
        await until(lambda: address(0) in source.unknown_seen, lambda: progress(source, []), "the strap to be heard")
        assert not source.devices  # seen, listed, not ingested
        registry.pair(address(0), quirks={"ftms_variant": "current"})
        paired.set()

    def collected_with_quirks(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        # the registry is re-read every 5 s; a second refresh maps the now-known device to its model's quirks
        dev = source.dev_id(address(0))
        return paired.is_set() and bool(hr_of(frames, dev)) and source.decode_quirks(dev) == {"ftms_variant": "current"}

    source, frames, _ = run_until(collected_with_quirks, straps(1), BleSettings(), pair_later)
    assert {f.dev for f in frames} == {source.dev_id(address(0))}
    # seen.json names unpaired devices by a salted hash only, and a device paired meanwhile drops out of it
    assert address(0) not in (tmp_path / "seen.json").read_text() and not registry.seen()


def test_indications_and_split_ftms_records_over_the_air() -> None:
    """A blood-pressure cuff notifies its cuff pressure and indicates its result; a bike splits each record over
    notifications: all arrive whole."""
    from edge.gatt.assembly import RecordAssembler
    from firmware_sim.bumble_devices import BumbleSensor
    from firmware_sim.devices import BloodPressureCuff, IndoorBike

    async def main() -> tuple[list[Frame], list[BumbleSensor], BleakSource]:
        link = LocalLink()
        sensors = [
            BumbleSensor(link, address(10), BloodPressureCuff("cuff", seed=1, interval_s=0.2)),
            BumbleSensor(link, address(11), IndoorBike("bike", seed=2, interval_s=0.1)),
        ]
        for s in sensors:
            await s.start()
        source = BleakSource(
            BleSettings(allow=frozenset({address(10), address(11)})),
            KEY,
            {"central": BumbleCentral(link)},
            BumbleScanner,
            BumbleClient,
        )
        frames: list[Frame] = []

        async def submit(f: Frame) -> None:
            frames.append(f)

        task = asyncio.create_task(source.run(submit))
        await asyncio.sleep(2.0)
        for s in sensors:
            await s.stop()
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return frames, sensors, source

    frames, sensors, source = asyncio.run(main())
    cuff = [f.data for f in frames if f.dev == source.dev_id(address(10)) and f.char == 0x2A35]
    cuff_pressure = [f.data for f in frames if f.dev == source.dev_id(address(10)) and f.char == 0x2A36]
    sent_by_cuff = list(zip(sensors[0].sent_on, sensors[0].sent, strict=True))
    bike = [f.data for f in frames if f.dev == source.dev_id(address(11)) and f.char == 0x2AD2]
    battery = [f.data for f in frames if f.char == 0x2A19]
    assert battery == [b"\x64", b"\x64"]  # each sensor's level, read once when connected
    # The cuff notifies its pressure while measuring (0x2A36) and indicates each result (0x2A35): both arrive.
    assert cuff == [d for c, d in sent_by_cuff if c == 0x2A35] and len(cuff) >= 5
    # (9 per measurement; the first result may beat the subscription to 0x2A36, which comes second.)
    assert cuff_pressure == [d for c, d in sent_by_cuff if c == 0x2A36] and len(cuff_pressure) >= 9 * (len(cuff) - 1)
    assert bike == sensors[1].sent and len(bike) >= 20
    for data in cuff:
        (r,) = decode(0x2A35, data)
        assert r.kind == "blood_pressure" and "device_time" in r.val
    for data in cuff_pressure:
        (r,) = decode(0x2A36, data)
        assert r.kind == "intermediate_cuff_pressure" and r.q == ()
    asm: RecordAssembler[int] = RecordAssembler()
    records = [j for i, data in enumerate(bike) for j in asm.feed("bike", 0x2AD2, data, i, now=0.0)]
    assert records and all(j.parts >= 2 and "more_data" not in decode(0x2AD2, j.data)[0].q for j in records)


def test_advertisement_only_scale_is_decoded_passively_without_a_connection() -> None:
    from firmware_sim.bumble_devices import BumbleBroadcaster
    from firmware_sim.devices import Scale

    async def main() -> tuple[list[Frame], BumbleBroadcaster, BleakSource]:
        link = LocalLink()
        scale = BumbleBroadcaster(link, address(20), Scale("scale", seed=3, interval_s=0.3))
        await scale.start()
        source = BleakSource(
            BleSettings(allow=frozenset({address(20)})),
            KEY,
            {"central": BumbleCentral(link)},
            BumbleScanner,
            BumbleClient,
        )
        frames: list[Frame] = []

        async def submit(f: Frame) -> None:
            frames.append(f)

        task = asyncio.create_task(source.run(submit))
        await asyncio.sleep(2.0)
        await scale.stop()
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return frames, scale, source

    frames, scale, source = asyncio.run(main())
    st = source.devices[address(20)]
    assert st.advertisement_only and st.connects == 0
    assert [f.data for f in frames] == scale.sent[: len(frames)] and len(frames) >= 4  # each weighing once
    for f in frames:
        (r,) = decode(f.char, f.data)
        assert r.kind == "weight" and 50 <= r.val["weight"] <= 100  # type: ignore[operator]


def test_silence_limit_follows_each_devices_rhythm() -> None:
    src = BleakSource(BleSettings(silence_s=10, silence_factor=5, silence_floor_s=2), KEY)
    assert src._silence_limit([0.1, 0.1]) == 10  # rhythm not known yet
    assert src._silence_limit([0.1] * 5) == 2  # a fast strap: the floor
    assert src._silence_limit([60.0] * 5) == 300  # a cuff that indicates once a minute


def test_a_device_behind_rotating_private_addresses_keeps_one_id_when_paired_by_irk() -> None:
    irk = bytes(range(16))

    def private_strap(link: LocalLink) -> Straps:
        mis = Misbehaviour(rotate_address_every_s=0.3)
        return [
            BumbleHeartRateStrap(link, address(0), HeartRateStrap("strap-0", seed=0), 0.1, misbehaviour=mis, irk=irk)
        ]

    async def drop_twice(source: BleakSource, devs: Straps) -> None:
        # Each drop once the link is up and has carried a notification (a fixed delay raced the connects on
        # a busy machine, and dropping nothing left the reconnects untested).
        def link_up(connects: int, notes: int) -> bool:
            return any(
                st.connected and st.connects >= connects and st.notifications > notes for st in source.devices.values()
            )

        def moved() -> tuple[int, ...]:
            return tuple(n for st in source.devices.values() for n in (st.connects, st.notifications))

        notes = 0
        for connects in (1, 2):
            await until(functools.partial(link_up, connects, notes), moved, f"link {connects} to carry a notification")
            notes = sum(st.notifications for st in source.devices.values())
            await devs[0].drop_connections()  # it comes back from a new address

    def reconnected_twice(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        return any(st.connects >= 3 for st in source.devices.values()) and len(hr_of(frames)) >= 15

    settings = BleSettings(allow=frozenset({"irk:" + irk.hex()}), backoff_min_s=0.1)
    source, frames, devs = run_until(reconnected_twice, private_strap, settings, drop_twice)
    (st,) = source.devices.values()
    assert st.identity == "irk:" + irk.hex() and st.connects >= 3
    assert {f.dev for f in frames} == {source.dev_id("irk:" + irk.hex())}
    assert len(set(devs[0].addresses[1:])) >= 3 and address(0) not in source.unknown_seen
    hr = [f.data for f in frames if f.char == 0x2A37]
    assert hr == devs[0].sent[: len(hr)] and len(hr) >= 15

    # Without its IRK the same device is a stranger: seen, listed, never ingested.
    def listed(source: BleakSource, _frames: list[Frame], _devs: Straps) -> bool:
        return len(source.unknown_seen) >= 3  # heard at three of its addresses, and never admitted meanwhile

    source, frames, _ = run_until(listed, private_strap, BleSettings(allow=frozenset({address(0)})))
    assert not frames and source.unknown_seen


def test_duplicated_notifications_arrive_as_sent() -> None:
    def repeats(frames: list[Frame]) -> int:
        return sum(1 for a, b in itertools.pairwise(hr_of(frames)) if a == b)

    _, frames, devs = run_until(
        lambda _s, frames, _d: len(hr_of(frames)) >= 12 and repeats(frames) >= 3,
        straps(1, misbehaviour=Misbehaviour(duplicate_every=3)),
        BleSettings(allow=frozenset({address(0)})),
    )
    hr = [f.data for f in frames if f.char == 0x2A37]
    assert hr == devs[0].sent[: len(hr)] and len(hr) >= 12
    assert sum(1 for a, b in itertools.pairwise(hr) if a == b) >= 3  # the repeats are kept, not merged


def test_a_busy_peripheral_that_refuses_connections_is_retried() -> None:
    source, frames, devs = run_until(
        lambda _s, frames, devs: devs[0].refused >= 2 and len(hr_of(frames)) >= 5,
        straps(1, misbehaviour=Misbehaviour(refuse_connections=2)),
        BleSettings(allow=frozenset({address(0)}), backoff_min_s=0.1),
    )
    assert devs[0].refused == 2
    st = source.devices[address(0)]
    assert st.connected or st.connects >= 1
    assert len([f for f in frames if f.char == 0x2A37]) >= 5


def test_renamed_devices_allowed_by_address_are_still_collected() -> None:
    async def drop(source: BleakSource, devs: Straps) -> None:
        # Drop the link once it is up (a fixed delay raced the first connect on a loaded machine, and
        # dropping nothing left the reconnect untested).
        await until(lambda: linked(source), lambda: progress(source, []), "the first link")
        await devs[0].drop_connections()

    def renamed_and_back(source: BleakSource, _frames: list[Frame], devs: Straps) -> bool:
        st = source.devices.get(address(0))
        return st is not None and devs[0].renames >= 3 and st.name not in (None, "strap-0") and st.connects >= 2

    source, frames, devs = run_until(
        renamed_and_back,
        straps(1, misbehaviour=Misbehaviour(rename_every_s=0.3)),
        BleSettings(allow=frozenset({address(0)}), backoff_min_s=0.1),
        drop,
    )
    st = source.devices[address(0)]
    assert devs[0].renames >= 3 and st.name is not None and st.name != "strap-0" and st.connects >= 2
    assert {f.dev for f in frames} == {source.dev_id(address(0))}


def test_battery_drains_to_zero_then_the_device_switches_off() -> None:
    def weak(link: LocalLink) -> Straps:
        strap = HeartRateStrap("strap-0", seed=0, battery=5)
        return [
            BumbleHeartRateStrap(link, address(0), strap, 0.1, misbehaviour=Misbehaviour(battery_drain_per_min=600.0))
        ]  # 1 % per 0.1 s

    def switched_off(source: BleakSource, _frames: list[Frame], devs: Straps) -> bool:
        st = source.devices.get(address(0))
        return devs[0].switched_off and st is not None and not st.connected and st.battery == 0

    source, frames, devs = run_until(switched_off, weak, BleSettings(allow=frozenset({address(0)}), backoff_min_s=0.1))
    levels = [f.data[0] for f in frames if f.char == 0x2A19]
    assert levels[0] <= 5 and levels[-1] == 0 and levels == sorted(levels, reverse=True)
    assert devs[0].switched_off
    st = source.devices[address(0)]
    assert not st.connected and st.battery == 0


def test_a_device_that_keeps_dropping_its_link_is_reconnected_and_nothing_is_reordered() -> None:
    def reconnected(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        st = source.devices.get(address(0))
        return st is not None and st.connects >= 3 and len(hr_of(frames)) >= 10

    source, frames, devs = run_until(
        reconnected,
        straps(1, misbehaviour=Misbehaviour(disconnect_every_s=0.6)),
        BleSettings(allow=frozenset({address(0)}), backoff_min_s=0.1),
    )
    assert source.devices[address(0)].connects >= 3
    hr = [f.data for f in frames if f.char == 0x2A37]
    assert hr == devs[0].sent[: len(hr)] and len(hr) >= 10


def test_a_hung_adapter_is_power_cycled_after_scanner_restarts_do_not_help() -> None:
    """Discovery hangs silently while a strap waits to be reconnected: the source restarts its scanner,
    then power-cycles the adapter, and collection resumes. While every device is connected, silence on
    the air is normal and the adapter is left alone."""

    async def main() -> tuple[BleakSource, BumbleCentral, list[Frame], int, int]:
        link = LocalLink()
        (peripheral,) = straps(1)(link)
        await peripheral.start()
        central = BumbleCentral(link)
        settings = BleSettings(
            allow=frozenset({address(0)}), scan_stall_s=0.3, scan_restarts_before_adapter_reset=2, backoff_min_s=0.1
        )
        source = BleakSource(settings, KEY, {"central": central}, BumbleScanner, BumbleClient, adapter=central)
        frames: list[Frame] = []

        async def submit(f: Frame) -> None:
            frames.append(f)

        def strap() -> DeviceState | None:
            return source.devices.get(address(0))

        def connected_and_quiet() -> bool:  # connected: no advertisements, so the scanner is restarted
            st = strap()
            return st is not None and st.connected and source.scanner_restarts >= 3

        resumed_at: list[int] = []  # frames collected when the strap was connected again

        def resumed() -> bool:
            st = strap()
            if not resumed_at and st is not None and st.connected and st.connects >= 2:
                resumed_at.append(len(frames))
            return bool(resumed_at) and len(frames) - resumed_at[0] >= 5

        def moved() -> tuple[int, ...]:
            return progress(source, frames)

        task = asyncio.create_task(source.run(submit))
        try:
            await until(connected_and_quiet, moved, "the strap connected and the scanner restarted")
            resets_while_connected = central.resets
            await central.wedge()
            await peripheral.drop_connections()  # now the strap must be found again, and discovery is hung
            await until(resumed, moved, "collection to resume after the adapter was power-cycled")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await peripheral.stop()
        return source, central, frames, resets_while_connected, len(frames) - resumed_at[0]

    source, central, _frames, resets_while_connected, late = asyncio.run(main())
    assert resets_while_connected == 0
    assert source.scanner_restarts >= 3 and source.adapter_resets >= 1 and central.resets == source.adapter_resets
    assert not central.wedged and source.devices[address(0)].connects >= 2
    assert late >= 5  # collection resumed after the power cycle


def test_a_brand_paired_by_vendor_id_and_limited_to_one_profile(tmp_path: Path) -> None:
    from gateway.registry import DeviceRegistry

    registry = DeviceRegistry(tmp_path)
    registry.pair("vendor:0x006B", model="brand-strap", profiles=["2a37"])  # heart rate only, no battery

    def fleet(link: LocalLink) -> Straps:
        return [
            BumbleHeartRateStrap(
                link, address(i), HeartRateStrap(f"strap-{i}", seed=i), 0.1, company_id=0x006B if i == 0 else 0x0059
            )
            for i in range(2)
        ]

    async def use_registry(source: BleakSource, _devs: Straps) -> None:
        source.registry = registry  # read at the source's first tick

    def collected_and_refused(source: BleakSource, frames: list[Frame], _devs: Straps) -> bool:
        return len(frames) >= 8 and address(1) in source.unknown_seen

    source, frames, _ = run_until(collected_and_refused, fleet, BleSettings(), use_registry)
    assert {f.dev for f in frames} == {source.dev_id(address(0))}
    assert {f.char for f in frames} == {0x2A37} and len(frames) >= 8
    assert "[vendor:0x0059]" in (source.unknown_seen[address(1)] or "")


def test_individually_paired_devices_get_the_slots_first() -> None:
    def fleet(link: LocalLink) -> Straps:
        return [
            BumbleHeartRateStrap(link, address(i), HeartRateStrap(f"strap-{i}", seed=i), 0.1, company_id=0x006B)
            for i in range(3)
        ]

    settings = BleSettings(allow=frozenset({"vendor:006b", address(2)}), max_connections=1)
    source, frames, _ = run_until(lambda source, frames, _d: len(hr_of(frames)) >= 5, fleet, settings)
    assert {f.dev for f in frames} == {source.dev_id(address(2))}  # the one paired by address, not the brand


def test_two_adapters_share_the_devices_and_never_collect_one_twice() -> None:
    """Two emulated adapters hear all six straps; each may hold three: every strap is collected, by one
    adapter only, and the adapters split the load."""
    from gateway.ble.source import DeviceClaims, MultiAdapterSource

    async def main() -> tuple[MultiAdapterSource, list[Frame], Straps]:
        link = LocalLink()
        devs = straps(6)(link)
        for s in devs:
            await s.start()
        claims = DeviceClaims()
        seen: dict[str, str | None] = {}
        settings = BleSettings(allow=frozenset(address(i) for i in range(6)), max_connections=3)
        sources = [
            BleakSource(
                settings,
                KEY,
                {"central": BumbleCentral(link, address=f"C0:FF:EE:00:00:0{n}")},
                BumbleScanner,
                BumbleClient,
                name=f"hci{n}",
                claims=claims,
                unknown_seen=seen,
            )
            for n in range(2)
        ]
        multi = MultiAdapterSource(sources)
        frames: list[Frame] = []

        async def submit(f: Frame) -> None:
            frames.append(f)

        def each_collected() -> bool:
            return all(len(hr_of(frames, multi.dev_id(address(i)))) >= 10 for i in range(6))

        def moved() -> tuple[int, ...]:
            return tuple(n for s in sources for n in progress(s, frames))

        task = asyncio.create_task(multi.run(submit))
        try:
            await until(each_collected, moved, "ten readings from each strap")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for s in devs:
                await s.stop()
        return multi, frames, devs

    multi, frames, devs = asyncio.run(main())
    per_adapter = [sum(st.connects > 0 for st in s.devices.values()) for s in multi.sources]
    assert all(0 < n <= 3 for n in per_adapter), per_adapter
    assert {f.dev for f in frames} == {multi.dev_id(address(i)) for i in range(6)}
    for i, d in enumerate(devs):
        got = [f.data for f in frames if f.dev == multi.dev_id(address(i)) and f.char == 0x2A37]
        assert got == d.sent[: len(got)] and len(got) >= 10  # once each, in order: no adapter doubled it
    states = multi.device_states()
    assert len(states) == 6 and {s["adapter"] for s in states.values()} == {"hci0", "hci1"}
