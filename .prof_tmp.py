import cProfile, pstats, io, json, os, subprocess, sys, time
sys.path.insert(0, "/work/wt-target/bench/probes")
import cinder_probe as cp
os.makedirs(cp.DIR, exist_ok=True)
n = 1000
for i in range(n):
    with open(f"{cp.DIR}/v{i:04d}.img", "ab") as f: f.truncate(1 << 20)
json.dump(cp.saveconfig_for(n), open(f"{cp.DIR}/n.json", "w"))
print("restore", cp.timed([cp.IKT, "restoreconfig", f"{cp.DIR}/n.json", "clear_existing=true"]))
from iscsikit.cli import target as cli
for argv in (["ls", "/iscsi"], *cp.volume_commands("p1")):
    pr = cProfile.Profile(); t = time.monotonic()
    so = sys.stdout; sys.stdout = io.StringIO()
    pr.enable(); rc = cli.main(list(argv)); pr.disable()
    sys.stdout = so
    print("====", argv, rc, round(time.monotonic() - t, 2))
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(12); print(s.getvalue()[-3500:])
subprocess.run([cp.IKT, "clearconfig", "confirm=true"])
