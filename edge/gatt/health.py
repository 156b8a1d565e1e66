"""Health device characteristics: blood pressure (and the cuff pressure while measuring), pulse oximetry,
weight, body composition, temperature.

Most are sent as indications with IEEE 11073 SFLOAT/FLOAT values. A special value (NaN, NRes, ±INF)
means the device has no valid number: the field is left out of ``val`` and a quality flag
``<field>_<special>`` says why, so nothing invented ever enters a signed record.
"""

from __future__ import annotations

from edge.gatt.layout import SFLOAT_NAN, Field, Group, Layout, Raw, date_time, float32, sfloat
from edge.gatt.registry import Reading, ReadingValue, register

MMHG_PER_KPA = 7.500616827  # 1 kPa in mmHg (760 mmHg = 101.325 kPa)
KG_PER_LB = 0.45359237
M_PER_INCH = 0.0254


class Builder:
    """Collects converted fields and quality flags for one reading."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.val: dict[str, ReadingValue] = {}
        self.q: list[str] = []

    def sfloat(self, name: str, word: Raw | None, scale: float = 1.0) -> None:
        if word is None:
            return
        assert isinstance(word, int)
        value, special = sfloat(word)
        self._put(name, value, special, scale)

    def float32(self, name: str, word: Raw | None, scale: float = 1.0, offset: float = 0.0) -> None:
        if word is None:
            return
        assert isinstance(word, int)
        value, special = float32(word)
        self._put(name, None if value is None else value + offset, special, scale)

    def _put(self, name: str, value: float | None, special: str | None, scale: float) -> None:
        if value is None:
            self.q.append(f"{name}_{special}")
        else:
            self.val[name] = value * scale

    def time(self, raw: Raw | None) -> None:
        if raw is None:
            return
        assert isinstance(raw, bytes)
        fields, flag = date_time(raw)
        self.val.update(fields)
        if flag is not None:
            self.q.append(flag)

    def number(self, name: str, raw: Raw | None, scale: float = 1.0, invalid: int | None = None) -> None:
        if raw is None:
            return
        assert isinstance(raw, int)
        if invalid is not None and raw == invalid:
            self.q.append(f"{name}_unavailable")
        else:
            self.val[name] = raw * scale if scale != 1.0 else raw

    def reading(self) -> list[Reading]:
        return [Reading(self.kind, self.val, tuple(self.q))]


def _sf(name: str) -> Field:
    return Field(name, "sfloat")


TIMESTAMP = Field("timestamp", "datetime")

BLOOD_PRESSURE = Layout(
    "blood pressure 0x2A35",
    1,
    (
        Group(0, (_sf("systolic"), _sf("diastolic"), _sf("mean_arterial_pressure"))),
        Group(0x02, (TIMESTAMP,)),
        Group(0x04, (_sf("pulse_rate"),)),
        Group(0x08, (Field("user_id", "u8"),)),
        Group(0x10, (Field("measurement_status", "u16"),)),
    ),
)


@register(0x2A35)
def decode_blood_pressure(data: bytes) -> list[Reading]:
    flags, r = BLOOD_PRESSURE.decode(data)
    b = Builder("blood_pressure")
    scale = MMHG_PER_KPA if flags & 0x01 else 1.0
    for name in ("systolic", "diastolic", "mean_arterial_pressure"):
        b.sfloat(name, r[name], scale)
    b.time(r.get("timestamp"))
    b.sfloat("pulse_rate", r.get("pulse_rate"))
    b.number("user_id", r.get("user_id"), invalid=0xFF)
    b.number("measurement_status", r.get("measurement_status"))
    return b.reading()


# Intermediate Cuff Pressure: 0x2A35's layout, sent (notified) while the cuff inflates and deflates. The
# current cuff pressure stands where the systolic value would; the other two positions must be NaN.
INTERMEDIATE_CUFF_PRESSURE = Layout(
    "intermediate cuff pressure 0x2A36",
    1,
    (
        Group(0, (_sf("cuff_pressure"), _sf("unused_diastolic"), _sf("unused_mean_arterial_pressure"))),
        Group(0x02, (TIMESTAMP,)),
        Group(0x04, (_sf("pulse_rate"),)),
        Group(0x08, (Field("user_id", "u8"),)),
        Group(0x10, (Field("measurement_status", "u16"),)),
    ),
)
# A cuff that puts anything but NaN in the unused positions does not follow the profile. Its cuff pressure
# is kept (the record's kind already says it is no blood pressure), the unused values never are (they are
# in ``raw``), and this flag says the frame was not as specified.
ICP_UNUSED_NOT_NAN = "unused_fields_not_nan"


@register(0x2A36)
def decode_intermediate_cuff_pressure(data: bytes) -> list[Reading]:
    """Its own kind, ``intermediate_cuff_pressure``: an inflation pressure is never a blood pressure."""
    flags, r = INTERMEDIATE_CUFF_PRESSURE.decode(data)
    b = Builder("intermediate_cuff_pressure")
    b.sfloat("cuff_pressure", r["cuff_pressure"], MMHG_PER_KPA if flags & 0x01 else 1.0)
    if r["unused_diastolic"] != SFLOAT_NAN or r["unused_mean_arterial_pressure"] != SFLOAT_NAN:
        b.q.append(ICP_UNUSED_NOT_NAN)
    b.time(r.get("timestamp"))
    b.sfloat("pulse_rate", r.get("pulse_rate"))
    b.number("user_id", r.get("user_id"), invalid=0xFF)
    b.number("measurement_status", r.get("measurement_status"))
    return b.reading()


PLX_SPOT = Layout(
    "PLX spot-check 0x2A5E",
    1,
    (
        Group(0, (_sf("spo2"), _sf("pulse_rate"))),
        Group(0x01, (TIMESTAMP,)),
        Group(0x02, (Field("measurement_status", "u16"),)),
        Group(0x04, (Field("sensor_status", "u24"),)),
        Group(0x08, (_sf("pulse_amplitude_index"),)),
    ),
)

PLX_CONTINUOUS = Layout(
    "PLX continuous 0x2A5F",
    1,
    (
        Group(0, (_sf("spo2"), _sf("pulse_rate"))),
        Group(0x01, (_sf("spo2_fast"), _sf("pulse_rate_fast"))),
        Group(0x02, (_sf("spo2_slow"), _sf("pulse_rate_slow"))),
        Group(0x04, (Field("measurement_status", "u16"),)),
        Group(0x08, (Field("sensor_status", "u24"),)),
        Group(0x10, (_sf("pulse_amplitude_index"),)),
    ),
)


@register(0x2A5E)
def decode_plx_spot(data: bytes) -> list[Reading]:
    _, r = PLX_SPOT.decode(data)
    b = Builder("spo2_spot_check")
    b.sfloat("spo2", r["spo2"])
    b.sfloat("pulse_rate", r["pulse_rate"])
    b.time(r.get("timestamp"))
    b.number("measurement_status", r.get("measurement_status"))
    b.number("sensor_status", r.get("sensor_status"))
    b.sfloat("pulse_amplitude_index", r.get("pulse_amplitude_index"))
    return b.reading()


@register(0x2A5F)
def decode_plx_continuous(data: bytes) -> list[Reading]:
    _, r = PLX_CONTINUOUS.decode(data)
    b = Builder("spo2")
    for name in (
        "spo2",
        "pulse_rate",
        "spo2_fast",
        "pulse_rate_fast",
        "spo2_slow",
        "pulse_rate_slow",
        "pulse_amplitude_index",
    ):
        b.sfloat(name, r.get(name))
    b.number("measurement_status", r.get("measurement_status"))
    b.number("sensor_status", r.get("sensor_status"))
    return b.reading()


WEIGHT = Layout(
    "weight 0x2A9D",
    1,
    (
        Group(0, (Field("weight", "u16"),)),
        Group(0x02, (TIMESTAMP,)),
        Group(0x04, (Field("user_id", "u8"),)),
        Group(0x08, (Field("bmi", "u16"), Field("height", "u16"))),
    ),
)


@register(0x2A9D)
def decode_weight(data: bytes) -> list[Reading]:
    flags, r = WEIGHT.decode(data)
    imperial = bool(flags & 0x01)
    b = Builder("weight")
    # 0.005 kg or 0.01 lb; 0xFFFF means the measurement was unsuccessful.
    b.number("weight", r["weight"], 0.01 * KG_PER_LB if imperial else 0.005, invalid=0xFFFF)
    b.time(r.get("timestamp"))
    b.number("user_id", r.get("user_id"), invalid=0xFF)
    b.number("bmi", r.get("bmi"), 0.1)
    b.number("height", r.get("height"), 0.1 * M_PER_INCH if imperial else 0.001)
    return b.reading()


BODY_COMPOSITION = Layout(
    "body composition 0x2A9C",
    2,
    (
        Group(0, (Field("body_fat", "u16"),)),
        Group(0x0002, (TIMESTAMP,)),
        Group(0x0004, (Field("user_id", "u8"),)),
        Group(0x0008, (Field("basal_metabolism", "u16"),)),
        Group(0x0010, (Field("muscle_percentage", "u16"),)),
        Group(0x0020, (Field("muscle_mass", "u16"),)),
        Group(0x0040, (Field("fat_free_mass", "u16"),)),
        Group(0x0080, (Field("soft_lean_mass", "u16"),)),
        Group(0x0100, (Field("body_water_mass", "u16"),)),
        Group(0x0200, (Field("impedance", "u16"),)),
        Group(0x0400, (Field("weight", "u16"),)),
        Group(0x0800, (Field("height", "u16"),)),
    ),
)
BODY_COMPOSITION_MULTI_PACKET = 0x1000
# Fields a scale may repeat in every packet of a multi-packet measurement (body fat is mandatory in each).
BODY_COMPOSITION_SHARED = frozenset({"body_fat", "timestamp", "user_id"})


@register(0x2A9C)
def decode_body_composition(data: bytes) -> list[Reading]:
    flags, r, parts = BODY_COMPOSITION.decode_joined(data, BODY_COMPOSITION_MULTI_PACKET, BODY_COMPOSITION_SHARED)
    imperial = bool(flags & 0x0001)
    mass = 0.01 * KG_PER_LB if imperial else 0.005
    b = Builder("body_composition")
    b.number("body_fat", r["body_fat"], 0.1, invalid=0xFFFF)
    b.time(r.get("timestamp"))
    b.number("user_id", r.get("user_id"), invalid=0xFF)
    b.number("basal_metabolism", r.get("basal_metabolism"), 1000.0)  # kJ → J
    b.number("muscle_percentage", r.get("muscle_percentage"), 0.1)
    for name in ("muscle_mass", "fat_free_mass", "soft_lean_mass", "body_water_mass", "weight"):
        b.number(name, r.get(name), mass)
    b.number("impedance", r.get("impedance"), 0.1)
    b.number("height", r.get("height"), 0.1 * M_PER_INCH if imperial else 0.001)
    if flags & BODY_COMPOSITION_MULTI_PACKET and parts == 1:
        # One packet of a measurement the scale split over several indications, seen alone.
        b.q.append("partial_record")
    return b.reading()


TEMPERATURE = Layout(
    "temperature 0x2A1C",
    1,
    (
        Group(0, (Field("temperature", "float"),)),
        Group(0x02, (TIMESTAMP,)),
        Group(0x04, (Field("temperature_type", "u8"),)),
    ),
)


@register(0x2A1C)
def decode_temperature(data: bytes) -> list[Reading]:
    flags, r = TEMPERATURE.decode(data)
    b = Builder("temperature")
    if flags & 0x01:  # Fahrenheit
        b.float32("temperature", r["temperature"], 5 / 9, offset=-32.0)
    else:
        b.float32("temperature", r["temperature"])
    b.time(r.get("timestamp"))
    b.number("temperature_type", r.get("temperature_type"))
    return b.reading()
