"""Issue 16's bench: iSER over soft-RoCE in one guest boot, open-iscsi 2.1.8 vs iscsikit.

    .venv/bin/python bench/bench_iser.py [--rounds 5] [--mib 256]

Login latency over iser (through each tool's CLI and daemon; ours through the forwarding
`iscsiadm`), login until the disk exists, 256 MiB sequential O_DIRECT write and read (dd
bs=1M), N turns per tool, the tools alternating (ABBA), with the median of the rounds'
ratios iscsikit / open-iscsi and each round's; the disk's queue limits under both tools;
then iscsikit over tcp to the same portal, as information. Guest times under TCG: only the
ratios mean anything.
"""

import argparse
import statistics
import sys
from pathlib import Path

from iscsikit.lab import soft_roce
from iscsikit.lab.errors import GuestCommandError, LabError
from iscsikit.lab.guest import Guest
from iscsikit.lab.story import LAB_MODULES


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    probe = Path(__file__).parent / "probes" / "iser_probe.py"
    with Guest() as g:
        g.modprobe(*LAB_MODULES)
        try:
            soft_roce.up(g)
            d = g.run_probe(probe, timeout=3600, env={"BENCH_ROUNDS": str(args.rounds), "BENCH_MIB": str(args.mib)})
        except LabError as e:
            print(f"bench_iser: {e}", file=sys.stderr)
            return 1
        except GuestCommandError as e:
            print(e.result.err[-3000:], file=sys.stderr)
            return 1
    ref, ours, tcp = d["open_iscsi"], d["iscsikit"], d["iscsikit_tcp"]
    print(f"{'metric (iser)':<28}{'open-iscsi':>12}{'iscsikit':>12}{'ratio':>8}{'round ratios':>28}{'iscsikit tcp':>14}")
    for key, unit in (("login_s", "s"), ("login_to_disk_s", "s"), ("write_mib_s", "MiB/s"), ("read_mib_s", "MiB/s")):
        a, b = [r[key] for r in ref], [r[key] for r in ours]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"{key + ' (' + unit + ')':<28}{statistics.median(a):>12.3f}{statistics.median(b):>12.3f}"
              f"{statistics.median(ratios):>8.2f}{' '.join(f'{x:.2f}' for x in ratios):>28}{tcp[key]:>14.3f}")
    print(f"(medians of {d['rounds']} turns each, the tools alternating ABBA; one {d['mib']} MiB dd bs=1M "
          f"O_DIRECT each way per turn; ratio = median of the rounds' ratios)")
    print(f"queue limits: open-iscsi {ref[0]['queue']}, iscsikit {ours[0]['queue']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
