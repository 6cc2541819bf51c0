"""The initiator's D-Bus API on the system bus (dbus-python), in front of iscsikitd.

    org.iscsikit.Initiator1                      well-known name (policy: systemd/dbus/)
    /org/iscsikit/Initiator1                     org.iscsikit.Initiator1.Manager
        Discover(s address, u port) -> ao        SendTargets; writes node records, returns their objects
        Login(s target, s portal, s iface) -> o  the session object
        Logout(o session)
        ListSessions() -> ao, ListNodes() -> ao
        signals SessionAdded(o, u sid, s target), SessionRemoved(o, u sid)
        properties Version, InitiatorName
    /org/iscsikit/Initiator1/node/<escaped id>   org.iscsikit.Initiator1.Node: Login() -> o, Logout();
                                                  Target, Address, Port, Tpgt, Iface, Startup
    /org/iscsikit/Initiator1/session/<sid>       org.iscsikit.Initiator1.Session: Logout();
                                                  Sid, Target, Address, Port, Tpgt, State, KernelState, Disks, Recoveries
    /org/iscsikit/Initiator1/target              org.iscsikit.Initiator1.Target: this host's LIO target, as
                                                  `iscsikit-target sessions --follow` sees it; signals
                                                  SessionLoggedIn, ConnectionAdded, ConnectionClosed,
                                                  SessionClosed, LoginFailed (a{sv}: the event's fields),
                                                  EventsDropped(u); property Source (kmod | none)
    every object: org.freedesktop.DBus.Properties (Get, GetAll, PropertiesChanged) and Introspectable

A front end beside the CLI, on the same library: requests go to iscsikitd
through initiator/client.py (login, logout, sessions), discovery runs
initiator/discovery.py, and a refusal becomes the D-Bus error
org.iscsikit.Initiator1.Error.<Name> (the ExitCode name in CamelCase, e.g.
SessExists for 15) whose message starts with the number. Session objects and
their signals follow the daemon's event stream (Client.watch()), so sessions
made by the CLI or udev show up here too; nothing polls. While the daemon is
down the watch is re-opened with a backoff, and its first reply (the
daemon's sessions then) puts the objects right.

Only root may call methods: the bus policy says so and the service checks
the caller's uid again (a bus configured without the policy stays closed).

The main loop is GLib's, which dbus-python's mainloop integration needs. It
is driven through ctypes on libglib-2.0 (which dbus-python links anyway), so
PyGObject, a heavy build on Debian 12, is not required. Worker threads never
touch dbus objects: they hand callables to the loop thread through g_idle_add.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import dbus
import dbus.bus
import dbus.mainloop.glib
import dbus.service

from ..initiator.exitcodes import ExitCode
from ..initiator import discovery, records
from .adm import messages as msg
from ..initiator import nodedb as ndb
from ..initiator.client import Client, MgmtError
from ..initiator.errors import IscsiError

log = logging.getLogger("iscsikit-dbus")

BUS_NAME = "org.iscsikit.Initiator1"
ROOT = "/org/iscsikit/Initiator1"
MANAGER_IFACE = BUS_NAME + ".Manager"
NODE_IFACE = BUS_NAME + ".Node"
SESSION_IFACE = BUS_NAME + ".Session"
TARGET_IFACE = BUS_NAME + ".Target"
ERROR_PREFIX = BUS_NAME + ".Error."
# re-opening the watch while the daemon is down (not a poll of any state: it waits to be told)
RECONNECT_DELAYS = (0.2, 0.5, 1, 2, 5)


def error_name(code: int) -> str:
    try:
        name = ExitCode(code).name
    except ValueError:
        name = "ERR"
    return ERROR_PREFIX + "".join(w.capitalize() for w in name.split("_"))


class CommandError(dbus.DBusException):
    def __init__(self, code: int, message: str):
        self._dbus_error_name = error_name(code)
        super().__init__(f"{int(code)}: {message}")


class AccessDenied(dbus.DBusException):
    _dbus_error_name = "org.freedesktop.DBus.Error.AccessDenied"


def escape(label: str) -> str:
    """An object path element for any string: [A-Za-z0-9] kept, every other byte as _xx (systemd's bus label style)."""
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"_{b:02x}" for b in c.encode())
                   for c in label) or "_"


