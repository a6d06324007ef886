"""The locked environment (lock/*.txt, docs/environment.md) and `grade doctor`.

The lock covers every installed distribution at its pinned version; its subsets agree with it; the
packages that decide returns have one version on every supported Python; `grade doctor` passes on
the lock's environment and fails, naming the seed or the package, when a baselines file's return
was altered (a copy) or a version differs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader import doctor
from grader.scoring import versions

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "lock" / "requirements.txt"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def _environment(version: str) -> dict[str, str]:
    """Marker variables of a Linux x86-64 CPython ``version``."""
    return {"python_version": version, "python_full_version": f"{version}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def grade(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


# --- the lock -------------------------------------------------------------------------------------
def test_the_lock_covers_every_installed_distribution():
    pins = doctor.read_lock(LOCK)
    installed = versions.installed_versions()
    unlocked = sorted(n for n in installed if n not in pins and n not in doctor.NOT_LOCKED)
    assert unlocked == [], f"installed but not in {LOCK.name} (run python3 tools/update_lock.py): {unlocked}"
    off = {n: (v, pins[n]) for n, v in installed.items() if n in pins and not versions.same_release(v, pins[n])}
    assert off == {}, f"installed versions that are not the lock's (run ./setup.sh --test): {off}"


def test_every_locked_line_has_hashes_and_torch_is_pinned_in_the_header():
    text = LOCK.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 4)[-1])
    pinned = [b for b in blocks if re.match(r"[A-Za-z0-9][\w.-]*==", b)]
    assert len(pinned) > 50
    assert all("--hash=sha256:" in b for b in pinned), [b.split()[0] for b in pinned if "--hash" not in b]
    assert re.search(r"(?m)^# unhashed: torch==2\.13\.0 ", text)
    assert not re.search(r"(?m)^(torch|nvidia-|triton)", text), "torch and CUDA packages stay out of the hashed lock"
    assert doctor.read_lock(LOCK)["torch"] == "2.13.0"


@pytest.mark.parametrize("subset", ["grader.txt", "notebooks.txt"])
def test_the_subsets_pin_what_the_full_lock_pins(subset):
    for version in SUPPORTED:
        env = _environment(version)
        full, part = doctor.read_lock(LOCK, environment=env), doctor.read_lock(LOCK.with_name(subset), environment=env)
        assert part and {n: full.get(n) for n in part} == part, (version, subset)
    assert ("torch" in doctor.read_lock(LOCK.with_name(subset))) == (subset == "notebooks.txt")


def test_the_packages_that_decide_returns_have_one_version_on_every_supported_python():
    seen = {version: {n: doctor.read_lock(LOCK, environment=_environment(version)).get(n) for n in versions.DECISIVE}
            for version in SUPPORTED}
    assert all(None not in pins.values() for pins in seen.values()), seen
    assert len({json.dumps(p, sort_keys=True) for p in seen.values()}) == 1, seen


def test_the_update_tool_names_the_same_decisive_packages():
    text = (REPO / "tools" / "update_lock.py").read_text()
    block = text[text.index("DECISIVE = {"):text.index("}", text.index("DECISIVE = {"))]
    assert set(re.findall(r'"([\w-]+)":', block)) == set(versions.DECISIVE)


def test_ml_dtypes_is_held_below_its_slow_import():
    """ml_dtypes 0.7 takes 0.6-1.3 s to import (onnx imports it): the lock holds it below."""
    major, minor = map(int, doctor.read_lock(LOCK)["ml-dtypes"].split(".")[:2])
    assert (major, minor) < (0, 7)


def test_setup_and_ci_install_from_the_lock():
    setup = (REPO / "setup.sh").read_text()
    assert "--require-hashes --no-deps -r \"$lock\"" in setup and "lock/requirements.txt" in setup
    assert "lock/grader.txt" in setup and "--no-deps -e ." in setup
    # each browser piece on its own: chromium present, its driver missing still installs the driver
    assert "command -v chromedriver >/dev/null || missing+=(chromium-driver)" in setup
    ci = (REPO / ".ci" / "run").read_text()
    assert "./setup.sh --test" in ci and "grade doctor" in ci


# --- grade doctor -----------------------------------------------------------------------------------
def _copy_rubric(tmp_path: Path, task: str) -> Path:
    """A copy of the shipped rubric, its baselines file and its reference models, in a temporary folder."""
    (tmp_path / "rubrics" / "baselines").mkdir(parents=True)
    shutil.copytree(REPO / "reference" / "models", tmp_path / "reference" / "models")
    shutil.copy(REPO / "rubrics" / f"{task}.toml", tmp_path / "rubrics")
    shutil.copy(REPO / "rubrics" / "baselines" / f"{task}.json", tmp_path / "rubrics" / "baselines")
    return tmp_path / "rubrics" / f"{task}.toml"


def _seeds(rubric: Path) -> list[int]:
    from grader.scoring.rubric import load_rubric

    return load_rubric(rubric, materialize=False).all_grading_seeds()


def test_doctor_passes_on_the_locked_environment():
    proc = grade("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for task in ("cartpole", "lunarlander", "mspacman"):
        assert re.search(rf"(?m)^ok +{task} +{task}: \d+ replayed episodes .* match baselines/{task}\.json exactly$",
                         proc.stdout), proc.stdout
    assert re.search(r"(?m)^ok +lock +every locked package at its pin", proc.stdout), proc.stdout
    assert "providers:" in proc.stdout and "CPUExecutionProvider" in proc.stdout
    assert re.search(r"user namespaces: ", proc.stdout) and re.search(r"(?m)^(ok|WARN) +sandbox ", proc.stdout)
    assert "fallback: " in proc.stdout or "ran without bubblewrap" in proc.stdout  # what runs without bubblewrap
    assert proc.stdout.count("was made with the installed versions (gymnasium ") == 3


def test_doctor_fails_naming_the_seed_of_an_altered_return(tmp_path):
    rubric = _copy_rubric(tmp_path, "cartpole")
    baselines = tmp_path / "rubrics" / "baselines" / "cartpole.json"
    data = json.loads(baselines.read_text())
    expected = data["entries"]["reference"]["returns"][0]
    data["entries"]["reference"]["returns"][0] = expected - 1.0
    baselines.write_text(json.dumps(data))
    proc = grade("doctor", "--rubric", str(rubric))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    seed = _seeds(rubric)[0]
    assert f"FAIL  cartpole     cartpole: reference on seed {seed}: expected return {expected - 1.0!r} " \
           f"(from baselines/cartpole.json), got {expected!r}" in proc.stdout, proc.stdout
    assert "grade doctor: 1 problem(s)" in proc.stdout
    untouched = grade("doctor", "--rubric", str(_copy_rubric(tmp_path / "b", "cartpole")))
    assert untouched.returncode == 0, untouched.stdout


def test_doctor_replays_the_last_seed_too(tmp_path):
    """The last of the file's seeds is among those replayed: a list shifted or cut short shows."""
    assert doctor.picks_of(100, 2) == [0, 99] and doctor.picks_of(10, 3) == [0, 1, 9] and doctor.picks_of(1, 2) == [0]
    rubric = _copy_rubric(tmp_path, "cartpole")
    baselines = tmp_path / "rubrics" / "baselines" / "cartpole.json"
    data = json.loads(baselines.read_text())
    data["entries"]["random"]["returns"][-1] += 3.0
    baselines.write_text(json.dumps(data))
    proc = grade("doctor", "--rubric", str(rubric))
    seed = _seeds(rubric)[data["n_seeds"] - 1]
    assert proc.returncode == 1 and f"random on seed {seed}: expected return" in proc.stdout, proc.stdout


