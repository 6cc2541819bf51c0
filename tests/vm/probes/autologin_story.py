"""Run in the guest: udev-triggered auto-login and the units' commands, against LIO, reported as JSON.

The guest has no systemd as PID 1, so what systemd would do is done by hand,
from the repository's own files: the udev rule that would start
iscsikit-login@<netdev>.service gets, in place of its SYSTEMD_WANTS, a RUN of a
tiny starter that runs that unit's ExecStart (read from the unit file) in the
background, as systemd would. The other units' Exec lines are run the same way.

1. target unit ExecStart restores a saveconfig.json with four targets
2. dummy0 added (down): nothing logs in; set up: the automatic node bound to
   dummy0 and the unbound automatic node log in; the manual node bound to
   dummy0 and the automatic node bound to another netdev stay out
3. udevadm trigger replays add: the starter runs again, no second session
4. after a logout, two triggers at once race: still one session per node
5. login unit ExecStop logs out the automatic nodes only; ExecStart logs in all of them
6. target unit ExecStop clears LIO under a live session, without hanging
"""

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
BIN = os.path.dirname(sys.executable)
SCRATCH = Path("/tmp/iscsikit-autologin")
SOCK = "/run/iscsikit/autologin.sock"
DB_ROOT = SCRATCH / "iscsi"
SAVE = SCRATCH / "saveconfig.json"
LOG = SCRATCH / "units.log"
RULES = Path("/run/udev/rules.d/90-iscsikit.rules")
ENV = {"ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": str(DB_ROOT)}
os.environ.update(ENV)

from iscsikit.cli import adm  # noqa: E402
from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.initiator import nodedb as ndb  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

P = "iqn.2026-11.org.iscsikit.test:auto-"
NODES = {"bound": ("ifdummy", "automatic"), "manual": ("ifdummy", "manual"),
         "other": ("ifother", "automatic"), "unbound": ("default", "automatic")}
# An iface bound to dummy0 really binds (SO_BINDTODEVICE): its nodes reach the target at
# dummy0's own address (a local address, so the kernel carries it over loopback), on a
# second portal that listens on every address; the others use 127.0.0.1 as before.
DUMMY_ADDRESS, DUMMY_PORT = "192.0.2.50", 3261
PORTALS = {name: f"{DUMMY_ADDRESS}:{DUMMY_PORT}" if iface == "ifdummy" else "127.0.0.1"
           for name, (iface, _startup) in NODES.items()}
out = {}
sysfs = Sysfs()


def unit_exec(unit, key, **subst):
    """A unit's Exec line as argv, as systemd would run it here (our binaries live in this venv)."""
    for line in (REPO / "systemd" / unit).read_text().splitlines():
        if line.startswith(key + "="):
            cmd = line.split("=", 1)[1].lstrip("-").replace("/usr/bin/", BIN + "/")
            for k, v in subst.items():
                cmd = cmd.replace(k, v)
            return shlex.split(cmd)
    raise KeyError(f"{unit} has no {key}")


def run(argv, timeout=300):
    t = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})
    return {"rc": p.returncode, "out": p.stdout[-1500:], "err": p.stderr[-1500:],
            "seconds": round(time.monotonic() - t, 1)}


def a(*argv):
    o, e = io.StringIO(), io.StringIO()
    rc = adm.run(list(argv), out=o, err=e, db=ndb.NodeDB(str(DB_ROOT)))
    assert rc == 0, (argv, rc, e.getvalue())


def sessions():
    return {s.target[len(P):]: s.sid for s in sysfs.sessions() if s.target and s.target.startswith(P)}


def wait(pred, timeout):
    return lio.until(pred, timeout, interval=0.3)


def exits():
    return [line for line in LOG.read_text().splitlines() if line.startswith("exit ")] if LOG.exists() else []


