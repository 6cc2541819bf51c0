from pathlib import Path

import pytest

from iscsikit.lab import cache
from iscsikit.lab.errors import LabError


def test_building_renames_only_when_complete(tmp_path):
    final = tmp_path / "entry"
    with cache.building(final, is_dir=True) as tmp:
        (tmp / "f").write_text("x")
        assert not final.exists()
    assert (final / "f").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


@pytest.mark.parametrize("is_dir", [True, False])
def test_interrupted_build_leaves_nothing(tmp_path, is_dir):
    final = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt):
        with cache.building(final, is_dir=is_dir) as tmp:
            if is_dir:
                (tmp / "half").write_text("x")
            else:
                tmp.write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_concurrent_build_keeps_the_first(tmp_path):
    final = tmp_path / "entry"
    with cache.building(final, is_dir=True) as tmp:
        (tmp / "mine").write_text("late")
        final.mkdir()
        (final / "theirs").write_text("first")
    assert [p.name for p in final.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_sweep_removes_stale_temporaries(tmp_path):
    (tmp_path / f"{cache.TMP_PREFIX}abc").mkdir()
    (tmp_path / f"{cache.TMP_PREFIX}f").write_text("")
    (tmp_path / "kept").mkdir()
    cache.sweep_stale(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_not_enough_space_names_cause_and_fix(tmp_path):
    with pytest.raises(LabError) as e:
        cache.ensure_space(tmp_path, 1 << 40, "a huge thing")
    msg = str(e.value)
    assert "not enough space" in msg and str(tmp_path) in msg and "XDG_CACHE_HOME" in msg
    assert "\n" not in msg


def test_cache_root_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_root() == tmp_path / "iscsikit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_root() == Path(tmp_path) / ".cache" / "iscsikit"
