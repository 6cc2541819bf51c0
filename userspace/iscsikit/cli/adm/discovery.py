"""`-m discovery` and `-m discoverydb`: SendTargets in this process, as iscsiadm does, and
the discovery records."""

from __future__ import annotations

from ...initiator.exitcodes import MESSAGES, ExitCode
from . import messages as msg
from .context import OPS, R, Ctx, ndb
from .node import _node_tree, _sorted


DISCOVERY_TYPES = {"sendtargets": "sendtargets", "st": "sendtargets", "isns": "isns"}
_LISTED_TYPES = (("sendtargets", "SENDTARGETS"), ("isns", "iSNS"))


def _discovery_listing(ctx: Ctx) -> int:
    db = ctx.db
    if ctx.json:
        ctx.dump_json([{"address": a, "port": p, "type": t}
                       for t, _ in _LISTED_TYPES for a, p in db.discovery_ids(t)])
        return 0
    if ctx.print_level == 1:
        for dtype, title in _LISTED_TYPES:
            ctx.say(f"{title}:")
            ids = db.discovery_ids(dtype)
            if not ids:
                ctx.say("No targets found.")
            for a, p in ids:
                ctx.say(f"DiscoveryAddress: {a},{p}")
        ctx.say("STATIC:")
        static = [n for n in _sorted(db.node_ids())
                  if db.read_node(n)["node.discovery_type"] == "static"]
        if static:
            _node_tree(ctx, static)
        else:
            ctx.say("No targets found.")
        ctx.say("FIRMWARE:")  # iBFT boot records: none that iscsikit reads yet
        ctx.say("No targets found.")
        return 0
    found = False
    for dtype, _ in _LISTED_TYPES:
        for a, p in db.discovery_ids(dtype):
            ctx.say(f"{ndb.format_portal(a, p)} via {dtype}")
            found = True
    if not found:
        return ExitCode.NO_OBJS_FOUND  # silently, as iscsiadm does
    return 0


def _type_and_portal(ctx: Ctx) -> tuple[str, str, int]:
    """-t and -p, checked as iscsiadm checks them (type first); the port defaults to 3260."""
    dtype = DISCOVERY_TYPES.get(ctx.dtype or "")
    if dtype is None:
        raise ctx.fail(msg.BAD_DISCOVERY_TYPE)
    address, port, _ = ctx.portal_parts()
    if address is None:
        raise ctx.fail(msg.BAD_PORTAL)
    return dtype, address, port or ndb.DEFAULT_PORT


def mode_discovery(ctx: Ctx) -> int:
    if ctx.dtype is None and ctx.portal is None:
        return _discovery_listing(ctx)
    return discovery_run(ctx, *_type_and_portal(ctx))


def mode_discoverydb(ctx: Ctx) -> int:
    op = ctx.op
    if ctx.dtype is None and ctx.portal is None and op in (0, OPS["show"]) and not ctx.discover:
        return _discovery_listing(ctx)
    if ctx.dtype is None and ctx.portal is None:
        raise ctx.fail("Invalid operation. Operation not supported.")
    dtype, address, port = _type_and_portal(ctx)
    db = ctx.db
    if ctx.discover:
        return discovery_run(ctx, dtype, address, port)
    if op in (0, OPS["show"]):
        rec = db.read_discovery(dtype, address, port)
        if rec is None:
            raise ctx.fail(f"Discovery record [{address},{port}] not found.", ExitCode.IDBM)
        if ctx.json:
            ctx.dump_json(R.as_json(rec.fields, rec.values, ctx.show_secrets))
        else:
            for line in rec.lines(show_secrets=ctx.show_secrets):
                ctx.say(line)
        return 0
    if op == OPS["new"]:
        db.create_discovery(dtype, address, port)
        ctx.say(f"New discovery record for [{address},{port}] added.")
        return 0
    if op == OPS["delete"]:
        db.delete_discovery(dtype, address, port)
        return 0
    if op == OPS["update"]:
        pairs = ctx.pairs()
        if not pairs:
            raise ctx.fail(msg.UPDATE_NEEDS_PAIRS)
        try:
            warnings = db.update_discovery(dtype, address, port, pairs)
        except R.RecordError as e:
            for line in e.lines:
                ctx.error(line)
            return e.code
        for w in warnings:
            ctx.error(w)
        return 0
    raise ctx.fail("Invalid operation. Operation not supported.")


def discovery_run(ctx, dtype: str, address: str, port: int) -> int:
    """SendTargets in the client, as iscsiadm: print the portals and (re)write their records."""
    from ...initiator import login_io
    if dtype != "sendtargets":
        ctx.error(f"discovery type {dtype} is not supported yet")
        return ExitCode.OP_NOT_SUPP
    from ...initiator import discovery
    # one exchange per iface, each leaving through that iface's netdev or address
    for iface in ctx.ifaces or [None]:
        try:
            found = login_io.discover((address, port), initiator_name=ctx.db.initiator_name(),
                                      bind=discovery.binding(ctx.db, iface))
        except login_io.LoginError as e:
            ctx.error(f"cannot make connection to {address}: {e.message}")
            ctx.error("connection login retries (reopen_max) 5 exceeded")
            ctx.error("Could not perform SendTargets discovery: " + MESSAGES[e.exit_code].rstrip("."))
            return e.exit_code
        discovery.record(ctx.db, address, port, found, [iface] if iface else None)
        for t in found:
            for p in t.portals:
                ctx.say(f"{ndb.format_portal(p.host, p.port)},{p.tpgt} {t.name}")
    return 0
