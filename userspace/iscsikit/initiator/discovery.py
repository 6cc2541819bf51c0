"""SendTargets discovery and the records it writes: one code path for the CLI and D-Bus.

As iscsiadm does, the exchange runs in the caller's process (login_io), with the
discovery record's CHAP credentials and timeouts (`discovery.sendtargets.auth.*`,
`discovery.sendtargets.timeo.*`), and each portal of each target found becomes a
node record per iface, linked to the discovery record (send_targets/<address>,<port>/).
What happens to the records follows iscsiadm 2.1.8's operations (usr/iscsiadm.c
exec_disc_op_on_recs): `delete` removes the records this discovery source found
before and did not find now (never one a session uses), `new` adds the missing
ones, `update` rewrites the existing ones from the defaults, `nonpersistent`
writes nothing at all (no discovery record either).
"""

from __future__ import annotations

from . import login_io
from . import nodedb as ndb
from . import records as R
from .errors import IscsiError
from .exitcodes import MESSAGES, ExitCode

OP_NEW, OP_DELETE, OP_UPDATE, OP_NONPERSISTENT = 1, 2, 4, 16
_AUTH = "discovery.sendtargets.auth"
_TIMEO = "discovery.sendtargets.timeo"


class DiscoveryError(IscsiError):
    """A failed discovery: iscsiadm's lines for it and its exit code."""


def credentials(values: dict[str, str]):
    """The discovery record's CHAP credentials, or None (no CHAP).

    iscsiadm 2.1.8 uses CHAP whenever a username and password are set, whatever
    authmethod says (open-iscsi issue 438); it is mutual when password_in is set."""
    user, secret = values.get(f"{_AUTH}.username"), values.get(f"{_AUTH}.password")
    if not user or not secret:
        return None
    from ..proto.chap import ChapCredentials
    algs = [a for a in (values.get("node.session.auth.chap_algs") or "MD5").split(",") if a.strip()]
    secret_in = values.get(f"{_AUTH}.password_in") or None
    return ChapCredentials(user, secret, username_in=(values.get(f"{_AUTH}.username_in") or "")
                           if secret_in else None,
                           secret_in=secret_in, algorithms=tuple(a.strip() for a in algs))


def _seconds(values: dict[str, str], key: str) -> float:
    field = {f.key: f for f in R.SENDTARGETS_FIELDS}[key]
    n = R.atoi(values.get(key) or field.default)
    return float(n if n > 0 else R.atoi(field.default))


def binding(db: ndb.NodeDB, iface: str | None) -> login_io.Binding:
    """Where discovery through `iface` connects from (its record's netdev, MAC, address)."""
    if not iface or iface in R.BUILTIN_IFACES or not db.iface_exists(iface):
        return login_io.UNBOUND
    v = db.read_iface(iface).values
    return login_io.Binding(iface, v.get("iface.net_ifacename", ""), v.get("iface.hwaddress", ""),
                            v.get("iface.ipaddress", ""))


def exchange(rec: ndb.Record, initiator_name: str | None, bind: login_io.Binding = login_io.UNBOUND):
    """SendTargets=All with discovery record `rec`'s auth and timeouts, connecting through
    `bind` (an iface's binding); DiscoveryError carries iscsiadm's lines for a failure."""
    v = rec.values
    address, port = v["discovery.sendtargets.address"], R.atoi(v["discovery.sendtargets.port"])
    try:
        chap = credentials(v)
    except Exception as e:   # a record value proto refuses (a secret too long, an unknown algorithm)
        raise DiscoveryError(ExitCode.INVAL, f"invalid discovery CHAP settings: {e}") from None
    # iscsiadm's login timer covers connect and login; auth_timeout bounds the CHAP
    # steps inside it (discovery.c iscsi_create_session): the login deadline is the larger
    login = max(_seconds(v, f"{_TIMEO}.login_timeout"), _seconds(v, f"{_TIMEO}.auth_timeout") if chap else 0)
    try:
        return login_io.discover((address, port), initiator_name=initiator_name, chap=chap,
                                 connect_timeout=_seconds(v, f"{_TIMEO}.login_timeout"),
                                 login_timeout=login, reply_timeout=_seconds(v, f"{_TIMEO}.active_timeout"),
                                 bind=bind)
    except login_io.LoginError as e:
        code = ExitCode(e.exit_code)
        if code == ExitCode.LOGIN_AUTH_FAILED:
            # discovery.c: status 0x0201/0x0202 -> "rejected: initiator failed authorization"
            first = ["Login failed to authenticate with target ",
                     f"discovery login to {address} rejected: initiator failed authorization"]
        elif code in (ExitCode.TRANS, ExitCode.TRANS_TIMEOUT):
            first = [f"cannot make connection to {address}: {e.message}",
                     f"connection login retries (reopen_max) {R.atoi(v.get('discovery.sendtargets.reopen_max') or '5')} exceeded"]
        else:
            first = [f"discovery login to {address} failed: {e.message}"]
        raise DiscoveryError(code, *first, "Could not perform SendTargets discovery: "
                             + MESSAGES[code].rstrip(".")) from None


