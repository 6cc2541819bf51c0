"""iSNS discovery (RFC 4171): proto/isns.py's messages and its bounded reader, the client's
register-when-unknown dance against a scripted server, and `iscsiadm -m discovery -t isns`
against a real open-isns server (isnsd, installed by .ci/setup) in which targets are
registered with isnsadm."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from iscsikit.cli import adm
from iscsikit.initiator import isns as client
from iscsikit.initiator import nodedb as ndb
from iscsikit.proto import isns
from iscsikit.proto.errors import ProtocolError

INITIATOR = "iqn.2026-12.org.example:isns-host"
T1, T2 = "iqn.2026-12.org.example:isns-t1", "iqn.2026-12.org.example:isns-t2"


def _attrs(payload: bytes):
    return isns.attributes(payload)


def test_a_query_is_source_keys_delimiter_then_the_wanted_tags():
    msg = isns.query_targets(7, INITIATOR)
    version, function, length, flags, xid, seq = isns.HEADER.unpack_from(msg)
    assert (version, function, length, xid, seq) == (1, isns.DEV_ATTR_QRY, len(msg) - 12, 7, 0)
    assert flags == isns.F_CLIENT | isns.F_FIRST_PDU | isns.F_LAST_PDU
    attrs = _attrs(msg[12:])
    assert attrs[0] == (isns.TAG_ISCSI_NAME, INITIATOR.encode() + b"\0" + bytes(-(len(INITIATOR) + 1) % 4))
    assert attrs[1] == (isns.TAG_ISCSI_NODE_TYPE, struct.pack(">I", isns.NODE_TARGET))
    assert attrs[2] == (isns.TAG_DELIMITER, b"")
    assert [t for t, v in attrs[3:]] == [32, 33, 16, 17, 48, 49, 50, 51] and all(v == b"" for _, v in attrs[3:])


def _pdu(function, xid, seq, flags, payload):
    return isns.HEADER.pack(1, function, len(payload), flags, xid, seq) + payload


def _pg(name, ip4, port, tag):
    return (isns.string(isns.TAG_PG_ISCSI_NAME, name)
            + isns.tlv(isns.TAG_PG_PORTAL_IP, bytes(10) + b"\xff\xff" + bytes(ip4))
            + isns.uint32(isns.TAG_PG_PORTAL_PORT, port) + isns.uint32(isns.TAG_PG_TAG, tag))


def test_a_response_in_two_pdus_is_one_message_and_its_portal_groups_are_read():
    body = struct.pack(">I", 0) + isns.uint32(33, 1) + isns.tlv(0) + isns.string(32, T1) + _pg(T1, (127, 0, 0, 1), 3260, 1)
    body += isns.string(isns.TAG_PG_ISCSI_NAME, T2)   # a PG without address/port/tag: skipped
    r = isns.ResponseReader()
    r.feed(_pdu(0x8002, 5, 0, isns.F_SERVER | isns.F_FIRST_PDU, body[:20]))
    assert r.next_response() is None
    r.feed(_pdu(0x8002, 5, 1, isns.F_SERVER | isns.F_LAST_PDU, body[20:]))
    resp = r.next_response()
    assert (resp.function, resp.xid, resp.status) == (0x8002, 5, 0)
    assert isns.portal_groups(resp.attributes) == [isns.PortalGroup(T1, "127.0.0.1", 3260, 1)]


@pytest.mark.parametrize("case", ["out_of_sequence", "other_xid", "too_long", "truncated_attr", "bad_version",
                                  "not_a_response", "bad_address"])
def test_a_hostile_response_is_a_protocol_error(case):
    r = isns.ResponseReader()
    ok = struct.pack(">I", 0)
    with pytest.raises(ProtocolError):
        if case == "out_of_sequence":
            r.feed(_pdu(0x8002, 1, 1, isns.F_FIRST_PDU, ok) + _pdu(0x8002, 1, 3, isns.F_LAST_PDU, ok))
        elif case == "other_xid":
            r.feed(_pdu(0x8002, 1, 0, isns.F_FIRST_PDU, ok) + _pdu(0x8002, 2, 1, isns.F_LAST_PDU, ok))
        elif case == "too_long":
            for seq in range(isns.MAX_PDUS + 2):
                flags = isns.F_FIRST_PDU if seq == 0 else 0
                r.feed(_pdu(0x8002, 1, seq, flags, bytes(60000)))
                r.next_response()
        elif case == "truncated_attr":
            r.feed(_pdu(0x8002, 1, 0, isns.F_FIRST_PDU | isns.F_LAST_PDU, ok + struct.pack(">II", 32, 400)))
        elif case == "bad_version":
            r.feed(struct.pack(">HHHHHH", 2, 0x8002, 4, isns.F_FIRST_PDU | isns.F_LAST_PDU, 1, 0) + ok)
        elif case == "not_a_response":
            r.feed(_pdu(0x0002, 1, 0, isns.F_FIRST_PDU | isns.F_LAST_PDU, ok))
        elif case == "bad_address":
            isns.portal_groups([(48, b"t\0\0\0"), (49, b"\x7f\0\0\1"), (50, b"\0\0\x0c\xbc"), (51, b"\0\0\0\1")])
        r.next_response()


class UnknownSourceServer:
    """Answers the first query "Source Unknown", accepts the registration, answers the next
    query with one portal group and records every function it was sent."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            while True:
                head = conn.recv(12, socket.MSG_WAITALL)
                if len(head) < 12:
                    return
                _, function, length, _, xid, _ = isns.HEADER.unpack(head)
                conn.recv(length, socket.MSG_WAITALL)
                self.seen.append(function)
                queries = self.seen.count(isns.DEV_ATTR_QRY)
                if function == isns.DEV_ATTR_QRY and queries == 1:
                    body = struct.pack(">I", isns.SOURCE_UNKNOWN)
                elif function == isns.DEV_ATTR_QRY:
                    body = struct.pack(">I", 0) + _pg(T1, (192, 0, 2, 7), 3261, 2)
                else:
                    body = struct.pack(">I", 0)
                conn.sendall(_pdu(function | 0x8000, xid, 0, isns.F_SERVER | isns.F_FIRST_PDU | isns.F_LAST_PDU,
                                  body))


