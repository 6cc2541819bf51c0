"""`-m iface`: the iface records (open-iscsi's ifaces/ directory and its built-in ifaces)."""

from __future__ import annotations

from ...initiator.exitcodes import MESSAGES, ExitCode
from .context import OPS, R, Ctx, ndb
from .node import _sorted


def _iface_line(rec: ndb.Record) -> str:
    v = {k: (x or R.EMPTY) for k, x in rec.values.items()}
    return (f"{rec['iface.iscsi_ifacename']} {v['iface.transport_name']},{v['iface.hwaddress']},"
            f"{v['iface.ipaddress']},{v['iface.net_ifacename']},{v['iface.initiatorname']}")


# transports iscsikit drives: software ones, with no network settings of their own (the
# iface's iface.ipaddress etc. configure an offload card's port; iscsi_tcp has none)
_SOFTWARE = ("tcp", "iser")


def _net_param_count(recs) -> int:
    """iface_get_param_count: the network settings these ifaces would send the kernel."""
    return sum(1 for r in recs if (r["iface.transport_name"] or "tcp") not in _SOFTWARE)


def _apply(ctx: Ctx, name: str | None) -> int:
    if name is None:
        raise ctx.fail("Apply requires iface.")
    try:
        rec = ctx.db.read_iface(name)
    except ndb.DBError as e:
        raise ctx.fail(f"Could not read iface {name} ({e.code}).", e.code) from None
    if _net_param_count([rec]):
        # an offload transport's port settings: no such transport is loaded here
        raise ctx.fail("Can't find transport.")
    ctx.error("Nothing to configure.")
    ctx.say(f"{name} applied.")
    return 0


def _applyall(ctx: Ctx) -> int:
    from .host import _hosts, host_no
    number = host_no(ctx)
    if number not in _hosts(ctx):
        raise ctx.fail(f"Could not match host{number} to ifaces.")
    # the ifaces of a software host: none with network settings to send
    ctx.error("Nothing to configure.")
    ctx.say(f"Applied settings to ifaces attached to host{number}.")
    return 0


def _ping(ctx: Ctx, name: str | None) -> int:
    """-C ping: iscsiadm asks the transport to ping from the iface's port (ISCSI_UEVENT_PING).
    iscsi_tcp has no ping (drivers/scsi/iscsi_tcp.c sets no ->send_ping): the kernel
    answers ENOSYS, and iscsiadm prints one failed ping per count."""
    import time
    if name is None:
        raise ctx.fail("Ping requires iface.")
    if not ctx.ping_ip:
        raise ctx.fail("Ping requires destination ipaddress.")
    if ctx.packet_size <= 0:
        raise ctx.fail(f"Invalid packet size: {ctx.packet_size}.")
    if ctx.ping_count <= 0:
        raise ctx.fail(f"Invalid number of packets to transmit: {ctx.ping_count}.")
    if ctx.ping_interval < 0:
        raise ctx.fail(f"Invalid timing interval: {ctx.ping_interval}.")
    try:
        rec = ctx.db.read_iface(name)
    except ndb.DBError as e:
        ctx.error(f"Could not read iface {name} ({e.code}).")
        return e.code
    from .login import host_sysfs
    if host_sysfs(ctx.env).transport(rec["iface.transport_name"] or "tcp") is None:
        raise ctx.fail("Can't find transport.")
    import socket
    try:
        socket.getaddrinfo(ctx.ping_ip, None)
    except OSError:
        raise ctx.fail("Invalid IP address.") from None
    for i in range(1, ctx.ping_count + 1):
        ctx.say(f"Ping {i} failed: {MESSAGES[ExitCode.OP_NOT_SUPP]}")
        if i < ctx.ping_count:
            ctx.out.flush()
            time.sleep(ctx.ping_interval)
    return ExitCode.OP_NOT_SUPP


