"""The iscsiadm calls of one os-brick volume connect + disconnect, one by one, vs open-iscsi.

    .venv/bin/python bench/bench_adm_calls.py [--rounds 3]

One guest boot, one LIO LUN; Debian's open-iscsi (iscsid + C iscsiadm) and iscsikit
(iscsikitd + the forwarding iscsiadm) alternate, round by round. The call list is
os-brick 7.1.1's ISCSIConnector single-path sequence. Goal: each call at most 1.0x.
Guest times under TCG: only the ratios mean anything.
"""

import argparse
import sys

import guest_probe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = guest_probe.run("adm_calls_probe.py", {"BENCH_ROUNDS": str(args.rounds)})
    if d is None:
        return 1
    ref, ours = d["median"]["open_iscsi"], d["median"]["iscsikit"]
    inside = d["median"]["in_daemon"]
    print(f"median of {d['rounds']} rounds   {'open-iscsi':>11}{'iscsikit':>10}{'ratio':>7}"
          f"{'in daemon':>11}   rc (ref/ours)")
    for name in ref:
        rc = f"{d['rcs']['open_iscsi'].get(name, '')}/{d['rcs']['iscsikit'].get(name, '')}"
        run = f"{inside[name]:>11.3f}" if name in inside else " " * 11
        print(f"{name:<22}{ref[name]:>11.3f}{ours[name]:>10.3f}{ours[name] / ref[name]:>7.2f}{run}   {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
