"""`iscsikit-autologin`: log in the automatic nodes that a network event (or the boot) makes reachable.

    iscsikit-autologin NETDEV [--wait-up SECONDS]   # what iscsikit-login@NETDEV.service runs (udev)
    iscsikit-autologin --all                        # what iscsikit-login.service runs at boot
    iscsikit-autologin --firmware                   # the iBFT's boot targets (iscsi_ibft)

For NETDEV it picks the node.startup=automatic records whose iface is bound
to that netdev (iface.net_ifacename, or iface.hwaddress equal to the netdev's
MAC), and, when NETDEV is not a loopback device, the automatic records whose
iface is bound to no netdev (the `default` iface): those can use any route, so
the first real interface that comes up is their cue.

udev sends no event when a link goes up (only add/remove/move/change), so for
NETDEV the command itself waits, up to --wait-up seconds, for IFF_UP. It runs
in a systemd unit, never inside udev's worker, so the wait blocks nobody.

Idempotent: a node that already has a session is reported and counted as
done, so a second trigger, a udev replay or the boot unit racing the udev
unit never make a second session (iscsikitd also refuses a duplicate under
a per-node lock: exit 15, which this command treats as done too).

Exit codes are iscsiadm's: 0 every selected node has a session (or nothing
was selected, or NETDEV is gone or stayed down: no cause for a failed
unit); otherwise the first failure's code, e.g. 20 daemon down, 8 timeout,
24 authentication failure; 21 for --firmware when there is no iBFT table; 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..initiator import nodedb as ndb
from ..initiator import records as R
from ..initiator.exitcodes import ExitCode

IFF_UP = 0x1
ARPHRD_LOOPBACK = 772


def _net(netdev: str, attr: str) -> str | None:
    from .adm.login import host_sysfs
    return host_sysfs().attr("net", netdev, attr)


def is_up(netdev: str) -> bool | None:
    """True/False from the netdev's flags; None when the netdev does not exist (any more)."""
    flags = _net(netdev, "flags")
    if flags is None:
        return None
    return bool(int(flags, 16) & IFF_UP)


def is_loopback(netdev: str) -> bool:
    return netdev == "lo" or _net(netdev, "type") == str(ARPHRD_LOOPBACK)


def _set(value: str | None) -> str | None:
    return None if value in (None, "", R.EMPTY, "default") else value


def select(db: ndb.NodeDB, netdev: str | None) -> list[ndb.NodeId]:
    """The automatic records this event concerns; netdev None means every automatic record."""
    mac = (_net(netdev, "address") or "").lower() if netdev else ""
    picked = []
    for nid in db.node_ids():
        v = db.read_node(nid).values
        if v.get("node.startup") != "automatic":
            continue
        if netdev is None:
            picked.append(nid)
            continue
        bound_name = _set(v.get("iface.net_ifacename"))
        bound_mac = (_set(v.get("iface.hwaddress")) or "").lower()
        if bound_name or bound_mac:
            if bound_name == netdev or (bound_mac and bound_mac == mac):
                picked.append(nid)
        elif not is_loopback(netdev):
            picked.append(nid)
    return picked


def _has_session(nid: ndb.NodeId, sessions) -> bool:
    from .adm.login import node_key
    return node_key(nid) in sessions


def login(db: ndb.NodeDB, nodes: list[ndb.NodeId], out=None, err=None) -> int:
    """Log the nodes without a session in through iscsikitd, with iscsikit-adm's lines and codes."""
    from . import adm
    from .adm import login as adm_session
    out, err = out or sys.stdout, err or sys.stderr
    present = adm_session.session_counts()
    todo = []
    for nid in nodes:
        if _has_session(nid, present):
            out.write(f"Already logged in to [iface: {nid.iface}, target: {nid.target}, "
                      f"portal: {nid.address},{nid.port}]\n")
        else:
            todo.append(nid)
    if not todo:
        return 0
    ctx = adm.Ctx(argv0="iscsikit-autologin", out=out, err=err, db=db)
    rc = adm_session.node_login(ctx, todo, existing=present)
    if rc == ExitCode.SESS_EXISTS:
        # another trigger won the race for one of these nodes: done, if every node is now up
        present = adm_session.session_counts()
        if all(_has_session(n, present) for n in todo):
            return 0
    return rc


def firmware_nodes(db: ndb.NodeDB, sysfs_root: str) -> list[ndb.NodeId]:
    """Write (or refresh) a node record per iBFT boot target, as `iscsiadm -m discovery -t fw`
    writes it (cli/adm/host.py fw_record), and return them.

    One difference, on purpose: node.startup onboot, so that the boot's disks are logged in
    by this unit and never logged out by a shutdown's `-U all` or `-u`-style cleanup."""
    from ..kernel import ibft
    from .adm.host import fw_record
    name = ibft.initiator_name(sysfs_root)
    nodes = []
    for t in ibft.targets(sysfs_root):
        node = fw_record(db, name, t)
        node.values["node.startup"] = "onboot"
        db.write_node(node)
        nodes.append(node.id)
    return nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="iscsikit-autologin",
        description="Log in node.startup=automatic records for a network interface, the boot, or firmware.",
        epilog="exit status: 0 all selected nodes logged in (or none selected); iscsiadm's code of the "
               "first failure otherwise; 21 --firmware without an iBFT table; 2 bad usage.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("netdev", nargs="?", help="the network interface udev saw appear")
    which.add_argument("--all", action="store_true", help="every automatic record (boot)")
    which.add_argument("--firmware", action="store_true", help="the targets of the iBFT table")
    p.add_argument("--wait-up", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for NETDEV to be up before logging in (default: do not wait)")
    args = p.parse_args(argv)
    db = ndb.NodeDB()
    try:
        if args.firmware:
            from ..kernel import ibft
            from .adm.login import host_sysfs
            root = host_sysfs().root
            if not ibft.present(root):
                print("iscsikit-autologin: no iBFT table (no /sys/firmware/ibft; is iscsi_ibft loaded?)",
                      file=sys.stderr)
                return ExitCode.NO_OBJS_FOUND
            nodes = firmware_nodes(db, root)
            if not nodes:
                print("iscsikit-autologin: the iBFT table lists no boot target")
                return 0
            return login(db, nodes)
        if args.all:
            return login(db, select(db, None))
        nodes = select(db, args.netdev)
        if not nodes:
            print(f"iscsikit-autologin: no automatic records for {args.netdev}")
            return 0
        deadline = time.monotonic() + args.wait_up
        while (up := is_up(args.netdev)) is False and time.monotonic() < deadline:
            time.sleep(0.5)
        if up is None:
            print(f"iscsikit-autologin: {args.netdev} is gone; nothing to do")
            return 0
        if not up:
            print(f"iscsikit-autologin: {args.netdev} is not up after {args.wait_up:.0f} s; "
                  "nothing logged in (run iscsikit-adm -m node -L automatic once it is)")
            return 0
        return login(db, nodes)
    except ndb.DBError as e:
        print(f"iscsikit-autologin: {e}", file=sys.stderr)
        return e.code
    except R.RecordError as e:
        for line in e.lines:
            print(f"iscsikit-autologin: {line}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
