"""`-m discovery` and `-m discoverydb`: SendTargets in this process, as iscsiadm does, and
the discovery records."""

from __future__ import annotations

from ...initiator.exitcodes import MESSAGES, ExitCode
from . import messages as msg
from .context import OPS, R, Ctx, ndb
from .node import _node_tree


DISCOVERY_TYPES = {"sendtargets": "sendtargets", "st": "sendtargets", "isns": "isns"}
_LISTED_TYPES = (("sendtargets", "SENDTARGETS"), ("isns", "iSNS"))


def _discovered(db, dtype: str, address: str | None = None, port: int | None = None) -> list:
    """The node records a discovery source found (iscsiadm's idbm_print_discovered):
    node.discovery_type `dtype` and, for a SendTargets source, its address and port."""
    out = []
    for nid in db.node_ids():   # readdir order, as idbm_for_each_rec walks them
        try:
            v = db.read_node(nid).values
        except ndb.DBError:
            continue
        if v.get("node.discovery_type") != dtype:
            continue
        if address is not None and (v.get("node.discovery_address") != address
                                    or R.atoi(v.get("node.discovery_port") or "0") != port):
            continue
        out.append(nid)
    return out


def _discovery_listing(ctx: Ctx) -> int:
    db = ctx.db
    if ctx.json:
        ctx.dump_json([{"address": a, "port": p, "type": t}
                       for t, _ in _LISTED_TYPES for a, p in db.discovery_ids(t)])
        return 0
    if (ctx.print_level or 0) >= 1:
        # iscsiadm's idbm_print_all_discovery: each source, then the targets found
        # through it (os-brick's _get_discoverydb_portals reads these trees)
        found = 0
        for dtype, title in _LISTED_TYPES:
            ctx.say(f"{title}:")
            ids = db.discovery_ids(dtype)
            for a, p in ids:
                ctx.say(f"DiscoveryAddress: {a},{p}")
                _node_tree(ctx, _discovered(db, R.NODE_DISCOVERY_TYPE[dtype], a, p))
            found += len(ids)
            if dtype == "isns" and not ids:
                # no server record (`-m discovery -t isns` writes none): the records it found
                # are listed all the same (idbm_print_all_discovery's "pre 872 tools" case)
                nodes = _discovered(db, "isns")
                _node_tree(ctx, nodes)
                found += len(nodes)
                if nodes:
                    continue
            if not ids:
                ctx.say("No targets found.")
        for title, dtype in (("STATIC", "static"), ("FIRMWARE", "fw")):
            ctx.say(f"{title}:")
            ids = _discovered(db, dtype)
            if ids:
                _node_tree(ctx, ids)
            else:
                ctx.say("No targets found.")
            found += len(ids)
        return 0 if found else ExitCode.NO_OBJS_FOUND
    found = False
    for dtype, _ in _LISTED_TYPES:
        for a, p in db.discovery_ids(dtype):
            ctx.say(f"{ndb.format_portal(a, p)} via {dtype}")
            found = True
    if not found:
        return ExitCode.NO_OBJS_FOUND  # silently, as iscsiadm does
    return 0


def _type_and_portal(ctx: Ctx) -> tuple[str, str, int]:
    """-t and -p, checked as iscsiadm checks them (type first); the port defaults to 3260
    (3205, the iSNS server's, for -t isns)."""
    dtype = DISCOVERY_TYPES.get(ctx.dtype or "")
    if dtype is None:
        raise ctx.fail(msg.BAD_DISCOVERY_TYPE)
    address, port, _ = ctx.portal_parts()
    if address is None:
        raise ctx.fail(msg.ISNS_PORTAL if dtype == "isns" else msg.BAD_PORTAL)
    if dtype == "isns" and not port:
        from ...proto.isns import DEFAULT_PORT
        return dtype, address, DEFAULT_PORT
    return dtype, address, port or ndb.DEFAULT_PORT


def _other_types(ctx: Ctx) -> int | None:
    """-t slp and -t fw, shared by both discovery modes; None for the others."""
    if ctx.dtype == "slp":
        raise ctx.fail("SLP discovery is not fully implemented yet.")
    if ctx.dtype == "fw":
        if ctx.mode == "discoverydb" and not ctx.discover:
            raise ctx.fail("Invalid command. Possibly missing --discover argument.")
        from .host import fw_discovery
        return fw_discovery(ctx)
    return None