def starter():
    """The rule's stand-in for systemd: start the unit's ExecStart in the background, never block udev."""
    argv = unit_exec("iscsikit-login@.service", "ExecStart", **{"%i": "__NETDEV__"})
    cmd = " ".join(shlex.quote(x) for x in argv).replace("__NETDEV__", '"$1"')
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in ENV.items())
    path = SCRATCH / "start-login-unit"
    path.write_text(
        "#!/bin/sh\n"
        "# udev reads RUN's output until its pipe closes: detach from it before going to the background\n"
        "exec </dev/null >/dev/null 2>&1\n"
        f"setsid -f /bin/sh -c 'echo \"start $1\" >> {LOG}; {env} {cmd} >> {LOG} 2>&1; "
        f"echo \"exit $1 $?\" >> {LOG}' sh \"$1\"\n")
    path.chmod(0o755)
    return path


def test_rules():
    """The repository's rules with each SYSTEMD_WANTS of the login template turned into a RUN of the starter."""
    want = 'TAG+="systemd", ENV{SYSTEMD_WANTS}+="iscsikit-login@$name.service"'
    text = (REPO / "udev" / "90-iscsikit.rules").read_text()
    assert want in text
    return text.replace(want, f'RUN+="{starter()} $name"')


subprocess.run(["rm", "-rf", str(SCRATCH)])
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/etc/target", exist_ok=True)   # rtslib wants its dbroot to exist
SCRATCH.mkdir(parents=True)
DB_ROOT.mkdir()
(DB_ROOT / "initiatorname.iscsi").write_text(f"InitiatorName={lio.INITIATOR}\n")
lio.clear()
daemon = udevd = None
try:
    # 1. four targets, saved and restored through the target unit's ExecStart
    from rtslib import NetworkPortal, RTSRoot
    for name in NODES:
        lio.target(P + name, f"/var/tmp/lio/auto-{name}.img", size=8 << 20)
    for t in RTSRoot().targets:
        if t.wwn[len(P):] in NODES and PORTALS[t.wwn[len(P):]] != "127.0.0.1":
            NetworkPortal(next(t.tpgs), "0.0.0.0", DUMMY_PORT)
    from iscsikit.target.manager import Manager
    Manager(save_file=str(SAVE)).save()       # what `iscsikit-target saveconfig` calls, minus a TCG start-up
    lio.clear()
    run(unit_exec("iscsikit-target.service", "ExecStartPre"))
    out["target_start"] = run(unit_exec("iscsikit-target.service", "ExecStart",
                                        **{"/etc/target/saveconfig.json": str(SAVE)}))
    from rtslib import RTSRoot
    out["targets_restored"] = sorted(t.wwn[len(P):] for t in RTSRoot().targets if t.wwn.startswith(P))

    # node records: ifaces bound to dummy0 and to a netdev that never appears
    a("-m", "iface", "-I", "ifdummy", "-o", "new")
    a("-m", "iface", "-I", "ifdummy", "-o", "update", "-n", "iface.net_ifacename", "-v", "dummy0")
    a("-m", "iface", "-I", "ifother", "-o", "new")
    a("-m", "iface", "-I", "ifother", "-o", "update", "-n", "iface.net_ifacename", "-v", "veth7")
    for name, (iface, startup) in NODES.items():
        a("-m", "node", "-T", P + name, "-p", PORTALS[name], "-I", iface, "-o", "new")
        a("-m", "node", "-T", P + name, "-p", PORTALS[name], "-I", iface, "-o", "update",
          "-n", "node.startup", "-v", startup)

    dlog = open(SCRATCH / "iscsikitd.log", "wb")
    daemon = subprocess.Popen([f"{BIN}/iscsikitd", "--socket", SOCK], stdout=dlog, stderr=dlog)
    assert wait(lambda: os.path.exists(SOCK), 60), "iscsikitd did not come up"

    RULES.parent.mkdir(parents=True, exist_ok=True)
    RULES.write_text(test_rules())
    udevd = subprocess.Popen(["/lib/systemd/systemd-udevd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait(lambda: subprocess.run(["udevadm", "control", "--ping"], capture_output=True).returncode == 0, 30)

    # 2. the interface appears down: the unit waits; it comes up: the bound and unbound automatic nodes log in
    t0 = time.monotonic()
    subprocess.run(["ip", "link", "add", "dummy0", "type", "dummy"], check=True)
    subprocess.run(["ip", "addr", "add", f"{DUMMY_ADDRESS}/32", "dev", "dummy0"], check=True)
    subprocess.run(["udevadm", "settle", "-t", "30"])
    out["settle_seconds"] = round(time.monotonic() - t0, 1)
    wait(lambda: LOG.exists() and "start dummy0" in LOG.read_text(), 10)
    time.sleep(2)
    out["while_down"] = sessions()
    out["started_while_down"] = LOG.exists() and "start dummy0" in LOG.read_text()
    subprocess.run(["ip", "link", "set", "dummy0", "up"], check=True)
    t0 = time.monotonic()
    wait(lambda: len(exits()) >= 1, 120)
    out["up_to_sessions_seconds"] = round(time.monotonic() - t0, 1)
    out["after_up"] = sessions()
    out["exits_1"] = exits()

    # 3. a replayed add: the unit's command runs again and finds its nodes logged in
    subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=net"], check=True)
    subprocess.run(["udevadm", "settle", "-t", "30"])
    wait(lambda: len(exits()) >= 2, 120)
    out["after_retrigger"] = sessions()
    out["exits_2"] = exits()

    # 4. logged out, then two replays at once: the two runs race, one session per node
    for sid in out["after_up"].values():
        Client(timeout=60).logout(sid)
    out["after_logout"] = sessions()
    for _ in range(2):
        subprocess.run(["udevadm", "trigger", "--action=add", "--subsystem-match=net", "--sysname-match=dummy0"],
                       check=True)
    wait(lambda: len(exits()) >= 4, 180)
    out["after_race"] = sessions()
    out["sysfs_session_count"] = len(sysfs.session_ids())
    out["exits_4"] = exits()

    # 5. the login unit: ExecStop logs out the automatic nodes only, ExecStart logs in all of them
    a("-m", "node", "-T", P + "manual", "-p", PORTALS["manual"], "--login")
    out["login_stop"] = run(unit_exec("iscsikit-login.service", "ExecStop"))
    out["after_login_stop"] = sessions()
    out["login_start"] = run(unit_exec("iscsikit-login.service", "ExecStart"))
    out["after_login_start"] = sessions()

    # 6. the target unit's stop under live sessions (I/O-free, but logged in): bounded, and LIO empty after
    out["target_stop"] = run(unit_exec("iscsikit-target.service", "ExecStop"), timeout=120)
    out["lio_targets_after_stop"] = [t.wwn for t in RTSRoot().targets]
finally:
    if udevd:
        udevd.terminate()
        udevd.wait(10)
    RULES.unlink(missing_ok=True)
    subprocess.run(["ip", "link", "del", "dummy0"], capture_output=True)
    # wait for stray runs of the starter (none should be left), then drop every session we made
    wait(lambda: LOG.exists() and LOG.read_text().count("start ") == len(exits()), 60)
    t0 = time.monotonic()
    for sid in sessions().values():
        try:
            Client(timeout=60).logout(sid)
        except MgmtError as e:
            out.setdefault("cleanup_errors", []).append(str(e))
    out["logout_after_target_gone_seconds"] = round(time.monotonic() - t0, 1)
    out["left_sessions"] = sessions()
    if daemon:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    lio.clear()
    out["units_log"] = LOG.read_text()[-3000:] if LOG.exists() else ""
    out["daemon_log"] = (SCRATCH / "iscsikitd.log").read_text()[-3000:]
print(json.dumps(out))
