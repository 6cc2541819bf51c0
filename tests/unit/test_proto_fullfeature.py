"""Full-feature helpers: sequence numbers and single-command exchanges."""

from __future__ import annotations

import pytest

from iscsikit.proto import pdu as P
from iscsikit.proto.errors import LocalProtocolError, RemoteProtocolError
from iscsikit.proto.fullfeature import ScsiExchange, Sequencer, single_level_lun


def test_lun_encoding():
    assert single_level_lun(1) == 0x0001_0000_0000_0000
    assert single_level_lun(300) == 0x412C_0000_0000_0000
    with pytest.raises(LocalProtocolError):
        single_level_lun(1 << 20)


def test_cmdsn_advances_only_for_non_immediate():
    seq = Sequencer(cmdsn=5, exp_statsn=9, max_cmdsn=10)
    nop = seq.nop_out()
    assert nop.immediate and nop.cmdsn == 5 and seq.cmdsn == 5
    cmd = seq.scsi_command(b"\x00" * 6, lun=1)
    assert cmd.cmdsn == 5 and seq.cmdsn == 6 and not cmd.read and cmd.lun == 1 << 48
    assert cmd.itt != nop.itt


def test_window_closed():
    seq = Sequencer(cmdsn=5, exp_statsn=0, max_cmdsn=4)
    with pytest.raises(LocalProtocolError, match="window"):
        seq.scsi_command(b"\x00" * 6)


def test_observe_tracks_statsn_and_window():
    seq = Sequencer(cmdsn=1, exp_statsn=0, max_cmdsn=1)
    seq.observe(P.ScsiResponse(statsn=7, expcmdsn=2, maxcmdsn=33))
    assert seq.exp_statsn == 8 and seq.max_cmdsn == 33
    seq.observe(P.NopIn(statsn=50, expcmdsn=2, maxcmdsn=0))  # MaxCmdSN < ExpCmdSN - 1: ignored
    assert seq.exp_statsn == 8 and seq.max_cmdsn == 33


def test_scsi_exchange_data_then_status():
    cmd = Sequencer(cmdsn=1, exp_statsn=0, max_cmdsn=9).scsi_command(b"\x12", expected_length=8)
    ex = ScsiExchange(cmd)
    assert ex.receive(P.DataIn(itt=cmd.itt, data=b"abcd")) is None
    result = ex.receive(P.DataIn(itt=cmd.itt, buffer_offset=4, status_present=True, final=True, data=b"efgh"))
    assert result.data == b"abcdefgh" and result.status == 0


def test_scsi_exchange_sense():
    cmd = Sequencer(cmdsn=1, exp_statsn=0, max_cmdsn=9).scsi_command(b"\x00")
    result = ScsiExchange(cmd).receive(P.ScsiResponse(itt=cmd.itt, status=2, data=b"\x00\x03abcxx"))
    assert result.status == 2 and result.sense == b"abc"


@pytest.mark.parametrize("pdu", [P.DataIn(itt=99), P.DataIn(itt=1, buffer_offset=3, data=b"x"),
                                 P.DataIn(itt=1, data=b"x" * 9), P.Reject(), P.R2T(itt=1)])
def test_scsi_exchange_violations(pdu):
    cmd = Sequencer(cmdsn=1, exp_statsn=0, max_cmdsn=9, first_itt=1).scsi_command(b"\x12", expected_length=8)
    with pytest.raises(RemoteProtocolError):
        ScsiExchange(cmd).receive(pdu)


# -- writes: immediate data, unsolicited Data-Out, R2T (RFC 7143 §11.7, §11.8, §13.10-13.14) --

from iscsikit.proto.fullfeature import WriteExchange, WriteLimits  # noqa: E402

WRITE10 = bytes([0x2A]) + bytes(9)


def _write(data_len, **limits):
    lim = WriteLimits(**{"immediate_data": True, "initial_r2t": True, "first_burst": 8192,
                         "max_burst": 16384, "max_xmit": 4096, **limits})
    seq = Sequencer(cmdsn=1, exp_statsn=7, max_cmdsn=9)
    return WriteExchange(seq, WRITE10, bytes(range(256)) * (data_len // 256), lim)


def _shape(pdus):
    return [(type(p).__name__, getattr(p, "buffer_offset", None), len(p.data), p.final) for p in pdus]


def test_immediate_only_when_initial_r2t_yes():
    ex = _write(65536)
    cmd, = ex.start()
    assert cmd.write and not cmd.read and cmd.final and cmd.expected_length == 65536
    assert cmd.data == ex.data[:4096]          # capped by the target's MaxRecvDataSegmentLength


def test_unsolicited_data_out_up_to_first_burst_when_initial_r2t_no():
    ex = _write(65536, initial_r2t=False)
    pdus = ex.start()
    assert _shape(pdus) == [("ScsiCommand", None, 4096, False), ("DataOut", 4096, 4096, True)]
    assert pdus[1].ttt == 0xFFFFFFFF and pdus[1].datasn == 0 and pdus[1].expstatsn == 7


def test_no_immediate_data_when_immediate_data_no():
    ex = _write(65536, immediate_data=False, initial_r2t=False)
    pdus = ex.start()
    assert _shape(pdus) == [("ScsiCommand", None, 0, False), ("DataOut", 0, 4096, False),
                            ("DataOut", 4096, 4096, True)]
    assert [p.datasn for p in pdus[1:]] == [0, 1]
    assert _shape(_write(65536, immediate_data=False).start()) == [("ScsiCommand", None, 0, True)]


def test_short_write_goes_whole_as_immediate_data():
    cmd, = _write(1024).start()
    assert cmd.final and cmd.data == bytes(range(256)) * 4


def test_r2t_answered_with_a_data_out_sequence():
    ex = _write(65536)
    cmd, = ex.start()
    out = ex.receive(P.R2T(itt=cmd.itt, ttt=0x55, r2tsn=0, buffer_offset=4096, desired_length=10000))
    assert _shape(out) == [("DataOut", 4096, 4096, False), ("DataOut", 8192, 4096, False),
                           ("DataOut", 12288, 1808, True)]
    assert {p.ttt for p in out} == {0x55} and [p.datasn for p in out] == [0, 1, 2]
    assert b"".join(p.data for p in out) == ex.data[4096:14096]
    result = ex.receive(P.ScsiResponse(itt=cmd.itt, status=0))
    assert result.status == 0 and ex.r2ts == 1


@pytest.mark.parametrize("r2t", [
    dict(r2tsn=1, buffer_offset=4096, desired_length=4096),            # R2TSN out of order
    dict(r2tsn=0, buffer_offset=4096, desired_length=16385),           # above MaxBurstLength
    dict(r2tsn=0, buffer_offset=61440, desired_length=8192),           # beyond the command
    dict(r2tsn=0, buffer_offset=4096, desired_length=0),
    dict(r2tsn=0, buffer_offset=4096, desired_length=4096, ttt=0xFFFFFFFF),
    dict(r2tsn=0, buffer_offset=0, desired_length=4096, itt=99),       # another task
])
def test_bad_r2t_is_a_remote_error(r2t):
    ex = _write(65536)
    cmd, = ex.start()
    with pytest.raises(RemoteProtocolError):
        ex.receive(P.R2T(**{"itt": cmd.itt, "ttt": 1, **r2t}))
