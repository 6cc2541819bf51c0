"""Run in the guest: a restore compares a running object's ALUA groups with the file's (issue 19).

One fileio object with group ao (Active/Optimized) and tpg1's LUN in it, made by one
iscsikit-target batch and saved. The file is then changed: ao Active/NonOptimized, a new
group ano (id 20, Standby), the LUN moved into ano. `restoreconfig FILE clear_existing=true`
must make configfs say so, without remaking the object or the LUN (the same LUN directory
inode, the same object serial). Then: a restore back to the saved file that fails late leaves
that state; the saved file deletes ano; a merge adding a target whose LUN needs a group of the
running object makes it; a storage_object= restore compares the object's groups and keeps the
one a LUN outside it is in. Reported as JSON.
"""

import json
import os
import socket
import subprocess
import sys

BIN = os.path.dirname(sys.executable)
IKT = os.path.join(BIN, "iscsikit-target")
IQN = "iqn.2026-11.org.iscsikit.test:alua"
BACKING = "/tmp/alua.img"
SAVE = "/tmp/alua-save.json"
out: dict = {}


def ikt(*args, stdin=None):
    r = subprocess.run([IKT, *args], input=stdin, capture_output=True, text=True, timeout=300)
    return {"rc": r.returncode, "out": r.stdout[-1500:], "err": r.stderr[-1500:]}


def read(path):
    with open(path) as f:
        return f.read().strip()