def found_nodes(db: ndb.NodeDB, rec: ndb.Record, found, ifaces: list[str] | None = None) -> list[ndb.Node]:
    """The node records SendTargets discovery `rec` found (not written): one per portal per iface."""
    return _nodes(db, rec, ((t.name, p.host, p.port, p.tpgt) for t in found for p in t.portals), ifaces)


def isns_nodes(db: ndb.NodeDB, rec: ndb.Record, groups, ifaces: list[str] | None = None) -> list[ndb.Node]:
    """The node records an iSNS query (`groups`: proto.isns.PortalGroup) found, not written:
    one per portal group per iface, linked to the iSNS server (usr/discovery.c)."""
    return _nodes(db, rec, ((g.target, g.address, g.port, g.tag) for g in groups), ifaces)


def _nodes(db: ndb.NodeDB, rec: ndb.Record, portals, ifaces: list[str] | None) -> list[ndb.Node]:
    """A record per (target, address, port, tag) per iface, linked to discovery `rec`."""
    address, port = rec["discovery.sendtargets.address"], rec["discovery.sendtargets.port"]
    node_type = R.NODE_DISCOVERY_TYPE[rec["discovery.type"]]
    out = []
    for target, host, tport, tag in portals:
        for iface in ifaces or [R.DEFAULT_IFACE]:
            nid = ndb.NodeId(target, host, tport, tag, iface)
            values = db.new_node_values(nid, discovery_type=node_type)
            values.update({"node.discovery_address": address, "node.discovery_port": str(port)})
            out.append(ndb.Node(R.NODE_FIELDS, values, nid))
    return out


def apply(db: ndb.NodeDB, rec: ndb.Record, nodes: list[ndb.Node], op: int,
          in_use: set[tuple] = frozenset()) -> list[str]:
    """Apply discovery operations `op` to the database; returns iscsiadm's error lines
    for the stale records it kept because a session (target, address, port) uses them.
    (iscsiadm reports those and goes on: the command still succeeds.)"""
    if op & OP_NONPERSISTENT and not op & (OP_NEW | OP_DELETE | OP_UPDATE):
        return []
    address, port = rec["discovery.sendtargets.address"], R.atoi(rec["discovery.sendtargets.port"])
    dtype = rec["discovery.type"]
    errors = []
    with db.locked():
        # an iSNS server's record is written only by discoverydb (exec_disc2_op); the
        # records it found are linked under its folder all the same
        if dtype == "sendtargets" and db.read_discovery(dtype, address, port) is None:
            db.write_discovery(rec)
        wanted = {n.id for n in nodes}
        if op & OP_DELETE:
            for nid in db.node_ids():
                if nid in wanted:
                    continue
                try:
                    v = db.read_node(nid).values
                except ndb.DBError:
                    continue
                if (v.get("node.discovery_type") != R.NODE_DISCOVERY_TYPE[dtype] or v.get("node.discovery_address") != address
                        or R.atoi(v.get("node.discovery_port") or "0") != port):
                    continue
                if (nid.target, nid.address, nid.port) in in_use:
                    errors.append(f"This command will remove the record [iface: {nid.iface}, target: {nid.target}, "
                                  f"portal: {nid.address},{nid.port}], but a session is using it. Logout session "
                                  "then rerun command to remove record.")
                    continue
                db.delete_node(nid)
        if op & (OP_NEW | OP_UPDATE):
            existing = set(db.node_ids())
            for node in nodes:
                if node.id in existing and not op & OP_UPDATE:
                    continue   # idbm_add_node without overwrite keeps the record as it is
                db.write_node(node)
                if node.id.tpgt != ndb.UNKNOWN_TPGT:
                    db.link_discovered(dtype, address, port, node.id)
    return errors


def record(db: ndb.NodeDB, address: str, port: int, found, ifaces: list[str] | None = None) -> list[ndb.NodeId]:
    """Write (or rewrite) the node records of `found` (login_io's DiscoveredTarget list)."""
    rec = db.read_discovery("sendtargets", address, port) or db.create_discovery("sendtargets", address, port)
    nodes = found_nodes(db, rec, found, ifaces)
    apply(db, rec, nodes, OP_NEW | OP_UPDATE)
    return [n.id for n in nodes]


def sendtargets(db: ndb.NodeDB, address: str, port: int, ifaces: list[str] | None = None) -> list[ndb.NodeId]:
    """Discover at address:port with its discovery record (made from the defaults when
    there is none) and record what was found; DiscoveryError when the exchange fails."""
    rec = db.read_discovery("sendtargets", address, port) or db.create_discovery("sendtargets", address, port)
    # one exchange per iface, each through its binding (iscsiadm's idbm_bind_ifaces_to_nodes)
    nids = []
    for iface in ifaces or [None]:
        nids += record(db, address, port, exchange(rec, db.initiator_name(), binding(db, iface)),
                       [iface] if iface else None)
    return nids
