"""restore / ls / clear of N LUNs: iscsikit-target against targetctl/targetcli, same guest boot.

N LUNs in N/10 targets, one ACL per target mapping its 10 LUNs, one sparse
fileio object per LUN (docs/anchors.md).  Every timing is a whole process
run in the guest (Python start-up included, as a user pays it), measured
with the guest's clock; only ratios between the two tools mean anything.

    python bench/bench_target_restore.py                  # 100 and 300, both tools
    python bench/bench_target_restore.py --ours-only 1000 # our own curve
    python bench/bench_target_restore.py 100 250 500 1000 --ref-max 500
        # both tools up to 500, ours alone at 1000 (targetctl would need ~30 min there)
    python bench/bench_target_restore.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import guest_probe
from iscsikit.lab.guest import Guest
from iscsikit.target import saveconfig
from iscsikit.target.model import Config, LUN, MappedLUN, NodeACL, Portal, StorageObject, Target, TPG

MODULES = ("configfs", "target_core_mod", "iscsi_target_mod", "target_core_file", "target_core_iblock")
IKT = os.path.join(os.path.dirname(sys.executable), "iscsikit-target")   # the guest shares this venv
DIR = "/tmp/bench"


def build(n: int) -> Config:
    cfg = Config()
    for t in range(n // 10):
        wwn = f"iqn.2024-01.com.example.bench:t{t:04d}"
        tpg = TPG(tag=1, attributes={"authentication": 0})
        p = Portal("0.0.0.0", 3260)
        tpg.portals[p.key] = p
        acl = NodeACL(f"iqn.2024-01.com.example.bench:init{t:04d}")
        for i in range(10):
            name = f"d{t:04d}_{i}"
            so = StorageObject("fileio", name, dev=f"{DIR}/{name}.img", size=1 << 20)
            cfg.storage_objects[so.key] = so
            tpg.luns[i] = LUN(i, so.path)
            acl.mapped_luns[i] = MappedLUN(i, i)
        tpg.node_acls[acl.node_wwn] = acl
        cfg.targets[wwn] = Target(wwn, tpgs={1: tpg})
    return cfg


def timed(g: Guest, cmd: str, timeout: float = 3600) -> float:
    """Seconds of guest time for one command, measured inside the guest."""
    r = g.run(f"s=$(cat /proc/uptime); {cmd} >/tmp/bench/out.txt 2>/tmp/bench/err.txt; rc=$?; "
              f"e=$(cat /proc/uptime); echo ${{s%% *}} ${{e%% *}} $rc", timeout=timeout)
    start, end, rc = r.out.split()
    if rc != "0":
        err = g.run("tail -5 /tmp/bench/err.txt").out
        raise SystemExit(f"{cmd}: exit {rc}: {err}")
    return round(float(end) - float(start), 2)


def run_size(g: Guest, n: int, ours_only: bool) -> dict:
    """Ours (restore, no-op restore, ls, clear), then the reference on the same file."""
    path = f"{DIR}/n{n}.json"
    g.run(f"mkdir -p {DIR} && cat > {path}", input=saveconfig.dumps(build(n)), check=True)
    out: dict = {"n": n}
    out["ours_restore"] = timed(g, f"{IKT} restoreconfig {path} clear_existing=true")
    out["ours_restore_again"] = timed(g, f"{IKT} restoreconfig {path} clear_existing=true")
    out["ours_ls"] = timed(g, f"{IKT} ls /")
    luns = g.run(f"ls -d /sys/kernel/config/target/iscsi/*/tpgt_1/lun/lun_* | wc -l").out.strip()
    assert int(luns) == n, f"{luns} LUNs after our restore, wanted {n}"
    out["ours_clear"] = timed(g, f"{IKT} clearconfig confirm=true")
    if not ours_only:
        out["ref_restore"] = timed(g, f"targetctl restore {path}")
        luns = g.run(f"ls -d /sys/kernel/config/target/iscsi/*/tpgt_1/lun/lun_* | wc -l").out.strip()
        assert int(luns) == n, f"{luns} LUNs after targetctl restore, wanted {n}"
        out["ref_ls"] = timed(g, "targetcli ls /")
        out["ref_clear"] = timed(g, "targetctl clear")
        for what in ("restore", "ls", "clear"):
            out[f"ratio_{what}"] = round(out[f"ref_{what}"] / max(out[f"ours_{what}"], 0.01), 1)
    g.run(f"rm -f {DIR}/*.img")
    return out


def run_ab(g: Guest, n: int, rounds: int = 2) -> dict:
    """Our restore and clear with the serial executor and the thread pool, alternately, same boot.

    The host may carry other guests; alternating keeps drift from favouring either side.
    """
    path = f"{DIR}/n{n}.json"
    g.run(f"mkdir -p {DIR} && cat > {path}", input=saveconfig.dumps(build(n)), check=True)
    out: dict = {"n": n}
    for _ in range(rounds):
        for workers in (1, 8):
            env = f"ISCSIKIT_TARGET_WORKERS={workers}"
            out.setdefault(f"restore_w{workers}", []).append(
                timed(g, f"{env} {IKT} restoreconfig {path} clear_existing=true"))
            out.setdefault(f"clear_w{workers}", []).append(timed(g, f"{env} {IKT} clearconfig confirm=true"))
    g.run(f"rm -f {DIR}/*.img")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 300])
    ap.add_argument("--ours-only", action="store_true", help="skip targetctl/targetcli (for large N)")
    ap.add_argument("--ref-max", type=int, default=None,
                    help="run targetctl/targetcli only for sizes up to this one")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--ab", type=int, metavar="N",
                    help="only compare our serial executor with the thread pool at N LUNs")
    args = ap.parse_args(argv)
    results = []
    with guest_probe.guest(memory_mb=3072, modules=MODULES) as g:
        g.run("mkdir -p /run/dbus /tmp/bench; pgrep -x dbus-daemon || dbus-daemon --system --fork", check=False)
        g.run(f"{IKT} ls / >/dev/null", timeout=300)          # warm the guest's .pyc cache
        for n in [] if args.ab else args.sizes:
            r = run_size(g, n, args.ours_only or (args.ref_max is not None and n > args.ref_max))
            results.append(r)
            print(json.dumps(r), flush=True)
        if args.ab:
            results.append(run_ab(g, args.ab))
            print(json.dumps(results[-1]), flush=True)
    if not args.ours_only and not args.ab:
        print(f"\n{'N':>6} {'restore ours/ref':>22} {'ls ours/ref':>18} {'clear ours/ref':>18}")
        for r in results:
            if "ref_restore" not in r:
                print(f"{r['n']:>6} {r['ours_restore']:>8} / -{'':<15}{r['ours_ls']:>6} / -{'':<12}"
                      f"{r['ours_clear']:>6} / -")
                continue
            print(f"{r['n']:>6} {r['ours_restore']:>8} / {r['ref_restore']:<7} x{r['ratio_restore']:<5}"
                  f"{r['ours_ls']:>6} / {r['ref_ls']:<6} x{r['ratio_ls']:<5}"
                  f"{r['ours_clear']:>6} / {r['ref_clear']:<6} x{r['ratio_clear']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
