"""Just enough of the full feature phase to prove a login: sequence numbers,
NOP-Out pings, single SCSI commands and Logout (RFC 7143 §4.2.2, §11).

In production the kernel's iscsi_tcp owns the full feature phase; this module
serves tests, benchmarks and tools that check a freshly logged-in connection
from userspace before it is handed over.
"""

from __future__ import annotations

import dataclasses

from .errors import LocalProtocolError, RemoteProtocolError
from .pdu import (RESERVED_TAG, AsyncMessage, DataIn, LogoutRequest, LogoutResponse, NopIn,
                  NopOut, Pdu, Reject, ScsiCommand, ScsiResponse)

# PDUs whose StatSN is a real, advancing status number (§4.2.2.2)
_STATUS_PDUS = (ScsiResponse, LogoutResponse)


def ping_answer(ping: NopIn, cmdsn: int, expstatsn: int) -> NopOut | None:
    """The NOP-Out a target's NOP-In asks for (§11.19: a TTT other than the reserved
    tag wants its ping data echoed back), or None for one that wants no answer."""
    if ping.ttt == RESERVED_TAG:
        return None
    return NopOut(immediate=True, itt=RESERVED_TAG, ttt=ping.ttt, lun=ping.lun,
                  cmdsn=cmdsn, expstatsn=expstatsn, data=ping.data)


def single_level_lun(lun: int) -> int:
    """SAM peripheral-device addressing for LUN < 256, flat space above (as Linux does)."""
    if lun < 256:
        return lun << 48
    if lun < 16384:
        return (0x4000 | lun) << 48
    raise LocalProtocolError(f"LUN {lun} needs an addressing method we do not build")


@dataclasses.dataclass(frozen=True)
class ScsiResult:
    status: int
    data: bytes
    sense: bytes
    residual: int


class Sequencer:
    """CmdSN / ExpStatSN / ITT bookkeeping for one connection."""

    def __init__(self, *, cmdsn: int, exp_statsn: int, max_cmdsn: int, first_itt: int = 1) -> None:
        self.cmdsn = cmdsn
        self.exp_statsn = exp_statsn
        self.max_cmdsn = max_cmdsn
        self._itt = first_itt

    def next_itt(self) -> int:
        itt = self._itt
        self._itt = (self._itt + 1) & 0xFFFFFFFF
        if self._itt == RESERVED_TAG:
            self._itt = 0
        return itt

    def _take_cmdsn(self) -> int:
        if ((self.max_cmdsn - self.cmdsn) & 0xFFFFFFFF) >= 0x80000000:
            raise LocalProtocolError(f"command window closed (CmdSN {self.cmdsn}, MaxCmdSN {self.max_cmdsn})")
        cmdsn = self.cmdsn
        self.cmdsn = (self.cmdsn + 1) & 0xFFFFFFFF
        return cmdsn

    def nop_out(self, data: bytes = b"") -> NopOut:
        return NopOut(immediate=True, itt=self.next_itt(), ttt=RESERVED_TAG,
                      cmdsn=self.cmdsn, expstatsn=self.exp_statsn, data=data)

    def scsi_command(self, cdb: bytes, *, lun: int = 0, expected_length: int = 0,
                     read: bool = True) -> ScsiCommand:
        return ScsiCommand(final=True, read=read and expected_length > 0, attributes=1,
                           lun=single_level_lun(lun), itt=self.next_itt(),
                           expected_length=expected_length, cmdsn=self._take_cmdsn(),
                           expstatsn=self.exp_statsn, cdb=cdb)

    def logout(self, reason: int = 0) -> LogoutRequest:
        return LogoutRequest(immediate=True, reason=reason, itt=self.next_itt(),
                             cmdsn=self.cmdsn, expstatsn=self.exp_statsn)

    def observe(self, pdu: Pdu) -> None:
        if isinstance(pdu, _STATUS_PDUS) or (isinstance(pdu, DataIn) and pdu.status_present):
            self.exp_statsn = (pdu.statsn + 1) & 0xFFFFFFFF
        if hasattr(pdu, "maxcmdsn") and not isinstance(pdu, Reject):
            # §4.2.2.1: a MaxCmdSN below ExpCmdSN - 1 is to be ignored
            if ((pdu.maxcmdsn - pdu.expcmdsn + 1) & 0xFFFFFFFF) < 0x80000000:
                self.max_cmdsn = pdu.maxcmdsn


class ScsiExchange:
    """Collects the Data-In and SCSI Response PDUs of one command."""

    def __init__(self, command: ScsiCommand, max_data: int = 1 << 24) -> None:
        self.command = command
        self.max_data = max_data
        self._data = bytearray()
        self.result: ScsiResult | None = None

    def receive(self, pdu: Pdu) -> ScsiResult | None:
        if isinstance(pdu, (NopIn, AsyncMessage)) and pdu.itt == RESERVED_TAG:
            return None
        if isinstance(pdu, Reject):
            raise RemoteProtocolError(f"target rejected the command (reason {pdu.reason:#04x})")
        if getattr(pdu, "itt", None) != self.command.itt:
            raise RemoteProtocolError(f"{type(pdu).__name__} for an unknown task {getattr(pdu, 'itt', 0):#x}")
        if isinstance(pdu, DataIn):
            if pdu.buffer_offset != len(self._data):
                raise RemoteProtocolError(f"Data-In at offset {pdu.buffer_offset}, expected {len(self._data)}")
            if len(self._data) + len(pdu.data) > min(self.max_data, self.command.expected_length):
                raise RemoteProtocolError("more Data-In than the command expected")
            self._data += pdu.data
            if pdu.status_present:
                self.result = ScsiResult(pdu.status, bytes(self._data), b"", pdu.residual)
            return self.result
        if isinstance(pdu, ScsiResponse):
            sense = b""
            if pdu.data:
                length = int.from_bytes(pdu.data[:2], "big")
                sense = pdu.data[2:2 + length]
            self.result = ScsiResult(pdu.status, bytes(self._data), sense, pdu.residual)
            return self.result
        raise RemoteProtocolError(f"unexpected {type(pdu).__name__} for a SCSI command")
