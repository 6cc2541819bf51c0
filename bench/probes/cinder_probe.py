"""Guest side of bench_target_cinder.py: the one-target-per-volume shape, ours and targetcli's.

OpenStack Cinder's LIO driver gives every volume its own target with one LUN,
one ACL and one portal, made one at a time, each step by a new process.  For
each N: N such volumes are restored (ours in-process, clear_existing=true: that
restore is timed too), then more volumes are made by one-shot commands, each
command a separate process, then `ls /iscsi`: with the forwarding
iscsikit-target while iscsikit-targetd runs ("warm"), with the Python
iscsikit-target-local in its own process ("ours"), optionally another
checkout's code ("before") and with targetcli ("ref").  All times are guest
seconds (time.monotonic in the guest) of whole processes; for the warm runs the
server's own seconds per command (its debug log) are kept too, which split a
command into start-up + imports (ours - served) and the work with its configfs
walk (served).

    python cinder_probe.py 100 300 1000 --ref-max 300 [--clear-at 1000]
    (or BENCH_SIZES="100 300 1000" BENCH_REF_MAX=300 BENCH_CLEAR_AT=1000, bench/guest_probe.py's way)
prints one JSON line per N, then (with --clear-at) the clear of that N against
bench/probes/lio_clear_floor.py in the same boot, then {"results": [...]}.  Each N also
runs bench/probes/target_ls_floor.py (what `ls /iscsi` draws, read with the fewest syscalls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)
IKT = os.path.join(BIN, "iscsikit-target")            # the C forwarder (.ci/setup)
LOCAL = os.path.join(BIN, "iscsikit-target-local")    # the Python command, in its own process
TARGETD = os.path.join(BIN, "iscsikit-targetd")
SOCK = "/tmp/cinder-targetd.sock"
TD_LOG = "/tmp/cinder-targetd.log"
HERE = os.path.dirname(os.path.abspath(__file__))
DIR = "/tmp/cinder"
HOST = "iqn.1994-05.com.redhat:compute1"
PREFIX = "iqn.2010-10.org.openstack:volume-"
REPS = int(os.environ.get("BENCH_REPS", "2"))
# another checkout's userspace/ (e.g. the commit before a change), timed beside ours: "before"
BEFORE = os.environ.get("BENCH_BEFORE")


def volume_commands(name: str) -> list[list[str]]:
    """The one-shot commands that export one volume.  The portal is the default 0.0.0.0:3260
    that `/iscsi create` adds (auto_add_default_portal, both tools): the kernel refuses a
    wildcard portal on a port where another target listens on a specific address."""
    iqn = PREFIX + name
    tpg = f"/iscsi/{iqn}/tpg1"
    return [
        ["/backstores/fileio", "create", name, f"{DIR}/{name}.img", "1M", "write_back=false"],
        ["/iscsi", "create", iqn],
        [f"{tpg}/luns", "create", f"/backstores/fileio/{name}"],
        [f"{tpg}/acls", "create", HOST],
    ]


def saveconfig_for(n: int) -> dict:
    sos, targets = [], []
    for i in range(n):
        name = f"v{i:04d}"
        sos.append({"plugin": "fileio", "name": name, "dev": f"{DIR}/{name}.img", "size": 1 << 20,
                    "write_back": False, "aio": False, "attributes": {}, "alua_tpgs": []})
        targets.append({"fabric": "iscsi", "wwn": PREFIX + name, "tpgs": [{
            "tag": 1, "enable": True, "attributes": {"authentication": 0},
            "luns": [{"index": 0, "storage_object": f"/backstores/fileio/{name}"}],
            "portals": [{"ip_address": "0.0.0.0", "port": 3260}],
            "node_acls": [{"node_wwn": HOST, "mapped_luns": [{"index": 0, "tpg_lun": 0}]}]}]})
    return {"fabric_modules": [], "storage_objects": sos, "targets": targets}


def timed(argv, out=subprocess.DEVNULL, env=None) -> float:
    t = time.monotonic()
    r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True, timeout=3600, env=env)
    dt = round(time.monotonic() - t, 3)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr[-800:]}")
    return dt


def served_times() -> list[float]:
    """The server's seconds per command so far, from its debug log."""
    try:
        with open(TD_LOG) as f:
            return [float(line.rsplit(",", 1)[1].split()[0]) for line in f if "served command" in line]
    except OSError:
        return []


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def n_targets() -> int:
    return len([x for x in os.listdir("/sys/kernel/config/target/iscsi") if x.startswith("iqn.")])


