"""The Debian packages installed with dpkg onto the guest's overlay, systemd as PID 1 (issue 18).

One guest of its own (Guest(init="systemd", root_disk=True): the overlay's upper layer on a
disk, so that the guest reboots into what it installed), the steps in the order a host lives them:
  first boot: dpkg installs the packages (open-iscsi goes, the iscsiadm paths are ours);
     DKMS registers the module (the package's postinst) and the module goes where
     `dkms install` puts it; the build is `dkms build` on the host, in trees of its own, with
     the headers of the kernel the guest runs (in the guest it is minutes of TCG, see DKMS below);
  1. the socket listens after install, the first `iscsiadm -m session` starts the daemon by
     socket activation, `systemctl stop iscsikitd` keeps the session and the next start adopts it;
     an automatic and a manual node are recorded (from the target the admin restored once);
  the reboot: the shutdown's journal (on the console) shows the automatic node's logout
     before the network target goes;
  second boot, nothing started by hand:
  4. systemd-modules-load loaded the DKMS module, and iscsikit-target.service started after it;
  3. iscsikit-target.service restored /etc/target/saveconfig.json (two targets, written as
     targetcli would), and the LUN answers a 1 MiB O_DIRECT read through the boot's login;
  2. iscsikit-login.service logged in the automatic node, not the manual one, once
     network-online.target was reached; its stop logs the automatic one out;
  5. `apt-get remove` leaves no daemon running, no unit, no udev rule, nothing in DKMS.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from debian_build import build
from iscsikit.lab.guest import Guest

pytestmark = pytest.mark.vm

PORTAL = "127.0.0.1"
AUTO = "iqn.2003-01.org.example.deb:auto"
MANUAL = "iqn.2003-01.org.example.deb:manual"
PACKAGES = ("python3-iscsikit", "iscsikit", "iscsikit-iscsiadm", "iscsikit-lio-dkms")


def saveconfig(folder: str) -> str:
    """targetcli's saveconfig.json for one fileio LUN per target, demo mode, on 127.0.0.1:3260."""
    objects, targets = [], []
    for iqn in (AUTO, MANUAL):
        name = iqn.rsplit(":", 1)[1]
        objects.append({"plugin": "fileio", "name": name, "dev": f"{folder}/{name}.img",
                        "size": 16 << 20, "write_back": False})
        targets.append({"fabric": "iscsi", "wwn": iqn, "tpgs": [{
            "tag": 1, "enable": True,
            "attributes": {"authentication": 0, "generate_node_acls": 1, "cache_dynamic_acls": 1,
                           "demo_mode_write_protect": 0},
            "luns": [{"index": 0, "storage_object": f"/backstores/fileio/{name}"}],
            "portals": [{"ip_address": PORTAL, "port": 3260}],
            "node_acls": [],
        }]})
    return json.dumps({"fabric_modules": [], "storage_objects": objects, "targets": targets}, indent=2)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    base = tmp_path_factory.mktemp("debvm")
    debs = build(base)
    # DKMS on the host, in trees of its own (nothing of the host's DKMS state is touched)
    src = base / "dkms-src"
    subprocess.run(["dpkg-deb", "-x", str(debs["iscsikit-lio-dkms"]), str(src)], check=True)
    kver = subprocess.run([sys.executable, "-c", "from iscsikit.lab import kernel; print(kernel.version())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    tree = base / "dkms-tree"
    tree.mkdir()
    proc = subprocess.run(["dkms", "build", "-m", "iscsikit-lio", "-v", "1", "-k", kver, "--dkmstree", str(tree),
                           "--sourcetree", str(src / "usr/src")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ko = tree / "iscsikit-lio/1" / kver / "x86_64/module/iscsikit_lio.ko"
    assert ko.is_file()
    # what `dkms install` does next: the module into updates/dkms/ and depmod over the tree.
    # depmod runs on the host too (over the guest kernel's ~4000 modules it took 1-3 min under
    # TCG, ~4 s here): on a tree of links to the lab kernel's modules plus the new one; the guest
    # takes the module and the index depmod wrote
    modules = Path(subprocess.run([sys.executable, "-c", "from iscsikit.lab import kernel; print(kernel.resolve().modules)"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    farm = base / "depmod" / "lib/modules" / kver
    (farm / "updates/dkms").mkdir(parents=True)
    for entry in ("kernel", "modules.order", "modules.builtin", "modules.builtin.modinfo"):
        (farm / entry).symlink_to(modules / entry)
    shutil.copy(ko, farm / "updates/dkms/iscsikit_lio.ko")
    subprocess.run(["depmod", "-b", str(base / "depmod"), kver], check=True, timeout=120)
    debs["ko"] = farm / "updates/dkms/iscsikit_lio.ko"
    debs["index"] = [p for p in farm.glob("modules.*") if not p.is_symlink()]
    assert "updates/dkms/iscsikit_lio.ko:" in (farm / "modules.dep").read_text()
    # the share is a host folder the guest sees at the same path (the guest's /tmp is its own)
    with Guest(init="systemd", share=base, root_disk=True) as g:
        STEPS.append((g.guest_uptime, f"boot (uptime at the agent; {g.boot_seconds:.0f} s wall)"))
        yield g, debs


# guest seconds per step (printed at the end, `pytest -rP` shows them): where the test's time goes
STEPS: list[tuple[float, str]] = []


def sh(g: Guest, script: str, timeout: float = 300, ok=(0,)) -> str:
    # no tty: debconf's dialog and readline frontends would only fail and fall back (seconds each)
    r = g.run(script, timeout=timeout, env={"DEBIAN_FRONTEND": "noninteractive"})
    STEPS.append((r.seconds, " ".join(script.split())[:60]))
    if r.rc not in ok or r.timed_out:
        pytest.fail(f"rc {r.rc} (timed out: {r.timed_out}) of:\n{script}\n--- stdout\n{r.out[-3000:]}\n"
                    f"--- stderr\n{r.err[-3000:]}\n--- journal\n{g.journal()[-4000:]}")
    return r.out


def sessions(g: Guest) -> str:
    """`iscsiadm -m session`'s stdout; "" with exit 21 when there is none."""
    r = g.run("iscsiadm -m session", timeout=120)
    assert (r.rc, bool(r.out.strip())) in ((0, True), (21, False)), (r.rc, r.out, r.err)
    return r.out


def monotonic(g: Guest, prop: str, unit: str) -> int:
    """systemd's monotonic timestamp (µs since this boot) `prop` of `unit`; 0 fails: never happened."""
    out = sh(g, f"systemctl show --value -p {prop} {unit}").strip()
    assert out.isdigit() and int(out) > 0, (prop, unit, out)
    return int(out)


def test_packages_under_systemd(host):
    g, debs = host
    kver = sh(g, "uname -r").strip()
    paths = " ".join(str(debs[p]) for p in PACKAGES)
    # the lab kernel's unpacked modules have no build link: DKMS registers the module, skips the build.
    # What the lab's guest has no use for, and would cost a minute under TCG, is off: debconf's
    # interactive frontends (none can start without a tty), man-db's index (open-iscsi's man
    # pages go), and update-initramfs (the guest boots the lab's initramfs, never one of its own)
    install = sh(g, f"""set -e
        test "$(systemctl is-system-running)" = running || systemctl --failed --no-legend
        rm -f /var/lib/man-db/auto-update
        mkdir -p /etc/initramfs-tools && echo update_initramfs=no > /etc/initramfs-tools/update-initramfs.conf
        dpkg -i {paths} 2>&1""", timeout=600)
    # Conflicts+Replaces: dpkg takes open-iscsi's iscsiadm paths over and removes it
    assert re.search(r"[Rr]emoving open-iscsi", install), install
    out = sh(g, f"""dpkg-query -W -f='${{db:Status-Status}}\\n' open-iscsi
        readlink -f /usr/bin/iscsiadm /usr/sbin/iscsiadm /sbin/iscsiadm
        dkms status iscsikit-lio""")
    assert out.splitlines()[0] in ("config-files", "not-installed"), out
    assert out.splitlines()[1:4] == ["/usr/sbin/iscsiadm"] * 3, out
    assert re.search(r"iscsikit-lio/1: added", out), out
    # where `dkms install` puts what `dkms build` made; the boot loads it (proof 4, second boot)
    index = " ".join(str(p) for p in debs["index"])
    out = sh(g, f"""set -e
        install -D -m 0644 {debs['ko']} /lib/modules/{kver}/updates/dkms/iscsikit_lio.ko
        cp {index} /lib/modules/{kver}/
        modinfo -n iscsikit_lio
        lsmod | grep -c '^iscsikit_lio ' || true""")
    assert out.split() == [f"/lib/modules/{kver}/updates/dkms/iscsikit_lio.ko", "0"], out

    # the targets the admin saved, restored once by hand now (the boot restores them next time)
    sh(g, f"""set -e
        mkdir -p /etc/target /srv/ik
        cat > /etc/target/saveconfig.json <<'EOF'
{saveconfig('/srv/ik')}
EOF
        chmod 600 /etc/target/saveconfig.json
        test "$(systemctl is-enabled iscsikit-target.service)" = enabled
        systemctl start iscsikit-target.service""")

    # 1. socket activation
    out = sh(g, "systemctl is-enabled iscsikitd.socket; systemctl is-active iscsikitd.socket iscsikitd.service",
             ok=(0, 3))
    assert out.split() == ["enabled", "active", "inactive"], out
    assert sessions(g) == ""
    # nothing but the socket starts it (--no-start at install): the call above did
    assert "active" in sh(g, "for i in $(seq 120); do systemctl is-active -q iscsikitd.service && break; sleep 0.5; done; "
                             "systemctl is-active iscsikitd.service")
    sh(g, f"""set -e
        iscsiadm -m discovery -t st -p {PORTAL}
        iscsiadm -m node -T {AUTO} -p {PORTAL} -o update -n node.startup -v automatic
        iscsiadm -m node -T {MANUAL} -p {PORTAL} -o update -n node.startup -v manual
        iscsiadm -m node -T {MANUAL} -p {PORTAL} --login""")
    before = sessions(g)
    assert MANUAL in before and AUTO not in before, before
    g.journal()  # the place to read the restart's lines from
    sh(g, "systemctl stop iscsikitd.service")
    # no logout: the kernel keeps the session while no daemon runs
    assert sh(g, "ls /sys/class/iscsi_session/ | wc -l").strip() == "1"
    assert sh(g, "systemctl is-active iscsikitd.service", ok=(3,)).strip() == "inactive"
    assert sessions(g) == before          # the next call starts it again, and it adopted the session
    assert re.search(r"adopted session \d+ \(" + re.escape(MANUAL), g.journal("-u", "iscsikitd.service"))
    sh(g, f"iscsiadm -m node -T {MANUAL} -p {PORTAL} --logout")

    # the login unit is enabled (the boot starts it); started now, as the admin would once, so that
    # the reboot has an automatic node's session to log out
    out = sh(g, f"""systemctl is-enabled iscsikit-login.service
        systemctl start iscsikit-login.service
        for i in $(seq 100); do iscsiadm -m session 2>/dev/null | grep -q {AUTO} && break; sleep 0.3; done
        iscsiadm -m session""")
    assert out.splitlines()[0] == "enabled" and AUTO in out and MANUAL not in out, out

    # the reboot: every unit stopped in order, the journal on the console; then a new boot of the
    # same root. PID 1's own status lines are coloured; the journal's lines come through
    # journald, which can only make a line show up later than it happened, never earlier
    t0 = time.monotonic()
    console = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", g.reboot())
    STEPS.append((time.monotonic() - t0, f"reboot (wall; uptime at the new boot's agent {g.guest_uptime:.0f} s)"))
    assert g.boots == 2
    logout = console.rfind("Logout of [sid:")   # the last one: the shutdown's
    # the first network target to go (the lab has no network service, so network.target may
    # never have been started; network-online.target was, by iscsikit-login's Wants=)
    gone = [i for i in (console.find("Stopped target network-online.target"),
                        console.find("Stopped target network.target")) if i != -1]
    assert logout != -1 and gone, console[-4000:]
    network = min(gone)
    assert logout < network, console[logout - 200:network + 200]
    assert AUTO in console[logout:console.find("\n", logout)], console[logout - 200:logout + 400]

    # the second boot; nothing started by hand (the agent's unit comes after multi-user.target)
    # 4. the boot's loader loaded the DKMS module, and the target unit started after it had
    # by its identifier, not its unit: so early in the boot the line may reach the journal through
    # the kernel's log (journald not listening yet), which carries no unit (seen: -u missed it)
    out = sh(g, """lsmod | grep -c '^iscsikit_lio '
        journalctl -b -t systemd-modules-load --no-pager -o cat | grep -c "Inserted module 'iscsikit_lio'" """)
    assert out.split()[0] == "1" and int(out.split()[1]) >= 1, out
    loaded = monotonic(g, "ActiveEnterTimestampMonotonic", "systemd-modules-load.service")
    restore = monotonic(g, "InactiveExitTimestampMonotonic", "iscsikit-target.service")
    assert loaded <= restore, (loaded, restore)

    # 3. the boot restored the saved targets (configfs is new with the kernel)
    sh(g, f"""set -e
        test "$(systemctl is-active iscsikit-target.service)" = active
        ls /sys/kernel/config/target/iscsi/{AUTO}/tpgt_1/lun/lun_0 /sys/kernel/config/target/iscsi/{MANUAL}/tpgt_1/lun/lun_0""")

    # 2. the boot logged in the automatic node only, after network-online.target
    online = monotonic(g, "ActiveEnterTimestampMonotonic", "network-online.target")
    login = monotonic(g, "ExecMainStartTimestampMonotonic", "iscsikit-login.service")
    assert online <= login, (online, login)
    out = sh(g, f"""for i in $(seq 100); do iscsiadm -m session 2>/dev/null | grep -q {AUTO} && break; sleep 0.3; done
        disk=/dev/disk/by-path/ip-{PORTAL}:3260-iscsi-{AUTO}-lun-0
        for i in $(seq 100); do test -e $disk && break; sleep 0.3; done
        iscsiadm -m session; dd if=$disk of=/dev/null bs=1M count=1 iflag=direct 2>&1""")
    assert AUTO in out and MANUAL not in out, out
    assert "1048576 bytes" in out, out   # the restored LUN answers
    assert "Logout of [sid:" not in g.journal("-u", "iscsikit-login.service")
    sh(g, "systemctl stop iscsikit-login.service")
    assert sessions(g) == ""
    assert "Logout of [sid:" in g.journal("-u", "iscsikit-login.service")

    # 5. removal
    # apt on the status file alone (the host's package lists are not needed to remove; reading
    # them took a minute under TCG)
    sh(g, "mkdir -p /run/ik-lists/partial && apt-get -o Dir::State::Lists=/run/ik-lists -o Dir::Cache::pkgcache= "
          "-o Dir::Cache::srcpkgcache= remove -y " + " ".join(PACKAGES) + " 2>&1", timeout=300)
    out = sh(g, """systemctl is-active iscsikitd.socket iscsikitd.service iscsikit-target.service iscsikit-dbus.service
        pgrep -af 'iscsikit(d|-dbus)' | grep -v pgrep
        systemctl list-unit-files --no-legend 'iscsikit*' | grep -v '^iscsikit-lab-agent'
        systemctl list-units --no-legend --all 'iscsikit*' | grep -v 'iscsikit-lab-agent' | grep -v 'not-found'
        ls /lib/udev/rules.d/ /etc/udev/rules.d/ | grep iscsikit
        udevadm control --reload; udevadm test /sys/class/net/lo 2>&1 | grep -c iscsikit
        dkms status iscsikit-lio; ls -d /usr/src/iscsikit-lio-* 2>/dev/null
        echo end""", ok=(0, 1, 3))
    lines = out.split()
    assert lines[:4] == ["inactive"] * 4, out
    assert lines[4:] == ["0", "end"], out
    print("\n".join(f"{sec:7.1f} s  {what}" for sec, what in STEPS))
