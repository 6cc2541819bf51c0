"""systemd units, udev rules and iscsikit-autologin on the host (the guest proves them against the kernel).

The units name /usr/bin, where the Debian packages (debian/) put the console
scripts; `systemd-analyze verify` checks that ExecStart binaries exist, so
the test verifies copies pointing at this venv's bin directory.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from iscsikit.cli import adm, autologin
from iscsikit.initiator import mgmt
from iscsikit.initiator import nodedb as ndb

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
RULES = REPO / "udev" / "90-iscsikit.rules"
BIN = "/usr/bin/"


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".socket"))


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order."""
    out, section = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def test_units_exist():
    names = {p.name for p in unit_files()}
    assert {"iscsikitd.service", "iscsikitd.socket", "iscsikit-login.service", "iscsikit-login@.service",
            "iscsikit-target.service"} <= names


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    bindir = os.path.dirname(sys.executable) + "/"
    for p in unit_files():
        (tmp_path / p.name).write_text(p.read_text().replace(BIN, bindir))
    # a template is verified through an instance (what udev starts)
    shutil.copy(tmp_path / "iscsikit-login@.service", tmp_path / "iscsikit-login@eth0.service")
    args = sorted(str(p) for p in tmp_path.iterdir() if p.name != "iscsikit-login@.service")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *args], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    # verify exits 0 on many mistakes (an unknown Type= is "ignoring"): any line about our units fails
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "iscsikit" in line]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr


def test_exec_lines_run_our_console_scripts():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for p in unit_files():
        for section, key, value in directives(p):
            if key.startswith("Exec"):
                binary = value.lstrip("-@:+!").split()[0]
                if binary.startswith(BIN):
                    assert binary[len(BIN):] in scripts, (p.name, value)
                else:
                    assert binary == "/sbin/modprobe", (p.name, value)


def test_socket_matches_the_clients_default():
    d = {k: v for _, k, v in directives(UNITS / "iscsikitd.socket")}
    assert d["ListenStream"] == mgmt.DEFAULT_SOCKET
    assert d["SocketMode"] == "0600"
    svc = {k: v for _, k, v in directives(UNITS / "iscsikitd.service")}
    assert svc["Type"] == "notify" and "iscsikitd.socket" in svc["Requires"]


def test_target_server_socket_matches_the_forwarders_default():
    from iscsikit.cli import target_served
    d = {k: v for _, k, v in directives(UNITS / "iscsikit-targetd.socket")}
    assert d["ListenStream"] == target_served.DEFAULT_SOCKET and d["SocketMode"] == "0600"
    svc = {k: v for _, k, v in directives(UNITS / "iscsikit-targetd.service")}
    assert svc["Type"] == "notify" and "iscsikit-targetd.socket" in svc["Requires"]


def test_login_unit_is_asynchronous_and_stops_before_the_network():
    d = {}
    for _, k, v in directives(UNITS / "iscsikit-login.service"):
        d.setdefault(k, []).append(v)
    assert d["Type"] == ["exec"] and d["RemainAfterExit"] == ["yes"]
    after = " ".join(d["After"]).split()
    assert "network-online.target" in after and "iscsikitd.service" in after
    assert any("--logoutall=automatic" in v for v in d["ExecStop"])


def test_udev_rules_start_units_that_exist():
    wanted = []
    for line in RULES.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pairs = re.findall(r'([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"', line)
        # every clause of the line is a KEY op "value" pair: nothing left over unparsed
        assert re.sub(r'[A-Z_]+(\{[^}]*\})?\s*(==|!=|\+=|:=|=)\s*"[^"]*"', "", line).strip(" ,") == "", line
        keys = {k for k, _, _ in pairs}
        assert "RUN" not in keys and "RUN{program}" not in keys, "rules must not run the login inside udev"
        wanted += [v for k, _, v in pairs if k == "ENV{SYSTEMD_WANTS}"]
        assert ("TAG", "+=", "systemd") in pairs
    assert wanted
    for unit in wanted:
        template = re.sub(r"@.*\.service$", "@.service", unit)
        assert (UNITS / template).exists(), unit


