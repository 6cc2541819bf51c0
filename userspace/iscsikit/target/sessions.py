"""Who is logged in to which target, read from configfs.

Explicit-ACL sessions come from each ACL's `info` file; demo-mode sessions
(generated ACLs) only appear in the TPG's `dynamic_sessions` list, which
targetcli does not show (targetcli-fb #120, #223), so both are read here.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from . import configfs


@dataclass
class Connection:
    cid: int
    state: str
    address: str = ""
    transport: str = ""


@dataclass
class Session:
    target: str
    tpg: int
    initiator: str
    dynamic: bool = False               # demo mode: no explicit ACL
    alias: str = ""
    sid: int | None = None
    isid: str = ""
    tsih: int | None = None
    type: str = ""
    state: str = ""
    connections: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_acl_info(text: str, target: str, tpg: int, initiator: str) -> Session | None:
    """Parse acls/<iqn>/info (iscsi_target_configfs.c: lio_target_nacl_info_show)."""
    lines = text.splitlines()
    if not lines or lines[0].startswith("No active"):
        return None
    s = Session(target=target, tpg=tpg, initiator=initiator)
    for line in lines:
        line = line.strip()
        if line.startswith("InitiatorAlias:"):
            s.alias = line.split(":", 1)[1].strip()
        elif line.startswith("LIO Session ID:"):
            words = line.split()
            s.sid = int(words[3])
            if "ISID:" in words:
                # "ISID: 0x%6ph": 0x then six space-separated hex bytes (iscsi_target_configfs.c)
                i = words.index("ISID:")
                s.isid = "".join(w.removeprefix("0x") for w in words[i + 1:i + 7])
            if "TSIH:" in words:
                s.tsih = int(words[words.index("TSIH:") + 1])
            if "SessionType:" in words:
                s.type = words[words.index("SessionType:") + 1]
        elif "TARG_SESS_STATE_" in line:
            s.state = line.split("TARG_SESS_STATE_", 1)[1].split()[0]
        elif line.startswith("CID:") and "TARG_CONN_STATE_" in line:
            s.connections.append(Connection(cid=int(line.split()[1]),
                                            state=line.split("TARG_CONN_STATE_", 1)[1].split()[0]))
        elif line.startswith("Address") and s.connections:
            words = line.split()
            s.connections[-1].address = words[1] if len(words) > 1 else ""
            s.connections[-1].transport = words[2] if len(words) > 2 else ""
    return s


def list_sessions(root: str = configfs.ROOT) -> list[Session]:
    out: list[Session] = []
    fab = f"{root}/iscsi"
    if not os.path.isdir(fab):
        return out
    for wwn in sorted(os.listdir(fab)):
        td = f"{fab}/{wwn}"
        if not os.path.isdir(td) or wwn == "discovery_auth":
            continue
        for tname in sorted(os.listdir(td)):
            if not tname.startswith("tpgt_"):
                continue
            tag = int(tname[5:])
            d = f"{td}/{tname}"
            for node in sorted(os.listdir(f"{d}/acls")):
                try:
                    s = parse_acl_info(configfs.read(f"{d}/acls/{node}/info"), wwn, tag, node)
                except OSError:
                    continue
                if s:
                    out.append(s)
            try:
                # target_show_dynamic_sessions() (target_core_tpg.c) ends each name with "\n\0"
                dyn = configfs.read(f"{d}/dynamic_sessions").replace("\0", "\n").split()
            except OSError:
                dyn = []
            for node in dyn:
                out.append(Session(target=wwn, tpg=tag, initiator=node, dynamic=True, state="LOGGED_IN"))
    return out
