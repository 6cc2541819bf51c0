"""Issue 5's bench: log in and out of 32 targets, and the daemon's RSS with 32 sessions.

    .venv/bin/python bench/bench_login_all.py [--targets 32] [--rounds 3] [--boots 5]

One guest boot, the same LIO targets; open-iscsi 2.1.8 (`iscsiadm -m node -L all` through iscsid),
then iscsikit (the forwarding `iscsiadm -m node -L all`, run in iscsikitd, logins in parallel), each
with a fresh daemon; with --rounds N the two alternate N times and the medians are compared. Goal: at most
half open-iscsi's time. Guest times under TCG: only ratios mean anything.
"""

import argparse
import os
import statistics
import sys

import guest_probe



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="-L all / -U all rounds per tool in the one boot")
    ap.add_argument("--profile", action="store_true", help="run iscsikitd at debug and print the logout step times")
    ap.add_argument("--boots", type=int, default=1,
                    help="boot the guest this many times; after the boots, the median of each boot's ratio")
    args = ap.parse_args()
    per_boot = []
    for boot in range(args.boots):
        if args.boots > 1:
            print(f"== boot {boot + 1} of {args.boots}")
        d = one_boot(args)
        if d is None:
            return 1
        ref, ours = d["open_iscsi"], d["iscsikit"]
        per_boot.append({k: ours[k] / ref[k] for k in ("login_all_s", "disks_after_s", "logout_all_s", "daemon_rss_kib")})
    if args.boots > 1:
        print(f"== {args.boots} boots: each boot's ratio (its rounds' medians, ours / open-iscsi), and their median")
        for key in per_boot[0]:
            ratios = [b[key] for b in per_boot]
            print(f"{key:<20}" + " ".join(f"{r:.2f}" for r in ratios) + f"   median {statistics.median(ratios):.2f}")
    return 0


def one_boot(args) -> dict | None:
    load = os.getloadavg()
    d = guest_probe.run("login_all_probe.py", {"BENCH_TARGETS": str(args.targets), "BENCH_ROUNDS": str(args.rounds),
                                               "BENCH_DAEMON_LOG": "debug" if args.profile else "warning"},
                        memory_mb=3072)
    if d is None:
        return None
    print(f"host load average: {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    ref, ours = d["open_iscsi"], d["iscsikit"]
    print(f"{d['targets']} targets        {'open-iscsi':>12}{'iscsikit':>12}{'ratio':>8}")
    for key in ("login_all_s", "disks_after_s", "logout_all_s", "daemon_rss_kib"):
        print(f"{key:<20}{ref[key]:>12.2f}{ours[key]:>12.2f}{ours[key] / ref[key]:>8.2f}")
    print(f"daemon threads with 32 sessions: iscsid {ref['daemon_threads']}, iscsikitd {ours['daemon_threads']}")
    print(f"sessions after -L all: open-iscsi {ref['sessions']}, iscsikit {ours['sessions']}; "
          f"rc {ref['login_all_rc']}/{ours['login_all_rc']}")
    if args.rounds > 1:
        for key in ("login_all_s", "disks_after_s", "logout_all_s"):
            pairs = [(a[key], b[key]) for a, b in zip(ref["rounds"], ours["rounds"])]
            print(f"{key} by round (open-iscsi / iscsikit = ratio): "
                  + "; ".join(f"{a:.2f} / {b:.2f} = {b / a:.2f}" for a, b in pairs))
            ratios = sorted(b / a for a, b in pairs)
            print(f"  {key}: median of the rounds' ratios {ratios[len(ratios) // 2]:.2f}")
    for step, v in ours.get("logout_steps", {}).items():
        if "median" in v:
            print(f"logout step {step}: median {v['median']:.3f} s, max {v['max']:.3f} s (n {v['n']})")
        else:
            print(f"{step}: {v}")
    for tool, r in (("open-iscsi", ref), ("iscsikit", ours)):
        print(f"{tool} RSS by mapping (KiB): " + ", ".join(f"{os.path.basename(n)} {k}" for n, k in r["rss_by_mapping"]))
    return d


if __name__ == "__main__":
    sys.exit(main())
