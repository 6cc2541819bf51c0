"""When a failed session's next reconnect attempt starts, after iscsid 2.1.8's reopen schedule.

iscsid (open-iscsi 2.1.8 usr/initiator.c, usr/initiator_common.c, usr/login.c):
- __session_conn_reopen waits session->def_time2wait, then clears it. That is the record's
  DefaultTime2Wait (2), replaced by the target's answer at each login (login.c) and by a
  Logout Response's or Async Message's Time2Wait. So the first reopen after a connection
  error waits DefaultTime2Wait.
- every attempt that gets a TCP connection reloads it from the record
  (iscsi_copy_operational_params, called from session_conn_poll), so after a login the target
  refused (__check_iscsi_status_class: class 03 target error, ...) iscsi_login_eh's reopen
  waits DefaultTime2Wait again: one attempt every 2 s against a refusing target (measured in
  the lab: bench/results/multipath.md, the step timeline).
- a connect that fails: queue_delayed_reopen(ISCSI_CONN_ERR_REOPEN_DELAY), 3 s;
  STOP_CONN refused: ISCSI_INTERNAL_ERR_REOPEN_DELAY, 5 s.

Ours is the same but for the refused login. For the first BRISK_FOR (60) seconds of a
recovery the next attempt starts REFUSED_INTERVAL (0.5 s) after the refused one started; after
that, DefaultTime2Wait after it ended, iscsid's rate. DefaultTime2Wait is the wait "after an
unexpected connection termination or a connection reset" (RFC 7143 §13.15); a refused login
ends no connection that held tasks, and iscsid's wait there comes from reloading the record.
Under dm-multipath the first minute is when a returning path matters (a target restart, a
path flap: failback waits for our next attempt); a target that stays down longer sees one
short login per DefaultTime2Wait from each session, as from iscsid, so a long outage of many
sessions does not meet four times iscsid's logins. The brisk minute costs at most 120 short
logins per session (a TCP handshake, one Login Request and its refusal).
"""

from __future__ import annotations

import dataclasses

# the outcomes of one attempt that decide the next delay
REFUSED = "refused"                       # connected, then the login failed (refused, lost, timed out)
CONNECT_FAILED = "connect_failed"         # no TCP connection (refused, unreachable, timed out, iface's netdev down)
INTERNAL = "internal"                     # the kernel refused a request (STOP_CONN, BIND_CONN, ...)

DEFAULT_TIME2WAIT = 2.0            # the record's node.session.iscsi.DefaultTime2Wait
CONN_ERR_REOPEN_DELAY = 3.0        # ISCSI_CONN_ERR_REOPEN_DELAY
INTERNAL_ERR_REOPEN_DELAY = 5.0    # ISCSI_INTERNAL_ERR_REOPEN_DELAY
REFUSED_INTERVAL = 0.5             # between the starts of a refused attempt and the next, at first
BRISK_FOR = 60.0                   # seconds of a recovery during which refusals are retried so


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The delays, in seconds; unit tests scale them down through Daemon(schedule=...).
    `first`: before the first attempt after the connection error when the session has no
    negotiated DefaultTime2Wait (an adopted one: sysfs does not show it for iscsi_tcp)."""
    first: float = DEFAULT_TIME2WAIT
    connect_failed: float = CONN_ERR_REOPEN_DELAY
    internal: float = INTERNAL_ERR_REOPEN_DELAY
    refused_interval: float = REFUSED_INTERVAL
    brisk_for: float = BRISK_FOR

    def delay(self, outcome: str, attempt_took: float = 0.0, recovering_for: float = 0.0,
              time2wait: float | None = None) -> float:
        """Seconds to wait before the next attempt, after `outcome` (one of the names above);
        `attempt_took`: how long the failed attempt ran; `recovering_for`: seconds since the
        connection error; `time2wait`: the session's DefaultTime2Wait (first_delay), `first`
        when None. (A target's Time2Wait from an Async Message is not read by the daemon: the
        kernel's connection error comes first.)"""
        if outcome == CONNECT_FAILED:
            return self.connect_failed
        if outcome == INTERNAL:
            return self.internal
        if recovering_for >= self.brisk_for:
            return self.first if time2wait is None else time2wait
        return max(0.0, self.refused_interval - attempt_took)


    def first_delay(self, negotiated: dict) -> float:
        """DefaultTime2Wait as the session's last login negotiated it (RFC 7143 §13.15: the
        larger of both offers), else `first`."""
        t2w = negotiated.get("DefaultTime2Wait")
        return float(t2w) if isinstance(t2w, int) else self.first


def outcome_of(stage: str) -> str:
    """A failed attempt's outcome from its error's stage (SessionError.stage)."""
    if stage in ("connect", "bind"):       # bind: the iface's netdev missing, down or address-less
        return CONNECT_FAILED
    if stage == "kernel":
        return INTERNAL
    return REFUSED
