"""Run in the guest: the D-Bus API on a private system bus, against iscsikitd and LIO, reported as JSON.

The bus is a dbus-daemon with Debian's system-bus default policy (copied
below: the guest runs no bus of its own) that includes the repository's
policy file. Clients are gdbus (C): they show what any D-Bus client sees.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import lio  # noqa: E402

import threading  # noqa: E402

from iscsikit.initiator.client import Client, MgmtError  # noqa: E402
from iscsikit.kernel.sysfs import Sysfs  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
BIN = os.path.dirname(sys.executable)
SCRATCH = Path("/tmp/iscsikit-dbus")
BUS = SCRATCH / "system_bus_socket"
SOCK = "/run/iscsikit/dbus-test.sock"
IQN = "iqn.2026-11.org.iscsikit.test:dbus"
ROOT = "/org/iscsikit/Initiator1"
NAME = "org.iscsikit.Initiator1"
ENV = {"ISCSIKIT_SOCKET": SOCK, "ISCSIKIT_DB_ROOT": str(SCRATCH / "iscsi"),
       "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={BUS}"}
os.environ.update(ENV)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
out = {}

BUS_CONFIG = f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={BUS}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{REPO}/systemd/dbus/org.iscsikit.Initiator1.conf</include>
</busconfig>
"""


def gdbus(*args, user=None, timeout=120):
    argv = (user or []) + ["gdbus", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "out": p.stdout.strip(), "err": p.stderr.strip()}


def call(path, method, *args, user=None):
    return gdbus("call", "--system", "--dest", NAME, "--object-path", path, "--method", method, *args, user=user)


def wait(pred, timeout):
    return lio.until(pred, timeout, interval=0.2)


def sessions():
    return [s.sid for s in Sysfs().sessions() if s.target == IQN]


subprocess.run(["rm", "-rf", str(SCRATCH)])
(SCRATCH / "iscsi").mkdir(parents=True)
SCRATCH.chmod(0o755)     # nobody must reach the bus socket
(SCRATCH / "iscsi" / "initiatorname.iscsi").write_text(f"InitiatorName={lio.INITIATOR}\n")
os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
(SCRATCH / "bus.conf").write_text(BUS_CONFIG)
lio.clear()
lio.target(IQN, "/var/tmp/lio/dbus.img", size=8 << 20)
# the target's events come from kmod/'s module when it is built (the vm tests load it themselves)
KO = REPO / "kmod" / "iscsikit_lio.ko"
loaded_kmod = False
if KO.is_file() and not any(l.startswith("iscsikit_lio ") for l in open("/proc/modules")):
    loaded_kmod = subprocess.run(["insmod", str(KO)]).returncode == 0