# -- the GLib loop through ctypes ----------------------------------------------------
_GSourceFunc = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class Loop:
    def __init__(self):
        self.glib = ctypes.CDLL("libglib-2.0.so.0")
        self.glib.g_main_loop_new.restype = ctypes.c_void_p
        self.glib.g_main_loop_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.glib.g_main_loop_run.argtypes = [ctypes.c_void_p]
        self.glib.g_main_loop_quit.argtypes = [ctypes.c_void_p]
        self.glib.g_idle_add.argtypes = [_GSourceFunc, ctypes.c_void_p]
        self.glib.g_unix_signal_add.argtypes = [ctypes.c_int, _GSourceFunc, ctypes.c_void_p]
        self.loop = self.glib.g_main_loop_new(None, 0)
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        # ctypes callbacks must outlive every call GLib may make to them
        self._drain_cb = _GSourceFunc(self._drain)
        self._quit_cb = _GSourceFunc(lambda _d: (self.quit(), 0)[1])

    def _drain(self, _data) -> int:
        while True:
            try:
                fn = self.pending.get_nowait()
            except queue.Empty:
                return 0          # G_SOURCE_REMOVE
            try:
                fn()
            except Exception:
                log.exception("main loop callback failed")

    def call_soon(self, fn) -> None:
        """Run fn in the loop thread; safe from any thread."""
        self.pending.put(fn)
        self.glib.g_idle_add(self._drain_cb, None)

    def quit_on_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.glib.g_unix_signal_add(sig, self._quit_cb, None)

    def run(self) -> None:
        self.glib.g_main_loop_run(self.loop)

    def quit(self) -> None:
        self.glib.g_main_loop_quit(self.loop)


# -- objects with properties -------------------------------------------------------------
class PropertyObject(dbus.service.Object):
    """dbus-python exports methods and signals; this adds org.freedesktop.DBus.Properties (read-only)."""
    IFACE = ""
    SIGNATURES: dict[str, str] = {}

    def __init__(self, service: "Service", path: str):
        self.service = service
        self.values: dict = {}
        super().__init__(service.bus, path)

    def typed(self) -> dict:
        out = {}
        for name, sig in self.SIGNATURES.items():
            v = self.values.get(name)
            if sig == "as":
                out[name] = dbus.Array([str(x) for x in (v or [])], signature="s")
            elif sig == "u":
                out[name] = dbus.UInt32(max(0, int(v or 0)))
            elif sig == "i":
                out[name] = dbus.Int32(int(v if v is not None else -1))
            else:
                out[name] = dbus.String("" if v is None else str(v))
        return out

    def update(self, values: dict) -> None:
        before = self.typed()
        self.values.update(values)
        after = self.typed()
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        if changed:
            self.PropertiesChanged(self.IFACE, changed, dbus.Array([], signature="s"))

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, interface, name):
        props = self.typed()
        if interface not in (self.IFACE, "") or name not in props:
            raise dbus.DBusException(f"no property {name} on {interface}",
                                     name="org.freedesktop.DBus.Error.InvalidArgs")
        return props[name]

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, interface):
        if interface not in (self.IFACE, ""):
            return dbus.Dictionary({}, signature="sv")
        return dbus.Dictionary(self.typed(), signature="sv")

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ssv", out_signature="", sender_keyword="sender")
    def Set(self, interface, name, value, sender=None):
        self.service.check_root(sender)
        raise dbus.DBusException(f"property {name} is read-only",
                                 name="org.freedesktop.DBus.Error.PropertyReadOnly")

    @dbus.service.signal(dbus.PROPERTIES_IFACE, signature="sa{sv}as")
    def PropertiesChanged(self, interface, changed, invalidated):
        pass

    @dbus.service.method(dbus.INTROSPECTABLE_IFACE, in_signature="", out_signature="s",
                         path_keyword="object_path", connection_keyword="connection")
    def Introspect(self, object_path, connection):
        xml = dbus.service.Object.Introspect(self, object_path, connection)
        props = "".join(f'    <property name="{n}" type="{s}" access="read"/>\n'
                        for n, s in self.SIGNATURES.items())
        head = f'<interface name="{self.IFACE}">'
        i = xml.find(head)
        if i < 0:
            return xml
        j = xml.find("</interface>", i)
        return xml[:j] + props + "  " + xml[j:]


