"""target/record.py: the dataclass subset model.py and plan.py use, and the one-shot path's imports."""

import os
import subprocess
import sys

import pytest

from iscsikit.target.record import dataclass, field


@dataclass
class Thing:
    name: str
    size: int = 0
    tags: dict = field(default_factory=dict)
    seen: int | None = field(default=None, compare=False)


def test_fields_defaults_and_factories():
    a, b = Thing("a"), Thing("a", 0)
    assert a == b and a.tags == {} and a.tags is not b.tags
    a.tags["x"] = 1
    assert b.tags == {} and a != b
    assert Thing("a", seen=1) == Thing("a", seen=2)          # compare=False
    assert Thing("a") != Thing("b") and Thing("a", 1) != Thing("a", 2)
    assert repr(Thing("a", 2)) == "Thing(name='a', size=2, tags={}, seen=None)"
    assert Thing.size == 0 and "tags" not in Thing.__dict__
    with pytest.raises(TypeError):
        hash(Thing("a"))


@pytest.mark.parametrize("args, kw, msg", [
    ((), {}, "missing required argument 'name'"),
    (("a",), {"bogus": 1}, "unexpected keyword argument 'bogus'"),
    (("a",), {"name": "b"}, "multiple values for argument 'name'"),
    (("a", 1, {}, None, 5), {}, "takes 4 positional arguments"),
])
def test_bad_construction_is_a_type_error(args, kw, msg):
    with pytest.raises(TypeError, match=msg):
        Thing(*args, **kw)


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError):
        @dataclass
        class Bad:
            a: int = 0
            b: int


def test_one_shot_ls_imports_nothing_heavy(tmp_path):
    """The Cinder-shape one-shot path (cli/target.py's fast commands) stays free of the
    imports that cost it seconds in the lab guest (bench/results/target_cinder.md)."""
    root = tmp_path / "configfs"
    (root / "core").mkdir(parents=True)
    (root / "iscsi").mkdir()
    code = ("import sys\nfrom iscsikit.cli.target import main\nfrom iscsikit.target import ops, manager\n"
            f"rc = main(['--configfs', {str(root)!r}, '--save-file', {str(tmp_path / 's.json')!r}, 'ls', '/iscsi'])\n"
            "heavy = ('dataclasses', 'inspect', 'uuid', 'pathlib', 'configshell', 'rtslib', 'pyparsing', "
            "'argparse', 'json', 'typing')\n"
            "print(rc, sorted(m for m in heavy if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, NO_COLOR="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout


def test_a_factory_runs_only_for_a_field_not_given():
    """A snapshot of 1000 targets makes ~10,000 records: NodeACL(chap=Chap()) must not
    make a second Chap for the default and throw it away."""
    made = []

    @dataclass
    class Holder:
        name: str
        box: list = field(default_factory=lambda: made.append(1) or [])
    given = ["mine"]
    h = Holder("a", box=given)
    assert h.box is given and made == []
    assert Holder("b", given).box is given and made == []
    assert Holder("c").box == [] and made == [1]
    assert list(vars(Holder("d"))) == ["name", "box"]
