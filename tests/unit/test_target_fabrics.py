"""Issue 17 on the host: every fabric read and saved, the unmade ones never deleted, targetcli's
backups, restoreconfig's merge and selection, no colour into a pipe.

A directory tree stands in for configfs (the files the kernel shows, written by
hand here); the vm test (tests/vm/test_target_keep_fabrics.py) proves the same
against the real kernel with targetcli beside us.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys

import pytest

from iscsikit.target import configfs, fabrics, saveconfig
from iscsikit.target.errors import NotFoundError, ValidationError
from iscsikit.target.manager import Manager, select
from iscsikit.target.model import LUN, Config, StorageObject, Target, TPG
from iscsikit.target.plan import keep_unmade, plan

LOOP = "naa.5001405aaaaaaaaa"
VHOST = "naa.5001405bbbbbbbbb"
QLA = "naa.21000024ff000001"


def _file(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


def _so(root, hba, name, dev, size):
    d = f"{root}/core/{hba}/{name}"
    _file(f"{d}/info", f"Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n"
                       f"        TCM FILEIO ID: 0        File: {dev}  Size: {size}  Mode: O_DSYNC Async: 0")
    _file(f"{d}/enable", "1")
    _file(f"{d}/udev_path", dev)
    _file(f"{d}/wwn/vpd_unit_serial", f"T10 VPD Unit Serial Number: serial-{name}")
    _file(f"{d}/attrib/emulate_write_cache", "0")
    _file(f"{d}/attrib/block_size", "512")
    os.makedirs(f"{d}/alua/default_tg_pt_gp", exist_ok=True)
    return d


def _tpg(root, fabdir, wwn_dir, tag, so_dir, nexus=None, acl=None, enable=None):
    d = f"{root}/{fabdir}/{wwn_dir}/tpgt_{tag}"
    for sub in ("lun", "np", "acls", "attrib", "param", "auth"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    _file(f"{d}/attrib/fabric_prot_type", "0")
    if nexus:
        _file(f"{d}/nexus", nexus)
    if enable is not None:
        _file(f"{d}/enable", enable)
    os.makedirs(f"{d}/lun/lun_0")
    _file(f"{d}/lun/lun_0/alua_tg_pt_gp", "TG Port Alua Group: default_tg_pt_gp")
    os.symlink(so_dir, f"{d}/lun/lun_0/abcdef0123")
    if acl:
        a = f"{d}/acls/{acl}"
        os.makedirs(f"{a}/lun_0")
        os.makedirs(f"{a}/attrib")
        _file(f"{a}/tag", "")
        _file(f"{a}/lun_0/write_protect", "0")
        os.symlink(f"{d}/lun/lun_0", f"{a}/lun_0/0123abcdef")
    return d


@pytest.fixture
def tree(tmp_path):
    """loopback, vhost (with an ACL) and a qla2xxx target, each exporting one fileio object."""
    root = str(tmp_path / "configfs")
    os.makedirs(f"{root}/iscsi")
    s1 = _so(root, "fileio_0", "lo", "/tmp/lo.img", 1048576)
    s2 = _so(root, "fileio_1", "vh", "/tmp/vh.img", 1048576)
    s3 = _so(root, "fileio_2", "fc", "/tmp/fc.img", 1048576)
    _tpg(root, "loopback", LOOP, 1, s1, nexus="naa.5001405ccccccccc")
    _tpg(root, "vhost", VHOST, 1, s2, nexus="naa.5001405ddddddddd", acl="naa.5001405eeeeeeeee")
    # FC ports are spelt with colons in configfs (rtslib's to_fabric_wwn)
    _tpg(root, "qla2xxx", "21:00:00:24:ff:00:00:01", 1, s3, enable="1")
    return root


def test_snapshot_reads_every_fabric_and_saves_it_as_rtslib_dumps(tree):
    cfg = configfs.snapshot(tree)
    assert set(cfg.fabric_targets) == {("loopback", LOOP), ("vhost", VHOST), ("qla2xxx", QLA)}
    assert cfg.fabric_targets[("loopback", LOOP)].tpgs[1].nexus == "naa.5001405ccccccccc"
    d = saveconfig.to_dict(cfg)
    by = {(t["fabric"], t["wwn"]): t for t in d["targets"]}
    lo = by[("loopback", LOOP)]
    # rtslib's Target/TPG/LUN dump(): no nexus, no portals, no chap keys on a fabric without auth
    assert lo["tpgs"] == [{"tag": 1, "enable": True, "attributes": {"fabric_prot_type": 0},
                           "luns": [{"index": 0, "storage_object": "/backstores/fileio/lo",
                                     "alias": "abcdef0123", "alua_tg_pt_gp_name": "default_tg_pt_gp"}],
                           "portals": [], "node_acls": []}]
    vh = by[("vhost", VHOST)]["tpgs"][0]["node_acls"]
    assert vh == [{"node_wwn": "naa.5001405eeeeeeeee",
                   "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": False, "alias": "0123abcdef"}]}]
    # and it reads back to the same model
    again = saveconfig.from_dict(json.loads(saveconfig.dumps(cfg)))
    assert again.fabric_targets == cfg.fabric_targets


def test_a_clear_keeps_the_targets_of_fabrics_it_cannot_make(tree):
    current = configfs.snapshot(tree)
    desired = Config()
    notes = keep_unmade(current, desired)
    assert len(notes) == 1 and "qla2xxx" in notes[0] and QLA in notes[0]
    steps = plan(current, desired)
    deleted = {(s.fabric, s.target) for s in steps if s.op == "target_delete"}
    assert deleted == {("loopback", LOOP), ("vhost", VHOST)}
    gone = {s.obj.name for s in steps if s.op == "so_delete"}
    assert gone == {"lo", "vh"}                 # fc's storage object stays: the FC LUN exports it
    assert not [s for s in steps if s.fabric == "qla2xxx"]


def test_loopback_steps_name_the_fabric_paths(tree):
    current = configfs.snapshot(tree)
    w = configfs.Writer(tree)
    assert w.tpg_dir(QLA, 1, "qla2xxx") == f"{tree}/qla2xxx/21:00:00:24:ff:00:00:01/tpgt_1"
    assert w.acl_dir(VHOST, 1, "naa.5001405eeeeeeeee", "vhost").endswith(
        f"vhost/{VHOST}/tpgt_1/acls/naa.5001405eeeeeeeee")
    desired = current.copy()
    del desired.fabric_targets[("loopback", LOOP)].tpgs[1].luns[0]
    steps = plan(current, desired)
    assert [(s.op, s.fabric, s.target) for s in steps] == [("lun_delete", "loopback", LOOP)]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda t: t.update(fabric="frobnicate"), "fabric 'frobnicate' is not one LIO has"),
    (lambda t: t.update(wwn="iqn.2024-01.com.example:x"), "not valid for fabric loopback"),
    (lambda t: t["tpgs"][0].update(portals=[{"ip_address": "0.0.0.0", "port": 3260}]), "no network portals"),
    (lambda t: t["tpgs"].append({"tag": 2}), "one TPG per target"),
])
def test_bad_fabric_targets_are_refused_not_skipped(mutate, fragment):
    raw = {"storage_objects": [{"plugin": "ramdisk", "name": "r", "size": 4096}],
           "targets": [{"fabric": "loopback", "wwn": LOOP,
                        "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r"}]}]}]}
    mutate(raw["targets"][0])
    with pytest.raises(ValidationError, match=fragment):
        saveconfig.from_dict(raw)


# ---- restoreconfig: merge and selection (rtslib's RTSRoot.restore semantics) ---------------

def _cfg(*names, wwn_prefix="iqn.2024-01.com.example:"):
    cfg = Config()
    for n in names:
        so = StorageObject("ramdisk", n, size=1 << 20)
        cfg.storage_objects[so.key] = so
        t = Target(wwn_prefix + n, tpgs={1: TPG(1, luns={0: LUN(0, so.path)})})
        cfg.targets[t.wwn] = t
    return cfg


def test_merge_adds_what_is_missing_and_keeps_what_runs():
    current, file = _cfg("a", "b"), _cfg("b", "c")
    file.storage_objects[("ramdisk", "b")].size = 2 << 20          # differs: kept as it runs
    w = []
    d = select(current, file, False, None, None, w)
    assert set(d.targets) == {f"iqn.2024-01.com.example:{n}" for n in "abc"}
    assert d.storage_objects[("ramdisk", "b")].size == 1 << 20
    assert any("ramdisk/b exists" in x for x in w) and any("example:b exists" in x for x in w)
    assert not [s for s in plan(current, d) if s.op.endswith("_delete")]


def test_selection_restores_only_the_named_target_or_object():
    current, file = _cfg("a"), _cfg("a", "b", "c")
    d = select(current, file, False, None, "b", [])
    assert set(d.storage_objects) == {("ramdisk", "a"), ("ramdisk", "b")} and set(d.targets) == set(current.targets)
    d = select(current, file, True, "iqn.2024-01.com.example:a", None, [])
    assert set(d.targets) == set(current.targets)
    with pytest.raises(NotFoundError, match="storage_object=b"):
        select(current, file, False, "iqn.2024-01.com.example:b", None, [])
    d = select(current, file, False, "iqn.2024-01.com.example:b", "b", [])
    assert set(d.targets) == {"iqn.2024-01.com.example:a", "iqn.2024-01.com.example:b"}
    with pytest.raises(NotFoundError, match="not in the file"):
        select(current, file, False, "iqn.2024-01.com.example:zz", None, [])


def test_replacing_one_target_leaves_the_others():
    current, file = _cfg("a", "b"), _cfg("a", "b")
    file.targets["iqn.2024-01.com.example:a"].tpgs[1].enable = False
    file.targets["iqn.2024-01.com.example:b"].tpgs[1].enable = False
    d = select(current, file, True, "iqn.2024-01.com.example:a", None, [])
    steps = plan(current, d)
    assert [(s.op, s.target) for s in steps] == [("tpg_disable", "iqn.2024-01.com.example:a")]


# ---- backups --------------------------------------------------------------------------

def test_saves_keep_max_backup_files_gzipped_backups(tree, tmp_path, monkeypatch):
    save = tmp_path / "etc" / "saveconfig.json"
    m = Manager(root=tree, save_file=str(save), lock_file=str(tmp_path / "lock"), max_backup_files=3)
    m.save()
    assert saveconfig.list_backups(save) == []                      # nothing to back up yet
    m.save()
    assert saveconfig.list_backups(save) == []                      # unchanged: no backup
    texts = [save.read_text()]
    clock = iter(range(100))
    import time
    monkeypatch.setattr(time, "strftime", lambda fmt: f"20261201-11:00:{next(clock):02d}")
    for i in range(5):
        _file(f"{tree}/loopback/{LOOP}/tpgt_1/attrib/fabric_prot_type", str(i + 1))
        m.save()
        texts.append(save.read_text())
    backups = saveconfig.list_backups(save)
    assert len(backups) == 3
    assert all(b.name.startswith("saveconfig-20261201-11:00:") and b.name.endswith("-json.gz") for b in backups)
    # the newest backup holds the file as it was before the last save
    assert [gzip.decompress(b.read_bytes()).decode() for b in backups] == texts[-4:-1]
    assert oct(save.stat().st_mode & 0o777) == "0o600" and all(b.stat().st_mode & 0o077 == 0 for b in backups)
    # targetcli's universal preferences file raises the limit
    (save.parent / "targetcli.conf").write_text("max_backup_files = 5\n")
    assert saveconfig.max_backup_files(save, 3) == 5
    # a save elsewhere than the save file keeps no backups (as targetcli)
    m.save(str(tmp_path / "other.json"))
    m.save(str(tmp_path / "other.json"))
    assert not (tmp_path / "backup").exists()


# ---- the shell: fabrics shown, info everywhere, no escape codes into a pipe ----------------

def _ikt(tree, tmp_path, *argv):
    """The CLI as its own process, its output a real pipe."""
    import subprocess
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    r = subprocess.run([sys.executable, "-m", "iscsikit.cli.target", "--configfs", tree,
                        "--save-file", str(tmp_path / "s.json"), *argv],
                       capture_output=True, text=True, env=env, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_ls_into_a_pipe_has_no_escape_codes_and_shows_every_fabric(tree, tmp_path):
    rc, out = _ikt(tree, tmp_path, "ls")
    assert rc == 0 and "\x1b" not in out, out
    for name in ("loopback", "vhost", "qla2xxx", LOOP, QLA, "lun0"):
        assert name in out, out
    rc, out = _ikt(tree, tmp_path, "/qla2xxx", "info")
    assert rc == 0 and "kernel_module: tcm_qla2xxx" in out and "\x1b" not in out, out
    rc, out = _ikt(tree, tmp_path, f"/loopback/{LOOP}/tpg1", "info")
    assert rc == 0 and "tag: 1" in out, out


def test_no_color_is_honoured_on_a_tty():
    from iscsikit.target.shell import use_colour

    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert use_colour(Tty())
    os.environ["NO_COLOR"] = "1"
    try:
        assert not use_colour(Tty())
    finally:
        del os.environ["NO_COLOR"]
    assert not use_colour(io.StringIO())


def test_one_shot_ls_draws_exactly_what_the_shell_draws(tree, tmp_path):
    """The fast `ls` (listing.py, no configshell) against configshell's own rendering of
    the same tree, which `iscsikit-target < script` runs."""
    import subprocess
    iqn = "iqn.2024-01.com.example:t1"
    d = _tpg(tree, "iscsi", iqn, 1, f"{tree}/core/fileio_0/lo", acl="iqn.2024-01.com.example:h1", enable="1")
    _file(f"{d}/attrib/authentication", "0")
    _file(f"{d}/attrib/generate_node_acls", "0")
    os.makedirs(f"{d}/np/0.0.0.0:3260")
    os.makedirs(f"{tree}/iscsi/iqn.2024-01.com.example:t2/tpgt_1/lun")
    for sub in ("np", "acls", "attrib", "param", "auth"):
        os.makedirs(f"{tree}/iscsi/iqn.2024-01.com.example:t2/tpgt_1/{sub}")
    _file(f"{tree}/iscsi/iqn.2024-01.com.example:t2/tpgt_1/enable", "0")
    argv = [sys.executable, "-m", "iscsikit.cli.target", "--configfs", tree, "--save-file", str(tmp_path / "s.json")]
    env = dict(os.environ, ISCSIKIT_TARGET_HOME=str(tmp_path / "home"))
    for path in ("/", "/iscsi", f"/iscsi/{iqn}/tpg1", "/backstores/fileio"):
        fast = subprocess.run(argv + ["ls", path], capture_output=True, text=True, env=env, timeout=120)
        shell = subprocess.run(argv, input=f"ls {path}\n", capture_output=True, text=True, env=env, timeout=120)
        assert fast.returncode == shell.returncode == 0, (fast.stderr, shell.stderr)
        assert fast.stdout == shell.stdout, f"{path}:\n{fast.stdout}\n---\n{shell.stdout}"
        assert "mapped_lun0" in fast.stdout or path == "/backstores/fileio"


def _ikt_on_a_pty(tree, tmp_path, env_extra, *argv):
    """The CLI with its stdout on a real terminal (a pty), as a user at a shell runs it."""
    import pty
    import subprocess
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="132", LINES="40", **env_extra)
    if "NO_COLOR" not in env_extra:
        env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 132, 0, 0))
    try:
        p = subprocess.Popen([sys.executable, "-m", "iscsikit.cli.target", "--configfs", tree,
                              "--save-file", str(tmp_path / "s.json"), *argv],
                             stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:         # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert p.wait(timeout=120) == 0, b"".join(chunks)
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_ls_on_a_terminal_is_coloured_unless_no_color_is_set(tree, tmp_path):
    """The same `ls` on a pty: colours (configshell's ANSI codes) by default, none at all
    with NO_COLOR (https://no-color.org), and the same tree either way."""
    coloured = _ikt_on_a_pty(tree, tmp_path, {}, "ls")
    plain = _ikt_on_a_pty(tree, tmp_path, {"NO_COLOR": "1"}, "ls")
    assert "\x1b[" in coloured, coloured
    assert "\x1b" not in plain, plain
    assert LOOP in plain and "vhost" in plain
    nodes = re.compile(r"o- (\S+) [. ]*\[(.*)\]")
    assert nodes.findall(re.sub(r"\x1b\[[0-9;]*m", "", coloured)) == nodes.findall(plain)
    assert len(nodes.findall(plain)) > 10


def test_portal_flags_are_read_only_when_their_transport_can_be_in_the_kernel(tree, tmp_path, monkeypatch):
    """A portal's iser / cxgbit file can say 1 only while ib_isert / cxgbit is in the kernel
    (the write loads it and the portal holds it): without the module the file is not read
    (an `ls` of 1000 targets reads 2000 files fewer); loaded, built in, or when the list of
    built-in modules cannot be read, it is. Here the files say 1, so a flag shows the read."""
    iqn = "iqn.2024-01.com.example:t1"
    d = _tpg(tree, "iscsi", iqn, 1, f"{tree}/core/fileio_0/lo", enable="1")
    _file(f"{d}/np/0.0.0.0:3260/iser", "1")
    _file(f"{d}/np/0.0.0.0:3260/cxgbit", "1")
    sysmod = tmp_path / "sys-module"
    sysmod.mkdir()
    monkeypatch.setattr(configfs, "SYS_MODULE", str(sysmod))
    builtin: list = [set()]
    monkeypatch.setattr(configfs, "_builtin_modules", lambda: builtin[0])

    def flags():
        p = configfs.snapshot(tree, attributes=False, light="dev", targets={iqn}, sos=set()).targets[iqn].tpgs[1]
        p = next(iter(p.portals.values()))
        return p.iser, p.offload
    assert flags() == (False, False)
    (sysmod / "ib_isert").mkdir()
    assert flags() == (True, False)
    builtin[0] = {"cxgbit"}
    assert flags() == (True, True)
    (sysmod / "ib_isert").rmdir()
    builtin[0] = None          # unreadable: every file is read
    assert flags() == (True, True)
