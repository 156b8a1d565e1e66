"""SM3 (GB/T 32905) through OpenSSL's implementation in :mod:`hashlib`.

gmssl also has SM3, but in pure Python it is ~300x slower and mutates its input; OpenSSL gives the
same digests. Import fails loudly where the platform's OpenSSL lacks SM3.
"""

from __future__ import annotations

import hashlib

from edge.errors import EdgeError

DIGEST_SIZE = 32

if "sm3" not in hashlib.algorithms_available:  # pragma: no cover - depends on the platform's OpenSSL
    raise EdgeError("this Python's OpenSSL has no SM3; install OpenSSL >= 1.1.1 with SM3 enabled")


def sm3(*parts: bytes) -> bytes:
    """SM3 digest of the concatenation of ``parts``."""
    h = hashlib.new("sm3")
    for p in parts:
        h.update(p)
    return h.digest()


def new() -> hashlib._Hash:
    """A fresh incremental SM3 hasher."""
    return hashlib.new("sm3")
