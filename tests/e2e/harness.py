"""End-to-end runs drive the gateway from synchronous tests: the shared subscriber
(``gateway.cli.harness.StreamCollector``) runs here on a thread of its own, so it keeps receiving while a test
blocks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from anchoring.chain import ChainReader
from anchoring.stream_verifier import StreamVerifier, VerificationReport
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import ChainAnchorChecker
from edge.signing import Verifier
from edge.topics import Topics
from gateway.cli.harness import END_WAIT_S, StreamCollector

T = TypeVar("T")
RECONNECT_S = (0.1, 1.0)  # a restarted broker is back in well under a second here: reconnect promptly


class Recorder:
    """Subscribes before the gateway starts and keeps every message, like a platform would."""

    def __init__(self, url: str, topics: Topics, session_expiry_s: int = 0, subscription: str | None = None) -> None:
        self._collector = StreamCollector(
            url,
            topics,
            topics.gw,
            client_id=f"recorder-{time.monotonic_ns()}",
            session_expiry_s=session_expiry_s,
            reconnect_s=RECONNECT_S,
            subscription=subscription,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="recorder", daemon=True)

    @property
    def messages(self) -> list[tuple[str, bytes, bool]]:
        return self._collector.messages

    def __enter__(self) -> Recorder:
        self._thread.start()
        try:
            self._call(self._collector.start(20)).result(30)  # connected and subscribed, or the error
        except BaseException:
            self._end_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._collector.stop()).result(10)
        finally:
            self._end_loop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def wait_idle(self, seconds: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - self._collector.last_message >= seconds:
                return
            time.sleep(0.1)
        raise TimeoutError("the stream never went quiet")

    def wait_end(self, timeout: float = END_WAIT_S) -> bool:
        """Until the gateway's clean-stop ``offline`` arrived and the stream went quiet after it (bounded);
        whether it arrived. A stopped gateway sends it after everything else, so nothing is missing then,
        however slowly this process runs; a quiet spell of fixed length instead ended early on a starved CPU,
        before the last anchor receipt had reached this recorder."""
        return self._call(self._collector.wait_end(timeout)).result(timeout + 30)

    def verify(self, key: Verifier, chain: ChainReader | None) -> VerificationReport:
        """Verify as a platform that pinned ``key`` for the one gateway it receives."""
        return self._collector.report(
            StreamVerifier(TrustPolicy(unbound=[key])),
            lambda v: v.report(None if chain is None else ChainAnchorChecker("chain", chain), require_complete=True),
        )
