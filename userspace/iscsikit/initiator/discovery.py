"""SendTargets discovery and the records it writes: one code path for the CLI and D-Bus.

As iscsiadm does, the exchange runs in the caller's process (login_io), and
each portal of each target found gets a node record per iface, linked to the
discovery record (send_targets/<address>,<port>/).
"""

from __future__ import annotations

from . import login_io
from . import nodedb as ndb
from . import records as R
from .errors import IscsiError


class DiscoveryError(IscsiError):
    def __init__(self, exit_code: int, message: str):
        super().__init__(exit_code, message)


def record(db: ndb.NodeDB, address: str, port: int, found, ifaces: list[str] | None = None) -> list[ndb.NodeId]:
    """Write (or rewrite) the node records of `found` (login_io's DiscoveredTarget list)."""
    nids = []
    with db.locked():
        if db.read_discovery("sendtargets", address, port) is None:
            db.create_discovery("sendtargets", address, port)
        for t in found:
            for p in t.portals:
                for iface in ifaces or [R.DEFAULT_IFACE]:
                    nid = ndb.NodeId(t.name, p.host, p.port, p.tpgt, iface)
                    values = db.new_node_values(nid, discovery_type="send_targets")
                    values.update({"node.discovery_address": address, "node.discovery_port": str(port)})
                    db.write_node(ndb.Node(R.NODE_FIELDS, values, nid))
                    db.link_discovered("sendtargets", address, port, nid)
                    nids.append(nid)
    return nids


def binding(db: ndb.NodeDB, iface: str | None) -> login_io.Binding:
    """Where discovery through `iface` connects from (its record's netdev, MAC, address)."""
    if not iface or iface in R.BUILTIN_IFACES or not db.iface_exists(iface):
        return login_io.UNBOUND
    v = db.read_iface(iface).values
    return login_io.Binding(iface, v.get("iface.net_ifacename", ""), v.get("iface.hwaddress", ""),
                            v.get("iface.ipaddress", ""))


def sendtargets(db: ndb.NodeDB, address: str, port: int, ifaces: list[str] | None = None) -> list[ndb.NodeId]:
    """Discover at address:port through each iface (as iscsiadm's idbm_bind_ifaces_to_nodes) and
    record what was found; DiscoveryError when an exchange fails."""
    nids = []
    for iface in ifaces or [None]:
        try:
            found = login_io.discover((address, port), initiator_name=db.initiator_name(),
                                      bind=binding(db, iface))
        except login_io.LoginError as e:
            raise DiscoveryError(e.exit_code, f"cannot make connection to {address}: {e.message}") from None
        nids += record(db, address, port, found, [iface] if iface else None)
    return nids
