"""The network devices an iface binds to: found by name or by MAC, with their state.

An iface record names where its connections leave from (open-iscsi's
usr/io.c bind_conn_to_iface): `iface.hwaddress` is the netdev with that MAC
(usr/iscsi_net_util.c net_get_netdev_from_hwaddress: Ethernet devices only,
compared without case), `iface.net_ifacename` the netdev by name. iscsid
refuses a netdev without an address (iscsi_conn_iface_has_ip); a netdev that
is administratively down cannot carry the connection either, so both are
reported here, by name, before any connect is tried.

Read from /sys/class/net (flags, type, address) and the kernel's address
lists (SIOCGIFADDR for IPv4, /proc/net/if_inet6 for IPv6). The root is a
parameter so unit tests can read a fake tree.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections import namedtuple

IFF_UP = 0x1                # include/uapi/linux/if.h
ARPHRD_ETHER = 1            # include/uapi/linux/if_arp.h
SIOCGIFADDR = 0x8915        # include/uapi/linux/sockios.h
IFNAMSIZ = 16

Netdev = namedtuple("Netdev", "name up addresses")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ipv4(name: str) -> list[str]:
    """The netdev's primary IPv4 address (what SIOCGIFADDR reports), or none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:IFNAMSIZ - 1]))
    except OSError:
        return []
    address = socket.inet_ntoa(raw[20:24])
    return [] if address == "0.0.0.0" else [address]


def _ipv6(name: str, proc: str) -> list[str]:
    out = []
    text = _read(os.path.join(proc, "net", "if_inet6")) or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] == name:
            out.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0])))
    return out


class Netdevs:
    def __init__(self, sysfs_root: str = "/sys", proc_root: str = "/proc"):
        self.sysfs_root, self.proc_root = sysfs_root, proc_root

    def _dir(self, name: str) -> str:
        return os.path.join(self.sysfs_root, "class", "net", name)

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(self.sysfs_root, "class", "net")))
        except OSError:
            return []

    def get(self, name: str) -> Netdev | None:
        """The netdev `name`, or None when there is none by that name."""
        if not name or "/" in name or len(name) >= IFNAMSIZ or not os.path.isdir(self._dir(name)):
            return None
        flags = _read(os.path.join(self._dir(name), "flags")) or "0"
        up = bool(int(flags, 16) & IFF_UP) if flags.startswith("0x") else False
        return Netdev(name, up, tuple(_ipv4(name) + _ipv6(name, self.proc_root)))

    def by_hwaddress(self, hwaddress: str) -> str | None:
        """The Ethernet netdev whose MAC is `hwaddress` (case ignored), or None."""
        want = hwaddress.strip().lower()
        for name in self.names():
            d = self._dir(name)
            if _read(os.path.join(d, "type")) != str(ARPHRD_ETHER):
                continue
            if (_read(os.path.join(d, "address")) or "").lower() == want:
                return name
        return None
