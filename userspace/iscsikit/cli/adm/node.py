"""`-m node`: the node records (list, show, new, update, delete) and the logins,
logouts, rescans and stats of the sessions they name."""

from __future__ import annotations

from collections.abc import Iterator

from ...initiator.exitcodes import MESSAGES, ExitCode
from . import login
from . import messages as msg
from .context import OPS, R, Ctx, ndb


def _no(ctx: Ctx, message: str) -> int:
    ctx.error(message)
    return ExitCode.NO_OBJS_FOUND


# -- node mode ------------------------------------------------------------------------
def _node_line(nid: ndb.NodeId) -> str:
    # iscsiadm prints the tpgt unsigned in this listing: -1 shows as 4294967295
    return f"{ndb.format_portal(nid.address, nid.port)},{nid.tpgt & 0xFFFFFFFF} {nid.target}"


def _node_tree(ctx: Ctx, ids: list[ndb.NodeId]) -> None:
    last_target, last_portal = None, None
    for nid in ids:
        if nid.target != last_target:
            ctx.say(f"Target: {nid.target}")
            last_target, last_portal = nid.target, None
        portal = (nid.address, nid.port, nid.tpgt)
        if portal != last_portal:
            ctx.say(f"\tPortal: {ndb.format_portal(nid.address, nid.port)},{nid.tpgt}")
            last_portal = portal
        ctx.say(f"\t\tIface Name: {nid.iface}")


def _node_json(nid: ndb.NodeId) -> dict:
    return {"target": nid.target, "address": nid.address, "port": nid.port,
            "tpgt": nid.tpgt, "iface": nid.iface}


def _sorted(ids: list[ndb.NodeId]) -> list[ndb.NodeId]:
    return sorted(ids, key=lambda n: (n.target.encode(), n.address.encode(), n.port, n.tpgt,
                                      n.iface.encode()))


def _check_iface_names(ctx: Ctx) -> None:
    for name in ctx.ifaces:
        if not ctx.db.iface_exists(name):
            raise ctx.fail(f"Could not read iface info for {name}.", ExitCode.NOMEM)


def mode_node(ctx: Ctx) -> int:
    if ctx.print_level is not None and ctx.print_level not in (0, 1):
        raise ctx.fail(f"Invalid info level {ctx.print_level}. Try 0 or 1.")
    address, port, tpgt = ctx.portal_parts()
    _check_iface_names(ctx)
    iface = ctx.ifaces[0] if ctx.ifaces else None
    selected = bool(ctx.target or ctx.portal or ctx.ifaces)

    def matching() -> list[ndb.NodeId]:
        return ctx.db.find_nodes(ctx.target, address, port, iface)

    if ctx.login or ctx.loginall is not None:
        # -L reads the records lazily: each login is sent while the next record is read
        nodes = matching() if ctx.login else _loginall_nodes(ctx, ctx.loginall, unreadable=True)
        return login.node_login(ctx, nodes)
    if ctx.logout or ctx.logoutall is not None:
        # -U manual/automatic/onboot logs out only the sessions of records with that startup
        # value (iscsikit-login.service's stop must leave manual sessions alone); -U all, all.
        # Never a boot disk's: a record with startup onboot or from the firmware is skipped
        # ("if the user killed this on boot they would not be able to do anything", usr/
        # iscsiadm.c __logout_by_startup), so -U onboot logs out nothing, as there
        if ctx.logout:
            return login.node_logout(ctx, matching())
        nodes = ctx.db.node_ids() if ctx.logoutall == "all" else list(_loginall_nodes(ctx, ctx.logoutall))
        return login.node_logout(ctx, nodes, skip=_boot_record)
    if ctx.rescan:
        return login.node_rescan(ctx, matching())
    if ctx.stats:
        return login.node_stats(ctx, matching())

    op = ctx.op
    if op not in (0, OPS["new"], OPS["delete"], OPS["update"], OPS["show"]):
        raise ctx.fail("operation is not supported.")
    if op == 0 and not selected:
        ids = _sorted(ctx.db.node_ids())
        if not ids:
            return _no(ctx, msg.NO_RECORDS)
        if ctx.json:
            ctx.dump_json([_node_json(n) for n in ids])
        elif ctx.print_level == 1:
            _node_tree(ctx, ids)
        else:
            for nid in ids:
                ctx.say(_node_line(nid))
        return 0
    if op in (0, OPS["show"]):
        ids = _sorted(matching())
        if not ids:
            return _no(ctx, msg.NO_RECORDS)
        nodes = [ctx.db.read_node(n) for n in ids]
        if ctx.json:
            ctx.dump_json([R.as_json(n.fields, n.values, ctx.show_secrets) for n in nodes])
        else:
            for node in nodes:
                for line in node.lines(show_secrets=ctx.show_secrets):
                    ctx.say(line)
        return 0
    if op == OPS["new"]:
        return _node_new(ctx, address, port, tpgt)
    if op == OPS["update"]:
        return update_records(ctx, matching())
    ids = matching()
    if not ids:
        return _no(ctx, msg.NO_RECORDS)
    live = login.session_counts(ctx.env)
    rc = 0
    for nid in ids:
        if login.node_key(nid) in live:
            # refused, as iscsiadm does (its man page promises a logout, its code refuses)
            ctx.error(f"This command will remove the record [iface: {nid.iface}, target: {nid.target}, "
                      f"portal: {nid.address},{nid.port}], but a session is using it. Logout session then "
                      "rerun command to remove record.")
            rc = rc or ExitCode.SESS_EXISTS
            continue
        ctx.db.delete_node(nid)
    if rc:
        ctx.error(f"Could not execute operation on all records: {MESSAGES[ExitCode(rc)]}")
    return rc


