"""GATT decoders: bytes from a characteristic in, typed readings out. Importing registers them all."""

from edge.gatt import battery, fitness, ftms, health, heart_rate
from edge.gatt.registry import BadUuid, Reading, check_quirks, decode, known_characteristics, parse_uuid, register

__all__ = [
    "BadUuid",
    "Reading",
    "battery",
    "check_quirks",
    "decode",
    "fitness",
    "ftms",
    "health",
    "heart_rate",
    "known_characteristics",
    "parse_uuid",
    "register",
]
