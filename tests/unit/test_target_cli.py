"""iscsikit-target's CLI on the host: exit codes, one-line errors, --json, batch mode.

An empty directory stands in for configfs: nothing is applied here (the vm
tests do that), but everything refused before configfs is touched is.
"""

import io
import json
import sys

import pytest

from iscsikit.cli import target as cli


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    root = tmp_path / "configfs"
    root.mkdir()

    def go(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        rc = cli.main(["--configfs", str(root), "--save-file", str(tmp_path / "s.json"), *argv])
        out, err = capsys.readouterr()
        return rc, out, err
    return go


def test_ls_json_of_an_empty_tree(run):
    rc, out, _ = run("--json", "ls", "/")
    assert rc == 0
    tree = json.loads(out)
    assert [c["name"] for c in tree["children"]] == ["backstores", "iscsi"]
    names = [c["name"] for c in tree["children"][0]["children"]]
    assert {"block", "fileio", "pscsi", "ramdisk"} <= set(names)


@pytest.mark.parametrize("argv, code, fragment", [
    (["/iscsi", "create", "iqn.2024-01.com.ex_ample:x"], 2, "underscores"),
    (["/iscsi", "create", "iqn.2026-11.test:x"], 2, "not a valid IQN"),
    (["/backstores/ramdisk", "create", "r1", "1000"], 2, "multiple of 512"),
    (["/backstores/ramdisk", "create", "bad/name", "1M"], 2, "storage object name"),
    (["/backstores/fileio", "create", "f", "/no/such/dir/f.img", "1M"], 2, "does not exist"),
    (["/backstores/fileio", "create", "f", "/tmp/x.img", "1M", "block_size=520"], 2, "block size"),
    (["/iscsi", "frobnicate"], 2, "Command not found"),
    (["/iscsi", "delete", "iqn.2024-01.com.example:none"], 3, "no target"),
    (["restoreconfig", "/no/such/file.json"], 3, "no such file"),
    (["clearconfig"], 2, "confirm=true"),
    (["/backstores/ramdisk", "delete", "nope"], 3, "no storage object"),
])
def test_bad_input_is_one_line_with_its_exit_code(run, argv, code, fragment):
    rc, _out, err = run(*argv)
    assert rc == code, err
    lines = [l for l in err.strip().splitlines() if l.startswith("iscsikit-target:")]
    assert len(lines) == 1 and fragment in lines[0], err


def test_batch_stops_at_the_first_error_with_its_line(run):
    rc, _out, err = run(stdin="# comment\ncd /iscsi\n/iscsi create iqn.bad\ncd /\n")
    assert rc == 2 and "line 3:" in err


def test_restore_of_a_bad_file_touches_nothing(run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": [{"wwn": "iqn.2024-01.com.example:t", "tpgs": [
        {"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/fileio/missing"}]}]}]}))
    rc, _out, err = run("restoreconfig", str(bad))
    assert rc == 2 and "does not exist" in err


def test_debug_log_names_its_caller_without_walking_the_stack(tmp_path, monkeypatch):
    """targetcli's prefs log debug to a file; configshell's debug() would inspect.stack() per call."""
    import inspect

    from iscsikit.target.manager import Manager
    from iscsikit.target.shell import TargetShell

    def refuse(*_a, **_k):
        raise AssertionError("inspect.stack() called")

    monkeypatch.setattr(inspect, "stack", refuse)
    (tmp_path / "configfs").mkdir()
    shell = TargetShell(Manager(root=str(tmp_path / "configfs"), save_file=str(tmp_path / "s.json")), str(tmp_path / "prefs"))
    shell.prefs["logfile"] = str(tmp_path / "log.txt")
    shell.prefs["loglevel_file"] = "debug"

    def some_caller():
        shell.log.debug("hello")

    some_caller()
    line = (tmp_path / "log.txt").read_text()
    assert "[DEBUG]" in line and "some_caller() hello" in line and "test_target_cli.py:" in line