def _show_record(ctx: Ctx, rec) -> int:
    if ctx.json:
        ctx.dump_json(R.as_json(rec.fields, rec.values, ctx.show_secrets))
    else:
        for line in rec.lines(show_secrets=ctx.show_secrets):
            ctx.say(line)
    return 0


def _delete_record(ctx: Ctx, address: str, port: int, dtype: str = "sendtargets") -> int:
    try:
        ctx.db.delete_discovery(dtype, address, port)
    except ndb.DBError as e:
        ctx.error(str(e))
        ctx.error("Unable to delete record!")
        return e.code
    return 0


def mode_discovery(ctx: Ctx) -> int:
    """iscsiadm's exec_disc_op: -t st discovers with the defaults (iscsid.conf) and writes
    a fresh discovery record; without -t, -p names a stored record to show, delete or
    rediscover (-D/-l) with its own auth and timeouts."""
    op = ctx.op
    other = _other_types(ctx)
    if other is not None:
        return other
    if ctx.dtype in DISCOVERY_TYPES:   # an unknown -t is no type at all here, as in iscsiadm
        dtype, address, port = _type_and_portal(ctx)
        if dtype == "isns":
            # exec_disc_op: the iSNS server's record is not written in discovery mode
            return discovery_run(ctx, _default_record(ctx, address, port, dtype), write_record=False)
        rec = _default_record(ctx, address, port)
        return discovery_run(ctx, rec, write_record=True)
    address, port, _ = ctx.portal_parts()
    if address is None:
        if op in (0, OPS["show"]):
            return _discovery_listing(ctx)
        raise ctx.fail("Invalid operation.")
    port = port or ndb.DEFAULT_PORT
    rec = ctx.db.read_discovery("sendtargets", address, port)
    if rec is None:
        raise ctx.fail(f"Discovery record [{address},{port}] not found!")
    if ctx.discover or ctx.login:
        return discovery_run(ctx, rec, write_record=False)
    if op in (0, OPS["show"]):
        return _show_record(ctx, rec)
    if op == OPS["delete"]:
        return _delete_record(ctx, address, port)
    if op in (OPS["new"], OPS["update"]):
        raise ctx.fail("Operations new and update for discovery mode is not supported. Use discoverydb mode.")
    raise ctx.fail("Invalid operation.")


def mode_discoverydb(ctx: Ctx) -> int:
    """iscsiadm's exec_disc2_op: the discovery records, and -D with a record's settings."""
    op = ctx.op
    other = _other_types(ctx)
    if other is not None:
        return other
    if ctx.dtype is None and ctx.portal is None and op in (0, OPS["show"]) and not ctx.discover:
        return _discovery_listing(ctx)
    if ctx.dtype is None and ctx.portal is None:
        raise ctx.fail("Invalid operation. Operation not supported.")
    dtype, address, port = _type_and_portal(ctx)
    db = ctx.db
    if op & OPS["new"] and not ctx.discover:
        db.create_discovery(dtype, address, port)
        ctx.say(f"New discovery record for [{address},{port}] added.")
        return 0
    rec = db.read_discovery(dtype, address, port)
    if ctx.discover:
        if rec is None:
            # iscsiadm adds a default record for the user (none with nonpersistent)
            rec = _default_record(ctx, address, port, dtype)
            return discovery_run(ctx, rec, write_record=not op & OPS["nonpersistent"])
        return discovery_run(ctx, rec, write_record=False)
    if rec is None:
        raise ctx.fail(f"Discovery record [{address},{port}] not found.", ExitCode.IDBM)
    if op in (0, OPS["show"]):
        return _show_record(ctx, rec)
    if op == OPS["delete"]:
        return _delete_record(ctx, address, port, dtype)
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
    raise ctx.fail("Operation is not supported.")


def _default_record(ctx: Ctx, address: str, port: int, dtype: str = "sendtargets"):
    """A discovery record from the defaults (iscsid.conf over the code's), not written."""
    fields = R.DISCOVERY_FIELDS[dtype]
    values = ctx.db.seeded_defaults(fields)
    values.update({"discovery.type": dtype, "discovery.sendtargets.address": address,
                   "discovery.sendtargets.port": str(port)})
    return ndb.Record(fields, values)


