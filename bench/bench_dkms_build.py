"""Where a DKMS build of kmod/ spends its time in the lab guest (TCG) and on the host (issue 18).

    .venv/bin/python bench/bench_dkms_build.py [--skip-dkms]

tests/vm/test_debian_install.py builds iscsikit-lio with `dkms build` on the host, for the guest's
kernel, because the same build in the guest did not finish in 600 s under TCG. This script
times each phase, the same commands on the host and in one guest boot (shell init), side by side:
  start      a process start (`true`), the floor of every step under TCG
  gcc-start  `gcc --version`
  gcc-tiny   compiling an empty C file (cc1 and as starting)
  make       `make -C /lib/modules/KVER/build M=... modules` from clean: Kbuild, gcc, modpost, ld
  make-noop  the same make again, nothing to build: Kbuild reading the headers' Makefiles over 9p
  cc         the module's one compile alone (its command line from make V=1)
  modpost    modpost alone (its command line from make V=1)
  dkms       `dkms build` of the packaged source in trees of its own (the test's host step)
In the guest the headers are the host's /usr/src/linux-headers-KVER (read over 9p); a real
host gets /lib/modules/KVER/build from linux-headers-KVER, which the lab's modules overlay
hides, so the guest gets the link the headers package would have made.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "userspace"))

from iscsikit.lab import kernel as lab_kernel  # noqa: E402
from iscsikit.lab.guest import Guest  # noqa: E402

SOURCES = ("iscsikit_lio.c", "iscsikit_lio.h", "Kbuild", "Makefile", "dkms.conf")


def phases(kver: str, work: str) -> list[tuple[str, str, float]]:
    """(name, shell command, timeout) in order; `work` is a scratch folder of that side."""
    build = f"/lib/modules/{kver}/build"
    make = f"make -C {build} M={work}/src"
    return [
        ("start", "true", 60),
        ("gcc-start", "gcc --version >/dev/null", 120),
        ("gcc-tiny", f"echo 'int f(void){{return 0;}}' > {work}/t.c && gcc -O2 -c -o {work}/t.o {work}/t.c", 300),
        ("make", f"{make} V=1 modules > {work}/make.log 2>&1", 1800),
        ("make-noop", f"{make} modules > /dev/null 2>&1", 900),
        ("cc", "@cc", 900),
        ("modpost", "@modpost", 900),
        ("dkms", f"rm -rf {work}/dkms && mkdir -p {work}/dkms/tree {work}/dkms/usr/src/iscsikit-lio-1 && "
                 f"cp {' '.join(f'{work}/src/' + s for s in SOURCES if s != 'dkms.conf')} {work}/src/dkms.conf "
                 f"{work}/dkms/usr/src/iscsikit-lio-1/ && "
                 f"dkms build -m iscsikit-lio -v 1 -k {kver} --dkmstree {work}/dkms/tree "
                 f"--sourcetree {work}/dkms/usr/src > {work}/dkms.log 2>&1", 1800),
    ]


def commands_from(make_log: str, work: str) -> dict[str, str]:
    """The module's compile and modpost command lines from make V=1 (run again from the build dir)."""
    found = {}
    for line in make_log.splitlines():
        s = line.strip()
        if "gcc" in s and f"-o {work}/src/iscsikit_lio.o" in s and "-c" in s:
            found["cc"] = s.split(";")[0] if s.startswith("gcc") else s[s.index("gcc"):].split(";")[0]
        elif re.search(r"scripts/mod/modpost\b", s):
            # the whole line: modpost reads the module list from the sed before it
            found["modpost"] = s.split(";")[0]
    return found


def run_side(run, kver: str, work: str, skip_dkms: bool) -> dict[str, float | str]:
    """Run the phases with `run(cmd, timeout) -> (rc, seconds, out)`; {phase: seconds or why not}."""
    out: dict[str, float | str] = {}
    setup = (f"rm -rf {work} && mkdir -p {work}/src && cp {' '.join(str(REPO / 'kmod' / s) for s in SOURCES)} {work}/src/")
    rc, _, text = run(setup, 60)
    assert rc == 0, text
    cmds: dict[str, str] = {}
    for name, cmd, timeout in phases(kver, work):
        if name == "dkms" and skip_dkms:
            out[name] = "skipped"
            continue
        if cmd.startswith("@"):
            if cmd[1:] not in cmds:
                out[name] = "no command line found in make V=1"
                continue
            cmd = f"cd /lib/modules/{kver}/build && {cmds[cmd[1:]]}"
        rc, seconds, text = run(cmd, timeout)
        out[name] = seconds if rc == 0 else f"rc {rc} after {seconds:.0f} s: {text.strip()[-300:]}"
        print(f"  {name:<10} {out[name] if isinstance(out[name], str) else f'{seconds:8.2f} s'}", flush=True)
        if name == "make":
            _, _, log = run(f"cat {work}/make.log", 60)
            cmds = commands_from(log, work)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-dkms", action="store_true", help="leave out the dkms build (the longest phase)")
    args = ap.parse_args()
    kver = lab_kernel.version()
    headers = Path(f"/usr/src/linux-headers-{kver}")
    if not (headers / "Makefile").is_file():
        print(f"no {headers}: .ci/setup installs linux-headers-{kver}", file=sys.stderr)
        return 1

    def host_run(cmd, timeout):
        t0 = time.monotonic()
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return p.returncode, time.monotonic() - t0, p.stdout + p.stderr

    print(f"host ({kver} headers)", flush=True)
    host = run_side(host_run, kver, "/var/tmp/ik-dkms-bench-host", args.skip_dkms)
    with Guest() as g:
        print(f"guest (boot {g.boot_seconds:.0f} s, accel {g.accel_used})", flush=True)

        def guest_run(cmd, timeout):
            r = g.run(cmd, timeout=timeout)
            return (r.rc if not r.timed_out else "timeout"), r.seconds, r.out + r.err

        # what linux-headers-KVER gives a host, hidden in the guest by the lab's modules overlay
        rc, _, text = guest_run(f"ln -sfn {headers} /lib/modules/{kver}/build", 60)
        assert rc == 0, text
        guest = run_side(guest_run, kver, "/var/tmp/ik-dkms-bench", args.skip_dkms)
        load = g.run("cat /proc/loadavg").out.split()[0]
    hostload = Path("/proc/loadavg").read_text().split()[0]
    print(f"\n{'phase':<10}{'host':>10}{'guest':>10}{'ratio':>8}   (load: host {hostload}, guest {load})")
    for name in host:
        h, v = host[name], guest.get(name)
        if isinstance(h, float) and isinstance(v, float):
            print(f"{name:<10}{h:>9.2f}s{v:>9.2f}s{v / h:>8.1f}")
        else:
            print(f"{name:<10}{h!s:>10}{v!s:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
