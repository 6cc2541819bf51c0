"""Issue 6, proof 6: the interactive shell through a real pseudo-terminal.

probes/target_pty.py types at `iscsikit-target` on a pty in the guest: TAB
completes a path, a command and an object made in the same session; an idle
shell leaves the manager's lock free; `exit` auto-saves the change just made
to a root-only file.
"""

import pytest


@pytest.fixture(scope="module")
def pty_story(run_probe):
    return run_probe("target_pty.py", timeout=600)


def test_tab_completes_paths_commands_and_new_objects(pty_story):
    assert pty_story["path_completion"].startswith("cd /backstores/"), pty_story
    assert pty_story["command_completion"].startswith("create "), pty_story
    assert pty_story["object_completion"].startswith("delete p6 "), pty_story


def test_idle_interactive_shell_holds_no_lock(pty_story):
    assert pty_story["lock_free_while_idle"] is True


def test_exit_autosaves_the_change_just_made(pty_story):
    assert pty_story["saved_before_exit"] is False
    assert pty_story["exit_code"] == 0
    assert pty_story["save_mode"] == "0o600"
    assert ["fileio", "p6", "/tmp/ikpty/p6.img", False] in pty_story["saved_objects"], pty_story
    assert "create p6" in pty_story["history"]
