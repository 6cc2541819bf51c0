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


def test_parallel_batches_are_submitted_round_robin_over_tpgs():
    steps = [Step("lun_delete", f"iqn.2024-01.com.example:t{t}", 1, obj=LUN(i, "/backstores/fileio/d"))
             for t in range(3) for i in range(2 + t)]
    order = [(s.target[-1], s.obj.index) for s in apply._across_tpgs(steps)]
    assert order == [("0", 0), ("1", 0), ("2", 0), ("0", 1), ("1", 1), ("2", 1), ("1", 2), ("2", 2), ("2", 3)]
    assert sorted(map(id, apply._across_tpgs(steps))) == sorted(map(id, steps))


def test_remove_is_an_rmdir_and_falls_back_to_a_recursive_delete_only_when_not_empty(tmp_path):
    calls = []
    empty = tmp_path / "acl_empty"
    empty.mkdir()
    apply._remove(str(empty), lambda: calls.append("recursive"))
    assert not empty.exists() and calls == []
    full = tmp_path / "acl_full"
    (full / "lun_0").mkdir(parents=True)       # a child the model did not know
    apply._remove(str(full), lambda: calls.append("recursive"))
    assert calls == ["recursive"]
    with pytest.raises(FileNotFoundError):
        apply._remove(str(tmp_path / "gone"), lambda: calls.append("never"))
    assert calls == ["recursive"]


def test_executor_modules_import_rtslib_only_on_first_use():
    import subprocess
    import sys
    code = ("import sys; from iscsikit.target import apply, manager, configfs; "
            "print(sorted(m for m in sys.modules if m.startswith('rtslib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
