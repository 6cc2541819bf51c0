"""iscsikit-adm's rows that reach the kernel or the daemon: login, logout, sessions, discovery.

Login and logout go through iscsikitd (it owns sessions and their recovery);
`-m session` reads sysfs directly, as iscsiadm does, so listing works with the
daemon down; SendTargets discovery runs in the client, as in iscsiadm, and
writes the records. Output lines follow iscsiadm 2.1.8 (facts §4.3).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..proto.exitcodes import MESSAGES, ExitCode
from .adm import _Lazy

# imported on first use: listing sessions needs neither the database nor the daemon
mgmt = _Lazy("iscsikit.initiator.mgmt")
ndb = _Lazy("iscsikit.initiator.nodedb")
_client = _Lazy("iscsikit.initiator.client")
R = _Lazy("iscsikit.initiator.records")

FLASH_CREATOR = -1


def host_sysfs(env=None):
    """This host's sysfs (ISCSIKIT_SYSFS_ROOT: a fake tree, for tests). `env`: the
    command's environment (a CLI run inside the daemon has its client's, not os.environ)."""
    from ..kernel.sysfs import Sysfs
    return Sysfs((os.environ if env is None else env).get("ISCSIKIT_SYSFS_ROOT", "/sys"))


def client(ctx):
    """The daemon's client for this command (its socket from the command's environment)."""
    return _client.Client(ctx.env.get("ISCSIKIT_SOCKET"))


def _bracket(address: str) -> str:
    return address if "." in address or not address else f"[{address}]"


def _node_label(nid: ndb.NodeId) -> str:
    return f"[iface: {nid.iface}, target: {nid.target}, portal: {nid.address},{nid.port}]"


def _session_label(s) -> str:
    return f"[sid: {s.sid}, target: {s.target}, portal: {s.address},{s.port}]"


def daemon_reachable(ctx) -> bool:
    """iscsikitd accepts connections on this command's socket (nothing is sent)."""
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.settimeout(2)
        s.connect(ctx.env.get("ISCSIKIT_SOCKET") or mgmt.DEFAULT_SOCKET)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _report_failure(ctx, what: str, e: mgmt.MgmtError) -> int:
    """iscsiadm's three lines for a request the daemon refused (or could not be asked)."""
    if e.exit_code == ExitCode.ISCSID_NOTCONN:
        ctx.error("can not connect to iSCSI daemon (111)!")
    ctx.error(what)
    code = ExitCode(e.exit_code) if e.exit_code in ExitCode._value2member_map_ else ExitCode.ERR
    ctx.error(f"initiator reported error ({int(code)} - {MESSAGES[code]})")
    return code


def session_portals(env=None) -> set[tuple]:
    """(target, address, port) of every session: what a record is matched against."""
    return {(s.target, s.address, s.port) for s in host_sysfs(env).sessions(luns=False)}


def _sessions_of(ctx, nodes: list[ndb.NodeId]):
    wanted = {(n.target, n.address, n.port) for n in nodes}
    return [s for s in host_sysfs(ctx.env).sessions(luns=False) if (s.target, s.address, s.port) in wanted]


def node_login(ctx, nodes: Iterable[ndb.NodeId], existing: set[tuple] | None = None) -> int:
    """Log `nodes` in through the daemon, as iscsiadm prints it; `nodes` may be lazy
    (-L all reads records as it goes): each request leaves as soon as it is built, so
    the daemon logs in the first nodes while the next records are still being read.
    `existing`: session_portals(), when the caller has read it already."""
    existing = session_portals(ctx.env) if existing is None else existing
    todo: list = []
    rc = 0
    seen = False

    def requests():
        nonlocal rc, seen
        name = None
        for nid in nodes:
            seen = True
            if (nid.target, nid.address, nid.port) in existing:
                # iscsiadm's wording for a record whose session is already up
                ctx.error(f"{nid.iface}: 1 session requested, but 1 already present.")
                rc = rc or ExitCode.SESS_EXISTS
                continue
            try:
                record = ctx.record(nid)
            except ndb.DBError as e:
                # gone or unreadable since it was listed: reported, and the others still log
                # in (their requests may be out already; failing all here would orphan them)
                ctx.error(str(e))
                rc = rc or e.code
                continue
            todo.append(nid)
            ctx.say(f"Logging in to {_node_label(nid)}")
            if name is None:
                name = ctx.db.initiator_name()
            yield "login", R.login_request(nid, record.values, name)

    # The daemon logs nodes in concurrently; results are printed in record order once all are in.
    results = _login_all(ctx, requests(), todo)
    if not seen:
        ctx.error("No records found")
        return ExitCode.NO_OBJS_FOUND
    failed = bool(rc)
    for nid, e in zip(todo, results):
        if e is None:
            ctx.say(f"Login to {_node_label(nid)} successful.")
            continue
        # report every failure (a bare `rc or _report_failure(...)` skipped all but the first)
        code = _report_failure(ctx, f"Could not login to {_node_label(nid)}.", e)
        rc = rc or code
        failed = True
    if failed:
        ctx.error("Could not log into all portals")
    return rc


