"""An iSCSI Boot Firmware Table (iBFT) for the lab guest, as boot firmware would leave it:
an ACPI table that QEMU hands the guest (`-acpitable file=…`) and the kernel's iscsi_ibft
module shows in /sys/firmware/ibft — so `iscsiadm -m fw` is proven on a real kernel's view
of a real table, not on a tree of files a test wrote.

The layout is the kernel's reader, drivers/firmware/iscsi_ibft.c (struct ibft_control,
ibft_initiator, ibft_nic, ibft_tgt, all packed, little-endian): it accepts only ACPI header
revision 1 and a zero checksum (ibft_check_device), and each structure's header length must
equal its size (ibft_verify_hdr). Offsets count from the start of the table."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ACPI_HEADER = struct.Struct("<4sIBB6s8sI4sI")      # struct acpi_table_header, 36 bytes
IBFT_HEADER_SIZE = ACPI_HEADER.size + 12           # struct acpi_table_ibft: the header + reserved[12]
HDR = struct.Struct("<BBHBB")                      # struct ibft_hdr: id, version, length, index, flags
CONTROL = struct.Struct("<6sH5H")                  # hdr, extensions, initiator/nic0/tgt0/nic1/tgt1 offsets
INITIATOR = struct.Struct("<6s16s16s16s16sHH")     # hdr, iSNS, SLP, 2 RADIUS servers, name len/off
NIC = struct.Struct("<6s16sBB16s16s16s16sH6sHHH")  # hdr, ip, prefix, origin, gw, dns1, dns2, dhcp, vlan, mac, bdf, host
TARGET = struct.Struct("<6s16sH8sBBHHHHHHHHHH")    # hdr, ip, port, lun, chap type, nic, then 5 (len, off)

ID_CONTROL, ID_INITIATOR, ID_NIC, ID_TARGET = 1, 2, 3, 4
FLAG_VALID, FLAG_BOOT_SELECTED = 1, 2              # iscsiadm takes the entry with flag 2 (fwparam_sysfs.c)
ORIGIN_MANUAL = 1                                  # IP prefix origin: not DHCP, so bootproto STATIC
CHAP_NONE, CHAP_ONE_WAY, CHAP_MUTUAL = 0, 1, 2


@dataclass(frozen=True)
class BootTarget:
    name: str
    address: str
    port: int = 3260
    lun: int = 0
    chap: tuple[str, str] | None = None            # (name, secret) the initiator sends
    reverse_chap: tuple[str, str] | None = None    # (name, secret) the target proves itself with


@dataclass(frozen=True)
class BootNic:
    address: str
    prefix: int
    mac: str
    gateway: str | None = None
    vlan: int = 0


def _ip(text: str | None) -> bytes:
    """16 bytes: IPv6 as it is, IPv4 mapped (::ffff:a.b.c.d), none as all zeroes (not shown)."""
    if not text:
        return bytes(16)
    addr = ipaddress.ip_address(text)
    return (addr.packed if addr.version == 6 else ipaddress.IPv6Address(f"::ffff:{addr}").packed)


def _sam_lun(lun: int) -> bytes:
    """A SAM-2 single-level LUN (peripheral addressing) in the table's 8 bytes."""
    return struct.pack(">H6x", lun & 0x3FFF)


def _align(n: int) -> int:
    return (n + 7) & ~7


def build(initiator_name: str, nic: BootNic, target: BootTarget, oem_id: bytes = b"IKLAB ",
          oem_table_id: bytes = b"IKIBFT  ") -> bytes:
    """The table: control, initiator, one NIC and one boot target (flags valid + boot selected),
    their strings after them."""
    control_off = IBFT_HEADER_SIZE
    initiator_off = _align(control_off + CONTROL.size)
    nic_off = _align(initiator_off + INITIATOR.size)
    target_off = _align(nic_off + NIC.size)
    strings = bytearray()
    heap = _align(target_off + TARGET.size)

    def string(value: str | None) -> tuple[int, int]:
        if not value:
            return 0, 0
        raw = value.encode()
        off = heap + len(strings)
        strings.extend(raw + b"\0")
        return len(raw), off

    flags = FLAG_VALID | FLAG_BOOT_SELECTED
    iname = string(initiator_name)
    chap_type = CHAP_MUTUAL if target.reverse_chap else CHAP_ONE_WAY if target.chap else CHAP_NONE
    chap = [string(v) for v in (target.chap or (None, None))]
    rchap = [string(v) for v in (target.reverse_chap or (None, None))]
    tname = string(target.name)
    table = bytearray(heap)
    CONTROL.pack_into(table, control_off, HDR.pack(ID_CONTROL, 1, CONTROL.size, 0, 0), 0,
                      initiator_off, nic_off, target_off, 0, 0)
    INITIATOR.pack_into(table, initiator_off, HDR.pack(ID_INITIATOR, 1, INITIATOR.size, 0, flags),
                        bytes(16), bytes(16), bytes(16), bytes(16), *iname)
    mac = bytes(int(b, 16) for b in nic.mac.split(":"))
    # pci_bdf 0: the host bridge, which has no netdev, so iscsiadm finds the NIC by its MAC
    # (fwparam_sysfs.c: "Other ibft implementations may not be tied to a pci function")
    NIC.pack_into(table, nic_off, HDR.pack(ID_NIC, 1, NIC.size, 0, flags), _ip(nic.address), nic.prefix,
                  ORIGIN_MANUAL, _ip(nic.gateway), bytes(16), bytes(16), bytes(16), nic.vlan, mac, 0, 0, 0)
    TARGET.pack_into(table, target_off, HDR.pack(ID_TARGET, 1, TARGET.size, 0, flags), _ip(target.address),
                     target.port, _sam_lun(target.lun), chap_type, 0, *tname, *chap[0], *chap[1], *rchap[0],
                     *rchap[1])
    table += strings
    table += bytes(_align(len(table)) - len(table))
    ACPI_HEADER.pack_into(table, 0, b"iBFT", len(table), 1, 0, oem_id, oem_table_id, 1, b"IKIT", 1)
    table[9] = (-sum(table)) & 0xFF                # the checksum byte: all bytes sum to 0
    return bytes(table)
