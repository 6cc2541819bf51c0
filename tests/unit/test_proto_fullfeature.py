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
