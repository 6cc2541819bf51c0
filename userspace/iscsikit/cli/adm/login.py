"""The rows that reach iscsikitd: login, logout, stats, rescan, and the labels and failure
lines iscsiadm prints for them. Login and logout go through the daemon's client (it owns
sessions and their recovery); the session lists come from sysfs, as iscsiadm reads them."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ...initiator.exitcodes import MESSAGES, ExitCode
from . import messages as msg
from .context import _Lazy

# imported on first use: listing sessions needs neither the database nor the daemon
mgmt = _Lazy("iscsikit.initiator.mgmt")
ndb = _Lazy("iscsikit.initiator.nodedb")
_client = _Lazy("iscsikit.initiator.client")
R = _Lazy("iscsikit.initiator.records")

FLASH_CREATOR = -1


def host_sysfs(env=None):
    """This host's sysfs (ISCSIKIT_SYSFS_ROOT: a fake tree, for tests). `env`: the
    command's environment (a CLI run inside the daemon has its client's, not os.environ)."""
    from ...kernel.sysfs import Sysfs
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
    return client(ctx).reachable()


def _report_failure(ctx, what: str, e: mgmt.MgmtError) -> int:
    """iscsiadm's three lines for a request the daemon refused (or could not be asked)."""
    if e.exit_code == ExitCode.ISCSID_NOTCONN:
        ctx.error(msg.DAEMON_DOWN)
    ctx.error(what)
    code = ExitCode(e.exit_code) if e.exit_code in ExitCode._value2member_map_ else ExitCode.ERR
    ctx.error(f"initiator reported error ({int(code)} - {MESSAGES[code]})")
    if e.exit_code != ExitCode.ISCSID_NOTCONN and str(e):
        # one line more than iscsiadm prints (its lines stay as they are): the daemon's reason
        ctx.error(f"reason: {e}")
    return code


def session_key(s) -> tuple:
    """What a session is matched to a record by: target, portal and iface, as iscsiadm's
    __iscsi_match_session does, so a second iface to one portal is a second path."""
    return (s.target, s.address, s.port, s.iface_name or R.DEFAULT_IFACE)


def node_key(nid) -> tuple:
    return (nid.target, nid.address, nid.port, nid.iface)


def session_portals(env=None) -> set[tuple]:
    """(target, address, port) of every session, whatever its iface."""
    return {(s.target, s.address, s.port) for s in host_sysfs(env).session_refs()}


def session_counts(env=None) -> dict[tuple, int]:
    """How many sessions there are per session_key(): what a record is matched against."""
    counts: dict[tuple, int] = {}
    for s in host_sysfs(env).session_refs():
        counts[session_key(s)] = counts.get(session_key(s), 0) + 1
    return counts


def _sessions_of(ctx, nodes: list[ndb.NodeId], skip=None):
    """The sessions (sysfs.SessionRef) of these records. `skip(ctx, nid)`: leave out a
    session whose record it is true of; it is asked only of records that have a session,
    so `-U all` reads no record without one."""
    wanted: dict[tuple, list] = {}
    for n in nodes:
        wanted.setdefault(node_key(n), []).append(n)
    return [s for s in host_sysfs(ctx.env).session_refs() if session_key(s) in wanted
            and not (skip and any(skip(ctx, n) for n in wanted[session_key(s)]))]


def node_login(ctx, nodes: Iterable[ndb.NodeId], existing: dict[tuple, int] | None = None,
               summary: bool = True, multiple: bool = False) -> int:
    """Log `nodes` in through the daemon, as iscsiadm prints it; `nodes` may be lazy
    (-L all reads records as it goes): each request leaves as soon as it is built, so
    the daemon logs in the first nodes while the next records are still being read.
    `existing`: session_counts(), when the caller has read it already. `summary`: end a
    failure with "Could not log into all portals" (node mode's login_portals does; the logins
    after a discovery or from firmware do not). Each record gets the sessions its
    node.session.nr_sessions asks for that are not up yet (iscsiadm's iscsi_login_portal);
    `multiple` (-m session -r SID --op new) adds one more regardless."""
    existing = session_counts(ctx.env) if existing is None else existing
    todo: list = []
    rc = 0
    seen = False

    def requests():
        nonlocal rc, seen
        name = None
        for nid in nodes:
            seen = True
            have = existing.get(node_key(nid), 0)
            if have and not multiple and not _wants_more(ctx, nid, have):
                # iscsiadm's wording for a record whose sessions are already up
                want = _nr_sessions(ctx, nid)
                ctx.error(f"{nid.iface}: {want} session{'' if want == 1 else 's'} requested, "
                          f"but {have} already present.")
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
            want = R.nr_sessions(record.values)
            count = 1 if multiple else want - have
            several = multiple or want > 1
            if name is None:
                name = ctx.db.initiator_name()
            request = R.login_request(nid, record.values, name)
            if several:
                request["multiple"] = True
            if ctx.no_wait:
                request["wait"] = False     # -W: iscsiadm returns once the requests are sent
            for _ in range(count):
                todo.append(nid)
                ctx.say(f"Logging in to {_node_label(nid)}{' (multiple)' if several else ''}")
                yield "login", dict(request)

    # The daemon logs nodes in concurrently; results are printed in record order once all are in.
    results = _login_all(ctx, requests(), todo)
    if not seen:
        ctx.error(msg.NO_RECORDS)
        return ExitCode.NO_OBJS_FOUND
    failed = bool(rc)
    for nid, r in zip(todo, results):
        if not isinstance(r, mgmt.MgmtError):
            if not ctx.no_wait:   # -W: no result to report (iscsi_login_portal_nowait)
                ctx.say(f"Login to {_node_label(nid)} successful.")
            scan = r.get("scan", "done") if isinstance(r, dict) else "done"
            if scan != "done":
                # logged in, but its disks are not (yet) there: say so, the exit code stays 0
                ctx.error(f"session {r['sid']}: SCSI scan {scan}; its devices may appear later")
            continue
        e = r
        # report every failure (a bare `rc or _report_failure(...)` skipped all but the first)
        code = _report_failure(ctx, f"Could not login to {_node_label(nid)}.", e)
        rc = rc or code
        failed = True
    if failed and summary:
        ctx.error("Could not log into all portals")
    return rc


