"""Run in the lab guest after a restore: the kernel's own cost of clearing LIO, per kind of step.

The fewest syscalls that empty the tree, serially, with no reads beyond listdir: what
any tool must at least wait for. bench/results/target_restore.md quotes it.

    iscsikit-target restoreconfig /tmp/bench/n250.json && python bench/probes/lio_clear_floor.py
"""

import collections
import os
import time

ROOT = "/sys/kernel/config/target"
spent: dict[str, float] = collections.defaultdict(float)
count: collections.Counter = collections.Counter()


def timed(kind: str, fn, *args) -> None:
    t = time.monotonic()
    fn(*args)
    spent[kind] += time.monotonic() - t
    count[kind] += 1


def unlink_links(d: str, kind: str) -> None:
    for e in os.listdir(d):
        if os.path.islink(f"{d}/{e}"):
            timed(kind, os.unlink, f"{d}/{e}")


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


t0 = time.monotonic()
for t in os.listdir(f"{ROOT}/iscsi"):
    tdir = f"{ROOT}/iscsi/{t}"
    if not os.path.isdir(tdir) or t == "discovery_auth":
        continue
    for tp in (d for d in os.listdir(tdir) if d.startswith("tpgt_")):
        tpg = f"{tdir}/{tp}"
        timed("tpg disable", write, f"{tpg}/enable", "0")
        for acl in os.listdir(f"{tpg}/acls"):
            for ml in (d for d in os.listdir(f"{tpg}/acls/{acl}") if d.startswith("lun_")):
                unlink_links(f"{tpg}/acls/{acl}/{ml}", "mapped LUN unlink")
                timed("mapped LUN rmdir", os.rmdir, f"{tpg}/acls/{acl}/{ml}")
            timed("ACL rmdir", os.rmdir, f"{tpg}/acls/{acl}")
        for lun in os.listdir(f"{tpg}/lun"):
            unlink_links(f"{tpg}/lun/{lun}", "LUN unlink")
            timed("LUN rmdir", os.rmdir, f"{tpg}/lun/{lun}")
        for np in os.listdir(f"{tpg}/np"):
            timed("portal rmdir", os.rmdir, f"{tpg}/np/{np}")
        timed("TPG rmdir", os.rmdir, tpg)
    timed("target rmdir", os.rmdir, tdir)
for hba in os.listdir(f"{ROOT}/core"):
    if hba == "alua" or not os.path.isdir(f"{ROOT}/core/{hba}"):
        continue
    for so in os.listdir(f"{ROOT}/core/{hba}"):
        if os.path.isdir(f"{ROOT}/core/{hba}/{so}"):
            timed("storage object rmdir", os.rmdir, f"{ROOT}/core/{hba}/{so}")
    timed("HBA rmdir", os.rmdir, f"{ROOT}/core/{hba}")
print(f"serial clear: {time.monotonic() - t0:.2f} s")
for kind in sorted(spent, key=spent.get, reverse=True):
    print(f"  {kind:22} n={count[kind]:5}  {spent[kind]:6.2f} s  {spent[kind] / count[kind] * 1000:6.1f} ms each")
