"""The Gradescope zip as installed: what its wheel ships, and what the student's code can read.

* The wheel holds the shipped rubrics and models by pyproject.toml's explicit list: a private
  rubric (grading seeds inline) or model an instructor keeps in the checkout's ``rubrics/`` or
  ``reference/models/`` is not packed, whatever its name.
* Run as Gradescope runs it (root, no bubblewrap in the image, the zip's files in
  ``ROOT/source`` with the zip's modes and setup.sh's closing of ``source/``, the wheel installed
  into a virtual environment of a system Python), a notebook's code runs as another user (uid
  65534) and cannot read the rubric and its seeds; it sees only the shipped rubrics in the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from grader.gradescope.autograder import build_autograder, shipped_data
from grader.scoring.rubric import load_rubric

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = Path("/usr/bin/python3")
PRIVATE_SEEDS = "424242-424299"


def _source_copy(dest: Path) -> Path:
    """The grader's source tree as an instructor's checkout holds it, plus their private files."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.grading")
    for folder in ("grader", "rubrics", "reference/models", "lock"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    private = (REPO / "rubrics" / "lunarlander.toml").read_text().replace('id = "lunarlander', 'id = "hw9-private')
    (dest / "rubrics" / "hw9_private.toml").write_text(private + f"\n# grading = \"{PRIVATE_SEEDS}\"\n")
    (dest / "rubrics" / "baselines" / "hw9_private.json").write_text("{}")
    shutil.copyfile(REPO / "reference/models/lunarlander_seed.onnx", dest / "reference/models/exam_answer.onnx")
    return dest


def test_the_wheel_ships_only_the_listed_rubrics_and_models(tmp_path):
    source = _source_copy(tmp_path / "checkout")
    zip_path = build_autograder(rubric=REPO / "rubrics" / "lunarlander.toml", out=tmp_path / "a.zip", source=source)
    with zipfile.ZipFile(zip_path) as z:
        (wheel_name,) = [n for n in z.namelist() if n.endswith(".whl")]
        import io

        wheel = zipfile.ZipFile(io.BytesIO(z.read(wheel_name)))
    data = {n for n in wheel.namelist() if n.startswith("grader/_data/")}
    assert not any("hw9_private" in n or "exam_answer" in n for n in wheel.namelist())
    assert data == shipped_data(REPO)
    assert "grader/_data/rubrics/lunarlander.toml" in data and "grader/_data/reference/models/mspacman_dqn.onnx" in data
    assert not any(PRIVATE_SEEDS.encode() in wheel.read(n) for n in wheel.namelist())


def _installed_root() -> Path:
    """A world-traversable folder standing for /autograder (pytest's own temporary folders are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="gradescope-installed-", dir="/tmp"))
    root.chmod(0o755)
    return root


def _install(root: Path, zip_path: Path) -> Path:
    """The zip's files in ROOT/source (with the zip's modes), setup.sh's permissions, the wheel in a venv."""
    source = root / "source"
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(source)
        for info in z.infolist():
            (source / info.filename).chmod((info.external_attr >> 16) & 0o777)
        setup = z.read("setup.sh").decode()
    assert 'chmod 700 "$SOURCE"' in setup  # setup.sh closes the source folder: done here the same way
    source.chmod(0o700)
    venv = root / "rl-grader-venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (wheel,) = source.glob("rl_grader-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    site = next(venv.glob("lib/python3*/site-packages"))
    deps = next(Path(sys.prefix).glob("lib/python3*/site-packages"))  # the dependencies, as setup.sh would install them
    (site / "zz_dependencies.pth").write_text(str(deps) + "\n")
    return venv


THIEF = '''class Thief:
    import os, glob
    print("uid", os.getuid())
    print("interfaces", sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]))
    for path in {paths!r}:
        try:
            print("read", path, open(path).read()[:2000] if os.path.isfile(path) else os.listdir(path))
        except OSError as e:
            print("refused", path, type(e).__name__)
    import grader
    print("shipped", sorted(os.listdir(os.path.join(os.path.dirname(grader.__file__), "_data", "rubrics"))))
'''


@pytest.mark.slow
def test_installed_zip_runs_student_code_as_another_user_that_cannot_read_the_seeds(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: Gradescope runs the autograder as root, and the student's code must run as another user")
    if not SYSTEM_PYTHON.is_file() or subprocess.run([str(SYSTEM_PYTHON), "-c", "import venv"]).returncode != 0:
        pytest.skip("no system Python with venv at /usr/bin/python3 (Gradescope's image has one)")
    pytest.importorskip("torch")
    import notebook_fixtures as F

    checkout = _source_copy(tmp_path / "checkout")  # with another homework's private rubric in rubrics/
    zip_path = build_autograder(rubric=REPO / "rubrics" / "mspacman.toml", out=tmp_path / "mspacman.zip", source=checkout)
    seeds = load_rubric(REPO / "rubrics" / "mspacman.toml").all_grading_seeds()
    root = _installed_root()
    try:
        _install(root, zip_path)
        rubric, secret = root / "source" / "mspacman.toml", str(seeds[0])
        assert secret in rubric.read_text()  # the grading seeds, inline: what must stay unread
        thief = THIEF.format(paths=[str(rubric), str(root / "source" / "baselines"), str(root / "source")])
        F.write_notebook(root / "submission" / "homework.ipynb", F.mspacman_cells(params=F.PARAMS + "\n" + thief))
        (root / "results").mkdir()
        no_bwrap = root / "bin"
        no_bwrap.mkdir()
        for tool in ("unshare", "setpriv", "id"):  # util-linux and coreutils as in Gradescope's image; no bwrap
            if shutil.which(tool):
                (no_bwrap / tool).symlink_to(shutil.which(tool))
        env = {"PATH": str(no_bwrap), "HOME": str(root), "GRADESCOPE_ROOT": str(root), "LANG": "C.UTF-8"}
        proc = subprocess.run([str(SYSTEM_PYTHON), str(root / "source" / "run_autograder")], env=env, cwd=root,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = json.loads((root / "results" / "results.json").read_text())
        printed = (root / "results" / "report" / "notebook_stdout.txt").read_text()
        assert "uid 65534" in printed, (printed, results)
        if shutil.which("unshare"):  # the network is cut off for the dropped uid too (an empty namespace)
            assert "interfaces ['lo']" in printed, printed
        for path in (rubric, root / "source" / "baselines", root / "source"):
            assert f"refused {path} PermissionError" in printed, printed
        assert secret not in printed and secret not in json.dumps(results)
        assert "shipped ['__init__.py', 'baselines', 'cartpole.toml', 'lunarlander.toml', 'mspacman.toml']" in printed \
            or "shipped ['baselines', 'cartpole.toml', 'lunarlander.toml', 'mspacman.toml']" in printed, printed
    finally:
        shutil.rmtree(root, ignore_errors=True)
