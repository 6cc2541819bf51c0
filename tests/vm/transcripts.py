"""Comparing two iscsiadm transcripts (open-iscsi's and iscsikit's, from a differential probe):
what differs, step by step, after each side is normalised."""

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
