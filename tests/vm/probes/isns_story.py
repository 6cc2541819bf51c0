"""Run in the guest: iSNS discovery (issue 14) through Debian's open-iscsi 2.1.8 and through
iscsikit, one after the other, against one open-isns server (isnsd on 127.0.0.1:3205, no
security, the default discovery domain) in which LIO's targets are registered with isnsadm,
as a target's iSNS client would register them. Prints both transcripts as JSON.

A step is an iscsiadm argv, or ("isns", action) changing what the server knows between
command lines, the same way for both runs."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lio  # noqa: E402
from transcripts import run_steps  # noqa: E402

T1 = "iqn.2026-12.org.iscsikit.test:isns1"
T2 = "iqn.2026-12.org.iscsikit.test:isns2"
VENV = os.path.dirname(sys.executable)
ISNS = "127.0.0.1"

STEPS = [
    ["-m", "discovery", "-t", "isns"],
    ["-m", "discovery", "-t", "isns", "-p", ISNS],
    ["-m", "node"],
    ["-m", "node", "-T", T1, "-p", "127.0.0.1:3260", "-o", "show"],
    ["-m", "discoverydb"],
    ["-m", "discoverydb", "-P", "1"],
    ["-m", "discovery", "-t", "isns", "-p", f"{ISNS}:3205", "-l"],
    ["-m", "session"],
    ["-m", "node", "-U", "all"],
    ["-m", "discoverydb", "-t", "isns", "-p", ISNS, "-o", "new"],
    ["-m", "discoverydb", "-t", "isns", "-p", ISNS, "-o", "show"],
    ["-m", "discoverydb", "-P", "1"],
    ["-m", "discoverydb", "-t", "isns", "-p", ISNS, "-D"],
    # T2 leaves the server: its record goes, T1's stays
    ("isns", "drop_t2"),
    ["-m", "discovery", "-t", "isns", "-p", ISNS],
    ["-m", "node"],
    ["-m", "discoverydb", "-t", "isns", "-p", ISNS, "-o", "delete"],
    ["-m", "discoverydb"],
    # nobody at that port
    ["-m", "discovery", "-t", "isns", "-p", f"{ISNS}:3299"],
    ["-m", "discovery", "-t", "isns", "-p", ISNS, "-o", "nonpersistent"],
    ["-m", "node", "-o", "delete"],
]


class Isnsd:
    """isnsd in the foreground with a throw-away database; targets registered by isnsadm."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="isnsd-")
        conf = os.path.join(self.dir, "isnsd.conf")
        with open(conf, "w") as f:
            f.write(f"Database = {self.dir}/db\nDefaultDiscoveryDomain = 1\nSLPRegister = 0\nSecurity = 0\n"
                    f"PIDFile = {self.dir}/isnsd.pid\nControlSocket = {self.dir}/control\n"
                    f"BindAddress = {ISNS}\n")
        self.adm_conf = os.path.join(self.dir, "isnsadm.conf")
        with open(self.adm_conf, "w") as f:
            f.write(f"ServerAddress = {ISNS}\nSecurity = 0\nControlSocket = {self.dir}/control\n"
                    "SourceName = iqn.2026-12.org.iscsikit.test:isns-admin\n")
        os.makedirs(os.path.join(self.dir, "db"))
        self.proc = subprocess.Popen(["isnsd", "--config", conf, "--foreground"], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "isnsd.log"), "wb"))
        lio.until(lambda: self.adm("--list", "nodes").returncode == 0, 30)

    def adm(self, *args):
        return subprocess.run(["isnsadm", "--config", self.adm_conf, *args], capture_output=True, text=True)

    def register(self, entity, portal, *targets):
        # one entity: a portal belongs to one network entity, as LIO's one listener serves both
        p = self.adm("--register", f"entity={entity}", f"portal={portal}", *(f"target={t}" for t in targets))
        assert p.returncode == 0, p.stderr

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def setup(server):
    lio.clear()
    lio.target(T1, "/var/tmp/lio/isns1.img")
    lio.target(T2, "/var/tmp/lio/isns2.img")
    server.register("lio", "127.0.0.1:3260", T1, T2)


def action(server, name):
    if name == "drop_t2":
        p = server.adm("--deregister", f"iscsi-name={T2}")
        assert p.returncode == 0, p.stderr


def run_all(cmd, server):
    return run_steps(cmd, STEPS, action=lambda name: action(server, name))


os.makedirs("/etc/target", exist_ok=True)
os.makedirs("/var/tmp/lio", exist_ok=True)
os.makedirs("/run/lock/iscsi", exist_ok=True)
lio.INITIATOR = open("/etc/iscsi/initiatorname.iscsi").read().split("InitiatorName=")[1].split()[0]
report = {}
try:
    lio.reset_db()
    server = Isnsd()
    setup(server)
    iscsid = lio.start_iscsid()
    try:
        report["open_iscsi"] = run_all(["iscsiadm"], server)
    finally:
        subprocess.run(["iscsiadm", "-m", "session", "-u"], capture_output=True)
        iscsid.terminate()
        iscsid.wait(timeout=30)
        server.stop()

    lio.reset_db()
    server = Isnsd()
    setup(server)
    sock = "/run/iscsikit/isns.sock"
    os.environ["ISCSIKIT_SOCKET"] = sock
    ours = lio.start_iscsikitd(sock, "/tmp/iscsikitd-isns.log", "--log-level", "debug")
    try:
        report["iscsikit"] = run_all([f"{VENV}/iscsiadm"], server)
    finally:
        subprocess.run([f"{VENV}/iscsiadm", "-m", "session", "-u"], capture_output=True)
        ours.terminate()
        ours.wait(timeout=30)
        server.stop()
    report["daemon_log"] = open("/tmp/iscsikitd-isns.log").read()[-3000:]
finally:
    lio.reset_db()
    lio.clear()
    time.sleep(0)
print(json.dumps(report))
