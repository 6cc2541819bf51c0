"""Issue 5's bench: log in and out of 32 targets, and the daemon's RSS with 32 sessions.

    .venv/bin/python bench/bench_login_all.py [--targets 32]

One guest boot, the same LIO targets; open-iscsi 2.1.8 (`iscsiadm -m node -L all` through iscsid),
then iscsikit (the forwarding `iscsiadm -m node -L all`, run in iscsikitd, logins in parallel). Goal: at most
half open-iscsi's time. Guest times under TCG: only ratios mean anything.
"""

import argparse
import os
import sys

import guest_probe



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=32)
    args = ap.parse_args()
    d = guest_probe.run("login_all_probe.py", {"BENCH_TARGETS": str(args.targets)}, memory_mb=3072)
    if d is None:
        return 1
    ref, ours = d["open_iscsi"], d["iscsikit"]
    print(f"{d['targets']} targets        {'open-iscsi':>12}{'iscsikit':>12}{'ratio':>8}")
    for key in ("login_all_s", "disks_after_s", "logout_all_s", "daemon_rss_kib"):
        print(f"{key:<20}{ref[key]:>12.2f}{ours[key]:>12.2f}{ours[key] / ref[key]:>8.2f}")
    print(f"sessions after -L all: open-iscsi {ref['sessions']}, iscsikit {ours['sessions']}; "
          f"rc {ref['login_all_rc']}/{ours['login_all_rc']}")
    for tool, r in (("open-iscsi", ref), ("iscsikit", ours)):
        print(f"{tool} RSS by mapping (KiB): " + ", ".join(f"{os.path.basename(n)} {k}" for n, k in r["rss_by_mapping"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
