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
from edge.gatt.heart_rate import HeartRateMeasurement
from edge.gatt.layout import SFLOAT_NAN, Layout, Raw, encode_date_time, encode_float32, encode_sfloat


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
    also: tuple[int, ...] = ()  # further characteristics the model sends on (a watch: HR and SpO2)
    notified: tuple[int, ...] = ()  # characteristics notified even by a model that indicates (a cuff's 0x2A36)
    # Device clocks (cuffs, scales) are often wrong: set and drifting. Records keep both times.
    clock_offset_s: float = 0.0
    clock_drift_ppm: float = 0.0
    epoch: int = 1_767_225_600  # device time at session time 0 (2026-01-01 UTC), before offset and drift
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = _rng(self.seed)

    def frames_at(self, t: float) -> list[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def indicates(self, char: int) -> bool:
        """Whether ``char`` is sent as an indication (acknowledged) rather than a notification."""
        return self.indicate and char not in self.notified

    def device_time(self, t: float) -> int:
        """What the device's own clock says at session time ``t`` (Unix seconds)."""
        return int(self.epoch + t * (1 + self.clock_drift_ppm / 1e6) + self.clock_offset_s)


# Pressures (mmHg above the systolic value) the cuff notifies while it inflates past systolic and deflates.
CUFF_PROFILE = (-100, -50, 0, 30, 15, 0, -15, -30, -45)


@dataclass
class BloodPressureCuff(SimDevice):
    """One measurement per interval: the cuff pressure notified while inflating and deflating (0x2A36,
    systolic position, the other two NaN), then the result indicated (0x2A35) with a timestamp from the
    cuff's own clock and the pulse rate."""

    char: int = 0x2A35
    interval_s: float = 60.0
    indicate: bool = True
    services: tuple[int, ...] = (0x1810,)
    also: tuple[int, ...] = (0x2A36,)
    notified: tuple[int, ...] = (0x2A36,)
    kpa: bool = False

    def _pressure(self, mmhg: float) -> int:
        if self.kpa:
            return encode_sfloat(round(mmhg / health.MMHG_PER_KPA * 10), -1)
        return encode_sfloat(round(mmhg), 0)

    def frames_at(self, t: float) -> list[Frame]:
        sys_ = self.rng.gauss(122, 9)
        dia = self.rng.gauss(79, 6)
        mean = dia + (sys_ - dia) / 3
        unit = 0x01 if self.kpa else 0
        nan = SFLOAT_NAN
        out = [
            Frame(
                self.dev_id,
                0x2A36,
                health.INTERMEDIATE_CUFF_PRESSURE.encode(
                    unit,
                    {
                        "cuff_pressure": self._pressure(max(0.0, sys_ + step + self.rng.gauss(0, 1))),
                        "unused_diastolic": nan,
                        "unused_mean_arterial_pressure": nan,
                    },
                ),
            )
            for step in CUFF_PROFILE
        ]
        values: dict[str, Raw] = {
            "systolic": self._pressure(sys_),
            "diastolic": self._pressure(dia),
            "mean_arterial_pressure": self._pressure(mean),
            "timestamp": encode_date_time(self.device_time(t)),
            "pulse_rate": encode_sfloat(round(self.rng.gauss(70, 8)), 0),
        }
        out.append(Frame(self.dev_id, self.char, health.BLOOD_PRESSURE.encode(0x02 | 0x04 | unit, values)))
        return out


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
        return [
            Frame(
                self.dev_id, self.char, health.TEMPERATURE.encode(flags, {"temperature": word, "temperature_type": 2})
            )
        ]


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
        values = {
            "speed": round(speed_kmh * 100),
            "average_speed": round(self._distance / max(t, 1) * 360),
            "cadence": round(cadence * 2),
            "average_cadence": round(cadence * 2),
            "total_distance": int(self._distance),
            "resistance_level": round(40 + 60 * effort),
            "power": power,
            "average_power": round(self._sum_power / self._n),
            "total_energy": int(self._energy_kcal),
            "energy_per_hour": 0xFFFF,
            "energy_per_minute": 0xFF,
            "heart_rate": round(100 + 60 * effort),
            "elapsed_time": int(t),
        }
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
        values = {
            "power": max(0, round(self.rng.gauss(230, 20))),
            "crank_revolutions": self._revs,
            "last_crank_event_time": int(self._event * 1024) % 65536,
        }
        return [Frame(self.dev_id, self.char, fitness.CYCLING_POWER.encode(0x0020, values))]


SESSION_S = 2700.0  # a 45-minute class, then the next one starts


def _session_effort(t: float, period_s: float = 600.0) -> float:
    """0..1 workload in a class: a 5-minute warm-up ramp, hard and easy intervals, a 5-minute cool-down."""
    c = t % SESSION_S
    wobble = 0.05 * math.sin(t / 37)
    if c < 300:
        return (c / 300) * 0.6 + wobble
    if c > SESSION_S - 300:
        return 0.6 * (SESSION_S - c) / 300 + 0.15 + wobble
    return 0.55 + (0.35 if (c % period_s) < period_s * 0.4 else 0.0) + wobble


def _heart_rate(effort: float, rng: random.Random) -> int:
    return round(70 + 100 * effort + rng.gauss(0, 2))


@dataclass
class _Machine(SimDevice):
    """What the FTMS machines share: an MTU (records longer than it go in parts) and running totals."""

    services: tuple[int, ...] = (0x1826,)
    mtu_payload: int = 20
    _distance: float = 0.0
    _energy_kcal: float = 0.0
    _last_t: float = 0.0

    def _advance(self, t: float, speed_ms: float, power_w: float) -> float:
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        self._distance += speed_ms * dt
        self._energy_kcal += power_w * dt / 4184 * 4  # ~25 % mechanical efficiency
        return dt

    def _split(self, layout: Layout, flags: int, values: dict[str, Raw]) -> list[Frame]:
        return [Frame(self.dev_id, self.char, p) for p in ftms.split_record(layout, flags, values, self.mtu_payload)]


@dataclass
class Treadmill(_Machine):
    """FTMS treadmill (0x2ACD): speed following the session, incline changes, distance, energy, HR."""

    char: int = 0x2ACD

    def frames_at(self, t: float) -> list[Frame]:
        effort = _session_effort(t)
        speed_kmh = max(0.0, 5 + 9 * effort + self.rng.gauss(0, 0.1))
        incline = 1.0 if (t % 900) < 600 else 4.0
        weight_kg = 70
        power = weight_kg * 9.81 * speed_kmh / 3.6 * (0.1 + incline / 100)  # rough metabolic equivalent
        self._advance(t, speed_kmh / 3.6, power)
        values: dict[str, Raw] = {
            "speed": round(speed_kmh * 100),
            "average_speed": round(self._distance / max(t, 1) * 360),
            "total_distance": int(self._distance),
            "inclination": round(incline * 10),
            "ramp_angle": round(math.degrees(math.atan(incline / 100)) * 10),
            "total_energy": int(self._energy_kcal),
            "energy_per_hour": round(power * 3600 / 4184 * 4),
            "energy_per_minute": min(254, round(power * 60 / 4184 * 4)),
            "heart_rate": _heart_rate(effort, self.rng),
            "elapsed_time": int(t),
        }
        flags = 0x0002 | 0x0004 | 0x0008 | 0x0080 | 0x0100 | 0x0400
        return self._split(ftms.TREADMILL, flags, values)


@dataclass
class Rower(_Machine):
    """FTMS rower (0x2AD1): stroke rate (FTMS 1.0: per minute; the current definition halves the unit),
    strokes, distance, pace per 500 m, power."""

    char: int = 0x2AD1
    _strokes: float = 0.0

    def frames_at(self, t: float) -> list[Frame]:
        effort = _session_effort(t)
        rate = 18 + 14 * effort + self.rng.gauss(0, 0.5)  # strokes/min
        power = max(20.0, 60 + 220 * effort + self.rng.gauss(0, 6))
        speed = (power / 2.8) ** (1 / 3)  # Concept2's pace-power relation
        dt = self._advance(t, speed, power)
        self._strokes += rate * dt / 60
        values: dict[str, Raw] = {
            "stroke_rate": round(rate),
            "stroke_count": int(self._strokes) % 65536,
            "average_stroke_rate": round(rate),
            "total_distance": int(self._distance),
            "pace": round(500 / speed),
            "power": round(power),
            "total_energy": int(self._energy_kcal),
            "energy_per_hour": 0xFFFF,
            "energy_per_minute": 0xFF,
            "heart_rate": _heart_rate(effort, self.rng),
            "elapsed_time": int(t),
        }
        flags = 0x0002 | 0x0004 | 0x0008 | 0x0020 | 0x0100 | 0x0200 | 0x0800
        return self._split(ftms.ROWER, flags, values)


@dataclass
class CrossTrainer(_Machine):
    """FTMS cross trainer (0x2ACE, 24-bit flags): speed, steps, strides, power; now and then backwards."""

    char: int = 0x2ACE
    _strides: float = 0.0

    def frames_at(self, t: float) -> list[Frame]:
        effort = _session_effort(t)
        steps = 100 + 60 * effort + self.rng.gauss(0, 2)  # steps/min
        power = max(10.0, 50 + 200 * effort + self.rng.gauss(0, 5))
        speed_kmh = steps * 0.055
        dt = self._advance(t, speed_kmh / 3.6, power)
        self._strides += steps / 2 * dt / 60
        values: dict[str, Raw] = {
            "speed": round(speed_kmh * 100),
            "total_distance": int(self._distance),
            "step_rate": round(steps),
            "average_step_rate": round(steps),
            "stride_count": round(self._strides * 10) % 65536,
            "power": round(power),
            "total_energy": int(self._energy_kcal),
            "energy_per_hour": 0xFFFF,
            "energy_per_minute": 0xFF,
            "heart_rate": _heart_rate(effort, self.rng),
            "elapsed_time": int(t),
        }
        flags = 0x000004 | 0x000008 | 0x000010 | 0x000100 | 0x000400 | 0x000800 | 0x002000
        if 0 < t % 1200 < 30:
            flags |= ftms.CROSS_TRAINER_BACKWARD
        return self._split(ftms.CROSS_TRAINER, flags, values)


@dataclass
class RunningPod(SimDevice):
    """RSC foot pod (0x2A53): speed 1/256 m/s, cadence, stride length (cm), total distance (dm)."""

    char: int = 0x2A53
    services: tuple[int, ...] = (0x1814,)
    _distance: float = 0.0
    _last_t: float = 0.0

    def frames_at(self, t: float) -> list[Frame]:
        effort = _session_effort(t)
        speed = max(0.0, 1.4 + 2.6 * effort + self.rng.gauss(0, 0.05))  # walking to running, m/s
        cadence = round(110 + 70 * effort)
        self._distance += speed * max(0.0, t - self._last_t)
        self._last_t = t
        stride = speed * 60 / cadence * 2  # a stride is two steps
        running = speed > 2.2
        values: dict[str, Raw] = {
            "speed": round(speed * 256),
            "cadence": cadence,
            "instantaneous_stride_length": round(stride * 100),
            "total_distance": round(self._distance * 10),
        }
        flags = 0x01 | 0x02 | (0x04 if running else 0)
        return [Frame(self.dev_id, self.char, fitness.RSC.encode(flags, values))]


@dataclass
class SpeedCadenceSensor(SimDevice):
    """CSC sensor (0x2A5B): wheel (u32) and crank (u16) revolutions with 1/1024 s event times that wrap."""

    char: int = 0x2A5B
    services: tuple[int, ...] = (0x1816,)
    wheel_m: float = 2.105  # 700x25c
    _wheel: float = 0.0
    _crank: float = 0.0
    _wheel_event: float = 0.0
    _crank_event: float = 0.0
    _last_t: float = 0.0

    def frames_at(self, t: float) -> list[Frame]:
        effort = _session_effort(t)
        dt = max(0.0, t - self._last_t)
        self._last_t = t
        speed = 6 + 5 * effort + self.rng.gauss(0, 0.1)
        cadence = 70 + 25 * effort + self.rng.gauss(0, 1)
        wheel_new, crank_new = (
            int(self._wheel + speed * dt / self.wheel_m) - int(self._wheel),
            int(self._crank + cadence * dt / 60) - int(self._crank),
        )
        self._wheel += speed * dt / self.wheel_m
        self._crank += cadence * dt / 60
        if wheel_new:
            self._wheel_event = t - (self._wheel % 1) * self.wheel_m / speed
        if crank_new:
            self._crank_event = t - (self._crank % 1) * 60 / cadence
        values: dict[str, Raw] = {
            "wheel_revolutions": int(self._wheel) % (1 << 32),
            "last_wheel_event_time": int(self._wheel_event * 1024) % 65536,
            "crank_revolutions": int(self._crank) % 65536,
            "last_crank_event_time": int(self._crank_event * 1024) % 65536,
        }
        return [Frame(self.dev_id, self.char, fitness.CSC.encode(0x03, values))]


@dataclass
class Watch(SimDevice):
    """A sports watch: heart rate every second (0x2A37) and a continuous SpO2 value every 5 s (0x2A5F)."""

    char: int = 0x2A37
    services: tuple[int, ...] = (0x180D, 0x1822)
    also: tuple[int, ...] = (0x2A5F,)

    def frames_at(self, t: float) -> list[Frame]:
        hr = _heart_rate(_session_effort(t), self.rng)
        out = [Frame(self.dev_id, 0x2A37, bytes(HeartRateMeasurement(heart_rate=hr, sensor_contact=True)))]
        if int(t) % 5 == 0:
            spo2 = min(100, round(self.rng.gauss(97, 1)))
            values = {"spo2": encode_sfloat(spo2, 0), "pulse_rate": encode_sfloat(hr, 0)}
            out.append(Frame(self.dev_id, 0x2A5F, health.PLX_CONTINUOUS.encode(0, values)))
        return out


@dataclass
class BodyCompositionScale(SimDevice):
    """Body composition (0x2A9C) split over two indications with the multiple-packet bit, as scales do
    when the whole measurement does not fit one 20-byte value; weight also sent on 0x2A9D."""

    char: int = 0x2A9C
    interval_s: float = 180.0
    indicate: bool = True
    services: tuple[int, ...] = (0x181B, 0x181D)
    also: tuple[int, ...] = (0x2A9D,)

    def frames_at(self, t: float) -> list[Frame]:
        kg = 50 + 45 * self.rng.random()
        fat = 12 + 22 * self.rng.random()
        height = 1.55 + 0.35 * self.rng.random()
        muscle = kg * (1 - fat / 100) * 0.9
        common: dict[str, Raw] = {"body_fat": round(fat * 10), "timestamp": encode_date_time(self.device_time(t))}
        first = {
            **common,
            "user_id": 1,
            "basal_metabolism": round((370 + 21.6 * kg * (1 - fat / 100)) * 4.184),
            "muscle_percentage": round(muscle / kg * 1000),
            "muscle_mass": round(muscle / 0.005),
        }
        second = {
            "body_fat": common["body_fat"],
            "fat_free_mass": round(kg * (1 - fat / 100) / 0.005),
            "body_water_mass": round(kg * 0.55 / 0.005),
            "impedance": round(self.rng.uniform(400, 600) * 10),
            "weight": round(kg / 0.005),
            "height": round(height / 0.001),
        }
        multi = health.BODY_COMPOSITION_MULTI_PACKET
        p1 = health.BODY_COMPOSITION.encode(multi | 0x0002 | 0x0004 | 0x0008 | 0x0010 | 0x0020, first)
        p2 = health.BODY_COMPOSITION.encode(multi | 0x0040 | 0x0100 | 0x0200 | 0x0400 | 0x0800, second)
        weight = health.WEIGHT.encode(
            0x02 | 0x08,
            {
                "weight": round(kg / 0.005),
                "bmi": round(kg / height**2 * 10),
                "height": round(height / 0.001),
                "timestamp": common["timestamp"],
            },
        )
        return [Frame(self.dev_id, 0x2A9C, p1), Frame(self.dev_id, 0x2A9C, p2), Frame(self.dev_id, 0x2A9D, weight)]


MODELS: dict[str, type[SimDevice]] = {
    "bp_cuff": BloodPressureCuff,
    "thermometer": Thermometer,
    "scale": Scale,
    "oximeter": Oximeter,
    "indoor_bike": IndoorBike,
    "power_meter": PowerMeter,
    "treadmill": Treadmill,
    "rower": Rower,
    "cross_trainer": CrossTrainer,
    "running_pod": RunningPod,
    "csc_sensor": SpeedCadenceSensor,
    "watch": Watch,
    "body_composition_scale": BodyCompositionScale,
}
