"""The iSCSI Boot Firmware Table as the kernel's iscsi_ibft module shows it in sysfs.

/sys/firmware/ibft/initiator/initiator-name, and per boot target
/sys/firmware/ibft/targetN/{ip-addr,port,target-name,lun,chap-type,chap-name,
chap-secret,rev-chap-name,rev-chap-secret,nic-assoc,flags} (iscsi_boot_sysfs).
chap-type: 0 none, 1 CHAP, 2 mutual CHAP. Secrets are read only to hand them
to the login; nothing here prints them.
"""

from __future__ import annotations

import os
from collections import namedtuple

IBFT_DIR = ("firmware", "ibft")
CHAP_NONE, CHAP_ONE_WAY, CHAP_MUTUAL = 0, 1, 2

FirmwareTarget = namedtuple("FirmwareTarget", "index name address port lun chap_type username password "
                                              "username_in password_in nic")


def _read(*parts: str) -> str | None:
    try:
        with open(os.path.join(*parts)) as f:
            value = f.read().strip()
    except OSError:
        return None
    return value or None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text, 0) if text is not None else default
    except ValueError:
        return default


def present(sysfs_root: str = "/sys") -> bool:
    return os.path.isdir(os.path.join(sysfs_root, *IBFT_DIR))


def initiator_name(sysfs_root: str = "/sys") -> str | None:
    return _read(sysfs_root, *IBFT_DIR, "initiator", "initiator-name")


def targets(sysfs_root: str = "/sys") -> list[FirmwareTarget]:
    """The boot targets with a name and an address, in table order."""
    base = os.path.join(sysfs_root, *IBFT_DIR)
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("target") and n[6:].isdigit())
    except OSError:
        return []
    out = []
    for entry in sorted(names, key=lambda n: int(n[6:])):
        d = os.path.join(base, entry)
        name, address = _read(d, "target-name"), _read(d, "ip-addr")
        if not name or not address:
            continue   # an empty slot of the table
        out.append(FirmwareTarget(
            index=int(entry[6:]), name=name, address=address, port=_int(_read(d, "port"), 3260),
            lun=_int(_read(d, "lun"), 0), chap_type=_int(_read(d, "chap-type"), CHAP_NONE),
            username=_read(d, "chap-name"), password=_read(d, "chap-secret"),
            username_in=_read(d, "rev-chap-name"), password_in=_read(d, "rev-chap-secret"),
            nic=_int(_read(d, "nic-assoc"), 0)))
    return out