# -- iscsikit-autologin -------------------------------------------------------------
T = "iqn.2026-11.org.example:"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A node DB with bound, unbound, manual records and a fake sysfs with two netdevs."""
    db_root = tmp_path / "iscsi"
    db_root.mkdir()
    (db_root / "iscsid.conf").write_text("")
    sysfs = tmp_path / "sys"
    for name, flags, kind, mac in (("veth1", "0x1003", "1", "02:00:00:00:00:01"),
                                   ("eth9", "0x1002", "1", "02:00:00:00:00:09"),
                                   ("lo", "0x9", "772", "00:00:00:00:00:00")):
        d = sysfs / "class" / "net" / name
        d.mkdir(parents=True)
        (d / "flags").write_text(flags + "\n")
        (d / "type").write_text(kind + "\n")
        (d / "address").write_text(mac + "\n")
    (sysfs / "class" / "iscsi_session").mkdir(parents=True)
    monkeypatch.setenv("ISCSIKIT_DB_ROOT", str(db_root))
    monkeypatch.setenv("ISCSIKIT_SYSFS_ROOT", str(sysfs))
    monkeypatch.setenv("ISCSIKIT_SOCKET", str(tmp_path / "nobody-listens.sock"))
    db = ndb.NodeDB(str(db_root))

    def a(*argv):
        out, err = io.StringIO(), io.StringIO()
        assert adm.run(list(argv), out=out, err=err, db=db) == 0, err.getvalue()

    a("-m", "iface", "-I", "byname", "-o", "new")
    a("-m", "iface", "-I", "byname", "-o", "update", "-n", "iface.net_ifacename", "-v", "veth1")
    a("-m", "iface", "-I", "bymac", "-o", "new")
    a("-m", "iface", "-I", "bymac", "-o", "update", "-n", "iface.hwaddress", "-v", "02:00:00:00:00:01")
    a("-m", "iface", "-I", "other", "-o", "new")
    a("-m", "iface", "-I", "other", "-o", "update", "-n", "iface.net_ifacename", "-v", "eth9")
    for name, iface, startup in (("byname", "byname", "automatic"), ("bymac", "bymac", "automatic"),
                                 ("manual", "byname", "manual"), ("other", "other", "automatic"),
                                 ("unbound", "default", "automatic")):
        a("-m", "node", "-T", T + name, "-p", "192.0.2.1", "-I", iface, "-o", "new")
        a("-m", "node", "-T", T + name, "-p", "192.0.2.1", "-I", iface, "-o", "update",
          "-n", "node.startup", "-v", startup)
    return db, sysfs


def names(nodes):
    return sorted(n.target[len(T):] for n in nodes)


def test_select_by_netdev(world):
    db, _ = world
    assert names(autologin.select(db, "veth1")) == ["bymac", "byname", "unbound"]
    assert names(autologin.select(db, "eth9")) == ["other", "unbound"]
    # loopback brings no route to a remote portal: only records bound to it
    assert names(autologin.select(db, "lo")) == []
    assert names(autologin.select(db, None)) == ["bymac", "byname", "other", "unbound"]


def fake_session(sysfs: Path, sid: int, target: str, address="192.0.2.1", port=3260, iface=None):
    """A session as the kernel shows it; its ifacename is its record's iface (the world's table)."""
    s = sysfs / "class" / "iscsi_session" / f"session{sid}"
    s.mkdir(parents=True)
    (s / "targetname").write_text(target + "\n")
    name = target[len(T):] if target.startswith(T) else ""
    iface = iface or {"byname": "byname", "bymac": "bymac", "manual": "byname", "other": "other"}.get(name, "default")
    (s / "ifacename").write_text(iface + "\n")
    (s / "state").write_text("LOGGED_IN\n")
    c = sysfs / "class" / "iscsi_connection" / f"connection{sid}:0"
    c.mkdir(parents=True)
    (c / "persistent_address").write_text(address + "\n")
    (c / "persistent_port").write_text(f"{port}\n")


def test_autologin_exit_codes(world, capsys):
    _, sysfs = world
    assert autologin.main(["--firmware"]) == 21       # no /sys/firmware/ibft in this sysfs
    assert "no iBFT table" in capsys.readouterr().err
    assert autologin.main(["gone0"]) == 0             # no records bound, netdev unknown
    # eth9 is down: with no wait it logs nothing in and does not fail the unit
    assert autologin.main(["eth9"]) == 0
    assert "not up" in capsys.readouterr().out
    # veth1 is up but no daemon listens: iscsiadm's 20
    assert autologin.main(["veth1"]) == 20
    out, err = capsys.readouterr()
    assert "can not connect to iSCSI daemon" in err
    # every selected node already has a session: done without asking the daemon (idempotent)
    for sid, name in enumerate(("byname", "bymac", "unbound"), 1):
        fake_session(sysfs, sid, T + name)
    assert autologin.main(["veth1"]) == 0
    assert capsys.readouterr().out.count("Already logged in") == 3


def test_logoutall_automatic_leaves_manual_sessions(world):
    db, sysfs = world
    fake_session(sysfs, 1, T + "manual")
    out, err = io.StringIO(), io.StringIO()
    assert adm.run(["-m", "node", "--logoutall=automatic"], out=out, err=err, db=db) == 21
    assert "No matching sessions found" in err.getvalue()
    fake_session(sysfs, 2, T + "byname")
    out, err = io.StringIO(), io.StringIO()
    rc = adm.run(["-m", "node", "-U", "automatic"], out=out, err=err, db=db)
    assert rc == 20 and f"sid: 2, target: {T}byname" in out.getvalue() and "sid: 1" not in out.getvalue()


def test_logoutall_never_logs_out_a_boot_disk(world):
    """-U skips the sessions of records with startup onboot or from the firmware (usr/iscsiadm.c
    __logout_by_startup), so -U all leaves a boot disk and -U onboot logs out nothing."""
    db, sysfs = world
    out, err = io.StringIO(), io.StringIO()
    assert adm.run(["-m", "node", "-T", T + "manual", "-p", "192.0.2.1", "-I", "byname", "-o", "update",
                    "-n", "node.startup", "-v", "onboot"], out=out, err=err, db=db) == 0
    assert adm.run(["-m", "node", "-T", T + "unbound", "-p", "192.0.2.1", "-o", "update",
                    "-n", "node.discovery_type", "-v", "fw"], out=out, err=err, db=db) == 0
    fake_session(sysfs, 1, T + "manual")
    fake_session(sysfs, 2, T + "unbound")
    for which in ("all", "onboot"):
        out, err = io.StringIO(), io.StringIO()
        assert adm.run(["-m", "node", "-U", which], out=out, err=err, db=db) == 21, which
        assert "No matching sessions found" in err.getvalue() and out.getvalue() == ""
    # the explicit logout of a boot disk's record still goes to the daemon (20: none listens)
    out, err = io.StringIO(), io.StringIO()
    assert adm.run(["-m", "node", "-T", T + "manual", "-u"], out=out, err=err, db=db) == 20
    assert f"sid: 1, target: {T}manual" in out.getvalue()



def test_logoutall_reads_only_the_records_that_have_a_session(world, monkeypatch):
    """-U all checks the boot-disk rule on the records of the sessions there are, and reads no
    other record: 32 records and 32 sessions cost 32 reads, one session costs one."""
    db, sysfs = world
    from iscsikit.initiator import nodedb
    read = []
    real = nodedb.NodeDB.read_node
    monkeypatch.setattr(nodedb.NodeDB, "read_node", lambda self, nid: read.append(nid.target) or real(self, nid))
    fake_session(sysfs, 1, T + "byname")
    out, err = io.StringIO(), io.StringIO()
    assert adm.run(["-m", "node", "-U", "all"], out=out, err=err, db=db) == 20   # no daemon listens
    assert f"sid: 1, target: {T}byname" in out.getvalue()
    assert read == [T + "byname"], read


# -- Vagrantfile ----------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby not installed (Debian: ruby)")
def test_vagrantfile_syntax():
    r = subprocess.run(["ruby", "-c", str(REPO / "Vagrantfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "Syntax OK", r.stderr


def test_vagrantfile_installs_what_the_units_run():
    text = (REPO / "Vagrantfile").read_text()
    for p in unit_files():
        for _, key, value in directives(p):
            binary = value.lstrip("-@:+!").split()[0] if key.startswith("Exec") else ""
            if binary.startswith(BIN):
                assert binary[len(BIN):] in text, (p.name, binary)