def one_size(n: int, ref: bool) -> dict:
    os.makedirs(DIR, exist_ok=True)
    for i in range(n):
        with open(f"{DIR}/v{i:04d}.img", "ab") as f:
            f.truncate(1 << 20)
    path = f"{DIR}/n{n}.json"
    with open(path, "w") as f:
        json.dump(saveconfig_for(n), f)
    res: dict = {"n": n, "load": loadavg()}
    # the process floor of the moment: the host is shared, so each N gets its own
    res["python_floor"] = min(timed([sys.executable, "-c", "pass"]) for _ in range(3))
    res["ours_restore"] = timed([LOCAL, "restoreconfig", path, "clear_existing=true"])
    assert n_targets() == n, n_targets()
    made = 0
    # each tool exports REPS more volumes, one command per process; a step's time is its
    # fastest run (the host is shared: a slow run is another guest's load, not ours)
    tools = [("warm", [IKT], dict(os.environ, ISCSIKIT_TARGET_SOCKET=SOCK)), ("ours", [LOCAL], None)]
    if BEFORE:
        tools.append(("before", [LOCAL], dict(os.environ, PYTHONPATH=BEFORE)))
    if ref:
        tools.append(("ref", ["targetcli"], None))
    for tool, argv0, env in tools:
        steps, ls = [], []
        served = len(served_times())
        for rep in range(REPS):
            cmds = volume_commands(f"{tool[0]}{rep}n{n}")
            steps.append([timed([*argv0, *c], env=env) for c in cmds])
            with open(f"{DIR}/ls-{tool}.txt", "w") as f:
                ls.append(timed([*argv0, "ls", "/iscsi"], out=f, env=env))
            made += 1
        if tool == "warm":
            # every warm command ran in the server (none fell back): its seconds per command
            got = served_times()[served:]
            assert len(got) == REPS * (len(cmds) + 1), (len(got), REPS)
            res["warm_served_all"] = got
            res["warm_served"] = [min(got[r * (len(cmds) + 1) + i] for r in range(REPS))
                                  for i in range(len(cmds) + 1)]
        res[f"{tool}_steps_all"], res[f"{tool}_ls_all"] = steps, ls
        res[f"{tool}_steps"] = [min(run[i] for run in steps) for i in range(len(steps[0]))]
        res[f"{tool}_ls"] = min(ls)
        res[f"{tool}_ls_lines"] = sum(1 for _ in open(f"{DIR}/ls-{tool}.txt"))
    # the kernel's own cost of what `ls /iscsi` draws, read with the fewest syscalls (same boot)
    r = subprocess.run([sys.executable, f"{HERE}/target_ls_floor.py"], capture_output=True, text=True, timeout=3600)
    if r.returncode == 0:
        res["ls_floor"] = json.loads(r.stdout.strip().splitlines()[-1])
        res["ratio_warm_ls_over_floor"] = round(res["warm_ls"] / res["ls_floor"]["paths"], 3)
    else:
        res["ls_floor_error"] = r.stderr[-800:]
    res["python_floor_after"] = min(timed([sys.executable, "-c", "pass"]) for _ in range(3))
    res["load_after"] = loadavg()
    assert n_targets() == n + made, n_targets()
    res["ours_max_step"] = max(res["ours_steps"] + [res["ours_ls"]])
    res["warm_max_step"] = max(res["warm_steps"] + [res["warm_ls"]])
    if ref:
        res["ratio_warm_over_ref"] = [round(a / b, 4) for a, b in zip(res["warm_steps"] + [res["warm_ls"]],
                                                                      res["ref_steps"] + [res["ref_ls"]])]
        ours = sum(res["ours_steps"]) + res["ours_ls"]
        theirs = sum(res["ref_steps"]) + res["ref_ls"]
        res["ours_total"], res["ref_total"] = round(ours, 2), round(theirs, 2)
        res["ratio_ours_over_ref"] = round(ours / theirs, 3)
    return res


def clear_vs_floor(n: int) -> dict:
    path = f"{DIR}/n{n}.json"
    res: dict = {"clear_n": n}
    timed([LOCAL, "restoreconfig", path, "clear_existing=true"])
    res["load"] = loadavg()
    res["ours_clear"] = timed([LOCAL, "clearconfig", "confirm=true"])
    timed([LOCAL, "restoreconfig", path, "clear_existing=true"])
    t = time.monotonic()
    r = subprocess.run([sys.executable, f"{HERE}/lio_clear_floor.py"], capture_output=True, text=True, timeout=3600)
    res["floor_process"] = round(time.monotonic() - t, 3)
    res["floor_report"] = r.stdout
    res["floor_serial"] = float(r.stdout.split("serial clear:")[1].split()[0])
    res["ratio_ours_over_floor"] = round(res["ours_clear"] / res["floor_serial"], 3)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", type=int,
                    default=[int(x) for x in os.environ.get("BENCH_SIZES", "100 300 1000").split()])
    ap.add_argument("--ref-max", type=int, default=int(os.environ.get("BENCH_REF_MAX", "300")))
    ap.add_argument("--clear-at", type=int, default=int(os.environ.get("BENCH_CLEAR_AT", "0")) or None)
    args = ap.parse_args()
    subprocess.run("mkdir -p /run/dbus; pgrep -x dbus-daemon >/dev/null || dbus-daemon --system --fork",
                   shell=True)
    # warm the .pyc caches of every tool, then the server
    warm = f"{LOCAL} ls / >/dev/null; targetcli ls / >/dev/null 2>&1"
    if BEFORE:
        warm += f"; PYTHONPATH={BEFORE} {LOCAL} ls / >/dev/null"
    subprocess.run(warm, shell=True, timeout=600)
    server = subprocess.Popen([TARGETD, "--socket", SOCK, "--log-level", "debug"],
                              stdout=subprocess.DEVNULL, stderr=open(TD_LOG, "w"))
    deadline = time.monotonic() + 300
    while not os.path.exists(SOCK) and time.monotonic() < deadline:
        time.sleep(0.1)
    results = []
    try:
        timed([LOCAL, "clearconfig", "confirm=true"])
        for n in args.sizes:
            results.append(one_size(n, n <= args.ref_max))
            print(json.dumps(results[-1]), flush=True)
            timed([LOCAL, "clearconfig", "confirm=true"])
        if args.clear_at:
            results.append(clear_vs_floor(args.clear_at))
            print(json.dumps(results[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(60)
    subprocess.run(f"rm -rf {DIR}", shell=True)
    print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
