"""apply.Executor.run: bulk steps of one kind run in a thread pool, rollback stays whole."""

import threading
import time

import pytest

from iscsikit.target import apply
from iscsikit.target.errors import ApplyError, TargetError
from iscsikit.target.model import Config, LUN
from iscsikit.target.plan import Step


def _fake(monkeypatch, fail_at=()):
    done, undone, threads = [], [], set()
    lock = threading.Lock()

    def handler(ex, step):
        time.sleep(0.01)           # as the kernel's wait would: lets the pool overlap steps
        threads.add(threading.current_thread().name)
        if step.obj.index in fail_at:
            raise TargetError(f"lun{step.obj.index} refused")
        with lock:
            done.append((step.op, step.obj.index))
        return lambda: undone.append((step.op, step.obj.index))
    for op in ("lun_create", "mlun_create", "tpg_attrs"):
        monkeypatch.setitem(apply.HANDLERS, op, handler)
    return done, undone, threads


def _steps(op, n):
    return [Step(op, "iqn.2024-01.com.example:t", 1, obj=LUN(i, "/backstores/fileio/d")) for i in range(n)]


def test_bulk_steps_run_concurrently_and_phases_stay_ordered(monkeypatch):
    done, undone, threads = _fake(monkeypatch)
    steps = _steps("lun_create", 40) + _steps("mlun_create", 40)
    t = time.monotonic()
    apply.Executor(Config(), "/nonexistent").run(steps)
    assert time.monotonic() - t < 0.8 * 0.01 * 80      # serial would take 0.8 s
    assert len(threads) > 1 and not undone
    ops = [op for op, _ in done]
    assert ops == ["lun_create"] * 40 + ["mlun_create"] * 40     # no mapped LUN before every LUN


def test_failure_in_a_parallel_batch_undoes_everything_done(monkeypatch):
    done, undone, _ = _fake(monkeypatch, fail_at={7, 3})
    steps = _steps("lun_create", 20)
    with pytest.raises(ApplyError) as e:
        apply.Executor(Config(), "/nonexistent").run(steps)
    assert "lun3" in str(e.value)                          # the first failure in plan order is reported
    assert sorted(undone) == sorted(done) and len(done) == 18


def test_serial_steps_keep_running_one_by_one(monkeypatch):
    done, undone, threads = _fake(monkeypatch, fail_at={2})
    with pytest.raises(ApplyError):
        apply.Executor(Config(), "/nonexistent").run(_steps("tpg_attrs", 5))
    assert done == [("tpg_attrs", 0), ("tpg_attrs", 1)] and undone == [("tpg_attrs", 1), ("tpg_attrs", 0)]
    assert threads == {threading.main_thread().name}
