"""`ls` without configshell: the shell's tree drawn straight from a snapshot.

The one-shot `iscsikit-target ls [path]` into a file or a pipe (no colours)
comes here: building configshell's node objects for 1000 targets (nine nodes
and ~70 parameter definitions each) and importing configshell cost tens of
seconds in the lab guest, while drawing the same lines from the model costs
the snapshot.  The summaries are the shell's own (shell.py's nodes call the
functions below), and render() draws what configshell's
ConfigNode._render_tree draws with its default preferences (tree_round_nodes,
tree_status_mode, tree_show_root; 132 columns off a terminal), so the two
outputs are the same text (tests/unit/test_target_listing.py compares them).
"""

from __future__ import annotations

import glob
import os

from .model import LUN, Config, MappedLUN, NodeACL, Portal, StorageObject, TPG

# tcmu-runner installs one plugin per handler; targetcli asks D-Bus instead.
TCMU_HANDLER_GLOBS = ("/usr/lib/*/tcmu-runner/handler_*.so", "/usr/lib64/tcmu-runner/handler_*.so",
                      "/usr/lib/tcmu-runner/handler_*.so")
BACKSTORES = ("block", "fileio", "pscsi", "ramdisk")
MAX_WIDTH = 132          # configshell's Console._max_width


def use_colour(stream) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024
    return "?"


def tcmu_handlers(cfg: Config) -> list[str]:
    handlers = set()
    for pattern in TCMU_HANDLER_GLOBS:
        for path in glob.glob(pattern):
            handlers.add(os.path.basename(path)[len("handler_"):-3])
    for so in cfg.storage_objects.values():
        if so.plugin == "user" and so.config:
            handlers.add(so.config.split("/", 1)[0])
    return sorted(handlers)


# ---- the summaries (the text in [brackets]) and whether each is healthy ------------------

def so_summary(so: StorageObject):
    status = so.status or "?"
    ok = status == "activated" or None
    if so.plugin == "fileio":
        mode = "write-back" if so.write_back else "write-thru"
        return f"{so.dev} ({human_size(so.size)}) {mode} {status}", ok
    if so.plugin == "block":
        return f"{so.dev} ({'ro' if so.readonly else 'rw'}) {status}", ok
    if so.plugin == "ramdisk":
        return f"({human_size(so.size)}{' nullio' if so.nullio else ''}) {status}", ok
    if so.plugin == "user":
        return f"{so.config} ({human_size(so.size)}) {status}", ok
    return f"{so.dev} {status}", None


ALUA_STATE_NAMES = {0: "Active/optimized", 1: "Active/non-optimized", 2: "Standby", 3: "Unavailable",
                    4: "LBA dependent", 14: "Offline", 15: "Transitioning"}


def alua_group_summary(state):
    return f"ALUA state: {ALUA_STATE_NAMES.get(state, '?')}", True if state in (0, 1) else None


def tpg_summary(tpg: TPG):
    a = tpg.attributes
    gen = "gen-acls" if a.get("generate_node_acls") else "no-gen-acls"
    auth = "auth" if a.get("authentication") else "no-auth"
    if not tpg.enable:
        return f"disabled, {gen}, {auth}", False
    return f"{gen}, {auth}", None


def lun_summary(cfg: Config, lun: LUN):
    so = cfg.so_by_path(lun.storage_object)
    where = f" ({so.dev})" if so is not None and so.dev else ""
    gp = f" ({lun.alua_tg_pt_gp_name})" if lun.alua_tg_pt_gp_name else ""
    return f"{lun.storage_object[len('/backstores/'):]}{where}{gp}", so is not None


def portal_summary(p: Portal):
    extra = [x for x, on in (("iser", p.iser), ("offload", p.offload)) if on]
    return (", ".join(extra) or "OK"), True


def acl_summary(acl: NodeACL):
    tag = f"{acl.tag}: " if acl.tag else ""
    return f"{tag}Mapped LUNs: {len(acl.mapped_luns)}", None


def mapped_lun_summary(tpg: TPG, m: MappedLUN):
    lun = tpg.luns.get(m.tpg_lun)
    so = lun.storage_object[len("/backstores/"):] if lun else "?"
    return f"lun{m.tpg_lun} {so} ({'ro' if m.write_protect else 'rw'})", lun is not None


def fabric_tpg_summary(tpg: TPG):
    return (f"nexus {tpg.nexus}" if tpg.nexus else ("enabled" if tpg.enable else "disabled")), None


def count(what: str, n: int):
    return f"{what}: {n}", None


# ---- the tree ------------------------------------------------------------------------------

class Node:
    __slots__ = ("name", "path", "summary", "kids", "_make")

    def __init__(self, name, parent_path, summary, make=None):
        self.name = name
        self.path = "/" if name == "/" else f"{parent_path.rstrip('/')}/{name}"
        self.summary = summary
        self._make = make           # children are made only when drawn or walked through
        self.kids = None

    def children(self) -> list:
        if self.kids is None:
            self.kids = self._make(self) if self._make else []
        return self.kids


