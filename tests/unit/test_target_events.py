"""target/events.py and kernel/genl.py on the host: the tables against kmod/'s header, the codec
against pyroute2's, gap accounting, the lines printed, and `sessions --follow`'s fallback.
The kernel side is proven in the guest (tests/vm/test_kmod_events.py)."""

import json
import re
import struct
from pathlib import Path

import pytest

from iscsikit.cli import target as cli
from iscsikit.kernel import genl
from iscsikit.target import events, sessions

KMOD = Path(__file__).resolve().parents[2] / "kmod"
HEADER = (KMOD / "iscsikit_lio.h").read_text()


def c_enum(name: str) -> dict[str, int]:
    """NAME -> value of `enum name { ... }` in the header (implicit numbering, as C does)."""
    body = re.search(r"enum " + name + r" \{(.*?)\};", HEADER, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    out, n = {}, -1
    for item in (x.strip() for x in body.split(",")):
        if not item:
            continue
        key, _, value = item.partition("=")
        n = int(value, 0) if value.strip() else n + 1
        out[key.strip()] = n
    return out


def c_define(name: str) -> str:
    return re.search(r"#define " + name + r"\s+(\S+)", HEADER).group(1).strip('"')


def test_family_name_version_and_group_match_the_header():
    assert events.FAMILY == c_define("ISCSIKIT_LIO_GENL_NAME")
    assert events.VERSION == int(c_define("ISCSIKIT_LIO_GENL_VERSION"))
    assert events.GROUP == c_define("ISCSIKIT_LIO_MCGRP_EVENTS")


def test_attribute_table_matches_the_header():
    c = {k.removeprefix("ISCSIKIT_LIO_A_"): v for k, v in c_enum("iscsikit_lio_attr").items()
         if not k.startswith("__") and k != "ISCSIKIT_LIO_A_UNSPEC"}
    assert c == {name.upper(): n for n, (name, _) in events.ATTRS.items()}


@pytest.mark.parametrize("enum, table, prefix", [
    ("iscsikit_lio_event", events.EVENTS, "ISCSIKIT_LIO_EV_"),
    ("iscsikit_lio_conn_reason", events.CONN_REASONS, "ISCSIKIT_LIO_CR_"),
    ("iscsikit_lio_sess_reason", events.SESSION_REASONS, "ISCSIKIT_LIO_SR_"),
])
def test_value_tables_match_the_header(enum, table, prefix):
    c = {k.removeprefix(prefix): v for k, v in c_enum(enum).items() if not k.endswith("UNSPEC")}
    assert c == {name.upper(): n for n, name in table.items()}


def test_commands_match_the_header():
    c = c_enum("iscsikit_lio_cmd")
    assert (c["ISCSIKIT_LIO_CMD_EVENT"], c["ISCSIKIT_LIO_CMD_GET_STATUS"]) == (events.CMD_EVENT, events.CMD_GET_STATUS)


def test_module_source_sends_each_attribute_with_the_type_the_table_says():
    src = (KMOD / "iscsikit_lio.c").read_text()
    put = {"u8": "u8", "u16": "u16", "u32": "u32", "str": "str", "isid": "bin"}
    for name, typ in events.ATTRS.values():
        if typ not in put:
            continue
        uses = re.findall(r"(?:ik_put|nla_put)_(\w+)\([^;(){}]*ISCSIKIT_LIO_A_" + name.upper() + r"\b", src)
        assert uses, name
        # ik_put_sockaddr() puts an address as a string and its port as a u16
        allowed = {put[typ]} | ({"sockaddr"} if name.endswith(("_addr", "_port")) else set())
        assert {u.replace("string", "str") for u in uses} <= allowed, (name, uses)


def test_dkms_builds_the_module_kbuild_names():
    conf = dict(re.findall(r'^(\w+(?:\[\d\])?)="([^"]*)"', (KMOD / "dkms.conf").read_text(), re.M))
    obj = re.search(r"obj-m\s*:=\s*(\w+)\.o", (KMOD / "Kbuild").read_text()).group(1)
    assert conf["BUILT_MODULE_NAME[0]"] == obj == events.MODULE
    assert conf["AUTOINSTALL"] == "yes" and "${kernel_source_dir}" in conf["MAKE[0]"]


# ---- codec -------------------------------------------------------------------------------------

def _event_bytes(family=0x20, seq=7, **extra) -> bytes:
    attrs = (genl.pack_attr(1, struct.pack("=Q", seq)) + genl.pack_attr(2, b"\x01")
             + genl.pack_attr(4, b"iqn.2026-11.org.example:t\0") + genl.pack_attr(5, struct.pack("=H", 1))
             + genl.pack_attr(7, bytes.fromhex("400001370000")) + genl.pack_attr(16, b"\x01")
             + genl.pack_attr(12, struct.pack("=H", 50828)) + genl.pack_attr(15, b"CHAP\0"))
    for k, v in extra.items():
        attrs += v
    return genl.encode(family, events.CMD_EVENT, 1, attrs, flags=0)


def test_our_bytes_read_back_by_pyroute2_and_pyroute2s_by_us():
    from pyroute2.netlink import genlmsg

    class ev(genlmsg):
        nla_map = tuple((n, f"A_{name.upper()}", {"u8": "uint8", "u16": "uint16", "u32": "uint32",
                                                   "u64": "uint64", "str": "asciiz", "isid": "hex",
                                                   "pad": "none"}[typ])
                        for n, (name, typ) in sorted(events.ATTRS.items()))

    data = _event_bytes()
    m = ev(data)
    m.decode()
    assert m["header"]["type"] == 0x20 and m["cmd"] == events.CMD_EVENT
    assert m.get_attr("A_SEQ") == 7 and m.get_attr("A_TARGET") == "iqn.2026-11.org.example:t"
    assert m.get_attr("A_INITIATOR_PORT") == 50828 and m.get_attr("A_AUTH") == "CHAP"

    ref = ev()
    ref["cmd"] = events.CMD_EVENT
    ref["version"] = 1
    ref["attrs"] = [("A_SEQ", 9), ("A_EVENT", 4), ("A_TPGT", 3), ("A_REASON", 1), ("A_INITIATOR", "iqn.x:y")]
    ref["header"]["type"] = 0x21
    ref.encode()
    (msg,) = genl.split(bytes(ref.data))
    e = events.event_from(msg.attrs)
    assert (msg.family, msg.cmd) == (0x21, events.CMD_EVENT)
    assert (e.kind, e.seq, e.tpgt, e.reason, e.initiator) == ("session_close", 9, 3, "logout", "iqn.x:y")


def test_event_decoding_and_output():
    (msg,) = genl.split(_event_bytes())
    e = events.event_from(msg.attrs)
    assert (e.kind, e.seq, e.isid, e.header_digest, e.auth) == ("login", 7, "400001370000", "CRC32C", "CHAP")
    d = e.to_dict()
    assert d["event"] == "login" and d["tpgt"] == 1 and "tsih" not in d
    assert e.line().startswith("login ? -> iqn.2026-11.org.example:t tpg1 isid 400001370000")
    f = events.Event("login_failed", initiator="iqn.a:b", target="iqn.c:d", status_class=2, status_detail=1,
                     initiator_addr="2001:db8::5", initiator_port=4000)
    assert f.to_dict()["status"] == "authentication failure"
    assert "from [2001:db8::5]:4000" in f.line() and "status 2/1: authentication failure" in f.line()
    assert events.Dropped(3).line() == "dropped 3 events (the reader was too slow)"
    assert events.Dropped(1).to_dict() == {"event": "dropped", "count": 1}


def test_an_error_reply_raises_with_its_errno():
    body = struct.pack("=i", -2) + genl.NLMSGHDR.pack(20, genl.GENL_ID_CTRL, 1, 1, 0)
    with pytest.raises(genl.NetlinkError) as e:
        genl.split(genl.NLMSGHDR.pack(16 + len(body), genl.NLMSG_ERROR, 0, 1, 0) + body)
    assert e.value.errno == 2


# ---- gap accounting ---------------------------------------------------------------------------

class FakeSock:
    def __init__(self, batches, status_seq=0):
        self.batches = list(batches)
        self.pending = []
        self.status_seq = status_seq

    def recv(self, timeout=None):
        if not self.batches:
            return []
        b = self.batches.pop(0)
        if isinstance(b, Exception):
            raise b
        return b


def reader_over(batches, last=0, status_seq=0):
    r = object.__new__(events.Reader)
    r.sock = FakeSock(batches)
    r.family = genl.Family(0x20, 1, {"events": 5})
    r.last, r.dropped, r._overrun = last, 0, False
    r.get_status = lambda: events.Status(1, True, status_seq, 0)
    return r


def msgs(*seqs):
    return [m for s in seqs for m in genl.split(_event_bytes(seq=s))]


def test_gaps_in_the_numbers_are_reported_as_dropped_in_order():
    r = reader_over([msgs(1, 2), msgs(5), msgs(6)])
    out = [(type(x).__name__, getattr(x, "seq", None) or getattr(x, "count", None)) for x in r.events(timeout=0)]
    assert out == [("Event", 1), ("Event", 2), ("Dropped", 2), ("Event", 5), ("Event", 6)]
    assert r.dropped == 2


def test_an_overrun_with_nothing_after_it_is_settled_by_the_module_count():
    import errno
    r = reader_over([msgs(11), OSError(errno.ENOBUFS, "No buffer space available"), []], last=10, status_seq=20)
    out = list(r.events(timeout=0))
    assert [type(x).__name__ for x in out] == ["Event", "Dropped"] and out[1].count == 9 and r.dropped == 9


# ---- the fallback poller and the CLI ------------------------------------------------------------

def test_poll_reports_sessions_that_came_and_went(monkeypatch):
    a = sessions.Session(target="iqn.t:1", tpg=1, initiator="iqn.i:a", sid=1, isid="400001370000")
    b = sessions.Session(target="iqn.t:1", tpg=1, initiator="iqn.i:b", sid=2, isid="400001370001")
    snaps = iter([[a], [a, b], [b]])
    monkeypatch.setattr(sessions, "list_sessions", lambda root: next(snaps))
    monkeypatch.setattr(events.time, "sleep", lambda s: None)
    n = iter(range(3))
    got = [(e.kind, e.initiator, e.source) for e in events.poll("/x", stop=lambda: next(n) >= 2)]
    assert got == [("login", "iqn.i:b", "configfs"), ("session_close", "iqn.i:a", "configfs")]


def test_follow_without_the_module_says_so_in_one_line_then_polls(monkeypatch, capsys, tmp_path):
    def not_loaded(*a, **k):
        raise events.NotLoaded("kernel module iscsikit_lio is not loaded")
    monkeypatch.setattr(events, "Reader", not_loaded)
    monkeypatch.setattr(events, "poll", lambda root, interval: iter(
        [events.Event("login", target="iqn.t:1", initiator="iqn.i:a", source="configfs")]))
    rc = cli.main(["--configfs", str(tmp_path), "sessions", "--follow", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert err.count("\n") == 1 and "iscsikit_lio is not loaded: polling configfs every 1 s" in err
    assert json.loads(out) == {"event": "login", "target": "iqn.t:1", "initiator": "iqn.i:a", "source": "configfs"}


def test_follow_prints_one_line_per_event_and_dropped_counts(monkeypatch, capsys, tmp_path):
    class R:
        status = events.Status(1, True, 0, 0)

        def events(self):
            yield events.Event("login", seq=1, target="iqn.t:1", initiator="iqn.i:a", tpgt=1)
            yield events.Dropped(4)

    monkeypatch.setattr(events, "Reader", R)
    assert cli.main(["--configfs", str(tmp_path), "sessions", "--follow"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["login iqn.i:a -> iqn.t:1 tpg1 auth ? digests ?/?",
                                "dropped 4 events (the reader was too slow)"]
    assert err == ""


def test_follow_rejects_unknown_flags(tmp_path, capsys):
    assert cli.main(["--configfs", str(tmp_path), "sessions", "--folow"]) == 2
    assert "usage: sessions" in capsys.readouterr().err


def test_follow_on_this_host_reaches_the_kernel_and_falls_back(tmp_path, monkeypatch, capsys):
    """No mock of the socket: the host kernel has generic netlink but no iscsikit_lio family."""
    with pytest.raises(events.NotLoaded):
        events.Reader()
    assert events.module_status() is None