def update_records(ctx: Ctx, ids: list[ndb.NodeId]) -> int:
    """-o update with the -n/-v pairs on records `ids` (node mode, and session mode's -r SID)."""
    pairs = ctx.pairs()
    if not pairs:
        raise ctx.fail(msg.UPDATE_NEEDS_PAIRS)
    if not ids:
        return _no(ctx, msg.NO_RECORDS)
    rc = 0
    for nid in ids:
        try:
            for warning in ctx.db.update_node(nid, pairs):
                ctx.error(warning)
        except R.RecordError as e:
            for line in e.lines:
                ctx.error(line)
            if not e.summary:
                return e.code
            rc = rc or e.code
    if rc:
        ctx.error(f"Could not execute operation on all records: {MESSAGES[ExitCode(rc)]}")
    return rc


def _boot_record(ctx: Ctx, nid: ndb.NodeId) -> bool:
    try:
        rec = ctx.record(nid)
    except ndb.DBError:
        return False
    return rec["node.startup"] == "onboot" or rec["node.discovery_type"] == "fw"


def _loginall_nodes(ctx: Ctx, which: str, unreadable: bool = False) -> Iterator[ndb.NodeId]:
    """The records whose node.startup `which` selects, read as the caller iterates.

    `unreadable`: also yield a record that cannot be read (gone since it was listed),
    for a caller that reads it again and reports it; otherwise the read error stops all."""
    wanted = {"all": ("manual", "automatic"), "manual": ("manual",),
              "automatic": ("automatic",), "onboot": ("onboot",)}.get(which)
    if wanted is None:
        raise ctx.fail(f"Invalid loginall option {which}.")

    def selected(nid: ndb.NodeId) -> bool:
        try:
            return ctx.record(nid)["node.startup"] in wanted
        except ndb.DBError:
            if unreadable:
                return True
            raise
    return (n for n in ctx.db.node_ids() if selected(n))


def _node_new(ctx: Ctx, address, port, tpgt) -> int:
    # iscsiadm 2.1.8 asks iscsid about the transport's host while it sets up the new
    # record's iface, when the transport is loaded, and says so when iscsid is down (the
    # guest's differential transcript; on a host without iscsi_tcp it is silent); it adds
    # the record all the same
    if login.host_sysfs(ctx.env).transport("tcp") is not None and not login.daemon_reachable(ctx):
        ctx.error(msg.DAEMON_DOWN)
    ifaces = ctx.ifaces or [R.DEFAULT_IFACE]
    if ctx.target and address is not None:
        wanted = [(ctx.target, address, port if port is not None else ndb.DEFAULT_PORT,
                   tpgt if tpgt is not None else ndb.UNKNOWN_TPGT)]
    else:
        # without both -T and -p, iscsiadm re-creates every matching record
        wanted = [(n.target, n.address, n.port, n.tpgt)
                  for n in ctx.db.find_nodes(ctx.target, address, port)]
        if not wanted:
            ctx.error("Error while adding record: ")
            return 0
    for target, addr, prt, tp in wanted:
        for name in ifaces:
            node = ctx.db.create_node(ndb.NodeId(target, addr, prt, tp, name))
            v = node.values
            ctx.say(f"New iSCSI node [{v['iface.transport_name']}:[hw={v['iface.hwaddress']},"
                    f"ip={v['iface.ipaddress']},net_if={v['iface.net_ifacename']},"
                    f"iscsi_if={name}] {addr},{prt},{tp} {target}] added")
    return 0
