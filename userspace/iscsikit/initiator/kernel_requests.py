"""One sender for the daemon's NETLINK_ISCSI requests, so many callers pipeline, not contend.

The kernel serves NETLINK_ISCSI one datagram at a time: iscsi_if_rx holds its
rx_queue_mutex through every message of a datagram and answers each in turn
(scsi_transport_iscsi.c), in the sending thread's own system call. Concurrent
callers gain nothing from sending on their own; measured in the lab guest
(bench/results/initiator.md run 6), 32 logouts in 32 worker threads each
waited ~0.3 s for the socket's lock, which is GIL hand-offs between threads
more than kernel time. Here one thread sends: whatever was submitted while it
was busy goes out as the next datagram, every caller's requests contiguous and
in their order, and each caller gets back only its own results (a refused
request stands alone, as in IscsiNetlink.batch). Coroutines await a submission
(`abatch`); worker threads (a login's steps) call `batch`, which blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque

from ..kernel.netlink import IscsiNetlink, KernelError, Requests, Uevent

# The most messages one datagram carries. The kernel answers each message while the
# datagram is still being handled, into this socket's receive buffer, which nothing
# reads until the send returns; a reply that finds it full is dropped after ten tries
# (iscsi_if_rx, ISCSI_SEND_MAX_ALLOWED). Each reply costs ~1 KiB of buffer (skb truesize):
# 64 stay far below the 208 KiB default net.core.rmem_max.
MAX_MESSAGES = 64

log = logging.getLogger(__name__)


class KernelRequests(Requests):
    """`nl`'s requests, sent from one thread (started on the first submission)."""

    def __init__(self, nl: IscsiNetlink, max_messages: int = MAX_MESSAGES):
        self.nl = nl
        self.max_messages = max_messages
        self._queue: deque[tuple[list, concurrent.futures.Future, float]] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.datagrams = 0          # sent so far (for tests and the debug log)

    def submit(self, requests: list[tuple]) -> concurrent.futures.Future:
        """The requests' results (or KernelErrors), in order, as a future."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._wake:
            if self._closed:
                raise OSError("NETLINK_ISCSI requests closed")
            self._queue.append((list(requests), fut, time.monotonic()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="iscsikitd-netlink", daemon=True)
                self._thread.start()
            self._wake.notify()
        return fut

    def batch(self, requests: list[tuple]) -> list[Uevent | KernelError]:
        return self.submit(requests).result()

    async def abatch(self, requests: list[tuple]) -> list[Uevent | KernelError]:
        return await asyncio.wrap_future(self.submit(requests))

    def _take(self) -> list[tuple[list, concurrent.futures.Future, float]] | None:
        """What goes into the next datagram: every waiting submission that fits (the first always)."""
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            if not self._queue:
                return None
            taken, count = [], 0
            while self._queue and (not taken or count + len(self._queue[0][0]) <= self.max_messages):
                taken.append(self._queue.popleft())
                count += len(taken[-1][0])
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            taken = [(r, f, t) for r, f, t in taken if f.set_running_or_notify_cancel()]
            start = time.monotonic()
            try:
                results = self.nl.batch([row for requests, _, _ in taken for row in requests])
            except BaseException as e:      # the socket itself failed: every caller hears it
                for _, fut, _ in taken:
                    fut.set_exception(e)
                continue
            self.datagrams += 1
            # the kernel's time (its mutex, the requests' work) against the callers' wait for the sender
            log.debug("netlink: %d message(s) of %d caller(s) answered in %.4f s, queued %.4f s at most",
                      len(results), len(taken), time.monotonic() - start, start - min(t for _, _, t in taken))
            at = 0
            for requests, fut, _ in taken:
                fut.set_result(results[at:at + len(requests)])
                at += len(requests)

    # what the rest of IscsiNetlink's interface the Initiator uses: passed through
    def next_event(self, timeout: float | None = 0.0):
        return self.nl.next_event(timeout)

    def fileno(self) -> int:
        return self.nl.fileno()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.nl.close()
