"""`-m session`: sessions read from sysfs, as iscsiadm does (listing works with the daemon down),
printed in iscsiadm 2.1.8's shapes (-P 0..3, and --json)."""

from __future__ import annotations

import os

from ...initiator.exitcodes import ExitCode
from . import messages as msg
from .context import OPS
from .login import (FLASH_CREATOR, _bracket, _logout, _print_stats, _rescan, client, host_sysfs, mgmt,
                    ndb, node_login)


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
        return {s["sid"]: s["state"] for s in client(ctx).sessions(timeout=5, devices=False) if s.get("managed")}
    except mgmt.MgmtError:
        return {}


# what a tree shows (open-iscsi's session_info.h SESSION_INFO_* flags)
IFACE, STATE, TIMEOUTS, AUTH, PARAMS, DEVICES, HOST_DEVS = 1, 2, 4, 8, 16, 32, 64
SESSION_LEVELS = {1: IFACE | STATE, 2: IFACE | STATE | TIMEOUTS | AUTH | PARAMS,
                  3: IFACE | STATE | TIMEOUTS | AUTH | PARAMS | DEVICES | HOST_DEVS}


def versions(ctx) -> None:
    ctx.say("iSCSI Transport Class version 2.0-870")
    ctx.say("version 2.1.8")


def _print_tree(ctx, sessions, level: int) -> None:
    if level >= 3:   # iscsiadm heads only the -P 3 tree with the versions
        versions(ctx)
    print_tree(ctx, sorted(sessions, key=lambda x: (x.target or "", x.sid)), SESSION_LEVELS[min(level, 3)])


def print_tree(ctx, sessions, flags: int, prefix: str = "") -> None:
    """open-iscsi's session_info_print_tree: the parts `flags` names, each line after `prefix`
    (`-m host -P 2..4` prints its host's sessions one tab in)."""
    states = _daemon_states(ctx)
    _attr = _attr_reader(ctx)

    def say(text: str) -> None:
        for line in text.split("\n"):
            ctx.say(prefix + line)
    for s in sessions:
        sess, conn, host = f"session{s.sid}", f"connection{s.sid}:0", f"host{s.host_no}"
        flash = "(flash)" if s.creator == FLASH_CREATOR else "(non-flash)"
        say(f"Target: {s.target} {flash}")
        cur_addr = _attr("iscsi_connection", conn, "address", s.address or "")
        cur_port = _attr("iscsi_connection", conn, "port", str(s.port))
        say(f"\tCurrent Portal: {_bracket(cur_addr)}:{cur_port},{s.tpgt}")
        say(f"\tPersistent Portal: {_bracket(s.address or '')}:{s.port},{s.tpgt}")
        if flags & IFACE:
            say("\t\t**********\n\t\tInterface:\n\t\t**********")
            say(f"\t\tIface Name: {s.iface_name or 'default'}")
            say(f"\t\tIface Transport: {s.transport}")
            say(f"\t\tIface Initiatorname: {s.initiator_name}")
            # a host whose transport has no ipaddress attribute (ib_iser) is "[default]" in iscsiadm;
            # open-iscsi brackets an IPv6 iface address too (usr/iface.c iface_print)
            has_ip = os.path.exists(host_sysfs(ctx.env).path("class", "iscsi_host", host, "ipaddress"))
            ip = (_bracket(_attr('iscsi_host', host, 'ipaddress', '')) or '<empty>') if has_ip else '[default]'
            say(f"\t\tIface IPaddress: {ip}")
            say(f"\t\tIface HWaddress: {_attr('iscsi_host', host, 'hwaddress', 'default')}")
            say(f"\t\tIface Netdev: {_attr('iscsi_host', host, 'netdev', 'default')}")
        if flags & STATE:
            say(f"\t\tSID: {s.sid}")
            conn_state, internal = _states(states.get(s.sid))
            say(f"\t\tiSCSI Connection State: {conn_state}")
            say(f"\t\tiSCSI Session State: {s.state}")
            say(f"\t\tInternal iscsid Session State: {internal}")
        if flags & TIMEOUTS:
            say("\t\t*********\n\t\tTimeouts:\n\t\t*********")
            say(f"\t\tRecovery Timeout: {_attr('iscsi_session', sess, 'recovery_tmo')}")
            say(f"\t\tTarget Reset Timeout: {_attr('iscsi_session', sess, 'tgt_reset_tmo')}")
            say(f"\t\tLUN Reset Timeout: {_attr('iscsi_session', sess, 'lu_reset_tmo')}")
            say(f"\t\tAbort Timeout: {_attr('iscsi_session', sess, 'abort_tmo')}")
        if flags & AUTH:
            say("\t\t*****\n\t\tCHAP:\n\t\t*****")
            for name in ("username", "password", "username_in", "password_in"):
                value = _attr("iscsi_session", sess, name)
                if name.startswith("password") and not ctx.show_secrets:
                    value = "********"
                say(f"\t\t{name}: {value}")
        if flags & PARAMS:
            say("\t\t************************\n\t\tNegotiated iSCSI params:\n\t\t************************")
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
                say(f"\t\t{label}: {fmt(_attr(kind, name, attr))}")
        if flags & DEVICES:
            say("\t\t************************\n\t\tAttached SCSI devices:\n\t\t************************")
            if flags & HOST_DEVS:   # -m session -P 3 heads the devices with their host; -m host -P 4 not
                say(f"\t\tHost Number: {s.host_no}\tState: {_attr('scsi_host', host, 'state', 'running')}")
            for lun in s.luns:
                say(f"\t\tscsi{s.host_no} Channel 00 Id 0 Lun: {lun.lun}")
                if lun.block:
                    say(f"\t\t\tAttached scsi disk {lun.block}\t\tState: {lun.state}")


