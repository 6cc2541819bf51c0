"""CRC32C header and data digests (RFC 7143 §12.1, Appendix B.4).

The digest goes on the wire least significant byte first: the RFC's example
for 32 zero bytes, CRC 0x8a9136aa, is transmitted as aa 36 91 8a.
"""

from __future__ import annotations

from functools import cache

DIGEST_LEN = 4


@cache
def _crc32c():
    # imported on first use: most sessions negotiate no digest, and the package's
    # import (it reads its own metadata) is a fifth of the daemon's start-up
    import crc32c
    return crc32c.crc32c


def crc32c_digest(*chunks: bytes | bytearray | memoryview) -> bytes:
    """The 4 wire bytes of the CRC32C over the concatenation of `chunks`."""
    crc, value = _crc32c(), 0
    for chunk in chunks:
        value = crc(chunk, value)
    return value.to_bytes(DIGEST_LEN, "little")
