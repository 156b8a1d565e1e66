"""The ingest hand-over: arrival order, groups bounded by size and linger, back-pressure without loss."""

from __future__ import annotations

import asyncio

import pytest

from gateway.ingest_buffer import IngestBuffer


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_frames_come_out_in_arrival_order_in_groups_of_at_most_limit() -> None:
    async def main() -> list[list[int]]:
        buf: IngestBuffer[int] = IngestBuffer(100)
        for i in range(25):
            await buf.put(i)
        return [await buf.take(10, 0.0) for _ in range(3)]

    assert run(main()) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


def test_take_lingers_for_more_but_returns_as_soon_as_a_group_is_full() -> None:
    async def main() -> tuple[list[int], float]:
        buf: IngestBuffer[int] = IngestBuffer(100)
        loop = asyncio.get_running_loop()

        async def feed() -> None:
            for i in range(5):
                await asyncio.sleep(0.01)
                await buf.put(i)

        task = asyncio.create_task(feed())
        t = loop.time()
        got = await buf.take(3, linger=5.0)  # would wait 5 s if it did not wake at 3 frames
        took = loop.time() - t
        await task
        return got, took

    got, took = run(main())
    assert got == [0, 1, 2] and took < 1.0


def test_take_with_a_timeout_returns_nothing_when_nothing_comes() -> None:
    async def main() -> list[int]:
        buf: IngestBuffer[int] = IngestBuffer(10)
        return await buf.take(5, 0.01, timeout=0.05)

    assert run(main()) == []


def test_a_full_buffer_holds_the_producer_back_and_loses_nothing() -> None:
    async def main() -> list[int]:
        buf: IngestBuffer[int] = IngestBuffer(4)
        out: list[int] = []

        async def produce() -> None:
            for i in range(50):
                await buf.put(i)
                assert len(buf) <= 4

        task = asyncio.create_task(produce())
        while len(out) < 50:
            out += await buf.take(3, 0.0)
            await asyncio.sleep(0)
        await task
        return out

    assert run(main()) == list(range(50))


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IngestBuffer(0)
