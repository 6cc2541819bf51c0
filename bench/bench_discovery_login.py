#!/usr/bin/env python3
"""Discovery + login round trips against a private tgtd: iscsikit vs libiscsi's
`iscsi-ls -s` (interop-facts.md §3.4), timed side by side in the same run.

One round = SendTargets discovery, then for every target: login, REPORT LUNS,
INQUIRY and READ CAPACITY(10) of each LUN, logout - what `iscsi-ls -s` does.
iscsi-ls is a new process per round, so iscsikit is timed both in-process
and as a new Python process per round.

    python bench/bench_discovery_login.py --rounds 50 --targets 4
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))

REPORT_LUNS = bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0])
INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
READ_CAPACITY_10 = bytes([0x25]) + bytes(9)


def one_round(portal: tuple[str, int]) -> int:
    """What iscsi-ls -s does; returns the number of LUNs seen."""
    from iscsikit.initiator.login_io import discover, login
    luns_seen = 0
    for target in discover(portal):
        with login(portal, target.name) as session:
            report = session.scsi(REPORT_LUNS, expected_length=4096)
            if report.status:  # the first command meets tgtd's power-on unit attention
                report = session.scsi(REPORT_LUNS, expected_length=4096)
            count = int.from_bytes(report.data[:4], "big") // 8
            for i in range(count):
                lun = int.from_bytes(report.data[8 + 8 * i:10 + 8 * i], "big") & 0x3FFF
                inquiry = session.scsi(INQUIRY, lun=lun, expected_length=96)
                if inquiry.data and inquiry.data[0] & 0x1F == 0:
                    session.scsi(READ_CAPACITY_10, lun=lun, expected_length=8)
                luns_seen += 1
            session.logout()
    return luns_seen


def _time_interleaved(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Round-robin, so every contender sees the same machine load (the lab
    guests of other tests may be running beside us)."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _summary(name: str, times: list[float]) -> str:
    return (f"{name:<34} total {sum(times):7.3f} s  median {statistics.median(times) * 1000:7.2f} ms"
            f"  min {min(times) * 1000:7.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--one-round", metavar="PORT", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        one_round(("127.0.0.1", args.one_round))
        return 0
    import tgtd_harness
    if not tgtd_harness.available() or not shutil.which("iscsi-ls"):
        print("bench: needs tgtd/tgtadm (tgt) and iscsi-ls (libiscsi-bin)", file=sys.stderr)
        return 2
    with tgtd_harness.Tgtd(Path(tempfile.mkdtemp(prefix="iscsikit-bench-"))) as tgtd:
        for tid in range(1, args.targets + 1):
            tgtd.add_target(tid, f"bench{tid}", lun_size=8 << 20)
        url = f"iscsi://127.0.0.1:{tgtd.port}"
        luns = one_round(tgtd.portal)
        listing = subprocess.run(["iscsi-ls", "-s", url], capture_output=True, text=True, check=True).stdout
        assert listing.count("Lun:") == luns, (listing, luns)
        times = _time_interleaved({
            "ours": lambda: one_round(tgtd.portal),
            "ours_proc": lambda: subprocess.run([sys.executable, __file__, "--one-round", str(tgtd.port)],
                                                check=True),
            "theirs": lambda: subprocess.run(["iscsi-ls", "-s", url], check=True, stdout=subprocess.DEVNULL),
        }, args.rounds)
    ours, ours_proc, theirs = times["ours"], times["ours_proc"], times["theirs"]
    print(f"bench: {args.rounds} rounds, {args.targets} targets, {luns} LUNs per round, tgtd on 127.0.0.1")
    print(_summary("iscsikit (in-process)", ours))
    print(_summary("iscsikit (new python per round)", ours_proc))
    print(_summary("iscsi-ls -s (libiscsi)", theirs))
    print(f"ratio ours/iscsi-ls: in-process {sum(ours) / sum(theirs):.2f}x, "
          f"new process {sum(ours_proc) / sum(theirs):.2f}x (below 1 = faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