def _stored_name(ctx: Ctx, name: str | None, verb: str) -> None:
    """iscsiadm's guard of `-o new` / `-o delete`: an iface name is given and it is not a
    built-in one (those are not files in ifaces/); each verb's lines are iscsiadm's own."""
    if name is None:
        raise ctx.fail(f"iface {verb} requires iface name.")
    if name in R.BUILTIN_IFACES:
        if verb == "new":
            ctx.error(f"iface {name} is a special interface and is not stored in {ctx.db.path('ifaces')}.")
            raise ctx.fail(f"Could not create new interface {name}.")
        ctx.error(f"iface {name} is a special interface and cannot be deleted.")
        raise ctx.fail(f"Could not {verb} iface {name}: {MESSAGES[ExitCode.INVAL]}")


def mode_iface(ctx: Ctx) -> int:
    db, op = ctx.db, ctx.op
    name = ctx.ifaces[0] if ctx.ifaces else None
    if len(ctx.ifaces) > 1:
        ctx.error(f"iface mode only accepts one interface. Using the first one {name}.")
    if ctx.submode == "ping":
        return _ping(ctx, name)
    if op == OPS["apply"]:
        return _apply(ctx, name)
    if op == OPS["applyall"]:
        return _applyall(ctx)
    if op in (0, OPS["show"]) and name is None:
        names = db.iface_names() + list(R.BUILTIN_IFACES)
        recs = [db.read_iface(n) for n in names]
        if ctx.json:
            ctx.dump_json([R.as_json(r.fields, r.values) for r in recs])
        elif ctx.print_level == 1:
            nodes = _sorted(db.node_ids())
            if nodes:  # iscsiadm prints nothing at all when no node record exists
                for r in recs:
                    name = r["iface.iscsi_ifacename"]
                    ctx.say(f"Iface: {name}")
                    last = None
                    for nid in (n for n in nodes if n.iface == name):
                        if nid.target != last:
                            ctx.say(f"\tTarget: {nid.target}")
                            last = nid.target
                        ctx.say(f"\t\tPortal: {ndb.format_portal(nid.address, nid.port)},{nid.tpgt}")
        else:
            for r in recs:
                ctx.say(_iface_line(r))
        return 0
    if op in (0, OPS["show"]):
        try:
            rec = db.read_iface(name)
        except ndb.DBError as e:
            ctx.raw_error(f"{e} # idbm.c:_idbm_recs_read():834")
            return e.code
        if ctx.json:
            ctx.dump_json(R.as_json(rec.fields, rec.values))
        else:
            for line in rec.lines():
                ctx.say(line)
        return 0
    if op == OPS["new"]:
        _stored_name(ctx, name, "new")
        db.new_iface(name)
        ctx.say(f"{name} updated.")
        ctx.say(f"New interface {name} added")
        return 0
    if op == OPS["delete"]:
        _stored_name(ctx, name, "delete")
        if not db.iface_exists(name):
            ctx.error(f"Could not read iface info for {name}.")
            raise ctx.fail(f"Could not delete iface {name}: {MESSAGES[ExitCode.INVAL]}")
        with db.locked():
            # deleting an iface unbinds it: the node records that use it go too
            for nid in db.find_nodes(iface=name):
                db.delete_node(nid)
            db.delete_iface(name)
        ctx.say(f"{name} unbound and deleted.")
        return 0
    if op == OPS["update"]:
        pairs = ctx.pairs()
        if not pairs or name is None:
            raise ctx.fail("Update requires name, value, and iface.")
        if not db.iface_exists(name):
            raise ctx.fail(f"Could not read iface info for {name}.")
        if name in R.BUILTIN_IFACES:
            raise ctx.fail(f"iface {name} is a special interface and cannot be modified.")
        table = {f.key: f for f in R.IFACE_FIELDS if f.key != "iface.iscsi_ifacename"}
        with db.locked():
            rec = db.read_iface(name)
            try:
                warnings = ndb.apply_pairs(rec.values, table, pairs)
            except R.RecordError as e:
                for line in e.lines:
                    ctx.error(line)
                return e.code
            db.write_iface(rec)
        for w in warnings:
            ctx.error(w)
        ctx.say(f"{name} updated.")
        return 0
    return ExitCode.INVAL
