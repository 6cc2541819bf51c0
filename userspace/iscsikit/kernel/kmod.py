"""Loading kernel modules: libkmod through ctypes, modprobe when libkmod is not there.

No maintained Python binding of libkmod builds here (the PyPI `kmod` binding
is Cython from 2015), and libkmod's C API is small and stable, so the few
calls are declared with ctypes on libkmod.so.2 (Debian's libkmod2).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

KMOD_PROBE_APPLY_BLACKLIST = 0x20000  # honour `blacklist` lines as modprobe does


class ModuleError(Exception):
    pass


def _libkmod():
    # the soname is the ABI (libkmod2 ships it; the bare libkmod.so is only in -dev), so it is
    # named, not searched for: ctypes.util.find_library runs ldconfig and imports a megabyte
    try:
        lib = ctypes.CDLL("libkmod.so.2", use_errno=True)
    except OSError:
        return None
    vp, cp, ip = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for fn, res, args in (
        ("kmod_new", vp, [cp, ctypes.POINTER(cp)]),
        ("kmod_unref", vp, [vp]),
        ("kmod_load_resources", ip, [vp]),
        ("kmod_module_new_from_lookup", ip, [vp, cp, ctypes.POINTER(vp)]),
        ("kmod_list_next", vp, [vp, vp]),
        ("kmod_module_get_module", vp, [vp]),
        ("kmod_module_unref", vp, [vp]),
        ("kmod_module_unref_list", ip, [vp]),
        ("kmod_module_probe_insert_module", ip, [vp, ctypes.c_uint, cp, vp, vp, vp]),
    ):
        f = getattr(lib, fn)
        f.restype, f.argtypes = res, args
    return lib


def _load_libkmod(lib, names: list[str]) -> None:
    ctx = lib.kmod_new(None, None)
    if not ctx:
        raise ModuleError("libkmod: cannot create a context")
    try:
        lib.kmod_load_resources(ctx)
        for name in names:
            lst = ctypes.c_void_p()
            err = lib.kmod_module_new_from_lookup(ctx, name.encode(), ctypes.byref(lst))
            if err < 0 or not lst:
                raise ModuleError(f"module {name} not found for kernel {os.uname().release}")
            try:
                entry = lst.value
                while entry:
                    mod = lib.kmod_module_get_module(entry)
                    err = lib.kmod_module_probe_insert_module(mod, KMOD_PROBE_APPLY_BLACKLIST, None, None, None, None)
                    lib.kmod_module_unref(mod)
                    if err < 0:
                        raise ModuleError(f"loading {name} failed: {os.strerror(-err)}")
                    entry = lib.kmod_list_next(lst, entry)
            finally:
                lib.kmod_module_unref_list(lst)
    finally:
        lib.kmod_unref(ctx)


def load(*names: str, use_libkmod: bool = True) -> str:
    """Load modules (and what they depend on); return which way it was done."""
    lib = _libkmod() if use_libkmod else None
    if lib is not None:
        _load_libkmod(lib, list(names))
        return "libkmod"
    modprobe = shutil.which("modprobe") or ("/sbin/modprobe" if os.path.exists("/sbin/modprobe") else None)
    if modprobe is None:
        raise ModuleError("cannot load kernel modules: neither libkmod.so.2 nor modprobe is installed "
                          "(install Debian's kmod package)")
    proc = subprocess.run([modprobe, "-a", *names], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModuleError(f"modprobe {' '.join(names)} failed: {proc.stderr.strip()}")
    return "modprobe"
