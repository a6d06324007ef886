"""The compiled-template cache (grader.outputs.templating): used when it is valid, never stale, never fatal."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from jinja2 import Environment, FileSystemLoader

from grader.outputs.templating import bytecode_cache, jinja_env


@pytest.fixture()
def temp_root(tmp_path, monkeypatch) -> Path:
    """The user's cache folder, pointed at this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cache_dir(root: Path) -> Path:
    return root / "rl-grader" / "templates"


def _env(folder: Path) -> Environment:
    return Environment(loader=FileSystemLoader(str(folder)), bytecode_cache=bytecode_cache())


def test_a_second_process_loads_the_compiled_template_instead_of_compiling(temp_root, tmp_path, monkeypatch):
    (tmp_path / "t.html").write_text("<p>{{ who }}</p>")
    assert _env(tmp_path).get_template("t.html").render(who="a") == "<p>a</p>"
    cache = _cache_dir(temp_root)
    assert len(list(cache.glob("__jinja2_*.cache"))) == 1
    assert oct(cache.stat().st_mode & 0o777) == "0o700"

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled although a valid cache entry exists")

    monkeypatch.setattr(Environment, "compile", no_compiling)
    assert _env(tmp_path).get_template("t.html").render(who="b") == "<p>b</p>"


def test_an_edited_template_is_compiled_again_not_served_stale(temp_root, tmp_path):
    (tmp_path / "t.html").write_text("old {{ x }}")
    assert _env(tmp_path).get_template("t.html").render(x=1) == "old 1"
    (tmp_path / "t.html").write_text("new {{ x }}")
    assert _env(tmp_path).get_template("t.html").render(x=1) == "new 1"


def test_a_corrupt_entry_is_a_miss(temp_root, tmp_path):
    (tmp_path / "t.html").write_text("{{ 1 + 1 }}")
    _env(tmp_path).get_template("t.html").render()
    for entry in _cache_dir(temp_root).glob("__jinja2_*.cache"):
        entry.write_bytes(entry.read_bytes()[:40])  # truncated mid-entry
    assert _env(tmp_path).get_template("t.html").render() == "2"


def test_an_unwritable_cache_never_fails_a_render(temp_root, tmp_path):
    if os.getuid() == 0:
        pytest.skip("root writes through the mode bits")
    (tmp_path / "t.html").write_text("ok")
    cache = bytecode_cache()
    os.chmod(cache.directory, 0o500)
    try:
        env = Environment(loader=FileSystemLoader(str(tmp_path)), bytecode_cache=cache)
        assert env.get_template("t.html").render() == "ok"
    finally:
        os.chmod(cache.directory, 0o700)


def test_a_failing_write_never_fails_a_render(temp_root, tmp_path, monkeypatch):
    (tmp_path / "t.html").write_text("ok")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", disk_full)
    assert _env(tmp_path).get_template("t.html").render() == "ok"


def test_a_planted_cache_folder_means_no_cache(temp_root, tmp_path):
    folder = _cache_dir(temp_root)
    folder.parent.mkdir(parents=True)
    folder.symlink_to(tmp_path)  # someone planted a link where the folder would be
    assert bytecode_cache() is None
    (tmp_path / "t.html").write_text("ok")
    assert _env(tmp_path).get_template("t.html").render() == "ok"
    folder.unlink()
    folder.mkdir()
    if os.getuid() == 0:  # another user's folder (only root can make one here)
        os.chown(folder, 65534, 65534)
        assert bytecode_cache() is None


def test_an_own_cache_folder_open_to_others_is_closed_and_used(temp_root):
    folder = _cache_dir(temp_root)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o777)
    assert bytecode_cache() is not None
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_the_report_environment_uses_the_cache(temp_root):
    jinja_env.cache_clear()  # an environment made for this test's cache folder
    try:
        from grader.outputs import report

        report.preload()  # the report's environment, as `grade` loads it
        assert list(_cache_dir(temp_root).glob("__jinja2_*.cache"))  # the report's templates, compiled and kept
    finally:
        jinja_env.cache_clear()