def _operations(ctx: Ctx) -> int:
    """The discovery operations -o asked for; none: new, delete and update (iscsiadm's compat)."""
    op = ctx.op & (OPS["new"] | OPS["delete"] | OPS["update"] | OPS["nonpersistent"])
    return op or OPS["new"] | OPS["delete"] | OPS["update"]


def discovery_run(ctx: Ctx, rec, write_record: bool) -> int:
    """SendTargets in the client, as iscsiadm (do_software_sendtargets): the record's auth
    and timeouts; the records the operations (-o; none: new, delete and update) ask for;
    one line per record found; then the logins when -l asks."""
    from ...initiator import discovery
    if rec["discovery.type"] == "isns":
        return isns_run(ctx, rec, write_record)
    op = _operations(ctx)
    db = ctx.db
    if write_record and not op & OPS["nonpersistent"]:
        db.write_discovery(rec)
    v = rec.values
    ctx.debug_line(1, f"sendtargets discovery to {v['discovery.sendtargets.address']}:"
                      f"{v['discovery.sendtargets.port']}, CHAP "
                      f"{'on' if v.get('discovery.sendtargets.auth.password') else 'off'}")
    ctx.debug_line(2, "discovery timeouts: login " + v.get("discovery.sendtargets.timeo.login_timeout", "")
                   + ", auth " + v.get("discovery.sendtargets.timeo.auth_timeout", "")
                   + ", active " + v.get("discovery.sendtargets.timeo.active_timeout", ""))
    # one exchange per iface, each leaving through that iface's netdev or address
    nodes = []
    for iface in ctx.ifaces or [None]:
        try:
            found = discovery.exchange(rec, db.initiator_name(), discovery.binding(db, iface))
        except discovery.DiscoveryError as e:
            for line in e.lines:
                ctx.error(line)
            return e.exit_code
        nodes += discovery.found_nodes(db, rec, found, [iface] if iface else None)
    return _found(ctx, rec, nodes, op)


def isns_run(ctx: Ctx, rec, write_record: bool) -> int:
    """iSNS discovery in the client, as iscsiadm (do_isns): the server's portal groups
    become node records (discovery_type isns) under the same operations as SendTargets."""
    from ...initiator import discovery, isns
    op = _operations(ctx)
    db = ctx.db
    if write_record and not op & OPS["nonpersistent"]:
        db.write_discovery(rec)
    address, port = rec["discovery.sendtargets.address"], R.atoi(rec["discovery.sendtargets.port"])
    ctx.debug_line(1, f"isns discovery to {address}:{port}")
    nodes = []
    for iface in ctx.ifaces or [None]:
        name = (db.read_iface(iface).values.get("iface.initiatorname") if iface and db.iface_exists(iface)
                else None) or db.initiator_name()
        try:
            groups = isns.discover(address, port, name)
        except isns.IsnsError as e:
            if e.reason:
                ctx.debug_line(1, f"isns: {e.reason}")
            for line in e.lines:
                ctx.error(line)
            ctx.error(f"Could not perform iSNS discovery: {MESSAGES[ExitCode(e.exit_code)]}")
            return e.exit_code
        nodes += discovery.isns_nodes(db, rec, groups, [iface] if iface else None)
    return _found(ctx, rec, nodes, op)


def _found(ctx: Ctx, rec, nodes: list, op: int) -> int:
    """What a discovery found: the records its operations ask for, one line each, the logins."""
    from ...initiator import discovery
    db = ctx.db
    if not nodes:
        ctx.error("No portals found")
        return ExitCode.NO_OBJS_FOUND
    from .login import session_portals
    in_use = session_portals(ctx.env) if op & OPS["delete"] else set()
    for line in discovery.apply(db, rec, nodes, op, in_use):
        ctx.error(line)
    if (ctx.print_level or 0) >= 1:
        _node_tree(ctx, [n.id for n in nodes])
    else:
        for n in nodes:
            ctx.say(f"{ndb.format_portal(n.id.address, n.id.port)},{n.id.tpgt} {n.id.target}")
    if not ctx.login:
        return 0
    from . import login
    for n in nodes:   # iscsiadm logs in with the records it found, written or not (nonpersistent)
        ctx._records[n.id] = n
    return login.node_login(ctx, [n.id for n in nodes], summary=False)
