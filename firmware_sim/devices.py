"""Simulated gym and clinic devices beyond the heart-rate strap, encoded with the decoders' own layouts.

Each model produces the real characteristic bytes through ``edge.gatt`` layouts (``Layout.encode``), so
encoders and decoders share one byte-level definition and cannot drift apart silently. Signals are
seeded and pure: time is an argument; randomness is the model's own ``random.Random``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from edge.frame import Frame
from edge.gatt import fitness, ftms, health
from edge.gatt.layout import Raw, encode_date_time, encode_float32, encode_sfloat


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible simulation, not cryptography


@dataclass
class SimDevice:
    """A device model: which characteristic it sends, how (notify or indicate), and how often."""

    dev_id: str
    seed: int
    char: int = 0
    interval_s: float = 1.0
    indicate: bool = False
    services: tuple[int, ...] = ()
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = _rng(self.seed)

    def frames_at(self, t: float) -> list[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class BloodPressureCuff(SimDevice):
    """Indications with SFLOAT mmHg (or kPa), a timestamp from the cuff's own clock, and pulse rate."""

    char: int = 0x2A35
    interval_s: float = 60.0
    indicate: bool = True
    services: tuple[int, ...] = (0x1810,)
    kpa: bool = False
    clock_offset_s: int = 0  # cuffs' clocks are often wrong: the record keeps both times

    def frames_at(self, t: float) -> list[Frame]:
        sys_ = self.rng.gauss(122, 9)
        dia = self.rng.gauss(79, 6)
        mean = dia + (sys_ - dia) / 3
        if self.kpa:
            words = [encode_sfloat(round(v / health.MMHG_PER_KPA * 10), -1) for v in (sys_, dia, mean)]
        else:
            words = [encode_sfloat(round(v), 0) for v in (sys_, dia, mean)]
        flags = 0x02 | 0x04 | (0x01 if self.kpa else 0)
        values: dict[str, Raw] = {"systolic": words[0], "diastolic": words[1], "mean_arterial_pressure": words[2],
                  "timestamp": encode_date_time(1_767_225_600 + int(t) + self.clock_offset_s),
                  "pulse_rate": encode_sfloat(round(self.rng.gauss(70, 8)), 0)}
        return [Frame(self.dev_id, self.char, health.BLOOD_PRESSURE.encode(flags, values))]


@dataclass
class Thermometer(SimDevice):
    char: int = 0x2A1C
    interval_s: float = 30.0
    indicate: bool = True
    services: tuple[int, ...] = (0x1809,)
    fahrenheit: bool = False

    def frames_at(self, t: float) -> list[Frame]:
        c = 36.6 + 0.3 * math.sin(t / 3600) + self.rng.gauss(0, 0.1)
        value = c * 9 / 5 + 32 if self.fahrenheit else c
        word = encode_float32(round(value * 10), -1)
        flags = 0x04 | (0x01 if self.fahrenheit else 0)
        return [Frame(self.dev_id, self.char, health.TEMPERATURE.encode(flags, {"temperature": word,
                                                                               "temperature_type": 2}))]


@dataclass
class Scale(SimDevice):
    char: int = 0x2A9D
    interval_s: float = 120.0
    indicate: bool = True
    services: tuple[int, ...] = (0x181D,)
    imperial: bool = False

    def frames_at(self, t: float) -> list[Frame]:
        kg = 55 + 40 * self.rng.random()
        height = 1.55 + 0.35 * self.rng.random()
        raw = round(kg / health.KG_PER_LB / 0.01) if self.imperial else round(kg / 0.005)
        h = round(height / health.M_PER_INCH / 0.1) if self.imperial else round(height / 0.001)
        flags = 0x08 | (0x01 if self.imperial else 0)
        values = {"weight": raw, "bmi": round(kg / height**2 * 10), "height": h}
        return [Frame(self.dev_id, self.char, health.WEIGHT.encode(flags, values))]


@dataclass
class Oximeter(SimDevice):
    char: int = 0x2A5F
    services: tuple[int, ...] = (0x1822,)

    def frames_at(self, t: float) -> list[Frame]:
        spo2 = min(100, round(self.rng.gauss(97.5, 0.8)))
        values = {"spo2": encode_sfloat(spo2, 0), "pulse_rate": encode_sfloat(round(self.rng.gauss(72, 5)), 0)}
        return [Frame(self.dev_id, self.char, health.PLX_CONTINUOUS.encode(0, values))]


@dataclass
class IndoorBike(SimDevice):
    """FTMS indoor bike; a full record is split over notifications when it exceeds the MTU payload."""

    char: int = 0x2AD2
    services: tuple[int, ...] = (0x1826,)
    mtu_payload: int = 20
    _distance: float = 0.0
    _energy_kcal: float = 0.0
    _n: int = 0
    _sum_power: int = 0

    def frames_at(self, t: float) -> list[Frame]:
        effort = 0.6 + 0.4 * math.sin(t / 120)
        cadence = 60 + 35 * effort + self.rng.gauss(0, 2)
        power = max(0, round(80 + 220 * effort + self.rng.gauss(0, 8)))
        speed_kmh = 18 + 20 * effort
        self._distance += speed_kmh / 3.6 * self.interval_s
        self._energy_kcal += power * self.interval_s / 4184 * 4  # ~25 % efficiency
        self._n += 1
        self._sum_power += power
        values = {"speed": round(speed_kmh * 100), "average_speed": round(self._distance / max(t, 1) * 360),
                  "cadence": round(cadence * 2), "average_cadence": round(cadence * 2),
                  "total_distance": int(self._distance), "resistance_level": round(40 + 60 * effort),
                  "power": power, "average_power": round(self._sum_power / self._n),
                  "total_energy": int(self._energy_kcal), "energy_per_hour": 0xFFFF, "energy_per_minute": 0xFF,
                  "heart_rate": round(100 + 60 * effort), "elapsed_time": int(t)}
        # A full record is 29 bytes: more than a default-MTU notification (20), so it travels in parts.
        flags = 0x0002 | 0x0004 | 0x0008 | 0x0010 | 0x0020 | 0x0040 | 0x0080 | 0x0100 | 0x0200 | 0x0800
        parts = ftms.split_record(ftms.INDOOR_BIKE, flags, values, self.mtu_payload)
        return [Frame(self.dev_id, self.char, p) for p in parts]


@dataclass
class PowerMeter(SimDevice):
    """Cycling power with crank counters that wrap (u16 revolutions, 1/1024 s event time)."""

    char: int = 0x2A63
    services: tuple[int, ...] = (0x1818,)
    _revs: int = 0
    _event: float = 0.0

    def frames_at(self, t: float) -> list[Frame]:
        cadence = 85 + self.rng.gauss(0, 3)
        new = int(cadence * self.interval_s / 60 + self.rng.random())
        if new:
            self._revs = (self._revs + new) % 65536
            self._event = (self._event + new * 60 / cadence) % 64
        values = {"power": max(0, round(self.rng.gauss(230, 20))), "crank_revolutions": self._revs,
                  "last_crank_event_time": int(self._event * 1024) % 65536}
        return [Frame(self.dev_id, self.char, fitness.CYCLING_POWER.encode(0x0020, values))]


MODELS: dict[str, type[SimDevice]] = {
    "bp_cuff": BloodPressureCuff, "thermometer": Thermometer, "scale": Scale, "oximeter": Oximeter,
    "indoor_bike": IndoorBike, "power_meter": PowerMeter,
}
