"""A simulated chest strap: Heart Rate Measurement (0x2A37) every second, Battery Level now and then."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.frame import Frame
from edge.gatt.heart_rate import RR_UNITS_PER_S, HeartRateMeasurement
from firmware_sim.signals import HeartRateModel

MAX_RR_PER_FRAME = 3  # what fits comfortably with energy in a 20-byte default-MTU notification
ENERGY_EVERY = 10
BATTERY_EVERY = 60


@dataclass
class HeartRateStrap:
    dev_id: str
    seed: int
    battery: int = 100
    model: HeartRateModel = field(init=False)
    emitted: list[HeartRateMeasurement] = field(default_factory=list, repr=False)
    keep_emitted: bool = False
    _count: int = field(default=0, init=False)
    _energy_j: float = field(default=0.0, init=False)
    _last_t: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.model = HeartRateModel(self.seed)

    def measurement_at(self, t: float) -> HeartRateMeasurement:
        hr, rr = self.model.advance(t)
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        # Rough energy: ~ (HR - 40) * 0.1 kJ per minute is in the range of real estimates.
        self._energy_j += max(0.0, hr - 40) * 100 / 60 * dt
        self._count += 1
        rr_raw = tuple(min(0xFFFF, round(x * RR_UNITS_PER_S)) for x in rr[-MAX_RR_PER_FRAME:])
        energy = min(0xFFFF, int(self._energy_j // 1000)) if self._count % ENERGY_EVERY == 0 else None
        m = HeartRateMeasurement(heart_rate=round(hr), sensor_contact=True, energy_expended=energy, rr_intervals=rr_raw)
        if self.keep_emitted:
            self.emitted.append(m)
        return m

    def frame_at(self, t: float) -> Frame:
        """The notification a real strap would send at session time ``t`` (seconds, non-decreasing)."""
        return Frame(self.dev_id, 0x2A37, bytes(self.measurement_at(t)))
