"""Run in the guest: exercise NETLINK_ISCSI without a target, print what happened as JSON."""

import json
import os

from iscsikit.kernel import kmod
from iscsikit.kernel.constants import Param
from iscsikit.kernel.netlink import IscsiNetlink, KernelError
from iscsikit.kernel.sysfs import Sysfs

out = {"kmod_via": kmod.load("iscsi_tcp")}
sysfs = Sysfs()
tcp = sysfs.transport("tcp")
out["caps"] = tcp.caps
nl = IscsiNetlink()
sid, host_no = nl.create_session(tcp.handle, initial_cmdsn=1, cmds_max=128, queue_depth=32)
out["sid"], out["host_no"] = sid, host_no
out["sysfs_sessions_after_create"] = sysfs.session_ids()
out["host_of"] = sysfs.host_of(sid)
out["creator"] = sysfs.session(sid).creator
cid = nl.create_conn(tcp.handle, sid, 0)
out["cid"] = cid
out["conn_dir"] = os.path.isdir(f"/sys/class/iscsi_connection/connection{sid}:0")
# SET_PARAM before bind must be refused with ENOTCONN (the kernel's rule), recovery tmo is the exception
try:
    nl.set_param(tcp.handle, sid, cid, Param.TARGET_NAME, "iqn.2026-11.org.example:x")
    out["set_before_bind"] = "accepted"
except KernelError as e:
    out["set_before_bind"] = e.errno
nl.set_param(tcp.handle, sid, cid, Param.SESS_RECOVERY_TMO, 17)
out["recovery_tmo"] = open(f"/sys/class/iscsi_session/session{sid}/recovery_tmo").read().strip()
# one datagram, three SET_PARAMs: the kernel answers each in order; a refusal does not stop the rest
refused = nl.set_params(tcp.handle, sid, cid, [(Param.SESS_RECOVERY_TMO, 23), (Param.TARGET_NAME, "iqn.2026-11.org.example:x"),
                                                (Param.SESS_RECOVERY_TMO, 29)])
out["batch_refused"] = [(int(p), e.errno) for p, e in refused]
out["batch_recovery_tmo"] = open(f"/sys/class/iscsi_session/session{sid}/recovery_tmo").read().strip()
# bind with an fd that is not a socket: the driver's retcode
try:
    fd = os.open("/dev/null", os.O_RDONLY)
    nl.bind_conn(tcp.handle, sid, cid, fd)
    out["bind_bad_fd"] = "accepted"
except KernelError as e:
    out["bind_bad_fd"] = e.errno
# destroying a session that still has a connection is refused with EBUSY
try:
    nl.destroy_session(tcp.handle, sid)
    out["destroy_busy"] = "accepted"
except KernelError as e:
    out["destroy_busy"] = e.errno
nl.destroy_conn(tcp.handle, sid, cid)
nl.destroy_session(tcp.handle, sid)
out["sysfs_sessions_after_destroy"] = sysfs.session_ids()
try:
    nl.destroy_session(tcp.handle, 999999)
except KernelError as e:
    out["destroy_unknown"] = e.errno
# the CREATE_SESSION event (106) reaches the group while the reply is awaited; it is set aside
events = []
while (ev := nl.next_event(0.5)) is not None:
    events.append((ev.name, ev.fields))
out["events"] = events
print(json.dumps(out))