def _login_all(ctx, requests: Iterable[tuple[str, dict]], todo: list) -> list:
    """Send every login as it comes; on a terminal, keep one progress line on stderr
    (`todo` grows as the requests are built: its length is the count so far)."""
    progress = ctx.err_tty
    done = 0

    def tick(_i):
        nonlocal done
        done += 1
        if progress and len(todo) > 1:
            ctx.err.write(f"\r{done}/{len(todo)} logins done")
            ctx.err.flush()

    results = _errors(client(ctx).call_many(requests, on_done=tick))
    if progress and done and len(todo) > 1:
        ctx.err.write("\r\033[K")
    return results


def _errors(results: list) -> list:
    """call_many's results as the error or None for each request."""
    return [r if isinstance(r, mgmt.MgmtError) else None for r in results]


def _logout(ctx, sessions) -> int:
    if not sessions:
        ctx.error("No matching sessions found")
        return ExitCode.NO_OBJS_FOUND
    for s in sessions:
        ctx.say(f"Logging out of session {_session_label(s)}")
    results = dict(zip(sessions, _errors(client(ctx).call_many([("logout", {"sid": s.sid}) for s in sessions]))))
    rc = 0
    for s in sessions:
        e = results[s]
        if e is not None:
            code = _report_failure(ctx, f"Could not logout of {_session_label(s)}.", e)
            rc = rc or code
            continue
        ctx.say(f"Logout of {_session_label(s)} successful.")
    if rc:
        ctx.error("Could not logout of all requested sessions")
    return rc


def node_logout(ctx, nodes: list[ndb.NodeId]) -> int:
    return _logout(ctx, _sessions_of(ctx, nodes))


def _print_stats(ctx, sessions) -> int:
    rc = 0
    for s in sessions:
        try:
            r = client(ctx).stats(s.sid)
        except mgmt.MgmtError as e:
            code = _report_failure(ctx, f"Could not get session stats for sid {s.sid}.", e)
            rc = rc or code
            continue
        ctx.say(f"Stats for session {_session_label(s)}")
        ctx.say("iSCSI SNMP:")
        for name, value in r["stats"].items():
            ctx.say(f"\t{name}: {value}")
        ctx.say("iSCSI Extended:")
        for name, value in r["custom"]:
            ctx.say(f"\t{name}: {value}")
    return rc


def _on_node_sessions(ctx, nodes: list[ndb.NodeId], act) -> int:
    """`act(ctx, sessions)` on the sessions of these records; iscsiadm's answer when there are none."""
    sessions = _sessions_of(ctx, nodes)
    if not sessions:
        ctx.error("No session found.")
        return ExitCode.NO_OBJS_FOUND
    return act(ctx, sessions)


def node_stats(ctx, nodes: list[ndb.NodeId]) -> int:
    return _on_node_sessions(ctx, nodes, _print_stats)


def node_rescan(ctx, nodes: list[ndb.NodeId]) -> int:
    return _on_node_sessions(ctx, nodes, _rescan)


def _rescan(ctx, sessions) -> int:
    fs = host_sysfs(ctx.env)
    for s in sessions:
        ctx.say(f"Rescanning session {_session_label(s)}")
        fs.scan_host(s.host_no)
    return 0