def test_an_unknown_source_registers_queries_again_and_deregisters():
    server = UnknownSourceServer()
    groups = client.discover("127.0.0.1", server.port, INITIATOR, timeout=10)
    assert groups == [isns.PortalGroup(T1, "192.0.2.7", 3261, 2)]
    assert server.seen == [isns.DEV_ATTR_QRY, isns.DEV_ATTR_REG, isns.DEV_ATTR_QRY, isns.DEV_DEREG]


def test_a_silent_server_ends_at_the_timeout():
    silent = socket.create_server(("127.0.0.1", 0))
    start = time.monotonic()
    with pytest.raises(client.IsnsError) as e:
        client.discover("127.0.0.1", silent.getsockname()[1], INITIATOR, timeout=1.5)
    assert e.value.exit_code == 25 and time.monotonic() - start < 3
    silent.close()


# -- against open-isns ---------------------------------------------------------------
@pytest.fixture
def isnsd(tmp_path):
    """isnsd on 127.0.0.1 and a free port, no security, the default discovery domain."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    conf, adm_conf = tmp_path / "isnsd.conf", tmp_path / "isnsadm.conf"
    conf.write_text(f"Database = {tmp_path}/db\nDefaultDiscoveryDomain = 1\nSLPRegister = 0\nSecurity = 0\n"
                    f"PIDFile = {tmp_path}/isnsd.pid\nControlSocket = {tmp_path}/control\n"
                    f"BindAddress = 127.0.0.1:{port}\n")
    adm_conf.write_text(f"ServerAddress = 127.0.0.1:{port}\nSecurity = 0\nControlSocket = {tmp_path}/control\n"
                        "SourceName = iqn.2026-12.org.example:isns-admin\n")
    (tmp_path / "db").mkdir()
    proc = subprocess.Popen(["isnsd", "--config", str(conf), "--foreground"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def isnsadm(*args):
        return subprocess.run(["isnsadm", "--config", str(adm_conf), *args], capture_output=True, text=True)

    deadline = time.monotonic() + 10
    while isnsadm("--list", "nodes").returncode != 0:
        assert time.monotonic() < deadline and proc.poll() is None, "isnsd did not start"
        time.sleep(0.1)
    for entity, target, portal in (("e1", T1, "127.0.0.1:3260"), ("e2", T2, "127.0.0.2:3261")):
        r = isnsadm("--register", f"entity={entity}", f"portal={portal}", f"target={target}")
        assert r.returncode == 0, r.stderr
    yield port, isnsadm
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "iscsid.conf").write_text("iscsid.startup = /bin/false\n")
    (tmp_path / "etc" / "initiatorname.iscsi").write_text(f"InitiatorName={INITIATOR}\n")
    return str(tmp_path / "etc")


def run(root, *argv):
    out, err = io.StringIO(), io.StringIO()
    rc = adm.run(list(argv), out=out, err=err, db=ndb.NodeDB(root), argv0="iscsiadm", env={})
    return rc, out.getvalue(), err.getvalue()


def test_discovery_against_isnsd_writes_the_records_and_follows_the_server(isnsd, root):
    port, isnsadm = isnsd
    rc, out, err = run(root, "-m", "discovery", "-t", "isns", "-p", f"127.0.0.1:{port}")
    assert (rc, err) == (0, "")
    assert sorted(out.splitlines()) == [f"127.0.0.1:3260,1 {T1}", f"127.0.0.2:3261,1 {T2}"]
    db = ndb.NodeDB(root)
    nids = sorted(db.node_ids(), key=lambda n: n.target)
    assert [(n.target, n.address, n.port, n.tpgt) for n in nids] == [(T1, "127.0.0.1", 3260, 1),
                                                                     (T2, "127.0.0.2", 3261, 1)]
    v = db.read_node(nids[0]).values
    assert (v["node.discovery_type"], v["node.discovery_address"], v["node.discovery_port"]) == (
        "isns", "127.0.0.1", str(port))
    # a target that leaves the server: its record goes on the next discovery
    assert isnsadm("--deregister", f"iscsi-name={T2}").returncode == 0
    rc, out, _ = run(root, "-m", "discovery", "-t", "isns", "-p", f"127.0.0.1:{port}")
    assert rc == 0 and out == f"127.0.0.1:3260,1 {T1}\n"
    assert [n.target for n in db.node_ids()] == [T1]


def test_nonpersistent_writes_nothing_and_no_server_is_25(isnsd, root, tmp_path):
    port, _ = isnsd
    rc, out, _ = run(root, "-m", "discovery", "-t", "isns", "-p", f"127.0.0.1:{port}", "-o", "nonpersistent")
    assert rc == 0 and T1 in out and ndb.NodeDB(root).node_ids() == []
    closed = socket.create_server(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    rc, out, err = run(root, "-m", "discovery", "-t", "isns", "-p", f"127.0.0.1:{dead}")
    assert rc == 25 and out == "" and err.endswith("iscsiadm: Could not perform iSNS discovery: iSNS query failed\n")
