"""Issue 15's bench: how late a login reaches `iscsikit-target sessions --follow`, kernel events vs polling.

    .venv/bin/python bench/bench_target_events.py [--logins 20] [--json FILE]

One guest boot: kmod/iscsikit_lio's generic netlink events and a configfs poller at targetcli's
granularity (1 s, `sessions --follow --poll`) follow the same logins side by side
(bench/probes/target_events_probe.py). Latency is from the kernel's timestamp of the login to
the follower's line. Goal: kmod's median at most 0.1x the poller's. Guest times under TCG.
"""

import argparse
import json
import sys
from pathlib import Path

import guest_probe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logins", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the raw report here")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent
    if not (root.parent / "kmod" / "iscsikit_lio.ko").is_file():
        print("bench_target_events: kmod/iscsikit_lio.ko is not built: run .ci/setup", file=sys.stderr)
        return 1
    d = guest_probe.run("target_events_probe.py", {"BENCH_LOGINS": str(args.logins)}, timeout=900)
    if d is None:
        return 1
    if args.json:
        args.json.write_text(json.dumps(d, indent=2) + "\n")
    k, p = d["kmod"], d["poll"]
    print(f"{d['logins']} logins, event latency (kernel -> line)   {'kmod events':>12}{'1 s poller':>12}{'ratio':>8}")
    for key in ("median_ms", "p90_ms", "max_ms", "min_ms"):
        print(f"{key:<40}{k[key]:>12.1f}{p[key]:>12.1f}{k[key] / p[key]:>8.3f}")
    print(f"seen: kmod {k['n']}/{d['logins']}, poller {p['n']}/{d['logins']}")
    print("interpreter start + import, median of 3 (s): " + ", ".join(f"{m} {t:.2f}" for m, t in d["imports_s"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
