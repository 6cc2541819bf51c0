"""open-iscsi's exit codes (include/iscsi_err.h; open-iscsi-facts.md §4.4).

Programs that drive iscsiadm (os-brick, CSI drivers, libvirt) branch on these
numbers, so login outcomes are reported with them.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    ERR = 1
    SESS_NOT_FOUND = 2
    NOMEM = 3
    TRANS = 4
    LOGIN = 5
    IDBM = 6
    INVAL = 7
    TRANS_TIMEOUT = 8
    INTERNAL = 9
    LOGOUT = 10
    PDU_TIMEOUT = 11
    TRANS_NOT_FOUND = 12
    ACCESS = 13
    TRANS_CAPS = 14
    SESS_EXISTS = 15
    INVALID_MGMT_REQ = 16
    ISNS_UNAVAILABLE = 17
    ISCSID_COMM_ERR = 18
    FATAL_LOGIN = 19
    ISCSID_NOTCONN = 20
    NO_OBJS_FOUND = 21
    SYSFS_LOOKUP = 22
    HOST_NOT_FOUND = 23
    LOGIN_AUTH_FAILED = 24
    ISNS_QUERY = 25
    ISNS_REG_FAILED = 26
    OP_NOT_SUPP = 27
    BUSY = 28
    AGAIN = 29
    UNKNOWN_DISCOVERY_TYPE = 30
    CHILD_TERMINATED = 31
    SESSION_NOT_CONNECTED = 32
    REQ_TIMEDOUT = 33


MESSAGES: dict[ExitCode, str] = {
    ExitCode.SUCCESS: "",
    ExitCode.ERR: "unknown error",
    ExitCode.SESS_NOT_FOUND: "session not found",
    ExitCode.NOMEM: "no available memory",
    ExitCode.TRANS: "encountered connection failure",
    ExitCode.LOGIN: "encountered iSCSI login failure",
    ExitCode.IDBM: "encountered iSCSI database failure",
    ExitCode.INVAL: "invalid parameter",
    ExitCode.TRANS_TIMEOUT: "connection timed out",
    ExitCode.INTERNAL: "internal error",
    ExitCode.LOGOUT: "encountered iSCSI logout failure",
    ExitCode.PDU_TIMEOUT: "iSCSI PDU timed out",
    ExitCode.TRANS_NOT_FOUND: "iSCSI driver not found. Please make sure it is loaded, and retry the operation",
    ExitCode.ACCESS: "daemon access denied",
    ExitCode.TRANS_CAPS: "iSCSI driver does not support requested capability.",
    ExitCode.SESS_EXISTS: "session exists",
    ExitCode.INVALID_MGMT_REQ: "Unknown request",
    ExitCode.ISNS_UNAVAILABLE: "iSNS service not supported",
    ExitCode.ISCSID_COMM_ERR: "could not communicate to iscsid",
    ExitCode.FATAL_LOGIN: "encountered non-retryable iSCSI login failure",
    ExitCode.ISCSID_NOTCONN: "could not connect to iscsid",
    ExitCode.NO_OBJS_FOUND: "no objects found",
    ExitCode.SYSFS_LOOKUP: "sysfs lookup failure",
    ExitCode.HOST_NOT_FOUND: "host not found",
    ExitCode.LOGIN_AUTH_FAILED: "iSCSI login failed due to authorization failure",
    ExitCode.ISNS_QUERY: "iSNS query failed",
    ExitCode.ISNS_REG_FAILED: "iSNS registration failed",
    ExitCode.OP_NOT_SUPP: "operation not supported",
    ExitCode.BUSY: "device or resource in use",
    ExitCode.AGAIN: "operation failed but retry may succeed",
    ExitCode.UNKNOWN_DISCOVERY_TYPE: "unknown discovery type",
    ExitCode.CHILD_TERMINATED: "child process terminated",
    ExitCode.SESSION_NOT_CONNECTED: "iSCSI session not connected",
    ExitCode.REQ_TIMEDOUT: "iscsid request timed out",
}
