"""One benchmark's outcome; its own module so ``bench.system`` and ``python -m bench`` share one class (under
``python -m bench`` the entry module is ``__main__``, and importing ``bench.__main__`` made a second copy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    ratio: float
    goal: str
    met: bool | None
