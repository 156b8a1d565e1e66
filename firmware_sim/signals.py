"""Seeded heart-rate signal: a session of phases, HR lagging workload, RR intervals with variability.

Pure: session time is an argument, and randomness comes from the model's own ``random.Random``, so the
same seed gives the same session byte for byte.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

HR_MIN, HR_MAX = 40.0, 200.0


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    target_hr: float


def default_session(rest_hr: float, max_hr: float) -> list[Phase]:
    """Rest, warm-up, four work/easy intervals, recovery: about 25 minutes, then it repeats."""
    work, easy = rest_hr + 0.85 * (max_hr - rest_hr), rest_hr + 0.55 * (max_hr - rest_hr)
    phases = [Phase("rest", 120, rest_hr), Phase("warm_up", 240, rest_hr + 0.45 * (max_hr - rest_hr))]
    for _ in range(4):
        phases += [Phase("interval", 120, work), Phase("easy", 90, easy)]
    phases.append(Phase("recovery", 300, rest_hr + 0.1 * (max_hr - rest_hr)))
    return phases


class HeartRateModel:
    """First-order lag towards the phase target (tau ~ 25 s up, 40 s down), plus noise."""

    def __init__(self, seed: int, rest_hr: float | None = None, max_hr: float | None = None) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible simulation, not cryptography
        self.rest_hr = rest_hr if rest_hr is not None else self.rng.uniform(55, 72)
        self.max_hr = max_hr if max_hr is not None else self.rng.uniform(170, 192)
        self.phases = default_session(self.rest_hr, self.max_hr)
        self.cycle = sum(p.seconds for p in self.phases)
        self._t = 0.0
        self._hr = self.rest_hr
        self._beat_clock = 0.0  # time of the last heartbeat
        self.resp_period = self.rng.uniform(3.5, 5.0)

    def phase_at(self, t: float) -> Phase:
        t %= self.cycle
        for p in self.phases:
            if t < p.seconds:
                return p
            t -= p.seconds
        return self.phases[-1]

    def advance(self, t: float) -> tuple[float, list[float]]:
        """Move to session time ``t`` (non-decreasing); return the HR and the RR intervals (s) of the
        beats that occurred since the previous call."""
        if t < self._t:
            raise ValueError("session time must not go backwards")
        dt = t - self._t
        target = self.phase_at(t).target_hr
        tau = 25.0 if target > self._hr else 40.0
        self._hr += (target - self._hr) * (1 - math.exp(-dt / tau)) if dt > 0 else 0.0
        self._hr = min(HR_MAX, max(HR_MIN, self._hr + self.rng.gauss(0, 0.6) * math.sqrt(min(dt, 5.0))))
        self._t = t
        rr: list[float] = []
        while True:
            # Respiratory sinus arrhythmia shrinks with effort; plus beat-to-beat noise.
            base = 60.0 / self._hr
            rsa = 0.04 * base * (self.max_hr - self._hr) / (self.max_hr - self.rest_hr + 1e-9)
            interval = base + rsa * math.sin(2 * math.pi * self._beat_clock / self.resp_period)
            interval += self.rng.gauss(0, 0.01 * base)
            interval = min(60.0 / HR_MIN, max(60.0 / HR_MAX, interval))
            if self._beat_clock + interval > t:
                break
            self._beat_clock += interval
            rr.append(interval)
        return self._hr, rr
