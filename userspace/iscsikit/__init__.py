"""iscsikit: the Python userspace around the Linux kernel's iSCSI data plane."""

__version__ = "0.1.0"