def tree(cfg: Config, root: str | None = None) -> Node:
    """The shell's tree (shell.py's UIRoot), as Nodes. With `root` (configfs), each storage
    object shows its ALUA groups (target/alua.py), read only when drawn."""
    def so_node(n, so):
        def alua_kids(n):
            from . import alua
            groups = alua.access_states(root, so)
            return [Node("alua", n.path, count("ALUA Groups", len(groups)), lambda n: [
                Node(name, n.path, alua_group_summary(state)) for name, state in groups])]
        return Node(so.name, n.path, so_summary(so), alua_kids if root and so.plugin != "pscsi" else None)

    def root_kids(n):
        kids = [Node("backstores", n.path, ("", None), backstores), Node("iscsi", n.path,
                count("Targets", len(cfg.targets)), iscsi)]
        for fab in sorted({f for f, _ in cfg.fabric_targets}):
            ts = sorted((t for (f, _), t in cfg.fabric_targets.items() if f == fab), key=lambda t: t.wwn)
            kids.append(Node(fab, n.path, count("Targets", len(ts)), lambda n, ts=ts: [
                Node(t.wwn, n.path, count("TPGs", len(t.tpgs)), lambda n, t=t: [
                    Node(f"tpg{tp.tag}", n.path, fabric_tpg_summary(tp), lambda n, tp=tp: fabric_tpg(n, tp))
                    for tp in t.tpgs.values()]) for t in ts]))
        return kids

    def backstores(n):
        kids = []
        for plugin in BACKSTORES:
            sos = [so for so in cfg.storage_objects.values() if so.plugin == plugin]
            kids.append(Node(plugin, n.path, count("Storage Objects", len(sos)), lambda n, sos=sos: [
                so_node(n, so) for so in sos]))
        for h in tcmu_handlers(cfg):
            sos = [so for so in cfg.storage_objects.values()
                   if so.plugin == "user" and (so.config or "").split("/", 1)[0] == h]
            kids.append(Node(f"user:{h}", n.path, count("Storage Objects", len(sos)), lambda n, sos=sos: [
                so_node(n, so) for so in sos]))
        return kids

    def iscsi(n):
        return [Node(t.wwn, n.path, count("TPGs", len(t.tpgs)), lambda n, t=t: [
            Node(f"tpg{tp.tag}", n.path, tpg_summary(tp), lambda n, tp=tp: iscsi_tpg(n, tp))
            for tp in t.tpgs.values()]) for t in cfg.targets.values()]

    def luns(n, tpg):
        return [Node(f"lun{lun.index}", n.path, lun_summary(cfg, lun)) for lun in tpg.luns.values()]

    def iscsi_tpg(n, tpg):
        return [
            Node("luns", n.path, count("LUNs", len(tpg.luns)), lambda n: luns(n, tpg)),
            Node("acls", n.path, count("ACLs", len(tpg.node_acls)), lambda n: [
                Node(acl.node_wwn, n.path, acl_summary(acl), lambda n, acl=acl: [
                    Node(f"mapped_lun{m.index}", n.path, mapped_lun_summary(tpg, m))
                    for m in acl.mapped_luns.values()]) for acl in tpg.node_acls.values()]),
            Node("portals", n.path, count("Portals", len(tpg.portals)), lambda n: [
                Node(p.dirname, n.path, portal_summary(p)) for p in tpg.portals.values()]),
        ]

    def fabric_tpg(n, tpg):
        kids = [Node("luns", n.path, count("LUNs", len(tpg.luns)), lambda n: luns(n, tpg))]
        if tpg.node_acls:
            kids.append(Node("acls", n.path, count("ACLs", len(tpg.node_acls)), lambda n: [
                Node(acl.node_wwn, n.path, count("Mapped LUNs", len(acl.mapped_luns)))
                for acl in tpg.node_acls.values()]))
        return kids

    return Node("/", "/", ("", None), root_kids)


def snapshot_for(root: str, path: str) -> Config:
    """The running configuration `ls path` draws, read with as few configfs files as it
    can (each costs ~0.5 ms in the lab guest, and 1000 targets have ~12,000): below
    /iscsi/WWN only that target; below any fabric, of the storage objects only those a
    LUN exports and of each only its file or device; /backstores and / read them all."""
    from . import configfs
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] == "backstores":
        return configfs.snapshot(root, attributes=False, light=True)
    targets = {parts[1].lower()} if parts[0] == "iscsi" and len(parts) > 1 else None
    return configfs.snapshot(root, attributes=False, light="dev", targets=targets, sos=set())


def find(root: Node, path: str) -> Node | None:
    node = root
    for part in [p for p in path.split("/") if p]:
        node = next((c for c in node.children() if c.name == part), None)
        if node is None:
            return None
    return node


def _sort_key(s: str):
    # configshell sorts names ending in digits numerically (lun2 before lun10):
    # its (.*?)(\d+$), without a regex search per node (9,000 at 1000 targets)
    head = s.rstrip("0123456789")
    return (head, int(s[len(head):])) if len(head) < len(s) else (s, 0)


def render(node: Node, width: int = MAX_WIDTH) -> str:
    """configshell's _render_tree(node) with its default preferences and no colours."""
    out: list[str] = []
    append = out.append

    def draw(n: Node, indent: str, below: str):
        # indent: this node's line's margin; below: its children's ("| " added when a
        # later sibling of this node follows, so the line carries on past its subtree)
        description, healthy = n.summary
        if not description:
            description = "OK" if healthy is True else "ERROR" if healthy is False else "..."
        pad = "." * (width - 7 - len(description) - len(indent) - len(n.name))
        append(f"{indent}o- {n.name} {pad} [{description}]")
        kids = n.children()
        if len(kids) > 1:
            kids = sorted(kids, key=lambda c: _sort_key(c.name))
        last = len(kids) - 1
        for i, c in enumerate(kids):
            draw(c, below, below + ("| " if i < last else "  "))
    draw(node, "", "  ")
    return "\n".join(out)
