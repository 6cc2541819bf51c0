"""`-m host` (iscsi_host objects from sysfs, as open-iscsi's usr/host.c prints them) and
`-m fw` / `-t fw` (the iBFT boot targets, kernel/ibft.py; usr/iscsiadm.c exec_fw_op)."""

from __future__ import annotations

import os

from ...initiator.exitcodes import ExitCode
from .context import OPS, R, Ctx, ndb
from .login import host_sysfs

EMPTY = "<empty>"
MAX_HOST_NO = 0xFFFFFFFF
# scsi_host proc_name -> iscsi transport name
_TRANSPORTS = {"iscsi_tcp": "tcp", "ib_iser": "iser"}


def _hosts(ctx: Ctx) -> list[int]:
    # os.listdir: readdir order, the order iscsiadm walks /sys/class/iscsi_host in
    base = host_sysfs(ctx.env).path("class", "iscsi_host")
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return [int(n[4:]) for n in names if n.startswith("host") and n[4:].isdigit()]


def _info(ctx: Ctx, host_no: int) -> dict[str, str]:
    fs = host_sysfs(ctx.env)
    name = f"host{host_no}"
    proc = fs.attr("scsi_host", name, "proc_name") or ""
    return {"transport": _TRANSPORTS.get(proc, ""),
            "ipaddress": fs.attr("iscsi_host", name, "ipaddress") or "",
            "hwaddress": fs.attr("iscsi_host", name, "hwaddress") or "",
            "netdev": fs.attr("iscsi_host", name, "netdev") or "",
            "iname": fs.attr("iscsi_host", name, "initiatorname") or "",
            "state": fs.attr("scsi_host", name, "state") or ""}


def _ip(address: str) -> str:
    if not address:
        return EMPTY
    return address if "." in address else f"[{address}]"


def _flat(ctx: Ctx, host_no: int) -> None:
    i = _info(ctx, host_no)
    ctx.say(f"{i['transport'] or EMPTY}: [{host_no}] {_ip(i['ipaddress'])},[{i['hwaddress'] or EMPTY}],"
            f"{i['netdev'] or EMPTY} {i['iname'] or EMPTY}")


def _tree(ctx: Ctx, host_no: int, flags: int) -> None:
    from .session import print_tree
    i = _info(ctx, host_no)
    ctx.say(f"Host Number: {host_no}")
    ctx.say(f"\tState: {i['state'] or 'Unknown'}")
    ctx.say(f"\tTransport: {i['transport'] or EMPTY}")
    ctx.say(f"\tInitiatorname: {i['iname'] or EMPTY}")
    ctx.say(f"\tIPaddress: {_ip(i['ipaddress'])}")
    ctx.say(f"\tHWaddress: {i['hwaddress'] or EMPTY}")
    ctx.say(f"\tNetdev: {i['netdev'] or EMPTY}")
    # iscsi_tcp and ib_iser hosts have no iscsi_iface objects: no Interface block
    if not flags:
        return
    sessions = [s for s in host_sysfs(ctx.env).sessions(luns=bool(flags & 32)) if s.host_no == host_no]
    if sessions:
        ctx.say("\t*********\n\tSessions:\n\t*********")
        print_tree(ctx, sessions, flags, prefix="\t")


def host_no(ctx: Ctx) -> int:
    """-H as iscsiadm reads it (strtoull; a MAC names an offload card's host: none here).
    Without -H it is 0: iscsiadm's default, MAX_HOST_NO + 1 in a uint32_t, wraps to 0."""
    if ctx.host is None:
        return 0
    if ":" in ctx.host:
        raise ctx.fail("Could not match MAC to host.")
    text = ctx.host.strip()
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    n = int(digits) if digits else 0
    if n > MAX_HOST_NO:
        raise ctx.fail(f"Invalid host no {ctx.host}. Numerical result out of range.")
    return n


def mode_host(ctx: Ctx) -> int:
    number = host_no(ctx)
    if ctx.submode is not None:
        return _submode(ctx, number)
    level = -1 if ctx.print_level is None else ctx.print_level
    if not -1 <= level <= 4:
        raise ctx.fail(f"Invalid info level {level}. Try 0 - 4.")
    # iscsiadm 2.1.8 lists every host whatever -H says (usr/host.c host_info_print: its
    # "host_no > MAX_HOST_NO" test never holds, -H being a uint32_t)
    hosts = _hosts(ctx)
    if level <= 0:
        for h in hosts:
            _flat(ctx, h)
    else:
        from .session import DEVICES, IFACE, PARAMS, STATE, versions
        flags = {1: 0, 2: STATE | IFACE, 3: STATE | IFACE | PARAMS, 4: STATE | IFACE | PARAMS | DEVICES}[level]
        if level == 4:
            versions(ctx)
        for h in hosts:
            _tree(ctx, h, flags)
    if not hosts:
        ctx.error("No iSCSI hosts.")
        return ExitCode.NO_OBJS_FOUND
    return 0


