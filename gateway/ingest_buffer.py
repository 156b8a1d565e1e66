"""The bounded hand-over between frame sources and the ingest loop.

``asyncio.Queue`` pays for a waiter check and a wake-up on every item. Ingest takes frames in groups (one
journal commit per group), so this buffer wakes the loop once per group: ``put`` appends, ``take`` waits
for the first frame, lingers for more, and returns them all at once. Full means back-pressure: ``put``
waits, the radio side keeps its own queue, and nothing is dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class IngestBuffer(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._nonempty = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._enough = asyncio.Event()
        self._want = 0  # while take() lingers: wake it as soon as this many frames wait

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        items = self._items
        while len(items) >= self.maxsize:
            self._space.clear()
            await self._space.wait()
        items.append(item)
        if len(items) == 1:
            self._nonempty.set()
        if self._want and len(items) >= self._want:
            self._enough.set()

    async def take(self, limit: int, linger: float, timeout: float | None = None) -> list[T]:
        """Up to ``limit`` frames in arrival order: waits up to ``timeout`` for the first (then returns [] if
        none came), and up to ``linger`` seconds more while fewer than ``limit`` are waiting."""
        items = self._items
        if not items:
            if timeout is None:
                await self._nonempty.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nonempty.wait(), timeout)
                if not items:
                    return []
        if len(items) < limit and linger > 0:
            self._want = limit
            self._enough.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), linger)
            self._want = 0
        n = min(limit, len(items))
        out = [items.popleft() for _ in range(n)]
        if not items:
            self._nonempty.clear()
        self._space.set()
        return out
