"""Issue 5's start-up bench: `iscsikit-adm -m session` with no sessions vs `python3 -c pass`, on the host.

    .venv/bin/python bench/bench_cli_startup.py [--runs 40]

Goal: at most 3x. The client keeps its imports lazy (the record table, the node
database and the daemon client load only for the modes that need them).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def median_wall(cmd: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    adm = os.path.join(os.path.dirname(sys.executable), "iscsikit-adm")
    with tempfile.TemporaryDirectory() as empty_sysfs:
        env = dict(os.environ, ISCSIKIT_SYSFS_ROOT=empty_sysfs)   # "no sessions", whatever the host has
        base = median_wall([sys.executable, "-c", "pass"], env, args.runs)
        ours = median_wall([adm, "-m", "session"], env, args.runs)
    print(f"python3 -c pass          {base * 1000:7.1f} ms")
    print(f"iscsikit-adm -m session  {ours * 1000:7.1f} ms")
    print(f"ratio                    {ours / base:7.2f}  (goal: at most 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
