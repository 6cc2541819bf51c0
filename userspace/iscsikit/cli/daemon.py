"""`iscsikitd`: run the initiator daemon in the foreground (systemd's Type=notify)."""

from __future__ import annotations

import sys

# iscsikitd never speaks TLS, but asyncio imports ssl when it can, and ssl maps OpenSSL's
# libssl and libcrypto: 5 MB of resident memory (measured) for nothing. None in sys.modules
# makes that import fail, which asyncio handles (asyncio/sslproto.py: `ssl = None`).
sys.modules.setdefault("ssl", None)

import asyncio  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402



M_ARENA_MAX = -8   # glibc's malloc.h


def _one_malloc_arena() -> None:
    """glibc gives each thread that mallocs its own arena (up to 8 per core), and the
    worker threads' logins leave each one partly resident; under the GIL the threads
    never malloc in parallel, so one arena costs no speed (measured: bench_login_all)."""
    import ctypes
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):   # not glibc: its allocator keeps its own policy
        pass


def main(argv: list[str] | None = None) -> int:
    from . import server_args
    args = server_args.parse(
        "iscsikitd", "iscsikit's initiator daemon: logins, recovery and session ownership.",
        "exit status: 0 stopped cleanly; 1 could not start (one line says why); 2 bad usage. "
        "Sessions stay in the kernel when the daemon stops and are adopted by the next start.",
        "management socket path (default /run/iscsikit/iscsikitd.sock, or $ISCSIKIT_SOCKET); "
        "ignored when systemd passes the socket", argv)
    if server_args.refuse_non_root("iscsikitd", "NETLINK_ISCSI needs CAP_SYS_ADMIN"):
        return 1
    _one_malloc_arena()
    from ..initiator.daemon import Daemon, listen_fd_from_systemd
    from . import adm_served
    try:
        # the fast iscsiadm's commands run here, in the warm process (the wiring lives in
        # this top-layer entry point, so initiator/ never imports the CLI)
        daemon = Daemon(socket_path=args.socket, cli_runner=adm_served.run)
    except OSError as e:
        print(f"iscsikitd: cannot start: {e.strerror or e}", file=sys.stderr)
        return 1
    # beside start-up, not before it: readiness (and the sessions' adoption) does not wait
    threading.Thread(target=adm_served.warm, name="warm-cli", daemon=True).start()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(daemon.run(listen_fd_from_systemd()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: daemon.stopping and daemon.stopping.set())
        await task

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
