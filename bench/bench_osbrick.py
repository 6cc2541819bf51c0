"""OpenStack os-brick's ISCSIConnector attaching one LIO LUN: iscsikit vs open-iscsi, one guest boot.

    .venv/bin/python bench/bench_osbrick.py [--rounds 3] [--debug]

os-brick 7.1.1 (PyPI) is installed once into its own venv under the cache
(~/.cache/iscsikit/osbrick-7.1.1, $XDG_CACHE_HOME honoured), as a consumer would
have it, not into iscsikit's. Each round: connect_volume, 1 MiB O_DIRECT write and
read back, disconnect_volume; open-iscsi and iscsikit alternate. Goal: connect and
disconnect each at most 1.0x open-iscsi's. Guest times under TCG: only the ratios
mean anything.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from iscsikit.lab import cache
from iscsikit.lab.errors import GuestCommandError
from iscsikit.lab.guest import Guest
from iscsikit.lab.story import LAB_MODULES as MODULES

OSBRICK = "os-brick==7.1.1"
PROBES = Path(__file__).parent / "probes"
LIO = Path(__file__).resolve().parents[1] / "tests" / "vm" / "probes"
TARGET = "iqn.2026-11.org.iscsikit.bench:osbrick"


def osbrick_venv() -> Path:
    venv = cache.cache_root() / "osbrick-7.1.1"
    python = venv / "bin" / "python"
    if not python.exists():
        # Debian's python3: the consumer's interpreter, not this venv's
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", OSBRICK], check=True)
    return python


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--debug", action="store_true", help="print os-brick's own step log (timed) to stderr")
    args = ap.parse_args()
    python = osbrick_venv()
    make_lun = (f"import sys; sys.path.insert(0, {str(LIO)!r}); import lio, os; "
                f"os.makedirs('/etc/target', exist_ok=True); os.makedirs('/var/tmp/lio', exist_ok=True); "
                f"lio.clear(); "
                f"lio.target({TARGET!r}, '/var/tmp/lio/osbrick.img', size=16 << 20)")
    with Guest() as g:
        g.modprobe(*MODULES)
        g.run("mkdir -p /run/lock/iscsi /run/iscsikit", check=True)
        g.run([sys.executable, "-c", make_lun], check=True, timeout=300)
        try:
            r = g.run([str(python), str(PROBES / "osbrick_probe.py")], timeout=3600, check=True,
                      env={"BENCH_ROUNDS": str(args.rounds), "BENCH_TARGET": TARGET,
                           "ISCSIKIT_BIN": os.path.dirname(sys.executable),
                           **({"BENCH_DEBUG": "1"} if args.debug else {})})
        except GuestCommandError as e:
            print(e.result.err[-4000:], file=sys.stderr)
            return 1
    import json
    if args.debug:
        print(r.err, file=sys.stderr)
    d = json.loads(r.out.strip().splitlines()[-1])
    for e in d["errors"]:
        print("error:", e, file=sys.stderr)
    ref, ours = d["open_iscsi_median"], d["iscsikit_median"]
    print(f"os-brick 7.1.1, median of {d['rounds']} rounds   {'open-iscsi':>11}{'iscsikit':>10}{'ratio':>7}")
    for k in ("connect", "io", "disconnect"):
        if k in ref and k in ours:
            print(f"{k:<34}{ref[k]:>11.3f}{ours[k]:>10.3f}{ours[k] / ref[k]:>7.2f}")
    # each round's own ratio: the tools alternate, so a change of the host's load falls on both
    for k in ("connect", "disconnect"):
        pairs = [b[k] / a[k] for a, b in zip(d["open_iscsi"], d["iscsikit"])]
        if pairs:
            print(f"{k} by round (ours / open-iscsi): " + " ".join(f"{x:.2f}" for x in pairs)
                  + f"   median {sorted(pairs)[len(pairs) // 2]:.2f}")
    rounds = d["open_iscsi"] + d["iscsikit"]
    print("data verified:", bool(rounds) and all(r["data_ok"] for r in rounds))
    print(json.dumps(d))
    return 0 if not d["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
