"""Incremental PDU reader: feed bytes as they arrive, take complete PDUs out.

The reader never trusts a length it has not checked: the DataSegmentLength
of every BHS is compared with the limit in force (our declared
MaxRecvDataSegmentLength, 8192 during login) as soon as the 48 header bytes
are in, before the caller is asked for the rest. Once a PDU is found bad the
reader stays broken: a byte stream that lost framing cannot be resynchronised.
"""

from __future__ import annotations

from .digest import DIGEST_LEN, crc32c_digest
from .errors import RemoteProtocolError
from .pdu import BHS_LEN, TARGET_OPCODES, BhsInfo, Pdu, build, decode_ahs, pad_len, peek_bhs

LOGIN_MAX_DATA_SEGMENT = 8192


class PduReader:
    def __init__(self, *, accept: frozenset[int] = TARGET_OPCODES,
                 max_data_segment: int = LOGIN_MAX_DATA_SEGMENT,
                 header_digest: bool = False, data_digest: bool = False) -> None:
        self.accept = accept
        self.max_data_segment = max_data_segment
        self.header_digest = header_digest
        self.data_digest = data_digest
        self._buf = bytearray()
        self._info: BhsInfo | None = None
        self._failed: RemoteProtocolError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def bytes_wanted(self) -> int:
        """How many more bytes complete the PDU being read (at least 1 if incomplete)."""
        if self._info is None:
            return max(BHS_LEN - len(self._buf), 0) or 1
        need = self._info.wire_len(self.header_digest, self.data_digest) - len(self._buf)
        return max(need, 0)

    def next_pdu(self) -> Pdu | None:
        """The next complete PDU, or None when more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._failed = exc
            raise

    def __iter__(self):
        while (pdu := self.next_pdu()) is not None:
            yield pdu

    def _next(self) -> Pdu | None:
        buf = self._buf
        if self._info is None:
            if len(buf) < BHS_LEN:
                return None
            self._info = peek_bhs(memoryview(buf)[:BHS_LEN], accept=self.accept,
                                  max_data_segment=self.max_data_segment)
        info = self._info
        total = info.wire_len(self.header_digest, self.data_digest)
        if len(buf) < total:
            return None
        name = info.layout.name
        pos = BHS_LEN + info.ahs_len
        header = bytes(buf[:pos])
        if self.header_digest:
            if crc32c_digest(header) != buf[pos:pos + DIGEST_LEN]:
                raise RemoteProtocolError("header digest mismatch", pdu=name)
            pos += DIGEST_LEN
        data = b""
        if info.data_len:
            padded_len = info.data_len + pad_len(info.data_len)
            padded = bytes(buf[pos:pos + padded_len])
            pos += padded_len
            if self.data_digest:
                if crc32c_digest(padded) != buf[pos:pos + DIGEST_LEN]:
                    raise RemoteProtocolError("data digest mismatch", pdu=name)
                pos += DIGEST_LEN
            data = padded[:info.data_len]
        ahs = decode_ahs(header[BHS_LEN:], name)
        pdu = build(info.layout, header, ahs, data)
        del buf[:pos]
        self._info = None
        return pdu


def decode_one(wire: bytes, **kwargs) -> Pdu:
    """Decode exactly one PDU from `wire` (tests and tools)."""
    reader = PduReader(**kwargs)
    reader.feed(wire)
    pdu = reader.next_pdu()
    if pdu is None:
        raise RemoteProtocolError(f"incomplete PDU ({len(wire)} bytes)")
    if reader.buffered:
        raise RemoteProtocolError(f"{reader.buffered} trailing bytes after the PDU")
    return pdu
