"""Heart Rate Measurement (0x2A37, Heart Rate Service 1.0).

Flags u8: bit0 HR is u16 (else u8); bit1 contact detected; bit2 contact supported (bit1 means
something only when bit2 is set); bit3 Energy Expended u16 kJ present; bit4 one or more RR intervals
(u16, 1/1024 s, oldest first) fill the rest of the value. Bits 5-7 are reserved: accepted and kept in
the raw bytes, never interpreted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from edge.errors import MalformedFrame
from edge.gatt.registry import Reading, ReadingValue, register

UUID = 0x2A37
_F_HR16, _F_CONTACT, _F_CONTACT_SUPPORTED, _F_ENERGY, _F_RR = 0x01, 0x02, 0x04, 0x08, 0x10
RR_UNITS_PER_S = 1024
MAX_PAYLOAD = 512


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    heart_rate: int
    sensor_contact: bool | None = None  # None: the strap does not support contact detection
    energy_expended: int | None = None  # kJ since the last reset, saturates at 0xFFFF
    rr_intervals: tuple[int, ...] = field(default=())  # raw, 1/1024 s
    hr_uint16: bool = False
    reserved_flags: int = 0  # bits 5-7 as received

    def __post_init__(self) -> None:
        limit = 0xFFFF if self.hr_uint16 else 0xFF
        if not 0 <= self.heart_rate <= limit:
            raise ValueError(f"heart_rate {self.heart_rate} does not fit the {'u16' if self.hr_uint16 else 'u8'} field")
        if self.energy_expended is not None and not 0 <= self.energy_expended <= 0xFFFF:
            raise ValueError("energy_expended must fit u16")
        if self.rr_intervals and (min(self.rr_intervals) < 0 or max(self.rr_intervals) > 0xFFFF):
            raise ValueError("rr_intervals must fit u16")
        if self.reserved_flags & ~0xE0:
            raise ValueError("reserved_flags may only hold bits 5-7")

    @property
    def flags(self) -> int:
        f = self.reserved_flags
        if self.hr_uint16:
            f |= _F_HR16
        if self.sensor_contact is not None:
            f |= _F_CONTACT_SUPPORTED | (_F_CONTACT if self.sensor_contact else 0)
        if self.energy_expended is not None:
            f |= _F_ENERGY
        if self.rr_intervals:
            f |= _F_RR
        return f

    def __bytes__(self) -> bytes:
        out = bytearray([self.flags])
        out += struct.pack("<H", self.heart_rate) if self.hr_uint16 else bytes([self.heart_rate])
        if self.energy_expended is not None:
            out += struct.pack("<H", self.energy_expended)
        for rr in self.rr_intervals:
            out += struct.pack("<H", rr)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> HeartRateMeasurement:
        if not data:
            raise MalformedFrame("heart rate 0x2A37: empty payload (need at least flags and a heart rate)")
        if len(data) > MAX_PAYLOAD:
            raise MalformedFrame(f"heart rate 0x2A37: {len(data)} bytes exceeds the {MAX_PAYLOAD}-byte ATT limit")
        flags = data[0]
        pos = 1
        hr16 = bool(flags & _F_HR16)
        need = pos + (2 if hr16 else 1)
        if len(data) < need:
            raise MalformedFrame(
                f"heart rate 0x2A37: flags announce a {'u16' if hr16 else 'u8'} heart rate "
                f"but the payload has {len(data)} byte(s), need {need}"
            )
        hr = struct.unpack_from("<H", data, pos)[0] if hr16 else data[pos]
        pos = need
        energy = None
        if flags & _F_ENERGY:
            if len(data) < pos + 2:
                raise MalformedFrame(
                    f"heart rate 0x2A37: energy expended flag set but only {len(data) - pos} byte(s) left, need 2"
                )
            energy = struct.unpack_from("<H", data, pos)[0]
            pos += 2
        rr: tuple[int, ...] = ()
        rest = len(data) - pos
        if flags & _F_RR:
            if not rest:  # bit 4 means "one or more RR values": an empty field contradicts the flags
                raise MalformedFrame("heart rate 0x2A37: flags announce RR intervals but none follow")
            if rest % 2:
                raise MalformedFrame(f"heart rate 0x2A37: RR interval field has {rest} byte(s), not a multiple of 2")
            rr = struct.unpack_from(f"<{rest // 2}H", data, pos)
        elif rest:
            raise MalformedFrame(f"heart rate 0x2A37: {rest} trailing byte(s) after the announced fields")
        contact = bool(flags & _F_CONTACT) if flags & _F_CONTACT_SUPPORTED else None
        return cls(
            heart_rate=hr,
            sensor_contact=contact,
            energy_expended=energy,
            rr_intervals=rr,
            hr_uint16=hr16,
            reserved_flags=flags & 0xE0,
        )

    def to_reading(self) -> Reading:
        """Units: beat/min, RR in seconds, energy in joules. A strap reporting no skin contact is
        flagged ``no_contact``: its heart rate is the device's guess, not a measurement."""
        val: dict[str, ReadingValue] = {"heart_rate": self.heart_rate}
        if self.rr_intervals:
            val["rr_intervals"] = [rr / RR_UNITS_PER_S for rr in self.rr_intervals]  # exact: k / 2**10
        if self.energy_expended is not None:
            val["energy_expended"] = self.energy_expended * 1000
        q: tuple[str, ...] = ()
        if self.sensor_contact is not None:
            val["sensor_contact"] = self.sensor_contact
            if not self.sensor_contact:
                q = ("no_contact",)
        if self.energy_expended == 0xFFFF:
            q = (*q, "energy_saturated")
        return Reading(kind="heart_rate", val=val, q=q)


@register(UUID)
def decode_heart_rate(data: bytes) -> list[Reading]:
    return [HeartRateMeasurement.from_bytes(data).to_reading()]
