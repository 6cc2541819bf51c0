"""Discovery and login against a real tgtd on 127.0.0.1 (interop-facts.md §4)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from iscsikit.initiator.login_io import LoginError, discover, login
from iscsikit.proto.chap import ChapCredentials
from iscsikit.initiator.exitcodes import ExitCode
from iscsikit.proto.sendtargets import Portal

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

ALICE, ALICE_PW = "alice", "secretpass12"
TGTUSER, TGT_PW = "tgtuser", "tgtsecret123"
DISC, DISC_PW = "disc", "discsecret12"
INQUIRY = bytes([0x12, 0, 0, 0, 96, 0])
TEST_UNIT_READY = bytes(6)


@pytest.fixture(scope="module")
def targets(tgtd):
    names = {
        "open": tgtd.add_target(1, "open"),
        "chap": tgtd.add_target(2, "chap"),
        "mutual": tgtd.add_target(3, "mutual"),
        "digest": tgtd.add_target(4, "digest", HeaderDigest="CRC32C", DataDigest="CRC32C"),
    }
    tgtd.add_account(ALICE, ALICE_PW)
    tgtd.add_account(TGTUSER, TGT_PW)
    tgtd.add_account(DISC, DISC_PW)
    tgtd.bind_account(ALICE, 2)
    tgtd.bind_account(ALICE, 3)
    tgtd.bind_account(TGTUSER, 3, outgoing=True)
    return names


def one_way(password=ALICE_PW):
    return ChapCredentials(ALICE, password)


def mutual(target_password=TGT_PW):
    return ChapCredentials(ALICE, ALICE_PW, TGTUSER, target_password)


def _inquiry_vendor(session, lun=1):
    result = session.scsi(INQUIRY, lun=lun, expected_length=96)
    assert result.status == 0
    return result.data[8:16].decode().strip()


def test_discovery(tgtd, targets):
    found = discover(tgtd.portal)
    assert {t.name for t in found} == set(targets.values())
    for target in found:
        assert target.portals == (Portal("127.0.0.1", tgtd.port, 1),)


def test_discovery_agrees_with_libiscsi(tgtd, targets):
    if not shutil.which("iscsi-ls"):
        pytest.skip("iscsi-ls (libiscsi-bin) not installed")
    out = subprocess.run(["iscsi-ls", f"iscsi://127.0.0.1:{tgtd.port}"], capture_output=True,
                         text=True, timeout=20, check=True).stdout
    theirs = set(re.findall(r"Target:(\S+) Portal:(\S+)", out))
    ours = {(t.name, f"{p.host}:{p.port},{p.tpgt}") for t in discover(tgtd.portal) for p in t.portals}
    assert ours == theirs


def test_login_without_auth_honours_tgtd_defaults(tgtd, targets):
    with login(tgtd.portal, targets["open"]) as session:
        params = session.parameters
        # we offered open-iscsi's values; tgtd's defaults win where the rules say so
        assert params["InitialR2T"] is True           # OR: tgtd says Yes
        assert params["ImmediateData"] is True
        assert params["MaxBurstLength"] == 262144       # min(16776192, tgtd 262144)
        assert params["FirstBurstLength"] == 65536      # min(262144, tgtd 65536)
        assert params["DefaultTime2Retain"] == 0        # min(0, 20)
        assert params["MaxConnections"] == 1 and params["ErrorRecoveryLevel"] == 0
        assert params.max_xmit_data_segment == 8192    # tgtd declares nothing: RFC default
        assert params.max_recv_data_segment == 262144
        assert not params.header_digest and not params.data_digest
        assert session.login.target_portal_group_tag == 1 and session.login.tsih != 0
        session.ping(b"hello tgtd")
        assert _inquiry_vendor(session) == "IET"
        session.scsi(TEST_UNIT_READY, lun=1)        # clears the power-on unit attention
        assert session.scsi(TEST_UNIT_READY, lun=1).status == 0
        session.logout()


def test_large_read_uses_our_segment_limit(tgtd, targets):
    with login(tgtd.portal, targets["open"]) as session:
        read10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 128, 0])  # 128 blocks = 64 KiB
        for _ in range(2):  # the first may meet the unit attention
            result = session.scsi(read10, lun=1, expected_length=65536)
        assert result.status == 0 and result.data == bytes(65536)


def test_no_credentials_on_a_chap_target(tgtd, targets):
    with pytest.raises(LoginError) as info:
        login(tgtd.portal, targets["chap"])
    assert info.value.exit_code == ExitCode.LOGIN_AUTH_FAILED


def test_one_way_chap(tgtd, targets):
    with login(tgtd.portal, targets["chap"], chap=one_way()) as session:
        assert session.parameters["AuthMethod"] == "CHAP"
        assert _inquiry_vendor(session) == "IET"


def test_wrong_password(tgtd, targets):
    with pytest.raises(LoginError) as info:
        login(tgtd.portal, targets["chap"], chap=one_way("wrongpassword"))
    assert info.value.exit_code == 24
    assert "authentication failure" in str(info.value) and "wrongpassword" not in str(info.value)


def test_chap_algorithm_list_refused_by_tgtd(tgtd, targets):
    # why MD5 alone is the default (open-iscsi-facts.md §3.6): tgtd refuses a list
    creds = ChapCredentials(ALICE, ALICE_PW, algorithms=("SHA256", "MD5"))
    with pytest.raises(LoginError) as info:
        login(tgtd.portal, targets["chap"], chap=creds)
    assert info.value.exit_code == ExitCode.FATAL_LOGIN


def test_mutual_chap(tgtd, targets):
    with login(tgtd.portal, targets["mutual"], chap=mutual()) as session:
        assert session.parameters["AuthMethod"] == "CHAP"
        session.ping()


def test_mutual_chap_wrong_target_secret(tgtd, targets):
    with pytest.raises(LoginError) as info:
        login(tgtd.portal, targets["mutual"], chap=mutual("not-the-target-secret"))
    assert info.value.exit_code == ExitCode.LOGIN_AUTH_FAILED
    assert "invalid CHAP_R" in str(info.value) and "not-the-target-secret" not in str(info.value)


def test_discovery_chap(tgtd, targets):
    tgtd.bind_account(DISC)
    try:
        with pytest.raises(LoginError) as info:
            discover(tgtd.portal)
        assert info.value.exit_code == ExitCode.LOGIN_AUTH_FAILED
        found = discover(tgtd.portal, chap=ChapCredentials(DISC, DISC_PW))
        assert len(found) == len(targets)
    finally:
        tgtd.unbind_account(DISC)


def test_digests_negotiated_and_used(tgtd, targets):
    with login(tgtd.portal, targets["digest"],
               operational={"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"}) as session:
        assert session.parameters.header_digest and session.parameters.data_digest
        session.ping(b"digest round trip")
        assert _inquiry_vendor(session) == "IET"
        session.scsi(TEST_UNIT_READY, lun=1)
        assert session.scsi(TEST_UNIT_READY, lun=1).status == 0
        session.logout()


def test_connection_refused_is_exit_4():
    from tgtd_harness import free_port
    with pytest.raises(LoginError) as info:
        login(("127.0.0.1", free_port()), "iqn.2024-01.org.example:none", connect_timeout=2)
    assert info.value.exit_code == ExitCode.TRANS


def test_unknown_target_is_fatal(tgtd, targets):
    with pytest.raises(LoginError) as info:
        login(tgtd.portal, "iqn.2024-01.org.iscsikit.test:nosuch")
    assert info.value.exit_code == ExitCode.FATAL_LOGIN and "0x0203" in str(info.value)


# -- tshark as an independent decoder ------------------------------------------

def _capture_works() -> bool:
    return bool(shutil.which("dumpcap") and shutil.which("tshark"))


def test_tshark_finds_no_malformed_pdus(tgtd, targets, tmp_path):
    if not _capture_works():
        pytest.skip("tshark/dumpcap not installed")
    pcap = tmp_path / "login.pcapng"
    errlog = tmp_path / "dumpcap.err"
    with open(errlog, "wb") as err:
        cap = subprocess.Popen(["dumpcap", "-q", "-i", "lo", "-f", f"tcp port {tgtd.port}", "-w", str(pcap)],
                               stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not pcap.exists() or pcap.stat().st_size == 0:
            if cap.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"cannot capture on lo here: {errlog.read_text()[-300:]}")
            time.sleep(0.05)
        discover(tgtd.portal)
        with login(tgtd.portal, targets["chap"], chap=one_way()) as session:
            session.ping(b"x" * 100)
            session.logout()
        with login(tgtd.portal, targets["mutual"], chap=mutual()) as session:
            session.logout()
        with login(tgtd.portal, targets["digest"],
                   operational={"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}) as session:
            session.ping(b"y" * 10)
            session.logout()
        time.sleep(0.3)
    finally:
        os.killpg(cap.pid, signal.SIGTERM)
        cap.wait(timeout=10)
    base = ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={tgtd.port},iscsi",
            "-o", f"iscsi.target_ports:{tgtd.port}"]
    opcodes = subprocess.run(base + ["-Y", "iscsi", "-T", "fields", "-e", "iscsi.opcode"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
    seen = {int(op, 16) for line in opcodes for op in line.split(",")}
    assert {0x03, 0x23, 0x04, 0x24, 0x00, 0x20, 0x06, 0x26} <= seen, seen
    bad = subprocess.run(base + ["-Y", "_ws.malformed || _ws.expert.severity >= warning"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert bad.strip() == "", bad
    detail = subprocess.run(base + ["-Y", "iscsi", "-V"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert "Good CRC32" in detail and "Bad CRC32" not in detail  # our digests, checked by tshark
