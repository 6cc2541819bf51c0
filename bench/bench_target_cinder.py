"""OpenStack Cinder's shape: one target + one LUN + one ACL (+ the default portal) per volume.

Cinder's LIO driver exports each volume as its own target, one step per
process.  For N = 100, 300, 1000 already-exported volumes (restored from a
generated saveconfig.json, and that restore timed), one more volume is made by
one-shot commands, each a separate process, then `ls /iscsi`: with
iscsikit-target, and with Debian's targetcli for N up to --ref-max, in the same
guest boot.  Then the clear of the largest N against the kernel's own floor
(bench/probes/lio_clear_floor.py).  Guest seconds; read the ratios.

    python bench/bench_target_cinder.py                       # 100 300 1000, targetcli up to 300
    python bench/bench_target_cinder.py 100 --ref-max 100 --json out.json
    python bench/bench_target_cinder.py --before main~3       # that commit's code timed beside ours
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from iscsikit.lab.guest import Guest

MODULES = ("configfs", "target_core_mod", "iscsi_target_mod", "target_core_file")
PROBE = Path(__file__).resolve().parent / "probes" / "cinder_probe.py"
IKT = os.path.join(os.path.dirname(sys.executable), "iscsikit-target")   # the guest shares this venv
STEPS = ("backstore", "target+portal", "lun", "acl")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 300, 1000])
    ap.add_argument("--ref-max", type=int, default=300, help="run targetcli only up to this N")
    ap.add_argument("--clear-at", type=int, default=None, help="clear vs floor at this N (default: the largest)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--before", metavar="REV", help="also time this git revision's userspace/ (the guest "
                    "imports it through PYTHONPATH from an extracted copy)")
    args = ap.parse_args(argv)
    clear_at = args.clear_at or max(args.sizes)
    env = {}
    with tempfile.TemporaryDirectory(prefix="cinder-before-") as tmp:
        if args.before:
            # extracted before the guest boots: the guest sees the host's tree as it was then
            repo = Path(__file__).resolve().parent.parent
            tar = subprocess.run(["git", "-C", str(repo), "archive", args.before, "userspace"],
                                 capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
            env["BENCH_BEFORE"] = f"{tmp}/userspace"
        with Guest(memory_mb=3072) as g:
            g.modprobe(*MODULES)
            warm = f"{IKT} ls / >/dev/null; targetcli ls / >/dev/null 2>&1"        # warm the .pyc caches
            if args.before:
                warm += f"; PYTHONPATH={tmp}/userspace {IKT} ls / >/dev/null"
            g.run(warm, timeout=600)
            r = g.run([sys.executable, str(PROBE), *map(str, args.sizes), "--ref-max", str(args.ref_max),
                       "--clear-at", str(clear_at)], timeout=7200, check=True, env=env)
    results = [json.loads(line) for line in r.out.splitlines() if line.startswith("{")]
    for res in results:
        print(json.dumps(res), flush=True)
    print(f"\n{'N':>6} {'step':<14} {'ours':>7} {'before':>7} {'targetcli':>10} {'ours/ref':>9}")
    for res in results:
        if "n" not in res:
            continue
        names = [*STEPS, "ls /iscsi"]
        ours = res["ours_steps"] + [res["ours_ls"]]
        before = res.get("before_steps", [None] * 4) + [res.get("before_ls")]
        ref = res.get("ref_steps", [None] * 4) + [res.get("ref_ls")]
        for name, a, o, b in zip(names, ours, before, ref):
            ratio = f"{a / b:.3f}" if b else "-"
            print(f"{res['n']:>6} {name:<14} {a:>7.2f} {o if o is not None else '-':>7} "
                  f"{b if b is not None else '-':>10} {ratio:>9}")
        print(f"{res['n']:>6} {'restore':<14} {res['ours_restore']:>7.2f}")
    for res in results:
        if "clear_n" in res:
            print(f"\nclear at {res['clear_n']}: ours {res['ours_clear']} s, kernel floor {res['floor_serial']} s "
                  f"(x{res['ratio_ours_over_floor']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
