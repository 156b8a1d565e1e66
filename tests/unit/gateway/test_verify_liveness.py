"""When `tiyi verify --broker` may take quiet time as the end of the stream: only while every gateway it
heard is up or stopped cleanly (a crashed gateway comes back and re-sends; nothing heard is no stream)."""

from __future__ import annotations

import pytest

from edge import cbor
from gateway.cli.main import EXIT_USAGE, main
from gateway.cli.verify import Liveness

STATUS = "tiyi/v1/macao/gw-1/status"


def status(state: str, t: int, gw: str = "gw-1") -> bytes:
    return cbor.dumps({"state": state, "t": t, "gw": gw})


def test_nothing_heard_is_waiting() -> None:
    assert Liveness().waiting


def test_a_gateway_down_by_its_last_will_is_waited_for_until_it_is_back() -> None:
    live = Liveness()
    live.feed(STATUS, status("online", 1_700_000_000_000))
    assert not live.waiting
    live.feed(STATUS, status("offline", 0))  # the broker's last will: it died
    assert live.waiting
    live.feed("tiyi/v1/macao/gw-1/data/hr-1", b"\x80")  # data alone does not say it is back
    assert live.waiting
    live.feed(STATUS, status("online", 1_700_000_001_000))
    assert not live.waiting
    live.feed(STATUS, status("offline", 1_700_000_002_000))  # a clean stop: the stream may end
    assert not live.waiting


def test_one_crashed_gateway_among_several_keeps_the_listener_waiting() -> None:
    live = Liveness()
    live.feed(STATUS, status("online", 1))
    live.feed("tiyi/v1/macao/gw-2/status", status("offline", 0, "gw-2"))
    assert live.waiting


@pytest.mark.parametrize("payload", [b"\xff not cbor", cbor.dumps(["offline", 0])])
def test_a_malformed_status_says_nothing_about_liveness(payload: bytes) -> None:
    live = Liveness()
    live.feed(STATUS, status("offline", 0))
    live.feed(STATUS, payload)
    assert live.waiting  # still down: the verifier itself reports the malformed message


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf", "1e9"])
def test_listening_limits_must_be_finite_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--broker", "mqtt://127.0.0.1:1", "--tofu", "--wait", value]) == EXIT_USAGE
    assert "--wait must be a number of seconds" in capsys.readouterr().err
