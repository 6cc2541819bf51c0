"""iscsikitd: one asyncio process that owns the initiator's sessions.

It serves the management socket (mgmt.py), reads NETLINK_ISCSI events,
logs nodes in and out, recovers connections, and on start adopts the
sessions the kernel still has without touching them (open-iscsi #126: iscsid
relogs every session when it restarts).

Blocking work (a login exchange, a scan) runs in worker threads; a logout's
steps run as a coroutine on the event loop; every NETLINK_ISCSI request goes
out from one sender thread (kernel_requests.py). Two netlink sockets: one for requests (replies
are unicast to it, so it sees no events) and one joined to the events group,
read by the loop. So a reply is never taken for an event, nor the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from ..kernel.constants import ConnErr, Ev, KEv
from ..kernel.netlink import IscsiNetlink, decode_stats
from ..kernel.sysfs import Sysfs
from ..proto.chap import ChapCredentials
from ..proto.keys import KEY_BY_NAME
from .exitcodes import ExitCode
from . import mgmt, protocol, reopen
from .errors import IscsiError
from .kernel_requests import KernelRequests
from .records import atoi
from .session import (CONN_LOST, LOGOUT_TIMEOUT, Initiator, KernelSession, NodeConfig, Send, SessionError,
                      is_logout_step, logout_steps)

log = logging.getLogger("iscsikitd")

# a first login that fails with one of these is tried again while initial_login_retry_max x
# login_timeout lasts (usr/initiator.c iscsi_login_eh, iscsi_retry_initial_login); an
# authentication failure (24) or a fatal status (19) ends it at once, as iscsi_login_is_fatal_err
RETRIED_LOGIN_CODES = frozenset({ExitCode.TRANS, ExitCode.TRANS_TIMEOUT, ExitCode.PDU_TIMEOUT, ExitCode.LOGIN})
ENDPOINTS_FILE = "endpoints.json"
# worker threads started with the daemon: one per login of a typical `-L all` burst
WARM_WORKERS = 32
# the longest a login request waits for its SCSI scan beyond what is left of its login_timeout
# (at least this long): a scan stuck in SCSI error handling (a connection that broke during it,
# now in recovery) must not hold the answer; the scan goes on, and the reply says so
MIN_SCAN_WAIT = 2.0
# a watcher that lets this much of the event stream pile up unread is cut off (and told
# so by the closed socket) rather than growing the daemon's memory without bound
WATCH_BACKLOG = 1 << 20


@dataclasses.dataclass
class Managed:
    ks: KernelSession
    state: str = "LOGGED_IN"          # protocol.SESSION_STATES
    adopted: bool = False
    recovery: asyncio.Task | None = None
    recoveries: int = 0
    attempts: int = 0                          # reconnect attempts of the recovery under way
    recovering_since: float | None = None      # its start (time.monotonic())
    timed_out: bool = False                    # replacement_timeout passed: the kernel failed the I/O
    # a connection error the kernel reported while the first login was still handing over
    pending_error: bool = False


def _node_key(node: NodeConfig) -> tuple:
    return (node.target, node.address, int(node.port), node.iface_name)


def node_from_args(args: dict) -> NodeConfig:
    chap = None
    if args.get("username"):
        chap = ChapCredentials(args["username"], args.get("password", "").encode(),
                               args.get("username_in") or None,
                               args["password_in"].encode() if args.get("password_in") else None,
                               **({"algorithms": tuple(args["chap_algs"].split(","))}
                                  if args.get("chap_algs") else {}))
    # protocol.check_request has refused any key that is not a LOGIN_ARGS row; the
    # rows and NodeConfig's fields are the same names (test_daemon_protocol checks it)
    kw = {k: v for k, v in args.items() if k not in CHAP_ARGS}
    return NodeConfig(chap=chap, **kw)


CHAP_ARGS = ("username", "password", "username_in", "password_in", "chap_algs")


def node_from_sysfs(sysfs: Sysfs, s) -> NodeConfig | None:
    """What a recovery of an adopted session needs, read back from the kernel (`s`: its sysfs.Session)."""
    if not s.target or not s.address:
        return None
    def attr(name):
        return sysfs.attr("iscsi_session", f"session{s.sid}", name)

    chap = None
    if username := attr("username"):
        password_in = attr("password_in")
        chap = ChapCredentials(username, (attr("password") or "").encode(), attr("username_in"),
                               password_in.encode() if password_in else None)
    def host_attr(name):
        return sysfs.attr("iscsi_host", f"host{s.host_no}", name) or ""
    tmo = attr("recovery_tmo")
    if tmo == "off":      # -1, never give up, as scsi_transport_iscsi.c shows it; not the default
        tmo = "-1"
    return NodeConfig(target=s.target, address=s.address, port=s.port or 3260, tpgt=s.tpgt,
                      initiator_name=s.initiator_name, iface_name=s.iface_name or "default", chap=chap,
                      net_ifacename=host_attr("netdev"), hwaddress=host_attr("hwaddress"),
                      transport=s.transport,
                      **({"replacement_timeout": int(tmo)} if tmo and tmo.lstrip("-").isdigit() else {}))


class Daemon:
    """`cli_runner(argv, env, tty, write) -> exit code`: what serves the "cli" request
    (the fast iscsiadm), given by the entry point (cli/daemon.py), which sits above the
    CLI; without one the request is refused and the client runs the command itself."""

    def __init__(self, socket_path: str | None = None, sysfs: Sysfs | None = None, workers: int = 64,
                 cli_runner: Callable | None = None, kernel=None, schedule: reopen.Schedule = reopen.Schedule()):
        # `kernel`: where NETLINK_ISCSI and sysfs come from, the real ones when None; unit
        # tests pass kernel/fake.py's FakeKernel (its .netlink(groups) and .sysfs)
        netlink = kernel.netlink if kernel is not None else IscsiNetlink
        self.socket_path = socket_path or mgmt.socket_path()
        # the kernel endpoints of the sessions' connections, kept beside the socket (in /run,
        # so a boot forgets them with the endpoints): sysfs links no connection to its
        # endpoint, and a restarted daemon must still EP_DISCONNECT what it adopts
        self.endpoints_path = os.path.join(os.path.dirname(self.socket_path), ENDPOINTS_FILE)
        self.sysfs = sysfs or (kernel.sysfs if kernel is not None else Sysfs())
        # every request from one thread (kernel_requests.py): logins' worker threads and
        # logouts' coroutines alike
        self.requests = KernelRequests(netlink(groups=0))
        self.initiator = Initiator(self.sysfs, self.requests)
        self.events = netlink()
        self.schedule = schedule            # when a failed session's reconnect attempts start (reopen.py)
        # a first login's failed connect waits this before it is tried again (iscsid's
        # ISCSI_CONN_ERR_REOPEN_DELAY, as a recovery's: reopen.py)
        self.conn_retry_delay = schedule.connect_failed
        self.cli_runner = cli_runner
        self.cli_runs: set[asyncio.Task] = set()
        self.watchers: set[asyncio.StreamWriter] = set()
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="iscsikitd")
        self.sessions: dict[int, Managed] = {}
        self.node_locks: dict[tuple, asyncio.Lock] = {}
        self._queued_logins: set[asyncio.Task] = set()   # -W logins still running (held: asyncio keeps weak refs)
        # logout steps a logout's coroutine awaits, by (KEv.UNBIND_SESSION or KEv.RECV_PDU, sid)
        self.logout_waiters: dict[tuple[KEv, int], asyncio.Future] = {}
        self.logouts: set[asyncio.Task] = set()        # the tasks running a logout's steps
        # RECV_PDU payloads of sessions whose recovery login runs through the kernel
        self.pdu_queues: dict[int, queue.Queue] = {}
        # GET_STATS is answered by a multicast event: the requests wait here, by sid
        self.stats_waiters: dict[int, asyncio.Future] = {}
        self.stopping: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # one row per protocol.REQUESTS row (test_daemon_protocol checks they are the same set)
        self.ops: dict[str, Callable[[dict], Awaitable]] = {
            "version": self.op_version,
            "login": self.op_login,
            "logout": self.op_logout,
            "sessions": self.op_sessions,
            "stats": self.op_stats,
            "rescan": self.op_rescan,
            "stop": self.op_stop,
        }
        # requests that keep the connection and stream after their reply
        self.streams: dict[str, Callable] = {"watch": self.stream_watch, "cli": self.stream_cli}

    # ---- start and stop --------------------------------------------------
    async def run(self, listen_fd: int | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.adopt()
        self.loop.add_reader(self.events.fileno(), self.on_netlink)
        if listen_fd is not None:
            sock = socket.socket(fileno=listen_fd)
            server = await asyncio.start_unix_server(self.on_client, sock=sock, limit=mgmt.MAX_LINE)
        else:
            os.makedirs(os.path.dirname(self.socket_path), mode=0o755, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            old = os.umask(0o177)      # the socket file is 0600: root only, before SO_PEERCRED even runs
            try:
                server = await asyncio.start_unix_server(self.on_client, path=self.socket_path, limit=mgmt.MAX_LINE)
            finally:
                os.umask(old)
        sd_notify("READY=1\nSTATUS=serving " + (self.socket_path if listen_fd is None else f"fd {listen_fd}"))
        log.info("iscsikitd ready on %s, %d session(s) adopted", self.socket_path, len(self.sessions))
        self.loop.call_soon(self.start_workers)
        async with server:
            await self.stopping.wait()
            await self.finish_cli_runs()
        self.release_logout_waiters()
        if self.logouts:
            # their waits end at once now; the sessions' destruction still goes out
            await asyncio.wait(list(self.logouts), timeout=10)
        self.loop.remove_reader(self.events.fileno())
        for m in self.sessions.values():
            if m.recovery:
                m.recovery.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if listen_fd is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    async def finish_cli_runs(self, timeout: float = 10) -> None:
        """On stop: a CLI run in flight (the iscsiadm -k 0 that asked for the stop, say)
        still sends its output and exit code before the connections close."""
        if self.cli_runs:
            await asyncio.wait(list(self.cli_runs), timeout=timeout)

    def start_workers(self, count: int = WARM_WORKERS) -> None:
        """Start the first `count` worker threads now, not during the first `-L all`:
        the pool starts a thread per request while it grows, ~10 ms each under
        emulation, paid inside the logins' time otherwise."""
        count = min(count, self.workers)
        barrier = threading.Barrier(count)

        def meet() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(10)
        for _ in range(count):
            self.pool.submit(meet)

    def release_logout_waiters(self) -> None:
        """On stop: logouts in flight stop waiting for the kernel's events and finish at once."""
        for fut in self.logout_waiters.values():
            if not fut.done():
                fut.set_result(False)

    def adopt(self) -> None:
        """Take over the sessions the kernel has, as they are: no stop, no relogin."""
        recorded = self.read_endpoints()
        for sid in self.sysfs.session_ids():
            s = self.sysfs.session(sid, luns=False)
            node = node_from_sysfs(self.sysfs, s) if s is not None else None
            if node is None or s.creator == -1:   # firmware sessions are not ours
                continue
            try:
                handle = self.initiator.transport_handle(node.transport)
            except SessionError:
                continue
            ks = KernelSession(sid, s.host_no, 0, handle, node, {}, node.initiator_name or "")
            ep = recorded.get(sid)
            if ep is not None and self.sysfs.endpoint(ep):
                # ours (recorded at its login; sids are not reused in a boot) and still there:
                # its handle is not another endpoint's until it leaves sysfs
                ks.ep = ep
                log.info("adopted session %d: its connection's endpoint is ep-%d", sid, ep)
            self.sessions[sid] = Managed(ks, state="LOGGED_IN" if s.state == "LOGGED_IN" else "FAILED", adopted=True)
            self.publish_added(self.sessions[sid])
            log.info("adopted session %d (%s at %s:%s, %s)", sid, node.target, node.address, node.port, s.state)
            if s.state == "FAILED":
                self.start_recovery(self.sessions[sid], stopped=False)
        self.record_endpoints()

    def read_endpoints(self) -> dict[int, int]:
        """record_endpoints()'s file: {sid: endpoint handle}; empty when missing or unreadable."""
        try:
            with open(self.endpoints_path) as f:
                return {int(sid): int(ep) for sid, ep in json.load(f).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}

    def record_endpoints(self) -> None:
        """The endpoint of each session's connection (KERNEL_EP transports), replaced whole,
        whenever one changes (login, recovery, logout), for the next daemon's adopt()."""
        eps = {str(sid): m.ks.ep for sid, m in self.sessions.items() if m.ks.ep is not None}
        if not eps and not os.path.exists(self.endpoints_path):
            return
        tmp = self.endpoints_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(eps, f)
            os.replace(tmp, self.endpoints_path)
        except OSError as e:
            log.warning("cannot record the sessions' endpoints in %s: %s", self.endpoints_path, e)

    # ---- netlink events --------------------------------------------------
    def on_netlink(self) -> None:
        while True:
            try:
                ev = self.events.next_event(0)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    # the kernel dropped events while we were busy; say so, keep reading
                    log.warning("netlink events lost: %s", e)
                    continue
                log.error("netlink events socket: %s", e)
                break
            except ValueError as e:
                log.warning("malformed netlink message ignored: %s", e)
                continue
            if ev is None:
                break
            sid = ev.fields.get("sid")
            m = self.sessions.get(sid)
            if ev.type == KEv.CONN_ERROR and sid in self.pdu_queues:
                # a login through the kernel waits on this queue: the connection is gone
                self.pdu_queues[sid].put(CONN_LOST)
            if ev.type == KEv.CONN_ERROR and m is not None:
                err = ev["error"]
                name = ConnErr(err).name if err in ConnErr._value2member_map_ else "?"
                log.warning("session %d: connection error %d (%s)", sid, err, name)
                self.publish("connection_error", sid, error=err, name=name)
                if m.state == "LOGGED_IN":
                    self.start_recovery(m)
                elif m.state == "LOGGING_IN":
                    m.pending_error = True      # recovered as soon as the hand-over is done
            elif ev.type == KEv.RECV_PDU and sid in self.pdu_queues:
                self.pdu_queues[sid].put(ev.payload)
            elif (ev.type, sid) in self.logout_waiters and is_logout_step(ev, ev.type, sid):
                fut = self.logout_waiters.pop((ev.type, sid))
                if not fut.done():
                    fut.set_result(True)
            elif ev.type == Ev.GET_STATS and sid in self.stats_waiters:
                fut = self.stats_waiters.pop(sid)
                if not fut.done():
                    try:
                        fut.set_result(decode_stats(ev.payload))
                    except ValueError as e:
                        fut.set_exception(SessionError(ExitCode.INTERNAL, str(e)))
            elif ev.type == KEv.IF_ERROR and self.stats_waiters:
                # only stats requests are sent from the events socket, so the refusal is theirs
                err = ev.iferror
                for fut in self.stats_waiters.values():
                    if not fut.done():
                        fut.set_exception(SessionError(ExitCode.INTERNAL, f"kernel refused GET_STATS ({err})"))
                self.stats_waiters.clear()
            elif ev.type == KEv.DESTROY_SESSION and m is not None and m.state not in ("LOGGING_OUT", "LOGGING_IN"):
                self.sessions.pop(sid, None)
                self.publish("session_removed", sid, target=m.ks.node.target, reason="destroyed")

    def start_recovery(self, m: Managed, stopped: bool = False) -> None:
        if m.recovery and not m.recovery.done():
            return
        self.set_state(m, "RECOVERING")
        self.publish("recovery_started", m.ks.sid)
        m.recovery = asyncio.ensure_future(self.recover(m, stopped))

    async def recover(self, m: Managed, stopped: bool) -> None:
        """ERL0 recovery as iscsid does it (facts §2.3): stop once (RECOVER), then reconnect
        and re-login on iscsid's reopen schedule (reopen.py) until it works, the session is
        logged out, or node.session.reopen_max attempts are spent (0, the default: no limit).

        replacement_timeout is not ours to act on: it is the kernel's recovery_tmo (sent
        as SESS_RECOVERY_TMO at login), after which the kernel fails the queued I/O and
        takes the devices offline, so dm-multipath fails over. Reconnecting goes on past
        it, and a path that comes back is set running again (reinstate), so multipath
        fails back. When reopen_max is spent the session is shut down, as iscsid's
        session_conn_shutdown does.
        """
        ks = m.ks
        start = time.monotonic()
        limit = ks.node.replacement_timeout
        # the first attempt waits DefaultTime2Wait as negotiated (iscsid: session->def_time2wait)
        delay = self.schedule.first_delay(ks.negotiated)
        if not stopped:
            try:
                await self.blocking(self.initiator.stop_for_recovery, ks)
            except OSError as e:
                log.warning("session %d: stop for recovery failed: %s", ks.sid, e)
                delay = self.schedule.delay(reopen.INTERNAL)
        attempt = 0
        m.attempts, m.recovering_since, m.timed_out = 0, start, False
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            m.attempts = attempt
            began = time.monotonic()
            self.pdu_queues[ks.sid] = queue.Queue()
            try:
                await self.blocking(self.initiator.reinstate, ks, self.recv_pdu)
            except (SessionError, OSError) as e:
                elapsed = time.monotonic() - start
                if 0 <= limit <= elapsed and not m.timed_out:
                    m.timed_out = True
                    log.warning("session %d: replacement_timeout %d s passed: queued I/O failed; "
                                "reconnecting goes on", ks.sid, limit)
                    self.publish("recovery_timed_out", ks.sid, seconds=round(elapsed, 3))
                reopen_max = ks.node.reopen_max
                if reopen_max > 0 and attempt >= reopen_max:
                    log.error("session %d: giving up after %d attempts in %.0f s (reopen_max %d): %s",
                              ks.sid, attempt, elapsed, reopen_max, e)
                    self.publish("recovery_failed", ks.sid, attempts=attempt, seconds=round(elapsed, 3),
                                 reason=str(e))
                    self.set_state(m, "FAILED")
                    m.recovery = None      # the shutdown below must not cancel this task
                    with contextlib.suppress(IscsiError, OSError):
                        await self.logout_session(ks.sid, reason="reopen_max")
                    return
                outcome = reopen.outcome_of(e.stage) if isinstance(e, SessionError) else reopen.INTERNAL
                now = time.monotonic()
                delay = self.schedule.delay(outcome, now - began, now - start, self.schedule.first_delay(ks.negotiated))
                log.info("session %d: reconnect attempt %d failed (%s): %s; next in %.1f s",
                         ks.sid, attempt, outcome, e, delay)
                continue
            finally:
                self.pdu_queues.pop(ks.sid, None)
            m.recoveries += 1
            elapsed = time.monotonic() - start
            log.info("session %d: recovered after %d attempt(s), %.1f s", ks.sid, attempt, elapsed)
            self.publish("recovery_succeeded", ks.sid, attempts=attempt, seconds=round(elapsed, 3))
            m.attempts, m.recovering_since, m.timed_out = 0, None, False
            if ks.ep is not None:
                self.record_endpoints()     # the recovery connected a new endpoint
            self.set_state(m, "LOGGED_IN")
            return

    @contextlib.contextmanager
    def pdu_route(self, sid: int):
        """For a worker thread's login through the kernel (a KERNEL_EP transport's first
        login): the session's RECV_PDUs are queued from before its first SEND_PDU."""
        self.pdu_queues[sid] = queue.Queue()
        try:
            yield self.recv_pdu
        finally:
            self.pdu_queues.pop(sid, None)

    def recv_pdu(self, sid: int, timeout: float) -> bytes | None:
        """For a worker thread: the next PDU the kernel passed up for `sid`."""
        q = self.pdu_queues.get(sid)
        if q is None:
            return None
        try:
            return q.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    # ---- events ------------------------------------------------------------
    def publish(self, kind: str, sid: int, **fields) -> None:
        """Send one event to every watcher (protocol.EVENTS); in the loop thread only."""
        if not self.watchers:
            return
        line = mgmt.encode(protocol.event(kind, sid, time.monotonic(), **fields))
        for w in list(self.watchers):
            if w.is_closing():
                self.watchers.discard(w)
            elif w.transport.get_write_buffer_size() > WATCH_BACKLOG:
                log.warning("event watcher cut off: %d bytes of events unread", w.transport.get_write_buffer_size())
                self.watchers.discard(w)
                w.close()
            else:
                w.write(line)

    def publish_added(self, m: Managed) -> None:
        n = m.ks.node
        self.publish("session_added", m.ks.sid, target=n.target, address=n.address, port=int(n.port),
                     tpgt=n.tpgt, iface=n.iface_name, host_no=m.ks.host_no, adopted=m.adopted)

    def set_state(self, m: Managed, state: str) -> None:
        previous, m.state = m.state, state
        if previous != state:
            self.publish("state_changed", m.ks.sid, state=state, previous=previous)

    # ---- management requests ---------------------------------------------
    async def blocking(self, fn, *args):
        return await self.loop.run_in_executor(self.pool, fn, *args)

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            if mgmt.peer_uid(sock) != 0:
                # take the request first, so the refusal is what the client reads, not a reset
                with contextlib.suppress(asyncio.LimitOverrunError, ValueError, asyncio.TimeoutError):
                    await asyncio.wait_for(reader.readline(), 5)
                writer.write(mgmt.encode(mgmt.fail(ExitCode.ACCESS, "iscsikitd serves root only")))
                await writer.drain()
                return
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(mgmt.encode(mgmt.fail(ExitCode.INVALID_MGMT_REQ, "request too large")))
                    break
                if not line:
                    break
                reply, stream = await self.dispatch(line)
                writer.write(mgmt.encode(reply))
                await writer.drain()
                if stream is not None:
                    # the connection belongs to the stream from here on
                    await stream(reader, writer)
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def dispatch(self, line: bytes) -> tuple[dict, Callable | None]:
        """The reply to one request line, and the stream that follows it (watch, cli) or None."""
        name, args, refused = mgmt.parse_request(line)
        if refused is not None:
            return refused, None
        if name in self.streams:
            return await self.streams[name](args)
        try:
            return mgmt.ok(await self.ops[name](args)), None
        except IscsiError as e:
            return mgmt.fail(e.exit_code, str(e)), None
        except Exception as e:   # a bug must not take the daemon and every session's recovery down
            log.exception("request %s failed", name)
            return mgmt.fail(ExitCode.INTERNAL, f"internal error: {e}"), None

    async def stream_watch(self, _args: dict):
        """Subscribe: the reply holds the sessions now; every later event follows it."""
        sessions = await self.op_sessions({})

        async def stream(reader, writer):
            self.watchers.add(writer)
            try:
                while await reader.read(4096):   # the client sends nothing more; EOF ends it
                    pass
            finally:
                self.watchers.discard(writer)
        return mgmt.ok({"sessions": sessions}), stream

    async def stream_cli(self, args: dict):
        """A CLI run in this warm process: its output streamed back as frames, then its exit code."""
        if self.cli_runner is None:
            return mgmt.fail(ExitCode.OP_NOT_SUPP, "this iscsikitd does not run CLI commands"), None

        async def stream(reader, writer):
            task = asyncio.current_task()
            self.cli_runs.add(task)
            task.add_done_callback(self.cli_runs.discard)

            def write(kind: int, data: bytes) -> None:
                # from the worker thread: the loop owns the writer
                self.loop.call_soon_threadsafe(writer.write, protocol.frame(kind, data))
            argv = args["argv"]
            # the mode only: other arguments may be CHAP secrets (-v)
            mode = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else "?"
            start = time.monotonic()
            try:
                code = await self.blocking(self.cli_runner, argv, args["env"], args["tty"], write)
            except Exception as e:
                log.exception("cli run (mode %s) failed", mode)
                write(protocol.FRAME_ERR, f"iscsiadm: internal error: {e}\n".encode())
                code = ExitCode.INTERNAL
            log.debug("cli run: mode %s, exit %d, %.3f s", mode, code, time.monotonic() - start)
            writer.write(protocol.exit_frame(code))
            await writer.drain()
        return mgmt.ok({"frames": "binary"}), stream

    async def op_version(self, _args: dict) -> dict:
        from .. import __version__
        return {"version": __version__, "protocol": mgmt.VERSION}

    async def op_stop(self, _args: dict) -> None:
        self.stopping.set()

    def _existing(self, node: NodeConfig) -> int | None:
        key = _node_key(node)
        for sid, m in self.sessions.items():
            if _node_key(m.ks.node) == key:
                return sid
        return None

    async def op_login(self, args: dict) -> dict:
        args = dict(args)
        if not args.pop("wait", True):
            # iscsiadm -W: answered once the request is in; the login goes on here
            task = self.loop.create_task(self._login(args))
            self._queued_logins.add(task)
            task.add_done_callback(self._queued_login_done)
            return {"queued": True}
        return await self._login(args)

    def _queued_login_done(self, task: asyncio.Task) -> None:
        self._queued_logins.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("queued login failed: %s", task.exception())

    async def _login(self, args: dict) -> dict:
        node = node_from_args(args)
        start = time.monotonic()
        lock = self.node_locks.setdefault(_node_key(node), asyncio.Lock())
        async with lock:
            # Checked under the node's lock: concurrent logins of one node give exactly one session.
            if not node.multiple and (sid := self._existing(node)) is not None:
                raise SessionError(ExitCode.SESS_EXISTS, f"session {sid} to {node.target} at {node.address},{node.port} already present")

            async def register(ks: KernelSession) -> None:
                self.sessions[ks.sid] = Managed(ks, state="LOGGING_IN")

            def created(ks: KernelSession) -> None:
                # in the worker, before any socket is bound: the kernel's events for this sid
                # (a connection error during the hand-over or the scan) find their session
                asyncio.run_coroutine_threadsafe(register(ks), self.loop).result()

            try:
                ks = await self._first_login(node, created)
            except IscsiError as e:
                log.info("login to %s at %s,%s refused (stage %s, exit %d): %s", node.target, node.address,
                         node.port, getattr(e, "stage", "login"), e.exit_code, e)
                raise
            m = self.sessions[ks.sid]
            m.state = "LOGGED_IN"       # watchers meet it here, logged in (session_added)
            if ks.ep is not None:
                self.record_endpoints()
            self.publish_added(m)
            if m.pending_error:
                self.start_recovery(m)
        result = {"sid": ks.sid, "host_no": ks.host_no}
        if node.scan == "auto":
            result.update(await self._scan(ks, max(MIN_SCAN_WAIT, node.login_timeout - (time.monotonic() - start))))
        return result

    async def _first_login(self, node: NodeConfig, created: Callable) -> KernelSession:
        """The first login, tried again as iscsid 2.1.8 does (usr/initiator.c iscsi_login_eh,
        iscsi_retry_initial_login, __session_conn_reopen, session_conn_poll): while
        initial_login_retry_max x login_timeout seconds have not passed since the first
        connect, a failure in RETRIED_LOGIN_CODES is tried again. A failed connect waits
        CONN_RETRY_DELAY first; the first retry then waits the record's DefaultTime2Wait.
        When the time is up, a connect failure ends as 8 (iscsid's login timer reports it).
        A connection lost during a login through the kernel (iser: session.LoginConnectionLost,
        11) is tried again no earlier than login_timeout after its try began: iscsid ignores
        that error and its login timer ends the try (__conn_error_handle, iscsi_login_timedout).
        A failure to bind the iface (a missing netdev) is not tried again. This is the only
        retry of a first login (the endpoint path makes one try per call)."""
        start = time.monotonic()
        window = max(0, node.initial_login_retry_max) * node.login_timeout
        t2w = float(atoi(node.operational.get("DefaultTime2Wait") or KEY_BY_NAME["DefaultTime2Wait"].open_iscsi))
        attempt = 0
        while True:
            attempt += 1
            began = time.monotonic()
            try:
                return await self.blocking(self.initiator.login, node, created, False, self.pdu_route)
            except SessionError as e:
                self._forget_login(node)
                if e.exit_code not in RETRIED_LOGIN_CODES or e.stage == "bind":
                    raise
                failure = e
            except BaseException:
                self._forget_login(node)
                raise
            if failure.stage == "connect":
                await asyncio.sleep(self.conn_retry_delay)
            elif failure.stage == "connection":
                await asyncio.sleep(max(0.0, began + node.login_timeout - time.monotonic()))
            if time.monotonic() - start > window or self.stopping.is_set():
                log.info("login to %s at %s,%s: giving up after %d attempt(s) in %.0f s "
                         "(initial_login_retry_max %d x login_timeout %g s)", node.target, node.address, node.port,
                         attempt, time.monotonic() - start, node.initial_login_retry_max, node.login_timeout)
                if failure.stage == "connect":
                    raise SessionError(ExitCode.TRANS_TIMEOUT, str(failure), "connect") from None
                raise failure
            log.info("login to %s at %s,%s: attempt %d failed (%s); trying again", node.target, node.address,
                     node.port, attempt, failure)
            if t2w:
                await asyncio.sleep(t2w)
                t2w = 0.0        # iscsid waits it once (def_time2wait = 0 after the first reopen)
                if time.monotonic() - start > window:
                    # iscsid's reopen timer ran out: its login error handler reports 8
                    raise SessionError(ExitCode.TRANS_TIMEOUT, str(failure), failure.stage) from None

    def _forget_login(self, node: NodeConfig) -> None:
        """A failed first login: its LOGGING_IN entry goes (the worker unwound the kernel's session)."""
        key = _node_key(node)
        for sid, m in list(self.sessions.items()):
            if m.state == "LOGGING_IN" and _node_key(m.ks.node) == key:
                del self.sessions[sid]

    async def _scan(self, ks: KernelSession, wait: float) -> dict:
        """Scan the session's host, waiting at most `wait` seconds; the scan goes on after that."""
        scan = self.loop.run_in_executor(self.pool, self.sysfs.scan_host, ks.host_no)
        try:
            await asyncio.wait_for(asyncio.shield(scan), wait)
        except asyncio.TimeoutError:
            scan.add_done_callback(lambda f: f.cancelled() or f.exception() is None or
                                   log.warning("session %d: scan failed: %s", ks.sid, f.exception()))
            log.warning("session %d: SCSI scan still running after %.1f s; its devices may appear later",
                        ks.sid, wait)
            return {"scan": "running"}
        except OSError as e:
            log.warning("session %d: SCSI scan failed: %s", ks.sid, e)
            return {"scan": f"failed: {e.strerror or e}"}
        return {"scan": "done"}

    async def op_logout(self, args: dict) -> dict:
        return await self.logout_session(int(args["sid"]))

    async def logout_session(self, sid: int, reason: str = "logout") -> dict:
        m = self.sessions.get(sid)
        if m is None:
            if self.sysfs.session(sid, luns=False) is None:
                raise SessionError(ExitCode.NO_OBJS_FOUND, f"no session {sid}")
        elif m.state == "LOGGING_OUT":
            raise SessionError(ExitCode.BUSY, f"session {sid} is already logging out")
        elif m.state == "LOGGING_IN":
            raise SessionError(ExitCode.BUSY, f"session {sid} is still logging in")
        if m is not None:
            if m.recovery and not m.recovery.done():
                m.recovery.cancel()
            self.set_state(m, "LOGGING_OUT")
        # Both futures exist before the requests go out: an event that beats the reply
        # to its request still finds its waiter.
        steps = {kind: self.loop.create_future() for kind in (KEv.UNBIND_SESSION, KEv.RECV_PDU)}
        for kind, fut in steps.items():
            self.logout_waiters[(kind, sid)] = fut
        task = asyncio.current_task()
        self.logouts.add(task)
        # the kernel endpoint of a KERNEL_EP transport's connection, disconnected first (an
        # adopted session's from the endpoint record, when it was ours: adopt())
        ep = m.ks.ep if m else None
        try:
            transport = m.ks.node.transport if m else self._sysfs_transport(sid)
            # node.conn[0].timeo.logout_timeout of the record it logged in with (an adopted
            # session's node comes from sysfs: the record table's default)
            timeout = float(m.ks.node.logout_timeout) if m and m.ks.node.logout_timeout > 0 else LOGOUT_TIMEOUT
            # a session this daemon does not hold may be one whose destruction the kernel
            # refused after its unbind: no unbind event would come for it
            unbound = m is None and self.sysfs.unbound(sid)
            await self.run_logout(logout_steps(self.initiator.transport_handle(transport), sid, timeout, ep,
                                               unbound), steps)
        finally:
            self.logouts.discard(task)
            for kind in steps:
                self.logout_waiters.pop((kind, sid), None)
            self.sessions.pop(sid, None)
            if ep is not None:
                self.record_endpoints()
        # after the kernel's session is gone (a failed logout raised above, leaving it)
        self.publish("session_removed", sid, target=m.ks.node.target if m else "", reason=reason)
        return {"sid": sid}

    async def run_logout(self, steps, events: dict[KEv, asyncio.Future]) -> None:
        """session.logout_steps() on the loop: its requests through the one sender (so 32
        logouts share datagrams instead of contending for a socket), its waits on the
        futures on_netlink resolves (or False once their timeout passes, or at stop)."""
        answer = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            if isinstance(step, Send):
                answer = await self.requests.abatch(step.requests)
            elif self.stopping.is_set():
                answer = False
            else:
                try:
                    answer = await asyncio.wait_for(asyncio.shield(events[step.kind]), step.timeout)
                except asyncio.TimeoutError:
                    answer = False

    async def op_rescan(self, args: dict) -> dict:
        s = self.sysfs.session(args["sid"], luns=False)
        if s is None:
            raise SessionError(ExitCode.NO_OBJS_FOUND, f"no session {args['sid']}")
        await self.blocking(self.sysfs.scan_host, s.host_no)
        return {"sid": s.sid, "host_no": s.host_no}

    async def op_stats(self, args: dict) -> dict:
        sid = int(args["sid"])
        if self.sysfs.session(sid, luns=False) is None:
            raise SessionError(ExitCode.NO_OBJS_FOUND, f"no session {sid}")
        if sid in self.stats_waiters:
            raise SessionError(ExitCode.BUSY, f"statistics of session {sid} already requested")
        fut = self.loop.create_future()
        self.stats_waiters[sid] = fut
        # Sent from the events socket: the result is multicast to it, and a refusal comes back to it.
        # the session's own transport: the kernel calls that transport's get_stats on the conn
        handle = self.initiator.transport_handle(self._sysfs_transport(sid))
        self.events.post(Ev.GET_STATS, handle, sid=sid, cid=0)
        try:
            stats, custom = await asyncio.wait_for(fut, 10)
        except asyncio.TimeoutError:
            raise SessionError(ExitCode.INTERNAL, f"no statistics for session {sid} within 10 s") from None
        finally:
            self.stats_waiters.pop(sid, None)
        return {"sid": sid, "stats": stats, "custom": custom}

    def _sysfs_transport(self, sid: int) -> str:
        m = self.sessions.get(sid)
        if m is not None:
            return m.ks.node.transport
        s = self.sysfs.session(sid, luns=False)
        return getattr(s, "transport", None) or "tcp"

    async def op_sessions(self, args: dict) -> list[dict]:
        out = []
        devices = args.get("devices", True)
        # Sysfs.sessions() skips a session that goes away while it is read (a logout in flight)
        for s in self.sysfs.sessions(luns=devices):
            sid = s.sid
            m = self.sessions.get(sid)
            out.append({"sid": sid, "target": s.target, "address": s.address, "port": s.port, "tpgt": s.tpgt,
                        "kernel_state": s.state, "managed": m is not None,
                        "state": m.state if m else None, "adopted": bool(m and m.adopted),
                        "recoveries": m.recoveries if m else 0,
                        "iface": m.ks.node.iface_name if m else s.iface_name,
                        "reopen_attempts": m.attempts if m else 0,
                        "recovering_for": round(time.monotonic() - m.recovering_since, 3)
                        if m and m.recovering_since is not None else None,
                        "io_failed": bool(m and m.timed_out),
                        **({"disks": [l.block for l in s.luns if l.block]} if devices else {})})
        return out


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) we are ready; a no-op outside systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(message.encode(), path)


def listen_fd_from_systemd() -> int | None:
    """The socket systemd passed (LISTEN_FDS, sd_listen_fds semantics), if it is for us."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    n = int(os.environ.get("LISTEN_FDS", "0") or 0)
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return 3 if n >= 1 else None
