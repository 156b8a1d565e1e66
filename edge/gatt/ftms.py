"""Fitness Machine Service data: treadmill, indoor bike, rower, cross trainer.

Bit 0 of the flags is "More Data" and **inverted**: clear means the first field is present. A record
longer than the MTU is split over notifications; every part but the last has More Data set. The
gateway joins the parts (``edge.gatt.assembly``) and the decoders here read a joined value part by
part, so one record comes out. FTMS 1.0 (what machines in gyms send) and the
current SIG definitions disagree on a few resolutions; ``Variant`` selects them per device model.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from edge.errors import MalformedFrame
from edge.gatt.health import Builder
from edge.gatt.layout import Field, Group, Layout, Raw
from edge.gatt.registry import Reading, register, register_with_options

KMH = 1 / 3.6  # km/h → m/s
KCAL = 4184.0  # J


class Variant(Enum):
    FTMS_1_0 = "ftms_1_0"
    CURRENT = "current"


def _f(name: str, fmt: str) -> Field:
    return Field(name, fmt)  # type: ignore[arg-type]


ENERGY = (_f("total_energy", "u16"), _f("energy_per_hour", "u16"), _f("energy_per_minute", "u8"))


def treadmill_layout(variant: Variant = Variant.FTMS_1_0) -> Layout:
    pace = "u8" if variant is Variant.FTMS_1_0 else "u16"
    return Layout(
        "treadmill data 0x2ACD",
        2,
        (
            Group(0x0001, (_f("speed", "u16"),), inverted=True),
            Group(0x0002, (_f("average_speed", "u16"),)),
            Group(0x0004, (_f("total_distance", "u24"),)),
            Group(0x0008, (_f("inclination", "s16"), _f("ramp_angle", "s16"))),
            Group(0x0010, (_f("elevation_gain_positive", "u16"), _f("elevation_gain_negative", "u16"))),
            Group(0x0020, (_f("pace", pace),)),
            Group(0x0040, (_f("average_pace", pace),)),
            Group(0x0080, ENERGY),
            Group(0x0100, (_f("heart_rate", "u8"),)),
            Group(0x0200, (_f("metabolic_equivalent", "u8"),)),
            Group(0x0400, (_f("elapsed_time", "u16"),)),
            Group(0x0800, (_f("remaining_time", "u16"),)),
            Group(0x1000, (_f("force_on_belt", "s16"), _f("power", "s16"))),
        ),
    )


INDOOR_BIKE = Layout(
    "indoor bike data 0x2AD2",
    2,
    (
        Group(0x0001, (_f("speed", "u16"),), inverted=True),
        Group(0x0002, (_f("average_speed", "u16"),)),
        Group(0x0004, (_f("cadence", "u16"),)),
        Group(0x0008, (_f("average_cadence", "u16"),)),
        Group(0x0010, (_f("total_distance", "u24"),)),
        Group(0x0020, (_f("resistance_level", "s16"),)),
        Group(0x0040, (_f("power", "s16"),)),
        Group(0x0080, (_f("average_power", "s16"),)),
        Group(0x0100, ENERGY),
        Group(0x0200, (_f("heart_rate", "u8"),)),
        Group(0x0400, (_f("metabolic_equivalent", "u8"),)),
        Group(0x0800, (_f("elapsed_time", "u16"),)),
        Group(0x1000, (_f("remaining_time", "u16"),)),
    ),
)

ROWER = Layout(
    "rower data 0x2AD1",
    2,
    (
        Group(0x0001, (_f("stroke_rate", "u8"), _f("stroke_count", "u16")), inverted=True),
        Group(0x0002, (_f("average_stroke_rate", "u8"),)),
        Group(0x0004, (_f("total_distance", "u24"),)),
        Group(0x0008, (_f("pace", "u16"),)),
        Group(0x0010, (_f("average_pace", "u16"),)),
        Group(0x0020, (_f("power", "s16"),)),
        Group(0x0040, (_f("average_power", "s16"),)),
        Group(0x0080, (_f("resistance_level", "s16"),)),
        Group(0x0100, ENERGY),
        Group(0x0200, (_f("heart_rate", "u8"),)),
        Group(0x0400, (_f("metabolic_equivalent", "u8"),)),
        Group(0x0800, (_f("elapsed_time", "u16"),)),
        Group(0x1000, (_f("remaining_time", "u16"),)),
    ),
)

CROSS_TRAINER = Layout(
    "cross trainer data 0x2ACE",
    3,
    (
        Group(0x000001, (_f("speed", "u16"),), inverted=True),
        Group(0x000002, (_f("average_speed", "u16"),)),
        Group(0x000004, (_f("total_distance", "u24"),)),
        Group(0x000008, (_f("step_rate", "u16"), _f("average_step_rate", "u16"))),
        Group(0x000010, (_f("stride_count", "u16"),)),
        Group(0x000020, (_f("elevation_gain_positive", "u16"), _f("elevation_gain_negative", "u16"))),
        Group(0x000040, (_f("inclination", "s16"), _f("ramp_angle", "s16"))),
        Group(0x000080, (_f("resistance_level", "s16"),)),
        Group(0x000100, (_f("power", "s16"),)),
        Group(0x000200, (_f("average_power", "s16"),)),
        Group(0x000400, ENERGY),
        Group(0x000800, (_f("heart_rate", "u8"),)),
        Group(0x001000, (_f("metabolic_equivalent", "u8"),)),
        Group(0x002000, (_f("elapsed_time", "u16"),)),
        Group(0x004000, (_f("remaining_time", "u16"),)),
    ),
)
CROSS_TRAINER_BACKWARD = 0x008000


def _common(b: Builder, r: dict[str, Raw]) -> None:
    """Fields shared by all four machines, with their FTMS units converted."""
    b.number("speed", r.get("speed"), 0.01 * KMH)
    b.number("average_speed", r.get("average_speed"), 0.01 * KMH)
    b.number("total_distance", r.get("total_distance"), invalid=0xFFFFFF)
    b.number("inclination", r.get("inclination"), 0.1, invalid=0x7FFF)
    b.number("ramp_angle", r.get("ramp_angle"), 0.1, invalid=0x7FFF)
    b.number("elevation_gain_positive", r.get("elevation_gain_positive"), 0.1)
    b.number("elevation_gain_negative", r.get("elevation_gain_negative"), 0.1)
    b.number("resistance_level", r.get("resistance_level"), 0.1)
    b.number("power", r.get("power"))
    b.number("average_power", r.get("average_power"))
    b.number("energy_expended", r.get("total_energy"), KCAL, invalid=0xFFFF)
    b.number("energy_per_hour", r.get("energy_per_hour"), KCAL, invalid=0xFFFF)
    b.number("energy_per_minute", r.get("energy_per_minute"), KCAL, invalid=0xFF)
    b.number("heart_rate", r.get("heart_rate"))
    b.number("metabolic_equivalent", r.get("metabolic_equivalent"), 0.1)
    b.number("elapsed_time", r.get("elapsed_time"))
    b.number("remaining_time", r.get("remaining_time"))


def readings_treadmill(r: dict[str, Raw], variant: Variant = Variant.FTMS_1_0) -> list[Reading]:
    b = Builder("treadmill")
    _common(b, r)
    if variant is Variant.FTMS_1_0:  # km/min with 0.1 resolution → seconds per km
        for name in ("pace", "average_pace"):
            v = r.get(name)
            if isinstance(v, int):
                if v:
                    b.val[name] = 60 / (v * 0.1)
                else:
                    b.q.append(f"{name}_unavailable")
    else:  # seconds per km
        b.number("pace", r.get("pace"))
        b.number("average_pace", r.get("average_pace"))
    b.number("force_on_belt", r.get("force_on_belt"))
    return b.reading()


def readings_indoor_bike(r: dict[str, Raw]) -> list[Reading]:
    b = Builder("indoor_bike")
    _common(b, r)
    b.number("cadence", r.get("cadence"), 0.5)
    b.number("average_cadence", r.get("average_cadence"), 0.5)
    return b.reading()


def readings_rower(r: dict[str, Raw], variant: Variant = Variant.FTMS_1_0) -> list[Reading]:
    b = Builder("rower")
    _common(b, r)
    # FTMS 1.0 sends stroke rate in strokes/min; the current definition in half strokes/min.
    rate = 1.0 if variant is Variant.FTMS_1_0 else 0.5
    b.number("stroke_rate", r.get("stroke_rate"), rate)
    b.number("average_stroke_rate", r.get("average_stroke_rate"), rate)
    b.number("stroke_count", r.get("stroke_count"))
    b.number("pace", r.get("pace"))  # seconds per 500 m
    b.number("average_pace", r.get("average_pace"))
    return b.reading()


def readings_cross_trainer(r: dict[str, Raw], flags: int) -> list[Reading]:
    b = Builder("cross_trainer")
    _common(b, r)
    b.number("step_rate", r.get("step_rate"))
    b.number("average_step_rate", r.get("average_step_rate"))
    b.number("stride_count", r.get("stride_count"), 0.1)
    b.val["moving_backward"] = bool(flags & CROSS_TRAINER_BACKWARD)
    return b.reading()


TREADMILL = treadmill_layout()
_MORE_DATA = 0x0001


def _joined(layout: Layout, data: bytes) -> tuple[int, dict[str, Raw]]:
    flags, r, _ = layout.decode_joined(data, _MORE_DATA)
    return flags, r


@register(0x2ACD)
def decode_treadmill(data: bytes) -> list[Reading]:
    flags, r = _joined(TREADMILL, data)
    return _mark_partial(readings_treadmill(r), flags)


def _variant(quirks: Mapping[str, str]) -> Variant:
    return Variant(quirks.get("ftms_variant", Variant.FTMS_1_0.value))


TREADMILL_CURRENT = treadmill_layout(Variant.CURRENT)


def layout_for(char: int, quirks: Mapping[str, str] | None = None) -> Layout:
    """The layout a device's FTMS characteristic uses, given its model's quirks."""
    if char == 0x2ACD and quirks and _variant(quirks) is Variant.CURRENT:
        return TREADMILL_CURRENT
    return {0x2ACD: TREADMILL, 0x2AD2: INDOOR_BIKE, 0x2AD1: ROWER, 0x2ACE: CROSS_TRAINER}[char]


@register_with_options(0x2ACD)
def decode_treadmill_quirks(data: bytes, quirks: Mapping[str, str]) -> list[Reading]:
    variant = _variant(quirks)
    flags, r = _joined(TREADMILL if variant is Variant.FTMS_1_0 else TREADMILL_CURRENT, data)
    return _mark_partial(readings_treadmill(r, variant), flags)


@register_with_options(0x2AD1)
def decode_rower_quirks(data: bytes, quirks: Mapping[str, str]) -> list[Reading]:
    flags, r = _joined(ROWER, data)
    return _mark_partial(readings_rower(r, _variant(quirks)), flags)


@register(0x2AD2)
def decode_indoor_bike(data: bytes) -> list[Reading]:
    flags, r = _joined(INDOOR_BIKE, data)
    return _mark_partial(readings_indoor_bike(r), flags)


@register(0x2AD1)
def decode_rower(data: bytes) -> list[Reading]:
    flags, r = _joined(ROWER, data)
    return _mark_partial(readings_rower(r), flags)


@register(0x2ACE)
def decode_cross_trainer(data: bytes) -> list[Reading]:
    flags, r = _joined(CROSS_TRAINER, data)
    return _mark_partial(readings_cross_trainer(r, flags), flags)


def _mark_partial(readings: list[Reading], flags: int) -> list[Reading]:
    """A record whose last part still says More Data is incomplete: kept, flagged ``more_data``, never dropped."""
    if not flags & _MORE_DATA:
        return readings
    return [Reading(x.kind, x.val, (*x.q, "more_data")) for x in readings]


def split_record(layout: Layout, flags: int, values: Mapping[str, Raw], mtu_payload: int = 20) -> list[bytes]:
    """Encode one record as as many notifications as ``mtu_payload`` needs (used by simulators).

    Parts before the last carry More Data, so they cannot hold the inverted group (its presence means
    More Data is clear): that group always travels in the last part.
    """
    flags &= ~_MORE_DATA
    inverted = [g for g in layout.groups if g.inverted and g.present(flags)]
    normal = [g for g in layout.groups if not g.inverted and g.present(flags)]

    def fields(groups: list[Group]) -> dict[str, Raw]:
        return {f.name: values[f.name] for g in groups for f in g.fields}

    def bits(groups: list[Group]) -> int:
        return sum(g.flag for g in groups)

    parts: list[bytes] = []
    current: list[Group] = []
    for g in normal:
        trial = [*current, g]
        if current and len(layout.encode(bits(trial) | _MORE_DATA, fields(trial))) > mtu_payload:
            parts.append(layout.encode(bits(current) | _MORE_DATA, fields(current)))
            trial = [g]
        current = trial
    last = layout.encode(bits(current), {**fields(current), **fields(inverted)})
    if len(last) > mtu_payload and current:
        parts.append(layout.encode(bits(current) | _MORE_DATA, fields(current)))
        last = layout.encode(0, fields(inverted))
    if len(last) > mtu_payload or any(len(p) > mtu_payload for p in parts):
        raise MalformedFrame("a single FTMS field group does not fit the MTU")
    return [*parts, last]
