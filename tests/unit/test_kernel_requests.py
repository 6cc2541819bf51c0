"""initiator/kernel_requests.py on kernel/fake.py: one sender packs what callers submit
while it is busy into the next datagram, each caller's requests contiguous and in order,
and each caller gets back only its own results (host; no kernel)."""

from __future__ import annotations

import asyncio
import time

import pytest

from iscsikit.initiator.kernel_requests import KernelRequests
from iscsikit.kernel.constants import Ev
from iscsikit.kernel.fake import FakeKernel
from iscsikit.kernel.netlink import KernelError


@pytest.fixture
def kernel(tmp_path):
    k = FakeKernel(tmp_path / "sys")
    yield k
    k.close()


def _create(handle):
    return (Ev.CREATE_SESSION, handle, b"", {"initial_cmdsn": 0, "cmds_max": 128, "queue_depth": 32})


def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def test_what_is_submitted_while_the_kernel_is_busy_goes_out_as_one_datagram(kernel):
    sender = KernelRequests(kernel.netlink(groups=0))
    h = kernel.transports["tcp"]
    try:
        with kernel.busy():
            first = sender.submit([_create(h)])
            _until(lambda: kernel.arrived == 1)          # the sender is in its send, waiting for the kernel
            two = sender.submit([_create(h), _create(h)])
            refused = sender.submit([(Ev.DESTROY_SESSION, h, b"", {"sid": 999})])
            last = sender.submit([_create(h)])
        results = [f.result(5) for f in (first, two, refused, last)]
    finally:
        sender.close()
    # one datagram for the first, one for the three submitted meanwhile, in submission order
    assert kernel.datagrams == [1, 4] and sender.datagrams == 2
    [a], [b, c], [err], [d] = results
    # a refused request stands alone: its caller hears the kernel's error, the others their sessions
    assert isinstance(err, KernelError) and err.errno == 22
    assert [r["sid"] for r in (a, b, c, d)] == sorted(kernel.sessions) and len(kernel.sessions) == 4


def test_a_datagram_carries_at_most_max_messages(kernel):
    sender = KernelRequests(kernel.netlink(groups=0), max_messages=2)
    h = kernel.transports["tcp"]
    try:
        with kernel.busy():
            futures = [sender.submit([_create(h)])]
            _until(lambda: kernel.arrived == 1)
            futures += [sender.submit([_create(h)]) for _ in range(3)]
            # a submission larger than the limit still goes, alone
            futures.append(sender.submit([_create(h)] * 3))
        sids = [r["sid"] for f in futures for r in f.result(5)]
    finally:
        sender.close()
    assert kernel.datagrams == [1, 2, 1, 3] and sids == sorted(kernel.sessions)


def test_coroutines_and_threads_share_the_sender(kernel):
    sender = KernelRequests(kernel.netlink(groups=0))
    h = kernel.transports["tcp"]

    async def many():
        return await asyncio.gather(*(sender.abatch([_create(h)]) for _ in range(8)))
    try:
        from_loop = asyncio.run(many())
        from_thread = sender.create_session(h)          # a login's worker thread: the named requests
    finally:
        sender.close()
    assert len({r["sid"] for [r] in from_loop} | {from_thread[0]}) == 9 == len(kernel.sessions)


def test_a_closed_sender_refuses_new_requests_and_closes_its_socket(kernel):
    sender = KernelRequests(kernel.netlink(groups=0))
    sender.create_session(kernel.transports["tcp"])
    sender.close()
    with pytest.raises(OSError):
        sender.submit([_create(kernel.transports["tcp"])])
    assert sender.nl.sock.closed
