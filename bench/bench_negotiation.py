"""Issue 14's whole negotiation matrix (168 rows, tests/vm/probes/matrix.py), three ways:

    .venv/bin/python bench/bench_negotiation.py [--limit N] [--json FILE] [--no-guest] [--no-tgtd]

1. in one guest boot against LIO: iscsikit (iscsikitd + iscsiadm) for every row, then
   Debian's open-iscsi 2.1.8 for the same rows (probes/negotiation_story.py with
   MATRIX_ROWS=full MATRIX_TOOLS=iscsikit,open-iscsi): per row the negotiated values in
   sysfs against RFC 7143's, each tool's against the other's, LIO's ACL view, 8 MiB
   O_DIRECT in mixed block sizes read back; write and read times side by side (ratios);
2. on the host against tgtd: the same rows through the userspace login and proto's
   WriteExchange (tgtd_harness.matrix_row).
Guest times are TCG times: only the ratios mean anything.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "vm" / "probes"))
sys.path.insert(0, str(HERE.parent / "tests" / "interop"))
sys.path.insert(0, str(HERE))
import matrix  # noqa: E402

import guest_probe  # noqa: E402

YES_NO = {"Yes": "1", "No": "0"}


def lio_view(e: dict) -> dict:
    return {"InitialR2T": YES_NO[e["initial_r2t"]], "ImmediateData": YES_NO[e["immediate_data"]],
            "FirstBurstLength": str(e["first_burst_len"]), "MaxBurstLength": str(e["max_burst_len"])}


def check_guest_row(res: dict) -> list[str]:
    """What is wrong with one guest row (empty: nothing)."""
    if "error" in res:
        return [res["error"]]
    bad = []
    if res.get("kernel") != res["expected"]:
        bad.append(f"sysfs {res.get('kernel')} != RFC {res['expected']}")
    if res.get("lio") != lio_view(res["expected"]):
        bad.append(f"LIO {res.get('lio')}")
    io = res.get("io") or {}
    if io.get("bytes") != matrix.TOTAL or io.get("bad_dev") or io.get("bad_file"):
        bad.append(f"data {io}")
    if res.get("logout_rc") != 0 or res.get("sessions_left"):
        bad.append("logout")
    return bad


def guest_pass(limit: int | None) -> dict | None:
    env = {"MATRIX_ROWS": "full", "MATRIX_TOOLS": "iscsikit,open-iscsi"}
    if limit:
        env["MATRIX_LIMIT"] = str(limit)
    return guest_probe.run(str(HERE.parent / "tests" / "vm" / "probes" / "negotiation_story.py"), env,
                           timeout=6 * 3600)


def tgtd_pass(limit: int | None) -> list[dict]:
    import tgtd_harness
    rows = matrix.full_matrix()[:limit] if limit else matrix.full_matrix()
    out = []
    with tempfile.TemporaryDirectory() as d, tgtd_harness.Tgtd(Path(d)) as tgtd:
        iqn = tgtd.add_target(1, "matrix", lun_size=16 << 20)
        for i, row in enumerate(rows):
            try:
                res = tgtd_harness.matrix_row(tgtd, iqn, 1, row, seed=i)
            except Exception as e:     # a failed row is a result, not the end of the bench
                res = {"error": f"{type(e).__name__}: {e}"}
            res.update(row=row, label=matrix.label(row), expected=matrix.expected(row))
            out.append(res)
    return out


def summarise(guest: dict | None, tgtd: list | None) -> None:
    if guest:
        ours, ref = guest["rows"], guest.get("open_iscsi_rows", [])
        bad = {r["label"]: check_guest_row(r) for r in ours if check_guest_row(r)}
        ref_bad = {r["label"]: check_guest_row(r) for r in ref if check_guest_row(r)}
        same = sum(1 for a, b in zip(ours, ref) if a.get("kernel") == b.get("kernel"))
        print(f"LIO, iscsikit: {len(ours) - len(bad)}/{len(ours)} rows as RFC 7143 says, data equal "
              f"({guest['total_s']} s)")
        print(f"LIO, open-iscsi: {len(ref) - len(ref_bad)}/{len(ref)} rows ({guest.get('open_iscsi_total_s')} s); "
              f"sysfs values equal to iscsikit's in {same}/{min(len(ours), len(ref))}")
        for label, why in list(bad.items())[:20]:
            print(f"  iscsikit {label}: {'; '.join(why)}")
        for label, why in list(ref_bad.items())[:20]:
            print(f"  open-iscsi {label}: {'; '.join(why)}")
        for key in ("write_s", "read_s", "login_s"):
            a = [r["io"][key] if key != "login_s" else r["login_s"] for r in ours if "io" in r]
            b = [r["io"][key] if key != "login_s" else r["login_s"] for r in ref if "io" in r]
            if a and b:
                print(f"  {key}: median iscsikit {statistics.median(a):.2f} s, open-iscsi "
                      f"{statistics.median(b):.2f} s, ratio {statistics.median(a) / statistics.median(b):.2f}; "
                      f"sum {sum(a):.1f} / {sum(b):.1f}")
    if tgtd:
        bad = [r for r in tgtd if "error" in r or r["negotiated"] != r["expected"] or r["bad"]]
        print(f"tgtd (userspace): {len(tgtd) - len(bad)}/{len(tgtd)} rows as RFC 7143 says, data equal; "
              f"write {sum(r.get('write_s', 0) for r in tgtd):.1f} s, read {sum(r.get('read_s', 0) for r in tgtd):.1f} s")
        for r in bad[:20]:
            print(f"  {r['label']}: {r.get('error') or (r.get('negotiated'), r['expected'], r.get('bad'))}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, help="only the first N rows")
    ap.add_argument("--json", help="write every row's result here")
    ap.add_argument("--no-guest", action="store_true")
    ap.add_argument("--no-tgtd", action="store_true")
    args = ap.parse_args()
    guest = tgtd = None
    if not args.no_tgtd:
        tgtd = tgtd_pass(args.limit)
    if not args.no_guest:
        guest = guest_pass(args.limit)
        if guest is None:
            return 1
    if args.json:
        Path(args.json).write_text(json.dumps({"guest": guest, "tgtd": tgtd}, indent=1) + "\n")
    summarise(guest, tgtd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
