"""OpenStack Cinder's shape: one target + one LUN + one ACL (+ the default portal) per volume.

Cinder's LIO driver exports each volume as its own target, one step per
process.  For N = 100, 300, 1000 already-exported volumes (restored from a
generated saveconfig.json, and that restore timed), one more volume is made by
one-shot commands, each a separate process, then `ls /iscsi`: with the
forwarding iscsikit-target while iscsikit-targetd runs (warm), with the Python
iscsikit-target-local in its own process, and with Debian's targetcli for N up
to --ref-max, in the same guest boot (bench/probes/cinder_probe.py).  Then the clear of the largest N against the kernel's own floor
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
import threading
from pathlib import Path

import guest_probe

MODULES = ("configfs", "target_core_mod", "iscsi_target_mod", "target_core_file")
STEPS = ("backstore", "target+portal", "lun", "acl")
TOOLS = (("warm", "warm (targetd)"), ("ours", "in-process"), ("before", "before"), ("ref", "targetcli"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[100, 300, 1000])
    ap.add_argument("--ref-max", type=int, default=300, help="run targetcli only up to this N")
    ap.add_argument("--clear-at", type=int, default=None, help="clear vs floor at this N (default: the largest; "
                    "0: none)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--before", metavar="REV", help="also time this git revision's userspace/ (the guest "
                    "imports it through PYTHONPATH from an extracted copy)")
    args = ap.parse_args(argv)
    clear_at = max(args.sizes) if args.clear_at is None else args.clear_at
    env = {"BENCH_SIZES": " ".join(map(str, args.sizes)), "BENCH_REF_MAX": str(args.ref_max),
           "BENCH_CLEAR_AT": str(clear_at), "BENCH_REPS": os.environ.get("BENCH_REPS", "2")}
    with tempfile.TemporaryDirectory(prefix="cinder-before-") as tmp:
        if args.before:
            # extracted before the guest boots: the guest sees the host's tree as it was then
            repo = Path(__file__).resolve().parent.parent
            tar = subprocess.run(["git", "-C", str(repo), "archive", args.before, "userspace"],
                                 capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=tar, check=True)
            env["BENCH_BEFORE"] = f"{tmp}/userspace"
        # the host is shared: its load average beside the numbers, sampled through the run
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(10):
                samples.append(os.getloadavg()[0])
        threading.Thread(target=sample, daemon=True).start()
        try:
            doc = guest_probe.run("cinder_probe.py", env, memory_mb=3072, timeout=7200, modules=MODULES)
        finally:
            done.set()
    if doc is None:
        return 1
    if samples:
        print(f"host load average (1 min) during the run: {min(samples):.1f}-{max(samples):.1f}, "
              f"mean {sum(samples) / len(samples):.1f} ({len(samples)} samples)")
        doc["results"].append({"host_load_1min": samples})
    results = doc["results"]
    for res in results:
        print(json.dumps(res), flush=True)
    print(f"\n{'N':>6} {'load':>5} {'step':<14}" + "".join(f"{label:>16}" for _, label in TOOLS)
          + f"{'warm/targetcli':>16}")
    for res in results:
        if "n" not in res:
            continue
        for i, name in enumerate([*STEPS, "ls /iscsi"]):
            cells = [(res[f"{tool}_steps"] + [res[f"{tool}_ls"]])[i] if f"{tool}_steps" in res else None
                     for tool, _ in TOOLS]
            ratio = f"{cells[0] / cells[3]:.3f}" if cells[0] is not None and cells[3] else "-"
            print(f"{res['n']:>6} {res['load'][0]:>5} {name:<14}"
                  + "".join(f"{c if c is not None else '-':>16}" for c in cells) + f"{ratio:>16}")
        print(f"{res['n']:>6} {'':>5} {'restore':<14}{res['ours_restore']:>16} (in-process)")
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