out["kmod"] = any(l.startswith("iscsikit_lio ") for l in open("/proc/modules"))
procs = []
monitor = nobody_monitor = None
try:
    bus = subprocess.run(["dbus-daemon", f"--config-file={SCRATCH / 'bus.conf'}", "--fork", "--print-pid"],
                         capture_output=True, text=True, check=True)
    bus_pid = int(bus.stdout.split()[0])
    dlog = open(SCRATCH / "iscsikitd.log", "wb")
    procs.append(subprocess.Popen([f"{BIN}/iscsikitd", "--socket", SOCK], stdout=dlog, stderr=dlog))
    slog = open(SCRATCH / "dbus.log", "wb")
    procs.append(subprocess.Popen([f"{BIN}/iscsikit-dbus"], stdout=slog, stderr=slog))
    up = wait(lambda: gdbus("introspect", "--system", "--dest", NAME, "--object-path", ROOT, timeout=10)["rc"] == 0
              and os.path.exists(SOCK), 120)
    out["service_up"] = up
    # signals as any client sees them, from before the first call
    mlog = open(SCRATCH / "monitor.log", "w")
    monitor = subprocess.Popen(["gdbus", "monitor", "--system", "--dest", NAME], stdout=mlog, stderr=mlog)
    nlog = open(SCRATCH / "monitor-nobody.log", "w")
    nobody_monitor = subprocess.Popen(NOBODY + ["gdbus", "monitor", "--system", "--dest", NAME],
                                      stdout=nlog, stderr=nlog)
    time.sleep(1)
    out["target_source"] = call(f"{ROOT}/target", "org.freedesktop.DBus.Properties.Get", f"{NAME}.Target",
                                "Source")

    out["introspect_root"] = gdbus("introspect", "--system", "--dest", NAME, "--object-path", ROOT)
    out["introspect_as_nobody"] = gdbus("introspect", "--system", "--dest", NAME, "--object-path", ROOT,
                                        user=NOBODY)["rc"]
    out["discover"] = call(ROOT, f"{NAME}.Manager.Discover", "127.0.0.1", "3260")
    # a record changed by the CLI: the node object's property follows (ListNodes re-reads the records)
    from iscsikit.cli import adm
    import io
    adm.run(["-m", "node", "-T", IQN, "-o", "update", "-n", "node.startup", "-v", "automatic"],
            out=io.StringIO(), err=io.StringIO())
    out["list_nodes"] = call(ROOT, f"{NAME}.Manager.ListNodes")
    out["login"] = call(ROOT, f"{NAME}.Manager.Login", IQN, "127.0.0.1:3260", "default")
    out["sessions_after_login"] = sessions()
    session_path = out["login"]["out"].split("'")[1] if out["login"]["rc"] == 0 else None
    out["session_path"] = session_path
    out["list_sessions"] = call(ROOT, f"{NAME}.Manager.ListSessions")
    if session_path:
        out["session_props"] = call(session_path, "org.freedesktop.DBus.Properties.GetAll", f"{NAME}.Session")
        out["introspect_session"] = gdbus("introspect", "--system", "--dest", NAME, "--object-path", session_path)
    # the CLI's semantics: a second login is "session exists", exit 15, as iscsikit-adm says
    out["login_again"] = call(ROOT, f"{NAME}.Manager.Login", IQN, "127.0.0.1:3260", "default")
    out["login_unknown"] = call(ROOT, f"{NAME}.Manager.Login", "iqn.2026-11.org.iscsikit.test:none",
                                "127.0.0.1:3260", "default")
    # non-root: the policy refuses methods, and refuses them before the service sees them
    out["nobody_list"] = call(ROOT, f"{NAME}.Manager.ListSessions", user=NOBODY)
    out["nobody_logout"] = call(session_path or ROOT, f"{NAME}.Session.Logout", user=NOBODY)
    out["nobody_props"] = call(ROOT, "org.freedesktop.DBus.Properties.Get", f"{NAME}.Manager", "Version",
                               user=NOBODY)
    out["sessions_after_nobody"] = sessions()
    if session_path:
        out["logout"] = call(ROOT, f"{NAME}.Manager.Logout", session_path)
    out["sessions_after_logout"] = sessions()

    # A login made with the CLI, not through D-Bus: the signal follows the daemon's event.
    # Both are timestamped on arrival in this one process: a watcher of the daemon's
    # events (Client.watch) and a line-buffered gdbus monitor.
    lines, events = [], []
    mon2 = subprocess.Popen(["stdbuf", "-oL", "gdbus", "monitor", "--system", "--dest", NAME],
                            stdout=subprocess.PIPE, text=True)
    threading.Thread(target=lambda: [lines.append((time.monotonic(), ln)) for ln in mon2.stdout],
                     daemon=True).start()
    watch = Client(SOCK).watch()
    threading.Thread(target=lambda: [events.append((time.monotonic(), ev)) for ev in watch], daemon=True).start()
    time.sleep(1)
    # idle: neither the daemon nor the D-Bus service reads anything (no poll, no sysfs walk)
    def syscr(pid):
        return int(next(l for l in open(f"/proc/{pid}/io") if l.startswith("syscr:")).split()[1])
    before = [syscr(p.pid) for p in procs]
    time.sleep(5)
    out["idle_reads"] = [syscr(p.pid) - b for p, b in zip(procs, before)]
    cli = subprocess.run([f"{BIN}/iscsiadm", "-m", "node", "-T", IQN, "-p", "127.0.0.1", "--login"],
                         capture_output=True, text=True, timeout=120)
    out["cli_login"] = {"rc": cli.returncode, "out": cli.stdout, "err": cli.stderr}
    wait(lambda: any("SessionAdded" in ln for _, ln in lines), 30)
    cli = subprocess.run([f"{BIN}/iscsiadm", "-m", "node", "-T", IQN, "-p", "127.0.0.1", "--logout"],
                         capture_output=True, text=True, timeout=120)
    out["cli_logout"] = {"rc": cli.returncode, "out": cli.stdout, "err": cli.stderr}
    wait(lambda: any("SessionRemoved" in ln for _, ln in lines), 30)
    mon2.terminate()
    watch.close()
    added_ev = next((t for t, ev in events if ev["event"] == "session_added"), None)
    added_sig = next((t for t, ln in lines if "SessionAdded" in ln), None)
    removed_ev = next((t for t, ev in events if ev["event"] == "session_removed"), None)
    removed_sig = next((t for t, ln in lines if "SessionRemoved" in ln), None)
    out["signal_lag"] = {"added": None if None in (added_ev, added_sig) else added_sig - added_ev,
                         "removed": None if None in (removed_ev, removed_sig) else removed_sig - removed_ev}
    out["cli_events"] = [ev["event"] for _, ev in events]
    time.sleep(1)
finally:
    for m in (monitor, nobody_monitor):
        if m:
            m.terminate()
            m.wait(10)
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    for sid in sessions():
        try:
            Client(timeout=60).logout(sid)
        except MgmtError:
            pass
    if "bus_pid" in dir():
        os.kill(bus_pid, 15)
    lio.clear()
    if loaded_kmod:
        subprocess.run(["rmmod", "iscsikit_lio"])
    out["monitor_nobody"] = (SCRATCH / "monitor-nobody.log").read_text()[-4000:] \
        if (SCRATCH / "monitor-nobody.log").exists() else ""
    out["monitor"] = (SCRATCH / "monitor.log").read_text()[-100000:] if (SCRATCH / "monitor.log").exists() else ""
    out["service_log"] = (SCRATCH / "dbus.log").read_text()[-2000:] if (SCRATCH / "dbus.log").exists() else ""
print(json.dumps(out))