def main():
    with open(BACKING, "wb") as f:
        f.truncate(16 << 20)
    out["build"] = ikt(stdin="\n".join([
        f"/backstores/fileio create al {BACKING} 16M write_back=false",
        f"/iscsi create {IQN}",
        f"/iscsi/{IQN}/tpg1/luns create /backstores/fileio/al",
        "/backstores/fileio/al/alua create ao 10",
        "/backstores/fileio/al/alua/ao set alua alua_access_type=1 alua_access_state=0",
        f"/iscsi/{IQN}/tpg1/luns/lun0 set alua alua_tg_pt_gp_name=ao",
        f"saveconfig {SAVE}",
    ]) + "\n")
    core = next(f"/sys/kernel/config/target/core/{h}/al" for h in os.listdir("/sys/kernel/config/target/core")
                if os.path.isdir(f"/sys/kernel/config/target/core/{h}/al"))
    lun = f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/lun/lun_0"
    before = (os.stat(lun).st_ino, read(f"{core}/wwn/vpd_unit_serial"))
    with open(SAVE) as f:
        cfg = json.load(f)
    so = next(s for s in cfg["storage_objects"] if s["name"] == "al")
    ao = next(g for g in so["alua_tpgs"] if g["name"] == "ao")
    ao["alua_access_state"] = 1
    so["alua_tpgs"].append({**ao, "name": "ano", "tg_pt_gp_id": 20, "alua_access_state": 2})
    tpg = next(t for t in cfg["targets"] if t["wwn"] == IQN)["tpgs"][0]
    tpg["luns"][0]["alua_tg_pt_gp_name"] = "ano"
    with open("/tmp/alua-changed.json", "w") as f:
        json.dump(cfg, f)
    out["restore"] = ikt("restoreconfig", "/tmp/alua-changed.json", "clear_existing=true")
    out["ao_state"] = read(f"{core}/alua/ao/alua_access_state")
    out["ano_state"] = read(f"{core}/alua/ano/alua_access_state") if os.path.isdir(f"{core}/alua/ano") else None
    out["ano_id"] = read(f"{core}/alua/ano/tg_pt_gp_id") if os.path.isdir(f"{core}/alua/ano") else None
    out["lun_group"] = read(f"{lun}/alua_tg_pt_gp").splitlines()[0]
    out["kept"] = (os.stat(lun).st_ino, read(f"{core}/wwn/vpd_unit_serial")) == before
    # the same file again: nothing left to change (dry_run lists what would be)
    out["again_dry"] = ikt("restoreconfig", "/tmp/alua-changed.json", "clear_existing=true", "dry_run=true")
    out["groups_after"] = {g: {f: read(f"{core}/alua/{g}/{f}") for f in ("alua_access_state", "alua_access_status",
                                                                          "alua_access_type", "preferred")}
                           for g in os.listdir(f"{core}/alua")}
    out["again"] = ikt("restoreconfig", "/tmp/alua-changed.json", "clear_existing=true")
    lun_ino = os.stat(lun).st_ino

    def state():
        """Each group's (id, state) and the LUNs' groups, as configfs says."""
        groups = {g: (read(f"{core}/alua/{g}/tg_pt_gp_id"), read(f"{core}/alua/{g}/alua_access_state"))
                  for g in sorted(os.listdir(f"{core}/alua")) if g != "default_tg_pt_gp"}
        luns = {}
        for t in sorted(os.listdir("/sys/kernel/config/target/iscsi")):
            ld = f"/sys/kernel/config/target/iscsi/{t}/tpgt_1/lun/lun_0"
            if t.startswith("iqn.") and os.path.isdir(ld):
                luns[t] = read(f"{ld}/alua_tg_pt_gp").splitlines()[0].split(":", 1)[1].strip()
        return {"groups": groups, "luns": luns}

    def write(name, c):
        with open(name, "w") as f:
            json.dump(c, f)
        return name

    # a restore back to the saved file that fails after deleting ano (tpg1's portal replaced
    # by 127.0.0.1:3261, where this probe listens: LIO's bind fails with EADDRINUSE, and
    # portals are made after the ALUA steps): everything as before, ano made again with its
    # id and state, the LUN back in it, the wildcard portal back
    with open(SAVE) as f:
        orig = json.load(f)
    out["before_failed"] = state()
    out["portals_before"] = sorted(os.listdir(f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/np"))
    bad = json.loads(json.dumps(orig))
    next(t for t in bad["targets"] if t["wwn"] == IQN)["tpgs"][0]["portals"] = [
        {"ip_address": "127.0.0.1", "port": 3261, "iser": False, "offload": False}]
    with socket.create_server(("127.0.0.1", 3261)):
        out["failed"] = ikt("restoreconfig", write("/tmp/alua-bad.json", bad), "clear_existing=true")
    out["after_failed"] = state()
    out["portals_after"] = sorted(os.listdir(f"/sys/kernel/config/target/iscsi/{IQN}/tpgt_1/np"))
    # the saved file (ao Active/Optimized only, the LUN in ao): ano deleted, the LUN moved
    # back first, nothing remade
    out["back"] = ikt("restoreconfig", SAVE, "clear_existing=true")
    out["after_back"] = state()
    out["back_kept"] = os.stat(lun).st_ino == lun_ino
    # a merge that adds a target whose LUN is in group mg of the running object: mg made from
    # the file, the running ao kept as it runs (the file's ao differs)
    merged = json.loads(json.dumps(orig))
    mso = next(s for s in merged["storage_objects"] if s["name"] == "al")
    next(g for g in mso["alua_tpgs"] if g["name"] == "ao")["alua_access_state"] = 2
    mso["alua_tpgs"].append({**next(g for g in mso["alua_tpgs"] if g["name"] == "ao"),
                             "name": "mg", "tg_pt_gp_id": 30, "alua_access_state": 1})
    t2 = json.loads(json.dumps(next(t for t in merged["targets"] if t["wwn"] == IQN)))
    t2["wwn"] = IQN + "2"
    t2["tpgs"][0]["portals"] = []
    t2["tpgs"][0]["luns"][0]["alua_tg_pt_gp_name"] = "mg"
    merged["targets"].append(t2)
    out["merge"] = ikt("restoreconfig", write("/tmp/alua-merge.json", merged))
    out["after_merge"] = state()
    # storage_object=al clear_existing=true from a file whose al has ao Active/NonOptimized and
    # no mg: ao written, mg kept (the second target's LUN, outside this restore, is in it)
    sel = json.loads(json.dumps(orig))
    next(g for g in next(s for s in sel["storage_objects"] if s["name"] == "al")["alua_tpgs"]
         if g["name"] == "ao")["alua_access_state"] = 1
    out["selective"] = ikt("restoreconfig", write("/tmp/alua-sel.json", sel), "clear_existing=true",
                           "storage_object=al")
    out["after_selective"] = state()
    ikt("clearconfig", "confirm=true")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