class SessionObject(PropertyObject):
    IFACE = SESSION_IFACE
    SIGNATURES = {"Sid": "u", "Target": "s", "Address": "s", "Port": "u", "Tpgt": "i", "State": "s",
                  "KernelState": "s", "Disks": "as", "Recoveries": "u"}

    def __init__(self, service, sid: int):
        self.sid = sid
        super().__init__(service, f"{ROOT}/session/{sid}")

    @staticmethod
    def values_from(s: dict) -> dict:
        values = {"Sid": s["sid"], "Target": s.get("target"), "Address": s.get("address"), "Port": s.get("port"),
                  "Tpgt": s.get("tpgt"), "State": s.get("state") or s.get("kernel_state"),
                  "KernelState": s.get("kernel_state"), "Disks": s.get("disks") or [],
                  "Recoveries": s.get("recoveries") or 0}
        # a session being torn down loses its sysfs attributes one by one: keep what was known
        return {k: v for k, v in values.items() if v is not None}

    @dbus.service.method(SESSION_IFACE, in_signature="", out_signature="", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Logout(self, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        self.service.logout_session(self.sid, reply, error)


class NodeObject(PropertyObject):
    IFACE = NODE_IFACE
    SIGNATURES = {"Target": "s", "Address": "s", "Port": "u", "Tpgt": "i", "Iface": "s", "Startup": "s"}

    def __init__(self, service, nid: ndb.NodeId):
        self.nid = nid
        super().__init__(service, node_path(nid))

    def portal(self) -> str:
        return ndb.format_portal(self.nid.address, self.nid.port)

    @dbus.service.method(NODE_IFACE, in_signature="", out_signature="o", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Login(self, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        self.service.login(self.nid.target, self.portal(), self.nid.iface, reply, error)

    @dbus.service.method(NODE_IFACE, in_signature="", out_signature="", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Logout(self, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        self.service.logout_node(self.nid, reply, error)


class TargetObject(PropertyObject):
    """The target's events (target/events.py) as signals. They name initiators and their addresses:
    the bus policy lets only root receive them, as the kernel lets only CAP_NET_ADMIN listen."""
    IFACE = TARGET_IFACE
    SIGNATURES = {"Source": "s"}        # kmod, or none when the module is not loaded
    SIGNALS = {"login": "SessionLoggedIn", "conn_add": "ConnectionAdded", "conn_close": "ConnectionClosed",
               "session_close": "SessionClosed", "login_failed": "LoginFailed"}

    def __init__(self, service):
        super().__init__(service, ROOT + "/target")
        self.values["Source"] = "none"

    @staticmethod
    def fields(event) -> dbus.Dictionary:
        out = {}
        for k, v in event.to_dict().items():
            if k == "event":
                continue
            out[k] = dbus.UInt64(v) if k in ("seq", "time_ns") else dbus.Int64(v) if isinstance(v, int) \
                else dbus.String(str(v))
        return dbus.Dictionary(out, signature="sv")

    def emit(self, event) -> None:
        """Loop thread: one signal per event."""
        if event.to_dict()["event"] == "dropped":
            self.EventsDropped(dbus.UInt32(event.count))
            return
        name = self.SIGNALS.get(event.kind)
        if name:
            getattr(self, name)(self.fields(event))

    @dbus.service.signal(TARGET_IFACE, signature="a{sv}")
    def SessionLoggedIn(self, event):
        pass

    @dbus.service.signal(TARGET_IFACE, signature="a{sv}")
    def ConnectionAdded(self, event):
        pass

    @dbus.service.signal(TARGET_IFACE, signature="a{sv}")
    def ConnectionClosed(self, event):
        pass

    @dbus.service.signal(TARGET_IFACE, signature="a{sv}")
    def SessionClosed(self, event):
        pass

    @dbus.service.signal(TARGET_IFACE, signature="a{sv}")
    def LoginFailed(self, event):
        pass

    @dbus.service.signal(TARGET_IFACE, signature="u")
    def EventsDropped(self, count):
        pass


def node_path(nid: ndb.NodeId) -> str:
    return f"{ROOT}/node/{escape(f'{nid.target},{nid.address},{nid.port},{nid.tpgt},{nid.iface}')}"


class Manager(PropertyObject):
    IFACE = MANAGER_IFACE
    SIGNATURES = {"Version": "s", "InitiatorName": "s"}

    def __init__(self, service):
        super().__init__(service, ROOT)

    @dbus.service.signal(MANAGER_IFACE, signature="ous")
    def SessionAdded(self, path, sid, target):
        pass

    @dbus.service.signal(MANAGER_IFACE, signature="ou")
    def SessionRemoved(self, path, sid):
        pass

    @dbus.service.method(MANAGER_IFACE, in_signature="su", out_signature="ao", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Discover(self, address, port, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        self.service.discover(str(address), int(port or ndb.DEFAULT_PORT), reply, error)

    @dbus.service.method(MANAGER_IFACE, in_signature="sss", out_signature="o", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Login(self, target, portal, iface, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        self.service.login(str(target), str(portal), str(iface) or "default", reply, error)

    @dbus.service.method(MANAGER_IFACE, in_signature="o", out_signature="", sender_keyword="sender",
                         async_callbacks=("reply", "error"))
    def Logout(self, session, sender=None, reply=None, error=None):
        self.service.check_root(sender)
        m = re.fullmatch(re.escape(ROOT) + r"/session/(\d+)", str(session))
        if not m:
            raise CommandError(ExitCode.INVAL, f"not a session object: {session}")
        self.service.logout_session(int(m.group(1)), reply, error)

    @dbus.service.method(MANAGER_IFACE, in_signature="", out_signature="ao", sender_keyword="sender")
    def ListSessions(self, sender=None):
        self.service.check_root(sender)
        return dbus.Array(sorted(o.__dbus_object_path__ for o in self.service.sessions.values()), signature="o")

    @dbus.service.method(MANAGER_IFACE, in_signature="", out_signature="ao", sender_keyword="sender")
    def ListNodes(self, sender=None):
        self.service.check_root(sender)
        self.service.refresh_nodes()
        return dbus.Array(sorted(self.service.nodes), signature="o")


class Service:
    def __init__(self, bus: dbus.Bus, loop: Loop, db: ndb.NodeDB | None = None, workers: int = 8,
                 client: Client | None = None):
        self.bus = bus
        self.loop = loop
        self.db = db or ndb.NodeDB()
        self.client = client or Client()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="iscsikit-dbus")
        self.sessions: dict[int, SessionObject] = {}
        self.nodes: dict[str, NodeObject] = {}
        self.stopping = threading.Event()
        self.watch = None
        self.manager = Manager(self)
        self.target = TargetObject(self)
        from .. import __version__
        self.manager.values.update({"Version": __version__, "InitiatorName": self.db.initiator_name() or ""})
        self.refresh_nodes()

    # -- access ------------------------------------------------------------------------
    def check_root(self, sender) -> None:
        # the bus policy already refuses others; this holds even on a bus without the policy
        if sender is not None and self.bus.get_unix_user(sender) != 0:
            raise AccessDenied("org.iscsikit.Initiator1 serves root only")

    # -- work off the loop -----------------------------------------------------------------
    def in_worker(self, work, reply, error) -> None:
        """Run work() in a worker; reply with its value (None: no value) or the error it raised."""
        def run():
            try:
                value = work()
            except IscsiError as e:
                exc = CommandError(e.exit_code, str(e))
            except dbus.DBusException as e:
                exc = e
            except Exception as e:   # a bug must not leave the caller waiting forever
                log.exception("request failed")
                exc = CommandError(ExitCode.INTERNAL, f"internal error: {e}")
            else:
                self.loop.call_soon(lambda: reply() if value is None else reply(value))
                return
            self.loop.call_soon(lambda: error(exc))
        self.pool.submit(run)

    def discover(self, address: str, port: int, reply, error) -> None:
        def work():
            try:
                nids = discovery.sendtargets(self.db, address, port)
            except discovery.DiscoveryError as e:
                raise CommandError(e.exit_code, str(e)) from None
            done = threading.Event()
            self.loop.call_soon(lambda: (self.refresh_nodes(), done.set()))
            done.wait(30)
            return dbus.Array(sorted({node_path(n) for n in nids}), signature="o")
        self.in_worker(work, reply, error)

    def login(self, target, portal, iface, reply, error) -> None:
        address, port, tpgt = ndb.parse_portal(portal)
        port = port or ndb.DEFAULT_PORT

        def work():
            nids = [n for n in self.db.find_nodes(target, address, port) if n.iface == iface
                    and (tpgt is None or n.tpgt == tpgt)]
            if not nids:
                raise CommandError(ExitCode.NO_OBJS_FOUND, msg.NO_RECORDS)
            nid = nids[0]
            req = records.login_request(nid, self.db.read_node(nid).values, self.db.initiator_name())
            sid = self.client.login(req)["sid"]
            return dbus.ObjectPath(f"{ROOT}/session/{sid}")
        self.in_worker(work, reply, error)

    def logout_session(self, sid: int, reply, error) -> None:
        self.in_worker(lambda: (self.client.logout(sid), None)[1], reply, error)

    def logout_node(self, nid: ndb.NodeId, reply, error) -> None:
        def work():
            sids = [s["sid"] for s in self.client.sessions()
                    if (s["target"], s["address"], s["port"]) == (nid.target, nid.address, nid.port)]
            if not sids:
                raise CommandError(ExitCode.NO_OBJS_FOUND, msg.NO_MATCHING_SESSIONS)
            for sid in sids:
                self.client.logout(sid)
        self.in_worker(work, reply, error)

    # -- nodes --------------------------------------------------------------------------------
    def refresh_nodes(self) -> None:
        seen = {}
        for nid in self.db.node_ids():
            path = node_path(nid)
            try:
                startup = self.db.read_node(nid).values.get("node.startup", "manual")
            except (ndb.DBError, OSError):
                continue
            values = {"Target": nid.target, "Address": nid.address, "Port": nid.port, "Tpgt": nid.tpgt,
                      "Iface": nid.iface, "Startup": startup}
            obj = self.nodes.get(path)
            if obj is None:
                obj = NodeObject(self, nid)
                obj.values.update(values)     # a new object announces nothing: it has no "before"
            else:
                obj.update(values)
            seen[path] = obj
        for path, obj in list(self.nodes.items()):
            if path not in seen:
                obj.remove_from_connection()
        self.nodes = seen

    # -- sessions, from the daemon's events -------------------------------------------------------
    def follow(self) -> None:
        """Watcher thread: the daemon's event stream, handed to the loop thread event by event."""
        delays = iter(RECONNECT_DELAYS)
        while not self.stopping.is_set():
            try:
                self.watch = self.client.watch()
            except MgmtError as e:
                delay = next(delays, RECONNECT_DELAYS[-1])
                log.debug("daemon unavailable (%s); watching again in %.1f s", e, delay)
                self.stopping.wait(delay)
                continue
            delays = iter(RECONNECT_DELAYS)
            snapshot = self.watch.sessions
            self.loop.call_soon(lambda: self.apply_sessions(snapshot))
            try:
                for ev in self.watch:
                    self.loop.call_soon(lambda ev=ev: self.on_event(ev))
            except (MgmtError, OSError, ValueError) as e:
                log.warning("event stream broke: %s", e)
            finally:
                self.watch.close()
            log.info("iscsikitd went away; watching for its return")

    def session_added(self, sid: int, values: dict) -> None:
        obj = self.sessions.get(sid)
        if obj is None:
            obj = self.sessions[sid] = SessionObject(self, sid)
            obj.values.update(values)
            self.manager.SessionAdded(dbus.ObjectPath(obj.__dbus_object_path__), dbus.UInt32(sid),
                                      dbus.String(values.get("Target") or ""))
        else:
            obj.update(values)

    def session_removed(self, sid: int) -> None:
        obj = self.sessions.pop(sid, None)
        if obj is not None:
            path = obj.__dbus_object_path__
            obj.remove_from_connection()
            self.manager.SessionRemoved(dbus.ObjectPath(path), dbus.UInt32(sid))

    def follow_target(self) -> None:
        """A thread reading the target's events from kmod/'s module. Without it there are no target
        signals (Source stays "none"): this service polls nothing; `sessions --follow` does that."""
        from ..target import events

        def run():
            try:
                reader = events.Reader()
            except (events.NotLoaded, OSError) as e:
                log.info("no target signals: %s", e)
                return
            stream = reader.events()
            self.loop.call_soon(lambda: self.target.update({"Source": "kmod"}))
            try:
                for ev in stream:
                    self.loop.call_soon(lambda ev=ev: self.target.emit(ev))
            except Exception:
                log.exception("target events stopped")
        threading.Thread(target=run, name="iscsikit-dbus-target", daemon=True).start()

    def on_event(self, ev: dict) -> None:
        """Loop thread: one daemon event (protocol.EVENTS) onto the objects and their signals."""
        kind, sid = ev["event"], ev["sid"]
        if kind == "session_added":
            self.session_added(sid, {"Sid": sid, "Target": ev["target"], "Address": ev["address"],
                                     "Port": ev["port"], "State": "LOGGED_IN", "KernelState": "LOGGED_IN",
                                     "Recoveries": 0, **({"Tpgt": ev["tpgt"]} if ev["tpgt"] is not None else {})})
            # the disks appear with the scan: one request, made because of this event
            self.pool.submit(self.refresh_session, sid)
        elif kind == "session_removed":
            self.session_removed(sid)
        elif kind == "state_changed" and sid in self.sessions:
            self.sessions[sid].update({"State": ev["state"]})
        elif kind == "recovery_succeeded" and sid in self.sessions:
            obj = self.sessions[sid]
            obj.update({"Recoveries": int(obj.values.get("Recoveries", 0)) + 1})
            self.pool.submit(self.refresh_session, sid)

    def refresh_session(self, sid: int) -> None:
        """Worker: the daemon's full view of one session (kernel state, disks) onto its object."""
        try:
            found = [s for s in self.client.sessions() if s["sid"] == sid]
        except MgmtError as e:
            log.debug("sessions unavailable: %s", e)
            return
        if found:
            values = SessionObject.values_from(found[0])
            self.loop.call_soon(lambda: sid in self.sessions and self.sessions[sid].update(values))

    def apply_sessions(self, sessions: list) -> None:
        """Loop thread: make the session objects match a list of the daemon's, with their signals."""
        now = {s["sid"]: s for s in sessions}
        for sid in [sid for sid in self.sessions if sid not in now]:
            self.session_removed(sid)
        for sid, s in now.items():
            self.session_added(sid, SessionObject.values_from(s))

    def stop(self) -> None:
        self.stopping.set()
        if self.watch is not None:
            self.watch.close()


def serve(address: str | None = None) -> None:
    """Own the bus name and serve until SIGTERM/SIGINT (Type=dbus in a unit)."""
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    loop = Loop()
    bus = dbus.bus.BusConnection(address) if address else dbus.SystemBus()
    service = Service(bus, loop)
    threading.Thread(target=service.follow, name="iscsikit-dbus-watch", daemon=True).start()
    service.follow_target()
    # the name last: a client that sees it owned finds every object in place
    got = bus.request_name(BUS_NAME, dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
    if got not in (dbus.bus.REQUEST_NAME_REPLY_PRIMARY_OWNER, dbus.bus.REQUEST_NAME_REPLY_ALREADY_OWNER):
        raise RuntimeError(f"{BUS_NAME} is owned by another process")
    loop.quit_on_signals()
    log.info("serving %s", BUS_NAME)
    loop.run()
    try:
        bus.release_name(BUS_NAME)
    except dbus.DBusException:
        pass   # the bus went away first: the name went with it
    service.stop()
    service.pool.shutdown(wait=False, cancel_futures=True)