def _select_sessions(ctx, luns: bool):
    sessions = host_sysfs(ctx.env).sessions(luns=luns)
    if ctx.sid is not None:
        sid = ctx.sid.rstrip("/").rsplit("session", 1)[-1] if "session" in ctx.sid else ctx.sid
        sessions = [s for s in sessions if str(s.sid) == sid.strip()]
    return sessions


def _attr_reader(ctx):
    fs = host_sysfs(ctx.env)

    def attr(kind: str, name: str, attr: str, default: str = "<empty>") -> str:
        return fs.attr(kind, name, attr) or default
    return attr


def _yes_no(v: str) -> str:
    return {"1": "Yes", "0": "No"}.get(v, v)


def _digest(v: str) -> str:
    return {"1": "CRC32C", "0": "None"}.get(v, v)


def _daemon_states(ctx) -> dict[int, str]:
    try:
        return {s["sid"]: s["state"] for s in client(ctx).sessions(timeout=5) if s.get("managed")}
    except mgmt.MgmtError:
        return {}


def _print_tree(ctx, sessions, level: int) -> None:
    if level >= 3:   # iscsiadm heads only the -P 3 tree with the versions
        ctx.say("iSCSI Transport Class version 2.0-870")
        ctx.say("version 2.1.8")
    states = _daemon_states(ctx)
    _attr = _attr_reader(ctx)
    for s in sorted(sessions, key=lambda x: (x.target or "", x.sid)):
        sess, conn, host = f"session{s.sid}", f"connection{s.sid}:0", f"host{s.host_no}"
        flash = "(flash)" if s.creator == FLASH_CREATOR else "(non-flash)"
        ctx.say(f"Target: {s.target} {flash}")
        cur_addr = _attr("iscsi_connection", conn, "address", s.address or "")
        cur_port = _attr("iscsi_connection", conn, "port", str(s.port))
        ctx.say(f"\tCurrent Portal: {_bracket(cur_addr)}:{cur_port},{s.tpgt}")
        ctx.say(f"\tPersistent Portal: {_bracket(s.address or '')}:{s.port},{s.tpgt}")
        ctx.say("\t\t**********\n\t\tInterface:\n\t\t**********")
        ctx.say(f"\t\tIface Name: {s.iface_name or 'default'}")
        ctx.say("\t\tIface Transport: tcp")
        ctx.say(f"\t\tIface Initiatorname: {s.initiator_name}")
        ctx.say(f"\t\tIface IPaddress: {_attr('iscsi_host', host, 'ipaddress')}")
        ctx.say(f"\t\tIface HWaddress: {_attr('iscsi_host', host, 'hwaddress', 'default')}")
        ctx.say(f"\t\tIface Netdev: {_attr('iscsi_host', host, 'netdev', 'default')}")
        ctx.say(f"\t\tSID: {s.sid}")
        managed = states.get(s.sid)
        conn_state = {"LOGGED_IN": "LOGGED IN", "RECOVERING": "FAILED", "FAILED": "FAILED",
                      "LOGGING_OUT": "IN LOGOUT"}.get(managed, "Unknown")
        ctx.say(f"\t\tiSCSI Connection State: {conn_state}")
        ctx.say(f"\t\tiSCSI Session State: {s.state}")
        ctx.say(f"\t\tInternal iscsid Session State: {'NO CHANGE' if managed else 'Unknown'}")
        if level >= 2:
            ctx.say("\t\t*********\n\t\tTimeouts:\n\t\t*********")
            ctx.say(f"\t\tRecovery Timeout: {_attr('iscsi_session', sess, 'recovery_tmo')}")
            ctx.say(f"\t\tTarget Reset Timeout: {_attr('iscsi_session', sess, 'tgt_reset_tmo')}")
            ctx.say(f"\t\tLUN Reset Timeout: {_attr('iscsi_session', sess, 'lu_reset_tmo')}")
            ctx.say(f"\t\tAbort Timeout: {_attr('iscsi_session', sess, 'abort_tmo')}")
            ctx.say("\t\t*****\n\t\tCHAP:\n\t\t*****")
            for name in ("username", "password", "username_in", "password_in"):
                value = _attr("iscsi_session", sess, name)
                if name.startswith("password") and not ctx.show_secrets:
                    value = "********"
                ctx.say(f"\t\t{name}: {value}")
            ctx.say("\t\t************************\n\t\tNegotiated iSCSI params:\n\t\t************************")
            for label, kind, name, attr, fmt in (
                ("HeaderDigest", "iscsi_connection", conn, "header_digest", _digest),
                ("DataDigest", "iscsi_connection", conn, "data_digest", _digest),
                ("MaxRecvDataSegmentLength", "iscsi_connection", conn, "max_recv_dlength", str),
                ("MaxXmitDataSegmentLength", "iscsi_connection", conn, "max_xmit_dlength", str),
                ("FirstBurstLength", "iscsi_session", sess, "first_burst_len", str),
                ("MaxBurstLength", "iscsi_session", sess, "max_burst_len", str),
                ("ImmediateData", "iscsi_session", sess, "immediate_data", _yes_no),
                ("InitialR2T", "iscsi_session", sess, "initial_r2t", _yes_no),
                ("MaxOutstandingR2T", "iscsi_session", sess, "max_outstanding_r2t", str)):
                ctx.say(f"\t\t{label}: {fmt(_attr(kind, name, attr))}")
        if level >= 3:
            ctx.say("\t\t************************\n\t\tAttached SCSI devices:\n\t\t************************")
            ctx.say(f"\t\tHost Number: {s.host_no}\tState: {_attr('scsi_host', host, 'state', 'running')}")
            for lun in s.luns:
                ctx.say(f"\t\tscsi{s.host_no} Channel 00 Id 0 Lun: {lun.lun}")
                if lun.block:
                    ctx.say(f"\t\t\tAttached scsi disk {lun.block}\t\tState: {lun.state}")


