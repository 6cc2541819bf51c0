"""Two iscsiadm transcripts (open-iscsi's and iscsikit's) of a differential probe: the step
runner that makes them in the guest (the probes import it), and what differs, step by step,
after each side is normalised (the tests on the host)."""

import json
import os
import re
import subprocess
import time

# iscsiadm tries systemctl to start iscsid when its socket is missing; the guest has no systemd.
SYSTEMD_NOISE = ("System has not been booted with systemd", "Failed to connect to bus")


def drop_noise(text: str) -> str:
    return "".join(l for l in text.splitlines(True) if not l.startswith(SYSTEMD_NOISE))


def drop_reason(text: str) -> str:
    """iscsikit's one deliberate addition (issue 20: add, do not change): after iscsiadm's
    "initiator reported error (…)" line, one "iscsiadm: reason: …" line says why. Dropped
    there only, so a reason line anywhere else is still a difference."""
    out, after_report = [], False
    for line in text.splitlines(True):
        if after_report and line.startswith("iscsiadm: reason: "):
            after_report = False
            continue
        after_report = "initiator reported error (" in line
        out.append(line)
    return "".join(out)


def without_sids(text: str) -> str:
    """Session ids differ between two runs of one story: "[sid: N," and "tcp: [N]"."""
    text = re.sub(r"\[sid: \d+,", "[sid: N,", text)
    return re.sub(r"^tcp: \[\d+\]", "tcp: [N]", text, flags=re.M)


def dumped(report: dict) -> dict:
    """`report`, also written to $ISCSIKIT_TRANSCRIPT_DUMP when set (to read a failure in full)."""
    path = os.environ.get("ISCSIKIT_TRANSCRIPT_DUMP")
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
    return report


def differences(ref: list[dict], ours: list[dict], normalize) -> str:
    """'' when every step has the same exit code, stdout and stderr after normalize();
    otherwise one paragraph per differing step."""
    diffs = []
    for a, b in zip(ref, ours):
        want = (a["rc"], normalize(a["stdout"]), normalize(a["stderr"]))
        got = (b["rc"], normalize(b["stdout"]), normalize(drop_reason(b["stderr"])))
        if want != got:
            diffs.append(f"{' '.join(a['argv'])}\n  open-iscsi: {want!r}\n  iscsikit:   {got!r}")
    return "\n".join(diffs)


def run_steps(cmd: list[str], steps: list, placeholders=dict, action=None, timeout: float = 180) -> list[dict]:
    """Run each step through `cmd` (an iscsiadm): a step is an argv, in which an argument
    that is a key of `placeholders()` (read afresh before each step: SID, HOST) is replaced
    by its value, or a tuple (`"lio"`, name) handed to `action(name)`, which changes the
    target between command lines the same way for both runs. One row per argv step."""
    out = []
    for step in steps:
        if isinstance(step, tuple):
            action(step[1])
            continue
        values = placeholders()
        argv = [values.get(a, a) for a in step]
        t0 = time.monotonic()
        p = subprocess.run(cmd + argv, capture_output=True, text=True, timeout=timeout)
        out.append({"argv": argv, "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
                    "seconds": round(time.monotonic() - t0, 2)})
    return out
