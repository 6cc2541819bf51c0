"""Input rules: each bad value is refused with one line naming it."""

import pytest

from iscsikit.target import validate
from iscsikit.target.errors import ValidationError


@pytest.mark.parametrize("name", [
    "iqn.2003-01.org.linux-iscsi.host.x8664:sn.abcdef",
    "iqn.2024-01.com.example:t1",
    "iqn.2024-12.com.example",
    "IQN.2024-01.COM.Example:Upper",          # lower-cased, as the kernel tree stores it
    "naa.5001405abcdef012",
    "eui.0123456789abcdef",
])
def test_good_wwns(name):
    assert validate.wwn(name) == name.lower()


@pytest.mark.parametrize("name, fragment", [
    ("iqn.2026-11.test:x", "not a valid IQN"),        # one domain label: rtslib refuses it
    ("iqn.2024-13.com.example:x", "month 13"),
    ("iqn.2024-01.com.exa_mple:x", "underscores"),
    ("iqn.2024-01.com.example:has space", "not a valid IQN"),
    ("naa.6001405abcdef01", "NAA"),
    ("naa.0001405abcdef012", "NAA"),
    ("eui.0123", "EUI-64"),
    ("wwn.123", "must start with"),
    ("", "empty"),
    ("iqn.2024-01.com.example:" + "x" * 220, "longer than 223"),
])
def test_bad_wwns(name, fragment):
    with pytest.raises(ValidationError) as e:
        validate.wwn(name)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, n", [
    ("4096", 4096), (4096, 4096), ("64M", 64 << 20), ("1G", 1 << 30), ("1.5G", 3 << 29),
    ("2TiB", 2 << 40), ("512k", 512 << 10), ("16MB", 16 << 20),
])
def test_sizes(text, n):
    assert validate.size(text) == n


@pytest.mark.parametrize("text", ["0", "-1", "12X", "100", "1.3K", "", True])
def test_bad_sizes(text):
    with pytest.raises(ValidationError):
        validate.size(text)


def test_block_sizes():
    assert validate.block_size("4096") == 4096
    assert validate.block_size(512) == 512
    with pytest.raises(ValidationError, match="not one of"):
        validate.block_size(520)


@pytest.mark.parametrize("name", ["disk1", "vol.0", "a-b_c:d", "x" * 128])
def test_so_names(name):
    assert validate.so_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "a b", "..", "x" * 129, "tab\tx", "é"])
def test_bad_so_names(name):
    with pytest.raises(ValidationError):
        validate.so_name(name)


def test_portal_addresses():
    assert validate.portal_ip("0.0.0.0") == "0.0.0.0"
    assert validate.portal_ip("::0") == "[::0]"
    assert validate.portal_ip("[FE80::1]") == "[fe80::1]"
    assert validate.portal_key("[::0]", 3260) == validate.portal_key("[::]", 3260)
    for bad in ("300.1.1.1", "host.example", "[::1", "fe80::1%eth0"):
        with pytest.raises(ValidationError):
            validate.portal_ip(bad)
    with pytest.raises(ValidationError):
        validate.portal_port(0)
    with pytest.raises(ValidationError):
        validate.portal_port(70000)


def test_chap():
    assert validate.chap_value("", "x") == ""
    assert validate.chap_value("user1", "x") == "user1"
    for bad in ("NULL", "with space", "x" * 256):
        with pytest.raises(ValidationError):
            validate.chap_value(bad, "userid")
    validate.chap_set("u", "p", "", "", "acl")
    validate.chap_set("u", "p", "mu", "mp", "acl")
    with pytest.raises(ValidationError, match="together"):
        validate.chap_set("u", "", "", "", "acl")
    with pytest.raises(ValidationError, match="one-way"):
        validate.chap_set("", "", "mu", "mp", "acl")


def test_attribute_tables():
    assert validate.tpg_attribute("authentication", "1") == 1
    assert validate.tpg_attribute("some_new_kernel_attr", "7") == 7
    with pytest.raises(ValidationError, match="out of range"):
        validate.tpg_attribute("login_timeout", 99)
    with pytest.raises(ValidationError, match="out of range"):
        validate.tpg_attribute("default_cmdsn_depth", 513)
    assert validate.acl_attribute("authentication", -1) == -1
    with pytest.raises(ValidationError):
        validate.so_attribute("emulate_write_cache", 2)
    assert validate.so_attribute("block_size", "4096") == 4096
    with pytest.raises(ValidationError):
        validate.so_attribute("Bad-Name", 1)


@pytest.mark.parametrize("name, value, ok", [
    ("HeaderDigest", "CRC32C,None", True), ("HeaderDigest", "None", True), ("HeaderDigest", "MD5", False),
    ("HeaderDigest", "None,None", False), ("AuthMethod", "CHAP,None", True), ("AuthMethod", "PAP", False),
    ("MaxRecvDataSegmentLength", "8192", True), ("MaxRecvDataSegmentLength", "100", False),
    ("InitialR2T", "Yes", True), ("InitialR2T", "yes", False), ("ErrorRecoveryLevel", "3", False),
    ("TargetAlias", "LIO Target", True), ("IFMarkInt", "Reject", True),
])
def test_tpg_parameters(name, value, ok):
    if ok:
        assert validate.tpg_parameter(name, value) == value
    else:
        with pytest.raises(ValidationError):
            validate.tpg_parameter(name, value)


def test_tcmu_config():
    assert validate.tcmu_config("file//tmp/x.img") == "file//tmp/x.img"
    with pytest.raises(ValidationError):
        validate.tcmu_config("rbd/pool:image")
    with pytest.raises(ValidationError):
        validate.tcmu_config("noslash")