def _session_record(ctx, sessions) -> int:
    """`-r SID` with -o show|update or -S: iscsiadm drops to node mode with the record of
    the session's target, portal and iface (exec_node_op)."""
    s = sessions[0]
    nids = ctx.db.find_nodes(s.target, s.address, s.port, s.iface_name or "default")
    if ctx.op & OPS["update"]:
        from .node import update_records
        return update_records(ctx, nids)
    if not nids:
        ctx.error(msg.NO_RECORDS)
        return ExitCode.NO_OBJS_FOUND
    for nid in nids:
        node = ctx.db.read_node(nid)
        for line in node.lines(show_secrets=ctx.show_secrets):
            ctx.say(line)
    return 0


def _new_session(ctx, s) -> int:
    """`-m session -r SID --op new`: one more session like SID, from SID's node record (iscsiadm
    rebuilds the record from the session with idbm_create_rec and logs it in "(multiple)")."""
    iface = s.iface_name or "default"
    nids = [n for n in ctx.db.find_nodes(s.target, s.address, s.port, iface) if n.tpgt in (s.tpgt, -1)]
    if not nids:
        ctx.error(f"no record for session {s.sid} [target: {s.target}, portal: {s.address},{s.port}, "
                  f"iface: {iface}]")
        return ExitCode.NO_OBJS_FOUND
    return node_login(ctx, nids[:1], multiple=True)


def _states(managed: str | None) -> tuple[str, str]:
    """iscsiadm's "iSCSI Connection State" and "Internal iscsid Session State" for a daemon
    state (usr/iscsi_sysfs.c conn state names; usr/initiator.h r_stage names)."""
    return {"LOGGED_IN": ("LOGGED IN", "NO CHANGE"), "RECOVERING": ("TRANSPORT WAIT", "REOPEN"),
            "FAILED": ("FAILED", "CLEANUP"), "LOGGING_OUT": ("IN LOGOUT", "NO CHANGE"),
            "LOGGING_IN": ("IN LOGIN", "NO CHANGE")}.get(
                managed, ("Unknown", "Unknown"))


def session_mode(ctx) -> int:
    if ctx.op & OPS["new"] and ctx.sid is None:
        raise ctx.fail("session mode: Operation 'new' only allowed with specific session IDs")
    # the SCSI devices are walked only for the listings that print them
    sessions = _select_sessions(ctx, luns=ctx.json or (ctx.print_level or 0) >= 3)
    if not sessions:
        if ctx.sid is not None:
            ctx.error(f"Could not get session info for sid {ctx.sid}")
        elif ctx.logout:
            ctx.error(msg.NO_MATCHING_SESSIONS)
        elif ctx.rescan or ctx.stats:
            ctx.error(msg.NO_SESSION)       # for_each_session's answer
        else:
            ctx.error(msg.NO_ACTIVE_SESSIONS)
        return ExitCode.NO_OBJS_FOUND
    if ctx.op & OPS["new"]:
        return _new_session(ctx, sessions[0])
    if ctx.logout:
        return _logout(ctx, sessions)
    if ctx.stats:
        return _print_stats(ctx, sessions)
    if ctx.rescan:
        return _rescan(ctx, sessions)
    if ctx.sid is not None and not ctx.json and (ctx.op & (OPS["show"] | OPS["update"])
                                or (ctx.op == 0 and (ctx.print_level is None or ctx.print_level <= 0))):
        # iscsiadm prints a session's tree only for -P 1..3; otherwise it runs node ops on its record
        return _session_record(ctx, sessions)
    if ctx.json:
        import json
        ctx.say(json.dumps([{"sid": s.sid, "transport": s.transport, "target": s.target, "address": s.address,
                             "port": s.port, "tpgt": s.tpgt, "state": s.state, "host": s.host_no,
                             "disks": [l.block for l in s.luns if l.block]} for s in sessions], indent=2))
        return 0
    level = ctx.print_level or 0
    if level == 0:
        for s in sorted(sessions, key=lambda x: x.sid):
            flash = "(flash)" if s.creator == FLASH_CREATOR else "(non-flash)"
            ctx.say(f"{s.transport}: [{s.sid}] {_bracket(s.address or '')}:{s.port},{s.tpgt} {s.target} {flash}")
        return 0
    _print_tree(ctx, sessions, level)
    return 0