def transport_of(ctx: Ctx, number: int) -> str:
    """The transport of iSCSI host `number`, or iscsiadm's refusal (12) when there is none."""
    t = _info(ctx, number)["transport"] if number in _hosts(ctx) else ""
    if not t:
        raise ctx.fail(f"Could not match hostno {number} to transport.", ExitCode.TRANS_NOT_FOUND)
    return t


def _submode(ctx: Ctx, number: int) -> int:
    # iscsi_tcp and ib_iser give the kernel no host statistics, CHAP table or flash nodes
    # (drivers/scsi/iscsi_tcp.c sets no get_host_stats or get_chap; no flashnode objects):
    # iscsiadm prints, and so does this, what it prints on a host without the feature
    sub = ctx.submode
    if sub == "stats":
        transport_of(ctx, number)
        ctx.error("get_host_stats failed. errno=0")
        return ExitCode.ERR
    if sub == "chap":
        if not ctx.op:
            raise ctx.fail("CHAP mode requires host no and valid operation")
        if ctx.op not in (OPS["show"], OPS["new"], OPS["update"], OPS["delete"]):
            raise ctx.fail("Invalid operation.")
        transport_of(ctx, number)
        if ctx.op == OPS["show"]:
            ctx.error("Received iferror -22: Invalid argument.")
            ctx.error("get_chap_info failed. errno=0")
            return ExitCode.ERR
        if ctx.op == OPS["delete"]:
            ctx.error("CHAP Delete failed.")
            return ExitCode.ERR
        if not ctx.pairs():
            raise ctx.fail("Chap username/password not provided.")
        ctx.error("CHAP setting failed")
        return ExitCode.ERR
    if sub == "flashnode":
        transport_of(ctx, number)
        if ctx.op in (0, OPS["show"]):
            ctx.error(f"No flashnodes attached to host {number}.")
            return ExitCode.NO_OBJS_FOUND
        # new/update/delete/login/logout need a flash node table, which software hosts lack
        ctx.error(f"Flashnode operation failed: host {number} has no flash node table.")
        return ExitCode.OP_NOT_SUPP
    ctx.error("Invalid Sub Mode")
    return 0


# -- firmware (iBFT) -----------------------------------------------------------------
def _sysfs_root(ctx: Ctx) -> str:
    return host_sysfs(ctx.env).root


def _fw_targets(ctx: Ctx):
    ibft = _ibft()
    root = _sysfs_root(ctx)
    targets = ibft.targets(root) if ibft.present(root) else []
    if not targets:
        # fw_get_targets: no table, or a table without boot targets
        ctx.error("Could not get list of targets from firmware. (err 21)")
        return None
    return targets


# idbm_create_rec_from_boot_context (usr/idbm.c) gives every boot target this tag ("tpgt hard
# coded to 1"), whatever the target's is
FW_TPGT = 1


def fw_record(db: "ndb.NodeDB", initiator_name: str | None, t, discovery_type: str = "fw") -> "ndb.Node":
    """A boot target as iscsiadm's idbm_create_rec_from_boot_context makes it: the record
    defaults (node.startup too), tag 1, the table's initiator name and CHAP strings as they
    are (authmethod stays the default: the login authenticates when a secret is set, as
    iscsid's iscsi_setup_authentication does). A software NIC binds no iface."""
    nid = ndb.NodeId(t.name, t.address, t.port, FW_TPGT, R.DEFAULT_IFACE)
    values = db.new_node_values(nid, discovery_type=discovery_type)
    if initiator_name:
        values["iface.initiatorname"] = initiator_name
    for key, value in (("username", t.username), ("password", t.password),
                       ("username_in", t.username_in), ("password_in", t.password_in)):
        if value:
            values[f"node.session.auth.{key}"] = value
    return ndb.Node(R.NODE_FIELDS, values, nid)


def _fw_record(ctx: Ctx, t) -> "ndb.Node":
    return fw_record(ctx.db, _ibft().initiator_name(_sysfs_root(ctx)), t)