def test_doctor_fails_naming_a_package_off_its_pin(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text(re.sub(r"(?m)^gymnasium==\S+", "gymnasium==0.29.1", LOCK.read_text()))
    proc = grade("doctor", "--lock", str(lock), "--rubric", str(REPO / "rubrics" / "cartpole.toml"))
    assert proc.returncode == 1, proc.stdout
    assert re.search(r"(?m)^FAIL +lock +gymnasium \S+ is installed, the lock pins 0\.29\.1; it decides returns$",
                     proc.stdout), proc.stdout


def test_a_version_other_than_the_baselines_is_named_for_batch_and_serve(tmp_path, capsys):
    rubric = _copy_rubric(tmp_path, "cartpole")
    assert versions.baselines_version_warning(rubric) is None  # the shipped files were made in the lock's environment
    baselines = tmp_path / "rubrics" / "baselines" / "cartpole.json"
    data = json.loads(baselines.read_text())
    data["versions"]["numpy"] = "1.26.4"
    baselines.write_text(json.dumps(data))
    warning = versions.baselines_version_warning(rubric)
    assert warning and "numpy 1.26.4 -> " in warning and "grade doctor" in warning
    from grader.cli import main

    class_dir = tmp_path / "class"
    class_dir.mkdir()
    capsys.readouterr()
    main(["batch", str(class_dir), "--rubric", str(rubric), "--no-progress", "--out", str(tmp_path / "out")])
    assert "warning: the installed packages that decide returns differ" in capsys.readouterr().err


def _update_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_lock", REPO / "tools" / "update_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_update_tool_says_which_grades_could_change(capsys):
    tool = _update_tool()
    old = tool.pins(LOCK)
    new = dict(old)
    new[("ale-py", "")] = "0.13.0"
    new[("rich", "")] = "99.0.0"
    tool.report_changes(old, new)
    out = capsys.readouterr().out
    assert re.search(r"ale-py: 0\.12\.1 -> 0\.13\.0 +GRADES COULD CHANGE: mspacman", out), out
    assert re.search(r"(?m)^  rich: \S+ -> 99\.0\.0$", out), out  # not a package that decides returns
    forked = dict(old)
    forked[("numpy", "python_full_version >= '3.11'")] = "2.4.6"
    problems = tool.check_decisive_single_version(forked)
    assert len(problems) == 1 and problems[0].startswith("numpy resolves to 2.2.6, 2.4.6 across Pythons")
    assert tool.check_decisive_single_version(old) == []


def test_doctor_says_whether_notebook_code_would_run_without_bubblewrap(monkeypatch):
    monkeypatch.delenv("GRADER_ALLOW_UNSANDBOXED", raising=False)
    said = " ".join(f.message for f in doctor.check_sandbox())
    assert "notebook code is NOT run" in said and "GRADER_ALLOW_UNSANDBOXED=1" in said
    monkeypatch.setenv("GRADER_ALLOW_UNSANDBOXED", "1")
    said = " ".join(f.message for f in doctor.check_sandbox())
    assert "GRADER_ALLOW_UNSANDBOXED=1 is set: notebook code runs in that fallback too" in said
