"""dm-multipath over two iscsikit sessions: failover and failback of the optimized path, one guest boot.

    .venv/bin/python bench/bench_multipath.py [--rounds 20] [--cut 10] [--long 300]

Runs tests/vm/probes/multipath_story.py (two veth paths to a LIO target in its own network
namespace, ALUA ao/ano, multipathd with group_by_prio / alua / failback immediate,
replacement_timeout 5) with `--rounds` cuts of `--cut` seconds of the optimized path under a
checksummed O_DIRECT writer on the map: iscsikit's sessions, then Debian's open-iscsi's with
the same ifaces, timeouts and multipath.conf, in the same boot; then (with --long) one cut of
`--long` seconds with ours. Prints a Markdown table of the seconds per round and the ratios
of the medians; the results and their notes are kept in bench/results/multipath.md.
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from iscsikit.lab.guest import Guest
from iscsikit.lab.story import LAB_MODULES

PROBE = Path(__file__).resolve().parents[1] / "tests" / "vm" / "probes" / "multipath_story.py"
OSBRICK_PROBE = Path(__file__).parent / "probes" / "osbrick_mpath_probe.py"
MODULES = LAB_MODULES + ("dm_multipath", "scsi_dh_alua")


def _load() -> str:
    """The host's 1-minute load average (the machine is shared: it says how busy the run was)."""
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run(g: Guest, rounds: int, cut: float, stack: str = "iscsikit", profile: bool = False) -> dict:
    load = _load()
    r = g.run([sys.executable, str(PROBE), str(rounds), str(cut), stack], timeout=600 + rounds * (cut + 60),
              env={"MP_TIMELINE": "1"} if profile else None)
    rep = json.loads(r.out.strip().splitlines()[-1])
    rep["load_before"], rep["load_after"] = load, _load()
    if os.environ.get("BENCH_KEEP"):         # the whole report, for a closer look
        Path(os.environ["BENCH_KEEP"], f"multipath-{stack}-{rounds}x{cut:g}.json").write_text(json.dumps(rep, indent=1))
    return rep


def medians(rep: dict) -> tuple[float, float]:
    rs = rep.get("rounds") or [{"failover_s": float("nan"), "failback_s": float("nan")}]
    return statistics.median(r["failover_s"] for r in rs), statistics.median(r["failback_s"] for r in rs)


# the steps of one round, as path_timeline names them: (label, event, after the cut or the restore)
FAILOVER_STEPS = (("target FIN/RST", ("target FIN", "target RST", "target FIN RST")), ("session FAILED", ("session FAILED",)),
                  ("device transport-offline", ("device transport-offline",)), ("dm path failed", ("dm path failed",)))
FAILBACK_STEPS = (("first SYN", ("initiator SYN",)), ("login-rsp 00/00 final", ("target login-rsp 00/00 final",)),
                  ("session LOGGED_IN", ("session LOGGED_IN",)), ("device running", ("device running",)),
                  ("dm path active", ("dm path active",)), ("writes move", ("writes move",)))


def step_times(r: dict) -> dict:
    """Each step's first time: failover steps after the cut, failback steps after the restore."""
    at = r["restore_at"]
    out = {}
    for label, names in FAILOVER_STEPS:
        ts = [t for t, w in r["timeline"] if w in names and t < at]
        out[label] = min(ts) if ts else None
    for label, names in FAILBACK_STEPS:
        ts = [t - at for t, w in r["timeline"] if w in names and t >= at]
        out[label] = round(min(ts), 3) if ts else None
    out["attempts during the cut"] = sum(1 for t, w in r["timeline"] if w == "initiator SYN" and t < at)
    return out


