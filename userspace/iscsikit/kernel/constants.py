"""NETLINK_ISCSI numbers, from the kernel's include/scsi/iscsi_if.h (6.1), declared once.

Checked against the lab's 6.1 kernel by tests/vm (a message with a wrong
number is refused or misread there).
"""

import enum

NETLINK_ISCSI = 8
GROUP_ISCSID = 1          # ISCSI_NL_GRP_ISCSID: events for the daemon role
GROUP_UIP = 2             # ISCSI_NL_GRP_UIP: iscsiuio's offload path requests


class Ev(enum.IntEnum):
    """enum iscsi_uevent_e: requests (user → kernel) from UEVENT_BASE 10."""
    CREATE_SESSION = 11
    DESTROY_SESSION = 12
    CREATE_CONN = 13
    DESTROY_CONN = 14
    BIND_CONN = 15
    SET_PARAM = 16
    START_CONN = 17
    STOP_CONN = 18
    SEND_PDU = 19
    GET_STATS = 20
    GET_PARAM = 21
    TRANSPORT_EP_CONNECT = 22
    TRANSPORT_EP_POLL = 23
    TRANSPORT_EP_DISCONNECT = 24
    TGT_DSCVR = 25
    SET_HOST_PARAM = 26
    UNBIND_SESSION = 27
    CREATE_BOUND_SESSION = 28
    TRANSPORT_EP_CONNECT_THROUGH_HOST = 29
    PATH_UPDATE = 30
    SET_IFACE_PARAMS = 31
    PING = 32
    GET_CHAP = 33
    DELETE_CHAP = 34
    SET_FLASHNODE_PARAMS = 35
    NEW_FLASHNODE = 36
    DEL_FLASHNODE = 37
    LOGIN_FLASHNODE = 38
    LOGOUT_FLASHNODE = 39
    LOGOUT_FLASHNODE_SID = 40
    SET_CHAP = 41
    GET_HOST_STATS = 42
    DESTROY_SESSION_ASYNC = 43


class KEv(enum.IntEnum):
    """enum iscsi_uevent_e: kernel → user, from KEVENT_BASE 100."""
    RECV_PDU = 101
    CONN_ERROR = 102
    IF_ERROR = 103
    DESTROY_SESSION = 104
    UNBIND_SESSION = 105
    CREATE_SESSION = 106
    PATH_REQ = 107
    IF_DOWN = 108
    CONN_LOGIN_STATE = 109
    HOST_EVENT = 110
    PING_COMP = 111


class Param(enum.IntEnum):
    """enum iscsi_param."""
    MAX_RECV_DLENGTH = 0
    MAX_XMIT_DLENGTH = 1
    HDRDGST_EN = 2
    DATADGST_EN = 3
    INITIAL_R2T_EN = 4
    MAX_R2T = 5
    IMM_DATA_EN = 6
    FIRST_BURST = 7
    MAX_BURST = 8
    PDU_INORDER_EN = 9
    DATASEQ_INORDER_EN = 10
    ERL = 11
    IFMARKER_EN = 12
    OFMARKER_EN = 13
    EXP_STATSN = 14
    TARGET_NAME = 15
    TPGT = 16
    PERSISTENT_ADDRESS = 17
    PERSISTENT_PORT = 18
    SESS_RECOVERY_TMO = 19
    CONN_PORT = 20
    CONN_ADDRESS = 21
    USERNAME = 22
    USERNAME_IN = 23
    PASSWORD = 24
    PASSWORD_IN = 25
    FAST_ABORT = 26
    ABORT_TMO = 27
    LU_RESET_TMO = 28
    HOST_RESET_TMO = 29
    PING_TMO = 30
    RECV_TMO = 31
    IFACE_NAME = 32
    ISID = 33
    INITIATOR_NAME = 34
    TGT_RESET_TMO = 35
    TARGET_ALIAS = 36
    CHAP_IN_IDX = 37
    CHAP_OUT_IDX = 38
    BOOT_ROOT = 39
    BOOT_NIC = 40
    BOOT_TARGET = 41
    AUTO_SND_TGT_DISABLE = 42
    DISCOVERY_SESS = 43
    PORTAL_TYPE = 44
    CHAP_AUTH_EN = 45
    DISCOVERY_LOGOUT_EN = 46
    BIDI_CHAP_EN = 47
    DISCOVERY_AUTH_OPTIONAL = 48
    DEF_TIME2WAIT = 49
    DEF_TIME2RETAIN = 50
    MAX_SEGMENT_SIZE = 51
    STATSN = 52
    KEEPALIVE_TMO = 53
    LOCAL_PORT = 54
    TSID = 55
    DEF_TASKMGMT_TMO = 56
    LOCAL_IPADDR = 71


class HostParam(enum.IntEnum):
    HWADDRESS = 0
    INITIATOR_NAME = 1
    NETDEV_NAME = 2
    IPADDRESS = 3
    PORT_STATE = 4
    PORT_SPEED = 5


class StopFlag(enum.IntEnum):
    TERM = 1
    SUSPEND = 2       # refused by 6.1 ("invalid stop flag")
    RECOVER = 3


class ConnErr(enum.IntEnum):
    """enum iscsi_err, the CONN_ERROR event's `error`."""
    OK = 0
    DATASN = 1001
    DATA_OFFSET = 1002
    MAX_CMDSN = 1003
    EXP_CMDSN = 1004
    BAD_OPCODE = 1005
    DATALEN = 1006
    AHSLEN = 1007
    PROTO = 1008
    LUN = 1009
    BAD_ITT = 1010
    CONN_FAILED = 1011
    R2TSN = 1012
    SESSION_FAILED = 1013
    HDR_DGST = 1014
    DATA_DGST = 1015
    PARAM_NOT_FOUND = 1016
    NO_SCSI_CMD = 1017
    INVALID_HOST = 1018
    XMIT_FAILED = 1019
    TCP_CONN_CLOSE = 1020
    SCSI_EH_SESSION_RST = 1021
    NOP_TIMEDOUT = 1022


class Caps(enum.IntFlag):
    """Transport capabilities (/sys/class/iscsi_transport/<t>/caps)."""
    RECOVERY_L0 = 0x1
    RECOVERY_L1 = 0x2
    RECOVERY_L2 = 0x4
    MULTI_R2T = 0x8
    HDRDGST = 0x10
    DATADGST = 0x20
    MULTI_CONN = 0x40
    TEXT_NEGO = 0x80
    MARKERS = 0x100
    FW_DB = 0x200
    SENDTARGETS_OFFLOAD = 0x400
    DATA_PATH_OFFLOAD = 0x800
    DIGEST_OFFLOAD = 0x1000
    PADDING_OFFLOAD = 0x2000
    LOGIN_OFFLOAD = 0x4000
