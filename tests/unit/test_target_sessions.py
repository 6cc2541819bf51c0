"""sessions: the kernel's ACL `info` text parsed into who is logged in where."""

from iscsikit.target import sessions

INFO = """InitiatorName: iqn.2024-01.com.example:host1
InitiatorAlias: host1
LIO Session ID: 3   ISID: 0x00 0x02 0x3d 0x00 0x00 0x01  TSIH: 3  SessionType: Normal
Session State: TARG_SESS_STATE_LOGGED_IN
---------------------------------[iSCSI Session Values]-----------------------------------
   CmdSN/WR  :  CmdSN/WC  :  ExpCmdSN  :  MaxCmdSN  :     ITT    :     TTT
 0x00000040   0x00000040   0x00000040   0x00000080   0x00000010   0xffffffff
----------------------------------[iSCSI Connections]-------------------------------------
CID: 0  Connection State: TARG_CONN_STATE_LOGGED_IN
   Address 127.0.0.1 TCP  StatSN: 0x00000045
"""


def test_parse_logged_in_session():
    s = sessions.parse_acl_info(INFO, "iqn.2024-01.com.example:t", 1, "iqn.2024-01.com.example:host1")
    assert (s.sid, s.type, s.state, s.alias, s.isid) == (3, "Normal", "LOGGED_IN", "host1", "00023d000001")
    assert [(c.cid, c.state, c.address, c.transport) for c in s.connections] == [(0, "LOGGED_IN", "127.0.0.1", "TCP")]
    assert s.to_dict()["connections"][0]["address"] == "127.0.0.1"


def test_isid_as_6_1_prints_it():
    # lio_target_nacl_info_show(): "ISID: 0x%6ph": one 0x, then six bytes separated by spaces
    info = INFO.replace("0x00 0x02 0x3d 0x00 0x00 0x01", "0x00 02 3d 00 00 01").replace("TSIH: 3", "TSIH: 17")
    s = sessions.parse_acl_info(info, "iqn.2024-01.com.example:t", 1, "iqn.2024-01.com.example:host1")
    assert (s.isid, s.tsih, s.type) == ("00023d000001", 17, "Normal")


def test_no_session():
    assert sessions.parse_acl_info("No active iSCSI Session for Initiator Endpoint: iqn.x\n", "t", 1, "i") is None


def test_list_from_a_tree(tmp_path):
    tpg = tmp_path / "iscsi" / "iqn.2024-01.com.example:t" / "tpgt_1"
    (tpg / "acls" / "iqn.2024-01.com.example:host1").mkdir(parents=True)
    (tpg / "acls" / "iqn.2024-01.com.example:host1" / "info").write_text(INFO)
    (tpg / "dynamic_sessions").write_text("iqn.2024-01.com.example:demo1\n")
    (tmp_path / "iscsi" / "discovery_auth").mkdir()
    found = sessions.list_sessions(str(tmp_path))
    assert [(s.initiator, s.dynamic) for s in found] == [
        ("iqn.2024-01.com.example:host1", False), ("iqn.2024-01.com.example:demo1", True)]


def test_dynamic_sessions_as_the_kernel_separates_them(tmp_path):
    # target_show_dynamic_sessions() writes "name\n" and counts a NUL after each one
    tpg = tmp_path / "iscsi" / "iqn.2024-01.com.example:t" / "tpgt_1"
    (tpg / "acls").mkdir(parents=True)
    (tpg / "dynamic_sessions").write_bytes(b"iqn.2024-01.com.example:d1\n\0iqn.2024-01.com.example:d2\n\0")
    assert [s.initiator for s in sessions.list_sessions(str(tmp_path))] == [
        "iqn.2024-01.com.example:d1", "iqn.2024-01.com.example:d2"]
