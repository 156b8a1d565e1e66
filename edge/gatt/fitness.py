"""Sports sensors: cycling speed and cadence (CSC), running speed and cadence (RSC), cycling power (CPS).

Cumulative counters (revolutions, event times) are recorded raw, converted to seconds: deriving
cadence needs the previous measurement, which a signed record must not depend on. ``CounterTracker``
does that derivation for displays, with wrap-around and without ever dividing by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.gatt.health import Builder
from edge.gatt.layout import Field, Group, Layout
from edge.gatt.registry import Reading, register

CSC = Layout(
    "CSC measurement 0x2A5B",
    1,
    (
        Group(0x01, (Field("wheel_revolutions", "u32"), Field("last_wheel_event_time", "u16"))),
        Group(0x02, (Field("crank_revolutions", "u16"), Field("last_crank_event_time", "u16"))),
    ),
)


@register(0x2A5B)
def decode_csc(data: bytes) -> list[Reading]:
    _, r = CSC.decode(data)
    b = Builder("cycling_speed_cadence")
    b.number("wheel_revolutions", r.get("wheel_revolutions"))
    b.number("last_wheel_event_time", r.get("last_wheel_event_time"), 1 / 1024)
    b.number("crank_revolutions", r.get("crank_revolutions"))
    b.number("last_crank_event_time", r.get("last_crank_event_time"), 1 / 1024)
    return b.reading()


RSC = Layout(
    "RSC measurement 0x2A53",
    1,
    (
        Group(0, (Field("speed", "u16"), Field("cadence", "u8"))),
        Group(0x01, (Field("instantaneous_stride_length", "u16"),)),
        Group(0x02, (Field("total_distance", "u32"),)),
    ),
)


@register(0x2A53)
def decode_rsc(data: bytes) -> list[Reading]:
    flags, r = RSC.decode(data)
    b = Builder("running_speed_cadence")
    b.number("speed", r["speed"], 1 / 256)
    b.number("cadence", r["cadence"])
    b.number("instantaneous_stride_length", r.get("instantaneous_stride_length"), 0.01)
    b.number("total_distance", r.get("total_distance"), 0.1)
    b.val["is_running"] = bool(flags & 0x04)
    return b.reading()


CYCLING_POWER = Layout(
    "cycling power 0x2A63",
    2,
    (
        Group(0, (Field("power", "s16"),)),
        Group(0x0001, (Field("pedal_power_balance", "u8"),)),
        Group(0x0004, (Field("accumulated_torque", "u16"),)),
        Group(0x0010, (Field("wheel_revolutions", "u32"), Field("last_wheel_event_time", "u16"))),
        Group(0x0020, (Field("crank_revolutions", "u16"), Field("last_crank_event_time", "u16"))),
        Group(0x0040, (Field("maximum_force", "s16"), Field("minimum_force", "s16"))),
        Group(0x0080, (Field("maximum_torque", "s16"), Field("minimum_torque", "s16"))),
        Group(0x0100, (Field("extreme_angles", "u24"),)),
        Group(0x0200, (Field("top_dead_spot_angle", "u16"),)),
        Group(0x0400, (Field("bottom_dead_spot_angle", "u16"),)),
        Group(0x0800, (Field("accumulated_energy", "u16"),)),
    ),
)


@register(0x2A63)
def decode_cycling_power(data: bytes) -> list[Reading]:
    _, r = CYCLING_POWER.decode(data)
    b = Builder("cycling_power")
    b.number("power", r["power"])
    b.number("pedal_power_balance", r.get("pedal_power_balance"), 0.5)
    b.number("accumulated_torque", r.get("accumulated_torque"), 1 / 32)
    b.number("wheel_revolutions", r.get("wheel_revolutions"))
    b.number("last_wheel_event_time", r.get("last_wheel_event_time"), 1 / 2048)  # 1/2048 s here, not 1/1024
    b.number("crank_revolutions", r.get("crank_revolutions"))
    b.number("last_crank_event_time", r.get("last_crank_event_time"), 1 / 1024)
    b.number("maximum_force", r.get("maximum_force"))
    b.number("minimum_force", r.get("minimum_force"))
    b.number("maximum_torque", r.get("maximum_torque"), 1 / 32)
    b.number("minimum_torque", r.get("minimum_torque"), 1 / 32)
    angles = r.get("extreme_angles")
    if isinstance(angles, int):  # one uint24 holding two uint12: maximum in the low 12 bits
        b.val["maximum_angle"] = angles & 0xFFF
        b.val["minimum_angle"] = angles >> 12
    b.number("top_dead_spot_angle", r.get("top_dead_spot_angle"))
    b.number("bottom_dead_spot_angle", r.get("bottom_dead_spot_angle"))
    b.number("energy_expended", r.get("accumulated_energy"), 1000.0)  # kJ → J
    return b.reading()


@dataclass
class CounterTracker:
    """Rate from successive cumulative counters (e.g. crank revolutions and 1/1024 s event times).

    Deltas are taken modulo the counter width; no new event means the rate is held, never divided by 0.
    """

    count_bits: int = 16
    time_bits: int = 16
    time_units_per_s: int = 1024
    _last: tuple[int, int] | None = None
    rate_per_min: float | None = None

    def update(self, count: int, event_time: int) -> float | None:
        if self._last is not None:
            dc = (count - self._last[0]) % (1 << self.count_bits)
            dt = (event_time - self._last[1]) % (1 << self.time_bits)
            if dt > 0:
                self.rate_per_min = dc * 60 * self.time_units_per_s / dt
        self._last = (count, event_time)
        return self.rate_per_min
