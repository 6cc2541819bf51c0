"""Issue 4's bench: one guest boot, open-iscsi 2.1.8 vs iscsikit against the same LIO LUN.

    .venv/bin/python bench/bench_initiator.py [--rounds 5] [--mib 256]

Prints login latency (median of N, through each tool's CLI and daemon), login until
the disk node exists, and 256 MiB sequential O_DIRECT write and read, with ratios
(iscsikit / open-iscsi; below 1.0 is faster for times, above 1.0 better for MiB/s).
Times are guest times under TCG: only the ratios mean anything.
"""

import argparse
import sys

import guest_probe



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    d = guest_probe.run("initiator_probe.py", {"BENCH_ROUNDS": str(args.rounds), "BENCH_MIB": str(args.mib)})
    if d is None:
        return 1
    ref, ours = d["open_iscsi"], d["iscsikit"]
    print(f"{'metric':<32}{'open-iscsi':>12}{'iscsikit':>12}{'ratio':>8}")
    for key, unit in (("login_s", "s"), ("login_to_disk_s", "s"), ("write_mib_s", "MiB/s"), ("read_mib_s", "MiB/s")):
        print(f"{key + ' (' + unit + ')':<32}{ref[key]:>12.3f}{ours[key]:>12.3f}{ours[key] / ref[key]:>8.2f}")
    print(f"{'login via API, no client (s)':<32}{'':>12}{d['iscsikit_api_login_s']:>12.3f}"
          f"{d['iscsikit_api_login_s'] / ref['login_s']:>8.2f}")
    print(f"(median of {d['rounds']} logins; median of 3 runs of {d['mib']} MiB dd bs=1M O_DIRECT, "
          "backing file pre-filled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
