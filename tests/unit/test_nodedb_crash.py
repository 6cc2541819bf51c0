"""Crash safety: a writer SIGKILLed in the middle of record updates, 100 times.

After every kill the database still parses, and the record holds either the value
before or the value after an update (temp file + fsync + rename, under the lock).
"""

import os
import random
import signal
import subprocess
import sys
import time

from iscsikit.initiator.nodedb import NodeDB, NodeId

WRITER = r"""
import sys
from iscsikit.initiator.nodedb import NodeDB, NodeId
db = NodeDB(sys.argv[1])
nid = NodeId("iqn.2026-11.org.example:crash", "127.0.0.1", 3260, 1, "default")
i = int(sys.argv[2])
print("ready", flush=True)
while True:
    i += 1
    db.update_node(nid, [("node.session.cmds_max", str(16 + i % 2)),
                         ("node.session.auth.username", f"user{i % 2}")])
"""


def test_sigkilled_writer_never_leaves_a_torn_record(tmp_path):
    db = NodeDB(str(tmp_path))
    nid = NodeId("iqn.2026-11.org.example:crash", "127.0.0.1", 3260, 1, "default")
    db.create_node(nid)
    rng = random.Random(7)
    seen = set()
    for round_ in range(100):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(round_)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.02))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        v = NodeDB(str(tmp_path)).read_node(nid).values
        pair = (v["node.session.cmds_max"], v["node.session.auth.username"])
        # each update writes both keys at once: the record is all-old or all-new, never mixed
        assert pair in {("16", "user0"), ("17", "user1"), ("128", "")}, pair
        seen.add(pair)
        leftovers = [f for f in os.listdir(tmp_path / "nodes" / nid.target / nid.portal_dir)
                     if f != "default"]
        assert all(f.startswith(".") for f in leftovers), leftovers   # a killed writer's temp file, ignored
        assert NodeDB(str(tmp_path)).node_ids() == [nid]
    assert len(seen) >= 2   # the kills really landed between different updates
