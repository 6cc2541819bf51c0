"""IET ietd.conf and tgt targets.conf importers: every line is mapped or reported."""

from pathlib import Path

import pytest

from iscsikit.target import ietd, saveconfig, tgtconf
from iscsikit.target.importer import ERROR, NOTE, WARNING

DATA = Path(__file__).parent.parent / "data" / "target"
T1 = "iqn.2001-04.com.example:storage.disk1"
T2 = "iqn.2001-04.com.example:storage.disk-2"


def probe(path):
    """The lab guest's view: /dev/ram* are block devices, images are 8 MiB files."""
    if path.startswith("/dev/ram"):
        return "block", None
    if path.startswith("/dev/") or "missing" in path:
        return "missing", None
    return "file", 8 << 20


def _by_line(findings):
    out = {}
    for f in findings:
        out.setdefault(f.line, []).append(f)
    return out


def _content_lines(path: Path):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.split("#", 1)[0].strip() if path.name == "targets.conf" else line.strip()
        if s and not s.startswith("#"):
            yield n, s


# ---- IET ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def iet():
    return ietd.load(str(DATA / "ietd.conf"), probe)


def test_ietd_targets_luns_and_modes(iet):
    cfg = iet.config
    assert set(cfg.targets) == {T1, T2}
    tpg = cfg.targets[T1].tpgs[1]
    assert sorted(tpg.luns) == [0, 1, 2]
    sos = {l.index: cfg.so_by_path(l.storage_object) for l in tpg.luns.values()}
    assert (sos[0].plugin, sos[0].write_back, sos[0].wwn, sos[0].size) == ("fileio", True, "DISK1SN0001", 8 << 20)
    assert (sos[1].plugin, sos[1].readonly, sos[1].dev) == ("block", True, "/dev/ram0")
    assert (sos[2].plugin, sos[2].nullio, sos[2].size) == ("ramdisk", True, 32768 * 4096)
    assert sos[2].attributes["block_size"] == 4096
    # IET lets every initiator in: demo mode, writable, CHAP from IncomingUser/OutgoingUser
    assert tpg.attributes["generate_node_acls"] == 1 and tpg.attributes["demo_mode_write_protect"] == 0
    assert tpg.attributes["authentication"] == 1
    assert (tpg.chap.userid, tpg.chap.mutual_userid) == ("joe", "jack")
    assert tpg.parameters["TargetAlias"] == "Disk1 Store"
    assert tpg.parameters["MaxRecvDataSegmentLength"] == "65536"
    assert tpg.parameters["HeaderDigest"] == "None,CRC32C"
    assert tpg.attributes["default_cmdsn_depth"] == 32
    assert [p.dirname for p in tpg.portals.values()] == ["0.0.0.0:3260"]
    assert cfg.discovery.enable and cfg.discovery.chap.userid == "discuser"
    assert cfg.discovery.chap.mutual_userid == "discmutual"


def test_ietd_continuation_and_write_through(iet):
    tpg = iet.config.targets[T2].tpgs[1]
    so = iet.config.so_by_path(tpg.luns[0].storage_object)
    assert so.plugin == "fileio" and so.write_back is False and so.attributes["block_size"] == 512
    # read-only fileio on a block device goes through iblock read-only
    so3 = iet.config.so_by_path(tpg.luns[3].storage_object)
    assert (so3.plugin, so3.readonly) == ("block", True)


def test_ietd_every_line_is_mapped_or_reported(iet):
    lines = _by_line(iet.findings)
    expect = {
        4: (ERROR, "only discuser kept"), 6: (ERROR, "iSNS"), 7: (ERROR, "iSNS"),
        12: (NOTE, "new WWID"), 13: (ERROR, "ScsiId"), 15: (NOTE, "TargetAlias"),
        33: (ERROR, "markers"), 34: (NOTE, "default_cmdsn_depth"),
        35: (ERROR, "Wthreads"), 36: (ERROR, "MaxSessions"), 37: (ERROR, "NOPInterval"),
        38: (ERROR, "NOPTimeout"), 40: (WARNING, "renamed to " + T2),
        43: (ERROR, "LUN skipped rather than exported writable"),
        44: (WARNING, "read-only block object"), 45: (ERROR, "does not exist"),
        46: (ERROR, "Type=tape"), 47: (ERROR, "unknown ietd.conf key"),
    }
    for n, (sev, fragment) in expect.items():
        assert any(f.severity == sev and fragment in f.message for f in lines.get(n, [])), (n, lines.get(n))
    mapped = {3, 5, 9, 10, 11, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 41, 42}
    for n, text in _content_lines(DATA / "ietd.conf"):
        assert n in expect or n in mapped, f"line {n} ({text}) neither mapped nor reported"
    assert all(str(f).startswith(f"{DATA / 'ietd.conf'}:{f.line}: ") for f in iet.findings)