def profile_table(reps: dict) -> str:
    """Median seconds of each step, per stack, side by side."""
    labels = [l for l, _ in FAILOVER_STEPS] + ["attempts during the cut"] + [l for l, _ in FAILBACK_STEPS]
    cols = {stack: [step_times(r) for r in rep.get("rounds", []) if "timeline" in r] for stack, rep in reps.items()}
    lines = ["| step (median s; failover steps from the cut, failback steps from the restore) | "
             + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for label in labels:
        cells = []
        for rows in cols.values():
            vals = [r[label] for r in rows if r.get(label) is not None]
            cells.append(f"{statistics.median(vals):.2f} ({len(vals)}/{len(rows)})" if vals else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(rep: dict) -> str:
    lines = ["| round | failover s | failback s | path back |", "| --- | --- | --- | --- |"]
    for i, r in enumerate(rep.get("rounds", []), 1):
        lines.append(f"| {i} | {r['failover_s']} | {r['failback_s']} | {r['back']} |")
    rs = rep.get("rounds", [])
    if rs:
        fo, fb = [r["failover_s"] for r in rs], [r["failback_s"] for r in rs]
        lines.append(f"| median (min-max) | {statistics.median(fo):.2f} ({min(fo)}-{max(fo)}) "
                     f"| {statistics.median(fb):.2f} ({min(fb)}-{max(fb)}) | {sum(r['back'] for r in rs)}/{len(rs)} |")
    lines.append(f"\noptimized path's kernel timers: recovery_tmo {rep.get('recovery_tmo')}, "
                 f"{rep.get('conn_timers')}; host load average before / after: {rep.get('load_before')} / "
                 f"{rep.get('load_after')}")
    w = rep.get("writer", {})
    lines.append(f"\nwriter: {w.get('writes')} verified 64 KiB writes, errors {w.get('errors')}, "
                 f"verify errors {w.get('verify_errors')}, final verify errors {w.get('final_verify_errors')}, "
                 f"longest stall {w.get('max_stall_s', 0):.2f} s; I/O share on the optimized path "
                 f"{rep.get('io_share_optimized')}")
    if "error" in rep:
        lines.append(f"\nerror: {rep['error'][-800:]}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cut", type=float, default=10.0)
    ap.add_argument("--long", type=float, default=0.0, help="then one cut of this many seconds (e.g. 300)")
    ap.add_argument("--no-reference", action="store_true", help="skip open-iscsi's rounds")
    ap.add_argument("--osbrick", action="store_true",
                    help="also os-brick 7.1.1's ISCSIConnector with use_multipath=True (its venv as bench_osbrick.py)")
    ap.add_argument("--profile", action="store_true",
                    help="time each step of every round (tests/vm/probes/path_timeline.py) and print them")
    ap.add_argument("--osbrick-only", action="store_true", help="with --osbrick: skip the rounds")
    args = ap.parse_args()
    python = None
    if args.osbrick:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_osbrick import osbrick_venv
        python = osbrick_venv()
    with Guest() as g:
        g.modprobe(*MODULES)
        if python is not None:
            r = g.run([sys.executable, str(OSBRICK_PROBE)], env={"OSBRICK_PYTHON": str(python)}, timeout=900)
            rep = json.loads(r.out.strip().splitlines()[-1])
            ob = rep.get("osbrick", {})
            print("## os-brick ISCSIConnector, use_multipath=True\n")
            print(f"connect {ob.get('connect_s')} s, disconnect {ob.get('disconnect_s')} s, "
                  f"device {ob.get('device')}, data_ok {ob.get('data_ok')}\n")
            print("while connected:\n\n```\n" + ob.get("multipath_ll", "") + "```\n")
            print(f"after disconnect: maps {rep.get('after', {}).get('maps')!r}, "
                  f"sessions {rep.get('after', {}).get('sessions')}, disks {rep.get('after', {}).get('disks')}\n")
            if rep.get("error") or rep.get("osbrick_rc"):
                print(f"error: {rep.get('error')} {rep.get('osbrick_err')}\n")
            if args.osbrick_only:
                return 0
        ours = run(g, args.rounds, args.cut, profile=args.profile)
        print(f"## iscsikit: {args.rounds} rounds, {args.cut:g} s cut\n\n{table(ours)}\n", flush=True)
        if not args.no_reference:
            ref = run(g, args.rounds, args.cut, "open-iscsi", profile=args.profile)
            print(f"## open-iscsi 2.1.8: {args.rounds} rounds, {args.cut:g} s cut\n\n{table(ref)}\n", flush=True)
            (fo, fb), (rfo, rfb) = medians(ours), medians(ref)
            print(f"median failover {fo:.2f} s vs {rfo:.2f} s ({fo / rfo:.2f}x); "
                  f"median failback {fb:.2f} s vs {rfb:.2f} s ({fb / rfb:.2f}x)\n", flush=True)
            if args.profile:
                print(profile_table({"iscsikit": ours, "open-iscsi": ref}) + "\n", flush=True)
                for stack, rep in (("iscsikit", ours), ("open-iscsi", ref)):
                    for i, r in enumerate(rep.get("rounds", [])[:2], 1):
                        print(f"{stack} round {i} (restore at {r.get('restore_at')} s):\n```\n"
                              + "\n".join(f"{t:8.3f} {w}" for t, w in r.get("timeline", [])) + "\n```\n")
        if args.long:
            rep = run(g, 1, args.long)
            print(f"## one {args.long:g} s cut\n\n{table(rep)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
