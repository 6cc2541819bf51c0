"""`iscsikit`: the umbrella command (today: `iscsikit lab`)."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _sigterm(_signo, _frame):
    # Turn SIGTERM into the same unwinding as Ctrl-C so the guest is stopped.
    raise KeyboardInterrupt


def cmd_lab(args: argparse.Namespace) -> int:
    from ..lab import story as lab_story

    def progress(name: str, took: float, detail: str) -> None:
        if not args.json:
            print(f"  {name:<10} {took:7.2f} s  {detail}", flush=True)

    s = lab_story.Story(kernel_spec=args.kernel, accel=args.accel, init=args.init)
    if not args.json:
        print("iscsikit lab: booting the real kernel in a QEMU guest", flush=True)
        print(f"  {'step':<10} {'seconds':>9}  detail", flush=True)
    lab_story.run(s, progress=progress)
    f = s.facts
    if args.json:
        print(json.dumps({"facts": f, "steps": [{"name": n, "seconds": round(t, 3), "detail": d}
                                                for n, t, d in s.timings]}, indent=2))
        return EXIT_OK if f.get("transports") and f.get("configfs_target") else EXIT_FAILED
    print()
    print(f"kernel:     {f.get('kernel')}")
    print("transports:")
    for t in f.get("transports", []):
        print(f"  {t['name']:<8} handle {t['handle']:<20} caps {t['caps']}")
    if not f.get("transports"):
        print("  (none: iscsi_tcp did not register)")
    print(f"configfs:   /sys/kernel/config/target {'present' if f.get('configfs_target') else 'MISSING'}"
          + (f" ({f['lio_version']})" if f.get("lio_version") else ""))
    print(f"boot:       {f['boot_seconds']:.1f} s wall to the guest agent, {f['guest_uptime']:.1f} s guest uptime")
    if f.get("verified_mib"):
        print(f"data:       {f['verified_mib']} MiB through /dev/{f['disk']} (LIO exported by iscsikit-target, "
              "logged in by iscsikit-adm and iscsikitd): identical")
    print(f"total:      {sum(t for _, t, _ in s.timings):.1f} s")
    return EXIT_OK if f.get("transports") and f.get("configfs_target") else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iscsikit", description="iscsikit: Python userspace for Linux iSCSI.")
    p.add_argument("-V", "--version", action="version", version=f"iscsikit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    lab = sub.add_parser(
        "lab", help="boot the real kernel in a QEMU guest and run the whole iSCSI story there",
        description="Boot Debian's kernel (or the host's) in a QEMU guest that shares this machine's root "
                    "read-only, load the iSCSI and LIO modules and report what the kernel offers; then export "
                    "a disk with iscsikit-target, discover and log in with iscsikit-adm through iscsikitd, "
                    "write and read back 32 MiB, log out and clear, with the time each step took.",
        epilog="exit status: 0 all steps passed; 1 a step failed (one line names the cause and the fix); "
               "2 bad usage; 130 interrupted. The guest's QEMU is always stopped.",
    )
    lab.add_argument("--kernel", metavar="host|debian|PATH", default=None,
                     help="kernel to boot: host (the running one, if it has iscsi_tcp), debian (Debian's current "
                          "6.1 image, fetched once into ~/.cache/iscsikit), or a linux-image .deb or unpacked "
                          "folder (default: host if it can, else debian)")
    lab.add_argument("--accel", choices=("tcg", "kvm"), default=None,
                     help="QEMU accelerator (default tcg; ISCSIKIT_LAB_ACCEL also sets it)")
    lab.add_argument("--init", choices=("shell", "systemd"), default="shell",
                     help="the guest's PID 1: a shell (default, fastest), or systemd on the overlay root "
                          "(the host's own enabled services masked; the journal also on the console)")
    lab.add_argument("--json", action="store_true", help="print the facts and step timings as JSON")
    lab.set_defaults(func=cmd_lab)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..lab.errors import LabError

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        return args.func(args)
    except LabError as e:
        print(f"iscsikit {args.command}: {str(e).splitlines()[0]}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"iscsikit {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
