"""The package's layers: imports point down (README "Layers"), checked on the source.

    cli                      front ends: parse, call, print
    initiator | target       the domains (neither imports the other)
    kernel                   netlink, sysfs, modules
    proto                    sans-IO iSCSI
    lab                      the QEMU harness, used by tests and by `iscsikit lab` (cli)

Every import of an iscsikit module, at any depth (lazy imports inside
functions included), is resolved to the layer it lands in.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "userspace" / "iscsikit"
RANK = {"cli": 4, "initiator": 3, "target": 3, "lab": 3, "kernel": 2, "proto": 1}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every iscsikit import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "iscsikit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "iscsikit":
                continue
            if node.module is None or mod.count(".") == 0:
                # `from . import x` / `from iscsikit import cli`: the names are modules or packages
                found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, mod))
    return found


def violations() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer_of(module_name(path))
        if own is None:
            continue
        for line, target in imports_of(path):
            other = layer_of(target)
            if other is None or other == own:
                continue
            if RANK[other] >= RANK[own]:
                out.append(f"{path.relative_to(PACKAGE)}:{line}: {own} imports {target} ({other})")
    return out


def test_imports_point_down_the_layers():
    assert violations() == []


def test_the_check_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    # the check itself: a relative import upwards inside a function is caught
    pkg = tmp_path / "iscsikit"
    for d in ("proto", "cli"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "adm.py").write_text("")
    (pkg / "proto" / "bad.py").write_text("def f():\n    from ..cli import adm\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert violations() == ["proto/bad.py:2: proto imports iscsikit.cli (cli)"]


def module_exists(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def module_graph() -> dict[str, set[str]]:
    """module -> the iscsikit modules it imports, at any depth of the file, including
    `_Lazy("iscsikit.x")` (the CLI's import-on-first-use) and `from pkg import module`."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        edges = set()
        for _line, target in imports_of(path):
            parent, _, leaf = target.rpartition(".")
            if not module_exists(target) and parent and module_exists(parent):
                target = parent            # `from pkg.mod import name`: the edge is pkg.mod
            if target != "iscsikit" and target != name:
                edges.add(target)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_Lazy"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                edges.add(node.args[0].value)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(module_graph()) == []


def test_the_cycle_check_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(RANK))
def test_every_layer_exists(layer):
    # a renamed package would make the rule above vacuous for it
    assert (PACKAGE / layer / "__init__.py").exists()


def test_proto_knows_no_exit_codes():
    # proto/ reports outcomes; iscsiadm's exit codes are the initiator's (initiator/errors.py)
    for path in (PACKAGE / "proto").rglob("*.py"):
        text = path.read_text()
        assert "exitcodes" not in text and "ExitCode" not in text, path.name


def test_every_user_visible_error_has_one_base():
    from iscsikit.initiator import discovery, login_io, mgmt, nodedb, records, session
    from iscsikit.initiator.errors import IscsiError
    for cls in (mgmt.MgmtError, session.SessionError, login_io.LoginError, nodedb.DBError,
                records.RecordError, discovery.DiscoveryError):
        assert issubclass(cls, IscsiError), cls
    e = records.RecordError(["a", "b"], 7)
    assert (e.exit_code, e.code, e.lines, str(e)) == (7, 7, ["a", "b"], "a; b")


def test_one_door_to_the_daemon():
    # every caller goes through initiator/client.py; mgmt.py is its framing, the daemon the other end
    repo = PACKAGE.parents[1]
    allowed = {PACKAGE / "initiator" / "client.py", PACKAGE / "initiator" / "mgmt.py",
               PACKAGE / "initiator" / "daemon.py", repo / "tests" / "unit" / "test_mgmt.py"}
    found = []
    for top in (PACKAGE, repo / "tests", repo / "bench"):
        for path in top.rglob("*.py"):
            if path not in allowed and re.search(r"\bmgmt\.(call|call_many|_connect|_send)\(", path.read_text()):
                found.append(str(path.relative_to(repo)))
    assert found == []
