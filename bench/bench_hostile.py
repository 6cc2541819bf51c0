#!/usr/bin/env python3
"""Issue 20's side by side: every hostile case against open-iscsi and iscsikit in one guest boot.

    .venv/bin/python bench/bench_hostile.py [--kill 60] [--out bench/results/hostile.md]

The cases are tests/unit/hostile_target.py's (discovery, login) plus three that break a good
session right after its login (a redirect in front of LIO, a corrupted header digest, LIO's TPG
disabled during the scan). open-iscsi runs first (iscsid + /usr/sbin/iscsiadm), then iscsikit
(iscsikitd + the forwarding iscsiadm); never both daemons at once. Per case: exit code, seconds
(a command still running after --kill seconds is killed), whether its daemon still runs, and
the sessions left behind. Guest times under TCG: compare the columns, not with a host.
"""

import argparse
import json
import time
from pathlib import Path

import guest_probe

HERE = Path(__file__).resolve().parent


def cell(r: dict, broken: bool = False) -> str:
    rc = "killed" if r.get("rc") == "killed" else f"exit {r.get('rc')}"
    extra = []
    if r.get("left") and not broken:      # a broken case's session is meant to be up (logged out after)
        extra.append(f"{len(r['left'])} left")
    if r.get("daemon_alive") is False:
        extra.append("daemon died")
    if "recovered" in r:
        extra.append("recovered" if r["recovered"] else "NOT recovered")
    return f"{rc}, {r.get('s', '?')} s" + (f" ({', '.join(extra)})" if extra else "")


def table(d: dict) -> list[str]:
    ref, ours = d["open_iscsi"], d["iscsikit"]
    lines = []
    for kind, title in (("discovery", "Discovery (`-m discovery -t st`)"),
                        ("login", f"Login (`--login`, login_timeout {d['login_timeout']} s)"),
                        ("broken", "A good session broken right after its login (`--login`, login_timeout 15 s)")):
        lines += ["", f"### {title}", "", "| case | open-iscsi | iscsikit |", "| --- | --- | --- |"]
        for case in ref[kind]:
            broken = kind == "broken"
            lines.append(f"| {case} | {cell(ref[kind][case], broken)} | {cell(ours[kind].get(case, {}), broken)} |")
    return lines


def summary(d: dict) -> list[str]:
    out = []
    for tool in ("open_iscsi", "iscsikit"):
        runs = [r for kind in ("discovery", "login", "broken") for r in d[tool][kind].values()]
        killed = sum(r.get("rc") == "killed" for r in runs)
        left = sum(bool(r.get("left")) for kind in ("discovery", "login") for r in d[tool][kind].values())
        total = sum(r.get("s", 0) for r in runs)
        worst = max(r.get("s", 0) for r in runs)
        out.append(f"- {tool.replace('_', '-')}: {len(runs)} runs, {killed} killed after {d['kill_after_s']:.0f} s, "
                   f"{left} left sessions behind, {total:.0f} s in all, slowest {worst:.1f} s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill", type=float, default=60)
    ap.add_argument("--out", default=str(HERE / "results" / "hostile.md"))
    ap.add_argument("--render", metavar="JSON", help="write the table from a recorded run's JSON (no boot)")
    args = ap.parse_args()
    start = time.monotonic()
    if args.render:
        d = json.loads(Path(args.render).read_text())
    else:
        d = guest_probe.run("hostile_probe.py", {"BENCH_KILL": str(args.kill)}, memory_mb=3072, timeout=5400)
        if d is None:
            return 1
        d["wall_s"], d["date"] = round(time.monotonic() - start), time.strftime("%Y-%m-%d")
        Path(args.out).with_suffix(".json").write_text(json.dumps(d, indent=1) + "\n")
    lines = ["# Hostile targets: open-iscsi vs iscsikit, same guest boot (issue 20)", "",
             f"`bench/bench_hostile.py --kill {d['kill_after_s']:.0f}`, {d.get('date', '?')}, "
             f"{d.get('wall_s', '?')} s wall. Cases: tests/unit/hostile_target.py. ",
             "Each cell: exit code and seconds of the iscsiadm call; 'killed' = still running at the "
             "kill time; 'N left' = sessions left in sysfs afterwards (then logged out).", "",
             *summary(d), *table(d)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
