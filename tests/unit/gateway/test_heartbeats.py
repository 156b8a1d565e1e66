"""The watchdog's inputs as pure rules: a loop is overdue only past its own bound (idle wait plus one pass),
a bounded worker gives up on a call and reports its thread as hung until the call returns, and an API that
would be reachable from the network without TLS is a configuration error unless allowed on purpose."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.clock import monotonic
from gateway.config import ApiConfig
from gateway.heartbeats import Heartbeats
from gateway.stages.ports import CallHung, Worker


def test_a_loop_is_overdue_only_past_its_idle_wait_plus_one_pass() -> None:
    beats = Heartbeats(pass_bound_s=5)
    beats.expect("retention", 3600, now=0)
    beats.expect("ingest", 1, now=0)
    assert beats.overdue(5.9) == {}
    assert set(beats.overdue(6.1)) == {"ingest"}  # 1 s idle + 5 s of work
    assert set(beats.overdue(3604)) == {"ingest"}  # retention waits an hour by design
    assert set(beats.overdue(3606)) == {"ingest", "retention"}


def test_a_beat_resets_the_clock_and_an_unexpected_loop_is_not_tracked() -> None:
    beats = Heartbeats(pass_bound_s=0.05)
    beats.expect("batching", 0.1)
    beats.beat("a stage run alone")  # no error, nothing tracked
    assert beats.loops == ["batching"] and beats.bound("batching") == pytest.approx(0.15)


def test_a_bounded_call_is_given_up_on_and_its_thread_reported_hung_until_it_returns() -> None:
    release = threading.Event()
    worker = Worker("tiyi-chain-test", bound_s=0.1)

    async def main() -> None:
        with pytest.raises(CallHung, match=r"wait on tiyi-chain-test did not return within 0\.1 s"):
            await worker.call(release.wait)
        assert worker.hung_for(monotonic() - 1.0) is None  # within its bound then
        assert (worker.hung_for(monotonic() + 1.0) or 0) > 1.0  # and past it, still inside the call
        release.set()
        assert await worker.call(lambda: 42) == 42  # the thread came back
        assert worker.hung_for(monotonic()) is None

    asyncio.run(main())
    worker.shutdown()


def test_shutting_down_a_hung_worker_does_not_wait_for_its_thread() -> None:
    release = threading.Event()
    worker = Worker("tiyi-chain-test", bound_s=0.05)

    async def main() -> None:
        with pytest.raises(CallHung):
            await worker.call(release.wait)

    asyncio.run(main())
    done = threading.Event()
    threading.Thread(target=lambda: (worker.shutdown(), done.set()), daemon=True).start()
    assert done.wait(5)
    release.set()


def test_an_unbounded_worker_never_reports_hung() -> None:
    assert Worker("tiyi-journal-test").hung_for(1e9) is None


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_may_serve_plain_http(listen: str) -> None:
    assert list(ApiConfig(listen=listen).problems()) == []


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.168.1.20", "fe80::1", "gateway.local", "127.0.0.1.nip.io"])
def test_off_loopback_plain_http_is_refused_unless_allowed(listen: str) -> None:
    (problem,) = ApiConfig(listen=listen).problems()
    assert "allow_plain_http" in str(problem) and "\n" not in str(problem)
    assert list(ApiConfig(listen=listen, allow_plain_http=True).problems()) == []
