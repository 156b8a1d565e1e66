"""Opening a read-only chain view from what a platform's operator types: a node URL and the Anchor contract address.

The one place these are parsed (``tiyi-ingest``, ``tiyi verify``, ``tiyi proof``, ``tiyi chain``): errors are
``ChainOptionError`` (bad input), which each command line turns into a one-line message at its error boundary. The
contract is always the platform's own pin: a receipt never chooses it.
"""

from __future__ import annotations

from anchoring.chain import ADDRESS_SIZE, ChainReader
from anchoring.errors import AnchoringError
from edge.signing import Verifier


class ChainOptionError(AnchoringError, ValueError):
    """A node URL or address that cannot name a chain or a contract."""


def address(text: str, what: str) -> bytes:
    """A 20-byte account or contract address written as 0x + 40 hex digits."""
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != ADDRESS_SIZE:
        raise ChainOptionError(f"{what} {text!r}: expected a 20-byte hex address (0x + 40 hex digits)")
    return raw


def open_reader(url: str, contract: bytes, what: str = "--rpc") -> ChainReader:
    """A read-only client for ``contract`` on the node at ``url`` (``fisco2+http://…``: FISCO BCOS 2.x, group 1)."""
    if not url.startswith(("http://", "https://", "fisco2+http://", "fisco2+https://")):
        raise ChainOptionError(f"{what} {url!r}: expected http(s)://HOST:PORT or fisco2+http(s)://HOST:PORT")
    try:
        if url.startswith("fisco2+"):
            from anchoring.fisco2 import Fisco2ChainClient

            return Fisco2ChainClient.reader(url.removeprefix("fisco2+"), contract)
        from anchoring.evm import EvmChainClient

        return EvmChainClient.reader(url, contract)
    except ChainOptionError:
        raise
    except AnchoringError as exc:  # a URL the client cannot use (the cause stays: an unreachable node shows)
        raise ChainOptionError(f"{what} {url}: {exc}") from exc


def point_verifier(point: bytes) -> Verifier:
    """A verifier for a key as the registry holds it: 64 bytes X‖Y of the uncompressed SM2 point."""
    from edge.sm2 import Sm2PublicKey, make_verifier

    return make_verifier(Sm2PublicKey.from_point(b"\x04" + point))