def test_ietd_output_restores_as_saveconfig(iet):
    d = saveconfig.to_dict(iet.config)
    again = saveconfig.from_dict(d)
    assert set(again.targets) == {T1, T2}


@pytest.mark.parametrize("text, fragment", [
    ("Target iqn.bad\n Lun 0 Type=nullio\n", "not a valid IQN"),
    ("Target iqn.2024-01.com.example:x\n Lun 99999 Type=nullio\n", "out of range"),
    ("Target iqn.2024-01.com.example:x\n Lun 0 Type=nullio,IOMode=xx\n", "IOMode=xx"),
    ("Target iqn.2024-01.com.example:x\n Lun 0 Type=blockio,Path=/tmp/f.img\n", "not a block device"),
    ("Target iqn.2024-01.com.example:x\n Lun 0 Type=nullio,BlockSize=3000\n", "block size"),
    ("Target iqn.2024-01.com.example:x\n IncomingUser a\n", "needs a user and a password"),
    ("Target iqn.2024-01.com.example:x\n OutgoingUser a secretsecret1\n", "without an incoming user"),
    ("Target iqn.2024-01.com.example:x\n Lun 0 Type=nullio # comment\n", "not a comment"),
    ("Target iqn.2024-01.com.example:x\n HeaderDigest MD5\n", "HeaderDigest"),
])
def test_ietd_bad_lines(text, fragment):
    r = ietd.parse(text, "x.conf", probe)
    assert any(fragment in f.message for f in r.findings), [str(f) for f in r.findings]


def test_ietd_all_readonly_files_write_protect_the_tpg():
    r = ietd.parse("Target iqn.2024-01.com.example:ro\n Lun 0 Path=/srv/a.img,IOMode=ro\n"
                   " Lun 1 Path=/srv/b.img,IOMode=ro\n", "x.conf", probe)
    tpg = r.config.targets["iqn.2024-01.com.example:ro"].tpgs[1]
    assert sorted(tpg.luns) == [0, 1] and tpg.attributes["demo_mode_write_protect"] == 1


# ---- tgt ----------------------------------------------------------------------------

TT1 = "iqn.2008-09.com.example:server.target1"
TT2 = "iqn.2008-09.com.example:server.target2"


@pytest.fixture(scope="module")
def tgt():
    return tgtconf.load(str(DATA / "targets.conf"), probe)


def test_tgt_targets_luns_acls(tgt):
    cfg = tgt.config
    assert set(cfg.targets) == {TT1, TT2}
    t1 = cfg.targets[TT1].tpgs[1]
    assert sorted(t1.luns) == [1, 2]         # tgt numbering kept: LUN 0 was its controller
    assert cfg.so_by_path(t1.luns[1].storage_object).plugin == "fileio"
    assert cfg.so_by_path(t1.luns[1].storage_object).write_back is False       # write-cache off
    assert cfg.so_by_path(t1.luns[2].storage_object).plugin == "block"
    acl = t1.node_acls["iqn.2024-01.com.example:host1"]
    assert sorted(acl.mapped_luns) == [1, 2]
    assert (acl.chap.userid, acl.chap.mutual_userid) == ("tuser", "tmutual")
    assert t1.attributes["generate_node_acls"] == 0 and t1.attributes["authentication"] == 1
    assert t1.parameters == {"MaxRecvDataSegmentLength": "65536", "HeaderDigest": "CRC32C"}
    t2 = cfg.targets[TT2].tpgs[1]
    assert sorted(t2.luns) == [2, 5]         # t2b (readonly file) skipped, sg9 missing
    so5 = cfg.so_by_path(t2.luns[5].storage_object)
    assert (so5.wwn, so5.attributes["block_size"], so5.write_back, so5.aio) == ("T2ASN01", 4096, True, True)
    so2 = cfg.so_by_path(t2.luns[2].storage_object)
    assert so2.plugin == "block" and so2.exclusive is False
    assert t2.parameters["InitialR2T"] == "No"
    assert t2.attributes["generate_node_acls"] == 1
    assert cfg.discovery.chap.userid == "disc" and cfg.discovery.chap.mutual_userid == "discm"


