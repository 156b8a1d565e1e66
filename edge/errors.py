"""One error root for the pure core, with subclasses that say which rule was broken."""


class EdgeError(Exception):
    """Root of every error raised by :mod:`edge`."""


class MalformedFrame(EdgeError, ValueError):
    """A BLE payload does not match the layout its flags announce."""


class UnknownCharacteristic(EdgeError, LookupError):
    """No decoder is registered for the characteristic a frame came from."""


class CodecError(EdgeError, ValueError):
    """Bytes are not a valid canonical encoding of the expected structure."""


class NotCanonical(CodecError):
    """Bytes decode, but are not the one canonical (deterministic) encoding of their value."""


class MerkleError(EdgeError, ValueError):
    """A Merkle tree or proof request is impossible (e.g. index out of range, empty tree)."""


class KeyFormatError(EdgeError, ValueError):
    """A key is not a valid SM2 key in the expected encoding."""


class SignatureError(EdgeError, ValueError):
    """Signing failed or a signature is structurally invalid."""


class BackendUnavailable(EdgeError, RuntimeError):
    """A cryptographic backend cannot be used here: its library is missing or it failed its self-test."""
