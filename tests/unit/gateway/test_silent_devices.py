"""Which devices the dashboard calls silent: heard and then quiet for the threshold, or paired and never heard
since start, counted from the start (paired before it) or from when first listed (paired later)."""

from __future__ import annotations

from typing import Any

from gateway.web import SILENT_AFTER_S, LiveState, silent_devices

T0 = 1_700_000_000_000


def dev(id: str, paired: bool, heard_ms: int | None = None) -> dict[str, Any]:
    return {"id": id, "paired": paired, "last_reading": None if heard_ms is None else {"t": heard_ms}}


def test_heard_then_quiet_past_the_threshold() -> None:
    live = LiveState(started=0.0)
    quiet = int(SILENT_AFTER_S * 1000) + 1
    devices = [dev("a", False, T0), dev("b", True, T0 + quiet - 10)]
    assert silent_devices(devices, live, T0 + quiet, 1.0) == ["a"]


def test_paired_and_never_heard_counts_from_the_start() -> None:
    live = LiveState(started=100.0)
    devices = [dev("never", True), dev("stranger", False)]
    assert silent_devices(devices, live, T0, 100.0 + SILENT_AFTER_S - 1) == []
    assert silent_devices(devices, live, T0, 100.0 + SILENT_AFTER_S + 1) == ["never"]


def test_paired_later_counts_from_when_it_was_first_listed_and_forgetting_clears_it() -> None:
    live = LiveState(started=0.0)
    assert silent_devices([], live, T0, 10.0) == []  # the first look, before the pairing
    assert silent_devices([dev("new", True)], live, T0, 500.0) == []  # listed now: counts from 500
    assert silent_devices([dev("new", True)], live, T0, 500.0 + SILENT_AFTER_S + 1) == ["new"]
    assert silent_devices([], live, T0, 1000.0) == [] and live.listed == {}  # forgotten


def test_a_paired_device_heard_again_is_no_longer_silent() -> None:
    live = LiveState(started=0.0)
    assert silent_devices([dev("x", True)], live, T0, SILENT_AFTER_S + 1) == ["x"]
    assert silent_devices([dev("x", True, T0)], live, T0 + 1000, SILENT_AFTER_S + 2) == []
