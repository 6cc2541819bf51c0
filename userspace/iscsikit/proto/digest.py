"""CRC32C header and data digests (RFC 7143 §12.1, Appendix B.4).

The digest goes on the wire least significant byte first: the RFC's example
for 32 zero bytes, CRC 0x8a9136aa, is transmitted as aa 36 91 8a.
"""

from __future__ import annotations

import crc32c as _crc32c

DIGEST_LEN = 4


def crc32c_digest(*chunks: bytes | bytearray | memoryview) -> bytes:
    """The 4 wire bytes of the CRC32C over the concatenation of `chunks`."""
    value = 0
    for chunk in chunks:
        value = _crc32c.crc32c(chunk, value)
    return value.to_bytes(DIGEST_LEN, "little")
