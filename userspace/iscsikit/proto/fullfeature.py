"""Just enough of the full feature phase to prove a login: sequence numbers,
NOP-Out pings, single SCSI commands (reads, and writes with immediate data,
unsolicited Data-Out and R2T-solicited Data-Out) and Logout (RFC 7143 §4.2.2, §11).

In production the kernel's iscsi_tcp owns the full feature phase; this module
serves tests, benchmarks and tools that check a freshly logged-in connection
from userspace before it is handed over.
"""

from __future__ import annotations

import dataclasses

from .errors import LocalProtocolError, RemoteProtocolError
from .negotiation import Parameters
from .pdu import (RESERVED_TAG, R2T, AsyncMessage, DataIn, DataOut, LogoutRequest, LogoutResponse,
                  NopIn, NopOut, Pdu, Reject, ScsiCommand, ScsiResponse)

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
                     read: bool = True, write: bool = False, immediate: bytes = b"",
                     final: bool = True) -> ScsiCommand:
        """`write`: a WRITE whose `expected_length` bytes go out as Data-Out; `immediate` the
        part carried in the command itself; `final` False when unsolicited Data-Out follows."""
        return ScsiCommand(final=final, read=read and not write and expected_length > 0, write=write,
                           attributes=1, lun=single_level_lun(lun), itt=self.next_itt(),
                           expected_length=expected_length, cmdsn=self._take_cmdsn(),
                           expstatsn=self.exp_statsn, cdb=cdb, data=immediate)

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


@dataclasses.dataclass(frozen=True)
class WriteLimits:
    """What a login negotiated that shapes a write's data (RFC 7143 §13.10-13.14)."""

    immediate_data: bool
    initial_r2t: bool
    first_burst: int
    max_burst: int
    max_xmit: int            # the target's declared MaxRecvDataSegmentLength (§13.12)

    @classmethod
    def from_parameters(cls, params: Parameters) -> "WriteLimits":
        n = params.negotiated
        return cls(bool(n["ImmediateData"]), bool(n["InitialR2T"]), n["FirstBurstLength"],
                   n["MaxBurstLength"], params.max_xmit_data_segment)

    @property
    def unsolicited(self) -> bool:
        return self.immediate_data or not self.initial_r2t


class WriteExchange:
    """One SCSI write: the command with its immediate data and any unsolicited Data-Out
    (`start()`), then the Data-Out each R2T asks for (`receive()`), until the SCSI Response.

    Unsolicited data (immediate plus unsolicited Data-Out) stops at FirstBurstLength
    (§13.14); immediate data only with ImmediateData=Yes (§13.11), unsolicited Data-Out
    only with InitialR2T=No (§13.10); every data segment at most the target's
    MaxRecvDataSegmentLength; each Data-Out sequence numbers its PDUs from DataSN 0 and
    ends with F=1 (§11.7.4). An R2T is checked against the negotiated MaxBurstLength and the
    command's length (§11.8), with R2TSNs in order."""

    def __init__(self, sequencer: Sequencer, cdb: bytes, data: bytes, limits: WriteLimits,
                 *, lun: int = 0) -> None:
        if not data:
            raise LocalProtocolError("a write needs data")
        self.sequencer = sequencer
        self.data = bytes(data)
        self.limits = limits
        self.lun = single_level_lun(lun)
        lim = limits
        self._unsolicited = min(len(self.data), lim.first_burst) if lim.unsolicited else 0
        immediate = min(self._unsolicited, lim.max_xmit) if lim.immediate_data else 0
        if lim.initial_r2t:
            self._unsolicited = immediate
        self.command = sequencer.scsi_command(cdb, lun=lun, expected_length=len(self.data), write=True,
                                              immediate=self.data[:immediate],
                                              final=self._unsolicited == immediate)
        self._immediate = immediate
        self._r2tsn = 0
        self._received = bytearray()
        self.r2ts = 0
        self.data_outs = 0

    def start(self) -> list[Pdu]:
        """The command and its unsolicited Data-Out (TTT reserved), in sending order."""
        out: list[Pdu] = [self.command]
        out += self._sequence(self._immediate, self._unsolicited - self._immediate, RESERVED_TAG)
        return out

    def _sequence(self, offset: int, length: int, ttt: int) -> list[DataOut]:
        pdus = []
        end, step = offset + length, self.limits.max_xmit
        for datasn, start in enumerate(range(offset, end, step)):
            chunk = self.data[start:min(start + step, end)]
            pdus.append(DataOut(final=start + step >= end, lun=self.lun, itt=self.command.itt, ttt=ttt,
                                expstatsn=self.sequencer.exp_statsn, datasn=datasn,
                                buffer_offset=start, data=chunk))
        self.data_outs += len(pdus)
        return pdus

    def receive(self, pdu: Pdu) -> "ScsiResult | list[Pdu]":
        """The Data-Out an R2T asks for, or the result once the SCSI Response is in."""
        if isinstance(pdu, (NopIn, AsyncMessage)) and pdu.itt == RESERVED_TAG:
            return []
        if isinstance(pdu, Reject):
            raise RemoteProtocolError(f"target rejected the command (reason {pdu.reason:#04x})")
        if getattr(pdu, "itt", None) != self.command.itt:
            raise RemoteProtocolError(f"{type(pdu).__name__} for an unknown task {getattr(pdu, 'itt', 0):#x}")
        if isinstance(pdu, R2T):
            return self._on_r2t(pdu)
        if isinstance(pdu, ScsiResponse):
            sense = b""
            if pdu.data:
                length = int.from_bytes(pdu.data[:2], "big")
                sense = pdu.data[2:2 + length]
            return ScsiResult(pdu.status, b"", sense, pdu.residual)
        raise RemoteProtocolError(f"unexpected {type(pdu).__name__} for a SCSI write")

    def _on_r2t(self, r2t: R2T) -> list[Pdu]:
        if r2t.r2tsn != self._r2tsn:
            raise RemoteProtocolError(f"R2TSN {r2t.r2tsn}, expected {self._r2tsn}")
        self._r2tsn += 1
        if r2t.ttt == RESERVED_TAG:
            raise RemoteProtocolError("R2T with the reserved Target Transfer Tag")
        if not 0 < r2t.desired_length <= self.limits.max_burst:
            raise RemoteProtocolError(
                f"R2T asks for {r2t.desired_length} bytes (MaxBurstLength {self.limits.max_burst})")
        if r2t.buffer_offset + r2t.desired_length > len(self.data):
            raise RemoteProtocolError(
                f"R2T for {r2t.buffer_offset}+{r2t.desired_length} beyond the command's {len(self.data)} bytes")
        self.r2ts += 1
        return self._sequence(r2t.buffer_offset, r2t.desired_length, r2t.ttt)
