"""`-m iface`: the iface records (open-iscsi's ifaces/ directory and its built-in ifaces)."""

from __future__ import annotations

from ...initiator.exitcodes import MESSAGES, ExitCode
from .context import OPS, R, Ctx, ndb
from .node import _sorted


def _iface_line(rec: ndb.Record) -> str:
    v = {k: (x or R.EMPTY) for k, x in rec.values.items()}
    return (f"{rec['iface.iscsi_ifacename']} {v['iface.transport_name']},{v['iface.hwaddress']},"
            f"{v['iface.ipaddress']},{v['iface.net_ifacename']},{v['iface.initiatorname']}")


def mode_iface(ctx: Ctx) -> int:
    db, op = ctx.db, ctx.op
    name = ctx.ifaces[0] if ctx.ifaces else None
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
        if name is None:
            raise ctx.fail("iface new requires iface name.")
        if name in R.BUILTIN_IFACES:
            ctx.error(f"iface {name} is a special interface and is not stored in {db.path('ifaces')}.")
            raise ctx.fail(f"Could not create new interface {name}.")
        db.new_iface(name)
        ctx.say(f"{name} updated.")
        ctx.say(f"New interface {name} added")
        return 0
    if op == OPS["delete"]:
        if name is None:
            raise ctx.fail("iface delete requires iface name.")
        if name in R.BUILTIN_IFACES:
            ctx.error(f"iface {name} is a special interface and cannot be deleted.")
            raise ctx.fail(f"Could not delete iface {name}: {MESSAGES[ExitCode.INVAL]}")
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