def test_tgt_every_line_is_mapped_or_reported(tgt):
    lines = _by_line(tgt.findings)
    expect = {
        3: (NOTE, "control-port"), 4: (NOTE, "ignore-errors"), 5: (ERROR, "iSNS"),
        10: (NOTE, "controller"), 13: (ERROR, "cannot filter initiators by address"),
        15: (ERROR, "only tuser kept"), 20: (NOTE, "internal id"),
        26: (NOTE, "new WWID"), 30: (ERROR, "vendor id"), 31: (ERROR, "product id"),
        32: (ERROR, "revision"), 33: (ERROR, "VPD 0x83"), 35: (ERROR, "mode pages"),
        38: (ERROR, "readonly on a file"), 41: (NOTE, "allow-in-use"), 42: (ERROR, "removable"),
        44: (ERROR, "does not exist"), 45: (ERROR, "only iscsi"),
    }
    for n, (sev, fragment) in expect.items():
        assert any(f.severity == sev and fragment in f.message for f in lines.get(n, [])), (n, lines.get(n))
    mapped = {2, 6, 7, 9, 11, 12, 14, 16, 17, 18, 19, 21, 23, 24, 25, 27, 28, 29, 34, 36, 37, 39, 40, 43, 46, 47}
    for n, text in _content_lines(DATA / "targets.conf"):
        assert n in expect or n in mapped, f"line {n} ({text}) neither mapped nor reported"


@pytest.mark.parametrize("text, fragment", [
    ("<target iqn.2024-01.com.example:x>\n backing-store /srv/a.img\n", "not closed"),
    ("</target>\n", "without <target>"),
    ("<target iqn.2024-01.com.example:x>\n bs-type rbd\n backing-store /srv/a.img\n</target>\n", "bs-type rbd"),
    ("<target iqn.2024-01.com.example:x>\n device-type cd\n backing-store /srv/a.img\n</target>\n",
     "device-type cd"),
    ("<target iqn.2024-01.com.example:x>\n frob 1\n</target>\n", "unknown target key"),
    ("<target iqn.2024-01.com.example:x>\n initiator-name iqn.nope\n</target>\n", "not a valid IQN"),
    ("include /nonexistent/*.conf\n", "no file matches"),
    ("<target iqn.2024-01.com.example:x>\n outgoinguser bob\n</target>\n", "needs a user and a password"),
])
def test_tgt_bad_lines(text, fragment):
    r = tgtconf.parse(text, "t.conf", probe)
    assert any(fragment in f.message for f in r.findings), [str(f) for f in r.findings]


def test_tgt_chap_users_are_checked_on_their_own_line():
    """As in ietd.conf: a user LIO would refuse is skipped with its line number, and the rest imports."""
    r = tgtconf.parse("<target iqn.2024-01.com.example:x>\n incominguser NULL secretsecret1\n"
                      " backing-store /srv/a.img\n</target>\n", "t.conf", probe)
    assert [(f.line, f.severity) for f in r.findings if "literal NULL" in f.message] == [(2, "error")]
    assert not any("not valid for LIO" in f.message for f in r.findings)


def test_tgt_include(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("<target iqn.2024-01.com.example:inc>\n"
                                                " backing-store /srv/x.img\n</target>\n")
    main = tmp_path / "targets.conf"
    main.write_text("include conf.d/*.conf\n")
    r = tgtconf.load(str(main), probe)
    assert "iqn.2024-01.com.example:inc" in r.config.targets


def test_tgt_findings_name_the_included_file_they_come_from(tmp_path):
    (tmp_path / "conf.d").mkdir()
    inc = tmp_path / "conf.d" / "a.conf"
    inc.write_text("<target iqn.2024-01.com.example:in_c>\n"          # '_' is renamed: a warning
                   " backing-store /srv/x.img\n"
                   " markers on\n"                                      # a target-level finding
                   "</target>\n"
                   "incomingdiscoveryuser u1 secretsecret1\n"
                   "incomingdiscoveryuser u2 secretsecret2\n")         # only one kept: an error
    main = tmp_path / "targets.conf"
    main.write_text("include conf.d/*.conf\ninclude nothing/*.conf\n")
    r = tgtconf.load(str(main), probe)
    where = {f.message.split(":")[0].split()[0]: (f.file, f.line) for f in r.findings}
    assert where["target"] == (str(inc), 1)
    assert where["markers"] == (str(inc), 3)
    assert where["incomingdiscoveryuser"] == (str(inc), 6)
    assert where["include"] == (str(main), 2)