def _ibft():
    from ...kernel import ibft
    return ibft


def _fw_print(ctx: Ctx, t) -> None:
    """fw_print_entry's record (usr/fwparam_ibft/fw_entry.c: dump_initiator, dump_network,
    dump_target). The CHAP secrets are masked, unlike iscsiadm: iscsikit prints no secret by
    default (fw mode has no -S)."""
    ibft, nic = _ibft(), t.nic
    ctx.say(f"# BEGIN RECORD {R.VERSION}")
    name = ibft.initiator_name(_sysfs_root(ctx))
    if name:
        ctx.say(f"iface.initiatorname = {name}")
    ctx.say("iface.transport_name = tcp")
    ctx.say(f"iface.hwaddress = {nic.mac}")
    dhcp = nic.origin == ibft.ORIGIN_DHCP or (nic.dhcp and nic.dhcp != "0.0.0.0")
    ctx.say(f"iface.bootproto = {'DHCP' if dhcp else 'STATIC'}")
    for key, value in (("ipaddress", nic.address), ("prefix_len", nic.prefix or None),
                       ("subnet_mask", nic.mask), ("gateway", nic.gateway), ("primary_dns", nic.primary_dns),
                       ("secondary_dns", nic.secondary_dns), ("vlan_id", nic.vlan),
                       ("net_ifacename", nic.netdev)):
        if value:
            ctx.say(f"iface.{key} = {value}")
    ctx.say(f"node.name = {t.name}")
    ctx.say(f"node.conn[0].address = {t.address}")
    ctx.say(f"node.conn[0].port = {t.port}")
    for key, value, secret in (("username", t.username, False), ("password", t.password, True),
                               ("username_in", t.username_in, False), ("password_in", t.password_in, True)):
        if value:
            ctx.say(f"node.session.auth.{key} = {'********' if secret else value}")
    if t.lun:
        ctx.say(f"node.boot_lun = {t.lun}")
    ctx.say("# END RECORD")


def mode_fw(ctx: Ctx) -> int:
    """-m fw: print the boot targets, or (-l) log them in without writing records."""
    targets = _fw_targets(ctx)
    if targets is None:
        return ExitCode.NO_OBJS_FOUND
    if not ctx.login:
        for t in targets:
            _fw_print(ctx, t)
        return 0
    from . import login
    nodes = []
    for t in targets:
        node = _fw_record(ctx, t)
        try:
            from ...initiator.nodedb import apply_pairs
            apply_pairs(node.values, R.FIELD_BY_KEY, ctx.pairs())
        except R.RecordError as e:
            for line in e.lines:
                ctx.error(line)
            ctx.error("Could not merge user params")
            return e.code
        ctx._records[node.id] = node
        nodes.append(node.id)
    return login.node_login(ctx, nodes, summary=False)


def fw_discovery(ctx: Ctx) -> int:
    """-m discovery -t fw (and discoverydb -t fw -D): the boot targets become node records
    (discovery_type fw, startup onboot) under the discovery operations; -l logs them in."""
    targets = _fw_targets(ctx)
    if targets is None:
        return ExitCode.NO_OBJS_FOUND
    op = ctx.op & (OPS["new"] | OPS["delete"] | OPS["update"] | OPS["nonpersistent"])
    op = op or (OPS["new"] | OPS["delete"] | OPS["update"])
    nodes = [_fw_record(ctx, t) for t in targets]
    db = ctx.db
    with db.locked():
        if op & OPS["delete"]:
            wanted = {n.id for n in nodes}
            from .login import session_portals
            live = session_portals(ctx.env)
            for nid in db.node_ids():
                try:
                    dtype = db.read_node(nid)["node.discovery_type"]
                except ndb.DBError:
                    continue
                if dtype == "fw" and nid not in wanted and (nid.target, nid.address, nid.port) not in live:
                    db.delete_node(nid)
        if op & (OPS["new"] | OPS["update"]):
            existing = set(db.node_ids())
            for node in nodes:
                if node.id not in existing or op & OPS["update"]:
                    db.write_node(node)
    for n in nodes:
        ctx.say(f"{ndb.format_portal(n.id.address, n.id.port)},{n.id.tpgt} {n.id.target}")
    if not ctx.login:
        return 0
    from . import login
    for n in nodes:
        ctx._records[n.id] = n
    return login.node_login(ctx, [n.id for n in nodes], summary=False)
