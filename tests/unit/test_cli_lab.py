import subprocess
import sys

import pytest

from iscsikit.cli import main as cli
from iscsikit.lab.guest import Guest
from iscsikit.lab.errors import LabError


def test_help_documents_exit_status(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["lab", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--kernel" in out and "exit status" in out


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["lab", "--accel", "warp"])
    assert e.value.code == 2


def test_bad_kernel_path_is_one_line_and_exit_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "iscsikit.cli.main", "lab", "--kernel", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("iscsikit lab: --kernel") and "pass host, debian" in lines[0]


def test_missing_qemu_is_named():
    with pytest.raises(LabError) as e:
        Guest(qemu="/nonexistent/qemu-system-x86_64").start()
    assert "not found" in str(e.value) and "qemu-system-x86" in str(e.value)