def _nr_sessions(ctx, nid) -> int:
    try:
        return R.nr_sessions(ctx.record(nid).values)
    except ndb.DBError:
        return 1


def _wants_more(ctx, nid, have: int) -> bool:
    """A record with sessions up asks for more (node.session.nr_sessions above `have`)."""
    return _nr_sessions(ctx, nid) > have


def _login_all(ctx, requests: Iterable[tuple[str, dict]], todo: list) -> list:
    """Send every login as it comes; on a terminal, keep one progress line on stderr
    (`todo` grows as the requests are built: its length is the count so far). Each
    result is the daemon's reply or the MgmtError it answered with."""
    progress = ctx.err_tty
    done = 0

    def tick(_i):
        nonlocal done
        done += 1
        if progress and len(todo) > 1:
            ctx.err.write(f"\r{done}/{len(todo)} logins done")
            ctx.err.flush()

    results = client(ctx).call_many(requests, on_done=tick)
    if progress and done and len(todo) > 1:
        ctx.err.write("\r\033[K")
    return results


def _errors(results: list) -> list:
    """call_many's results as the error or None for each request."""
    return [r if isinstance(r, mgmt.MgmtError) else None for r in results]


def _logout(ctx, sessions) -> int:
    if not sessions:
        ctx.error(msg.NO_MATCHING_SESSIONS)
        return ExitCode.NO_OBJS_FOUND
    for s in sessions:
        ctx.say(f"Logging out of session {_session_label(s)}")
    busy = _in_use(ctx, sessions)
    todo = [s for s in sessions if s not in busy]
    results = dict(zip(todo, _errors(client(ctx).call_many([("logout", {"sid": s.sid}) for s in todo]))))
    results.update(busy)
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


def _in_use(ctx, sessions) -> dict:
    """iscsid.safe_logout = Yes: the sessions whose disks are mounted or in use, each with
    the refusal iscsid answers (28; usr/initiator.c session_logout_task)."""
    if (ctx.db.iscsid_conf().get("iscsid.safe_logout") or "No") != "Yes":
        return {}
    fs = host_sysfs(ctx.env)
    busy = {}
    for s in sessions:
        if fs.session_in_use(s.sid, ctx.env.get("ISCSIKIT_PROC_ROOT", "/proc")):
            busy[s] = mgmt.MgmtError(ExitCode.BUSY, f"Session {s.sid} is actively in use for mounted storage, "
                                     "and iscsid.safe_logout is configured.")
    return busy


def node_logout(ctx, nodes: list[ndb.NodeId], skip=None) -> int:
    """Log out the sessions of `nodes` (but those whose record `skip` is true of)."""
    return _logout(ctx, _sessions_of(ctx, nodes, skip))


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
        ctx.error(msg.NO_SESSION)
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
        fs.scan_host(fs.host_of(s.sid))
    return 0


def daemon_down(ctx) -> int:
    """iscsiadm's answer when the mgmt socket refuses the connection."""
    ctx.error(msg.DAEMON_DOWN)
    return ExitCode.ISCSID_NOTCONN


def kill_daemon(ctx) -> int:
    """`-k 0`: iscsiadm asks iscsid to stop (its sessions stay in the kernel; the next
    iscsikitd adopts them), and exits 0 even when no daemon was there to ask."""
    try:
        client(ctx).stop()
        return 0
    except mgmt.MgmtError as e:
        if e.exit_code != ExitCode.ISCSID_NOTCONN:
            ctx.error(f"initiator reported error ({e.exit_code} - {e})")
            return 0
    code = daemon_down(ctx)
    ctx.error(f"initiator reported error ({int(code)} - {MESSAGES[ExitCode(code)]})")
    ctx.error("Could not stop iscsid. Trying sending iscsid SIGTERM or SIGKILL signals manually")
    return 0
