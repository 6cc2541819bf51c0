"""The iSCSI Boot Firmware Table as the kernel's iscsi_ibft module shows it in sysfs
(drivers/firmware/iscsi_ibft.c, iscsi_boot_sysfs.c), read as iscsiadm reads it
(open-iscsi usr/fwparam_ibft/fwparam_sysfs.c):

/sys/firmware/ibft/initiator/initiator-name; per boot NIC ethernetN/{flags,index,mac,ip-addr,
prefix-len,subnet-mask,gateway,primary-dns,secondary-dns,dhcp,vlan,origin,device}; per boot
target targetN/{flags,ip-addr,port,target-name,lun,chap-type,chap-name,chap-secret,
rev-chap-name,rev-chap-name-secret,nic-assoc}. An attribute the table leaves empty (a null
address, a zero-length string) has no file. Secrets are read only to hand them to a record
or a login; nothing here prints them.
"""

from __future__ import annotations

import os
from collections import namedtuple

IBFT_DIR = ("firmware", "ibft")
CHAP_NONE, CHAP_ONE_WAY, CHAP_MUTUAL = 0, 1, 2
ORIGIN_DHCP = 3          # the NIC's IP prefix origin when DHCP gave the address (iBFT spec)

FirmwareNic = namedtuple("FirmwareNic", "index mac address prefix mask gateway primary_dns secondary_dns "
                                        "dhcp vlan origin netdev")
FirmwareTarget = namedtuple("FirmwareTarget", "index name address port lun chap_type username password "
                                              "username_in password_in nic")


def _read(*parts: str) -> str | None:
    try:
        with open(os.path.join(*parts)) as f:
            value = f.read().strip()
    except OSError:
        return None
    return value or None


def _int(text: str | None, default: int | None) -> int | None:
    try:
        return int(text, 10) if text is not None else default
    except ValueError:
        return default


def present(sysfs_root: str = "/sys") -> bool:
    return os.path.isdir(os.path.join(sysfs_root, *IBFT_DIR))


def initiator_name(sysfs_root: str = "/sys") -> str | None:
    return _read(sysfs_root, *IBFT_DIR, "initiator", "initiator-name")


def _entries(base: str, kind: str) -> list[str]:
    try:
        names = [n for n in os.listdir(base) if n.startswith(kind) and n[len(kind):].isdigit()]
    except OSError:
        return []
    return sorted(names, key=lambda n: int(n[len(kind):]))


def _netdev(sysfs_root: str, entry: str, mac: str) -> tuple[bool, str | None]:
    """(found, netdev name) as fwparam_sysfs.c finds the boot NIC's netdev: through the entry's
    `device` link (its net:NAME or net/NAME), else by MAC among the host's netdevs. With no
    `device` link at all iscsiadm keeps the NIC with no netdev name; with a link that leads to
    no netdev and no MAC that matches, the NIC (and its targets) is not usable."""
    device = os.path.join(entry, "device")
    if not os.path.exists(device):
        return True, None
    for n in _listdir(device):
        if n.startswith("net:"):          # the older sysfs layout
            return True, n[4:]
    linked = sorted(_listdir(os.path.join(device, "net")))
    if linked:
        return True, linked[0]
    net = os.path.join(sysfs_root, "class", "net")
    for name in sorted(_listdir(net)):
        if (_read(net, name, "address") or "").lower() == mac.lower():
            return True, name
    return False, None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _nic(sysfs_root: str, entry: str) -> FirmwareNic | None:
    """The NIC entry, or None when iscsiadm would not use it: flags 0, no MAC, no netdev."""
    flags, mac = _int(_read(entry, "flags"), None), _read(entry, "mac")
    if not flags or not mac:
        return None
    found, netdev = _netdev(sysfs_root, entry, mac)
    if not found:
        return None
    return FirmwareNic(
        index=_int(_read(entry, "index"), 0), mac=mac, address=_read(entry, "ip-addr"),
        prefix=_int(_read(entry, "prefix-len"), 0), mask=_read(entry, "subnet-mask"),
        gateway=_read(entry, "gateway"), primary_dns=_read(entry, "primary-dns"),
        secondary_dns=_read(entry, "secondary-dns"), dhcp=_read(entry, "dhcp"), vlan=_read(entry, "vlan"),
        origin=_int(_read(entry, "origin"), 0), netdev=netdev)


def targets(sysfs_root: str = "/sys") -> list[FirmwareTarget]:
    """The boot targets iscsiadm would list, in table order: flags set, a name and an
    address, and an associated NIC that is usable (fwparam_sysfs.c get_targets)."""
    base = os.path.join(sysfs_root, *IBFT_DIR)
    nics = {}
    for entry in _entries(base, "ethernet"):
        index = _int(_read(base, entry, "index"), None)
        if index is not None and index not in nics:
            nics[index] = os.path.join(base, entry)
    out = []
    for entry in _entries(base, "target"):
        d = os.path.join(base, entry)
        name, address = _read(d, "target-name"), _read(d, "ip-addr")
        if not _int(_read(d, "flags"), None) or not name or not address:
            continue   # an empty or invalid slot of the table
        nic_entry = nics.get(_int(_read(d, "nic-assoc"), -1))
        nic = _nic(sysfs_root, nic_entry) if nic_entry else None
        if nic is None:
            continue
        out.append(FirmwareTarget(
            index=int(entry[6:]), name=name, address=address, port=_int(_read(d, "port"), 3260),
            # the LUN as the kernel prints it (8 bytes, each "%x"), as iscsiadm keeps it
            lun=_read(d, "lun"), chap_type=_int(_read(d, "chap-type"), CHAP_NONE),
            username=_read(d, "chap-name"), password=_read(d, "chap-secret"),
            username_in=_read(d, "rev-chap-name"), password_in=_read(d, "rev-chap-name-secret"),
            nic=nic))
    return out