def session_mode(ctx) -> int:
    from .adm import OPS
    if ctx.op & OPS["new"] and ctx.sid is None:
        raise ctx.fail("session mode: Operation 'new' only allowed with specific session IDs")
    # the SCSI devices are walked only for the listings that print them
    sessions = _select_sessions(ctx, luns=ctx.json or (ctx.print_level or 0) >= 3)
    if not sessions:
        ctx.error("No active sessions." if ctx.sid is None else f"Could not get session info for sid {ctx.sid}")
        return ExitCode.NO_OBJS_FOUND
    if ctx.logout:
        return _logout(ctx, sessions)
    if ctx.stats:
        return _print_stats(ctx, sessions)
    if ctx.rescan:
        return _rescan(ctx, sessions)
    if ctx.json:
        import json
        ctx.say(json.dumps([{"sid": s.sid, "transport": "tcp", "target": s.target, "address": s.address,
                             "port": s.port, "tpgt": s.tpgt, "state": s.state, "host": s.host_no,
                             "disks": [l.block for l in s.luns if l.block]} for s in sessions], indent=2))
        return 0
    level = ctx.print_level or 0
    if level == 0:
        for s in sorted(sessions, key=lambda x: x.sid):
            flash = "(flash)" if s.creator == FLASH_CREATOR else "(non-flash)"
            ctx.say(f"tcp: [{s.sid}] {_bracket(s.address or '')}:{s.port},{s.tpgt} {s.target} {flash}")
        return 0
    _print_tree(ctx, sessions, level)
    return 0


def discovery_run(ctx, dtype: str, address: str, port: int) -> int:
    """SendTargets in the client, as iscsiadm: print the portals and (re)write their records."""
    from ..initiator import login_io
    if dtype != "sendtargets":
        ctx.error(f"discovery type {dtype} is not supported yet")
        return ExitCode.OP_NOT_SUPP
    try:
        found = login_io.discover((address, port), initiator_name=ctx.db.initiator_name())
    except login_io.LoginError as e:
        ctx.error(f"cannot make connection to {address}: {e.message}")
        ctx.error("connection login retries (reopen_max) 5 exceeded")
        ctx.error("Could not perform SendTargets discovery: " + MESSAGES[e.exit_code].rstrip("."))
        return e.exit_code
    from ..initiator import discovery
    discovery.record(ctx.db, address, port, found, ctx.ifaces or None)
    for t in found:
        for p in t.portals:
            ctx.say(f"{ndb.format_portal(p.host, p.port)},{p.tpgt} {t.name}")
    return 0
