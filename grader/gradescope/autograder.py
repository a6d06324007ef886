"""Gradescope: the autograder zip (``grade gradescope``) and ``results.json`` (``grade --gradescope FILE``).

    grade gradescope --rubric rubrics/lunarlander.toml --out autograder.zip [--seeds-file private.seeds]

:func:`build_autograder` writes a zip for Gradescope's Ubuntu image, as its specification asks
(https://gradescope-autograders.readthedocs.io/en/latest/specs/): at the top level ``setup.sh``
(installs the grader's wheel into a virtual environment), ``run_autograder`` (finds the student's
file in ``/autograder/submission``, grades it, writes ``/autograder/results/results.json``), the
rubric, its grading seeds file when it has one, the baselines file it names, and this package as
a wheel; nothing else (no tests, no reference agents). Entries are sorted with fixed timestamps,
so the same inputs give the same bytes.

The results themselves are built by :func:`grader.classroom.exports.gradescope_results`, the one builder,
through :func:`write_results`. ``GRADESCOPE_ROOT`` replaces ``/autograder`` (for tests) and
``GRADESCOPE_GRADE`` the ``grade`` command that ``run_autograder`` runs. Details: docs/gradescope.md.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from grader import resources
from grader.classroom.exports import EPISODE_TABLE_CHOICES
from grader.errors import SetupError
from grader.result import GradeResult
from grader.scoring.rubric import Rubric, RubricError, load_rubric, read_seeds_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The templates also read GRADESCOPE_ROOT (replaces /autograder in setup.sh and run_autograder) and
# GRADESCOPE_GRADE (the grade command run_autograder runs; default: grade).
EPISODES_ENV = "RL_GRADER_GRADESCOPE_EPISODES"  # visibility of the returns by episode, set by run_autograder
TEMPLATES = resources.gradescope_templates_dir()
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01: the wheel's own timestamps
DEFAULT_TIMEOUT_S = 1200
REPORT_NOTE = ("Gradescope shows this summary only: the full HTML report (the plot of the returns, the model card) "
               "is not uploaded. `grade check` on your file runs the same checks and writes that report on the "
               "public seeds.")


# --- results.json ---------------------------------------------------------------------------------
def max_points(rubric: Rubric) -> float:
    """The most a submission can earn under ``rubric`` (the one score: :attr:`Rubric.max_points`)."""
    return round(rubric.max_points, 4)


def write_results(result: GradeResult, path: str | Path, *, episode_table: str | None = None):
    """Write Gradescope's ``results.json`` for ``result`` to ``path`` (atomically).

    The points are the result's own (:mod:`grader.scoring.points`): an invalid submission shows 0 out of
    the rubric's maximum. ``episode_table`` is the visibility of the returns by episode (default
    ``$RL_GRADER_GRADESCOPE_EPISODES``, else ``after_published``). Returns what was written.
    """
    from grader.classroom.exports import write_gradescope

    if episode_table is None:
        episode_table = os.environ.get(EPISODES_ENV) or "after_published"
    if episode_table not in EPISODE_TABLE_CHOICES:
        raise SetupError(f"{EPISODES_ENV}={episode_table!r}: choose one of {', '.join(EPISODE_TABLE_CHOICES)}")
    return write_gradescope(result, Path(path), episode_table=episode_table, report_note=REPORT_NOTE)


# --- the rubric, its seeds and baselines, rewritten for the zip -------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def toml_dumps(data: dict, *, header: str = "") -> str:
    """TOML for the plain data that ``tomllib`` reads (tables, arrays of tables, scalars, arrays);
    checked by reading it back."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]

    def table(path: list[str], body: dict) -> None:
        for k, v in body.items():
            if not isinstance(v, dict) and not _is_table_array(v):
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in body.items():
            dotted = ".".join(_toml_key(p) for p in [*path, k])
            if isinstance(v, dict):
                lines.extend(["", f"[{dotted}]"])
                table([*path, k], v)
            elif _is_table_array(v):
                for item in v:
                    lines.extend(["", f"[[{dotted}]]"])
                    table([*path, k], item)

    table([], data)
    text = "\n".join(lines).strip("\n") + "\n"
    if tomllib.loads(text) != data:
        raise SetupError("internal error: the rewritten TOML does not read back as the original (report this)")
    return text


@dataclass
class RubricBundle:
    """What goes into the zip besides the scripts and the wheel: file name -> bytes."""

    rubric_name: str
    rubric: Rubric
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


REFERENCE_PRINTS = "reference_prints.json"


def _bundle_reference_prints(original: Rubric, data: dict, files: dict[str, bytes]) -> None:
    """The references' sha256 and weight prints (not the models) beside the rubric, so that
    ``run_autograder`` flags a handed-in copy of a reference model as every channel does."""
    weights = original.reference_weights or original.read_reference_weights()
    if not weights:
        return
    files[REFERENCE_PRINTS] = json.dumps({k: v.model_dump(mode="json") for k, v in weights.items()},
                                         sort_keys=True).encode("utf-8")
    data.setdefault("duplicates", {})["reference_prints"] = REFERENCE_PRINTS


def bundle_rubric(rubric_path: Path, *, grading_seeds_file: Path | None = None) -> RubricBundle:
    """The rubric rewritten to need only files in the zip: its grading seeds (``--seeds-file``, or
    its own ``grading_file``) as a seeds file beside it, or inline as they were; its baselines file
    under ``baselines/``; no ``references`` (the reference models are not shipped), but their weight
    prints in ``reference_prints.json``, so a copy of a reference is flagged there too. The result is
    validated: same seeds, same scoring, thresholds that resolve."""
    rubric_path = Path(rubric_path)
    original = load_rubric(rubric_path, materialize=False)  # its own files, as the instructor wrote them
    data = tomllib.loads(rubric_path.read_text(encoding="utf-8"))
    data.pop("references", None)
    name = f"{original.id}.toml"
    files: dict[str, bytes] = {}
    notes: list[str] = []
    seeds_source = Path(grading_seeds_file) if grading_seeds_file is not None else (
        original.resolve(original.seeds.grading_file) if original.seeds.grading_file else None)
    if seeds_source is not None:
        wanted = read_seeds_file(seeds_source)  # RubricError with the file's name when it is bad
        seeds_name = f"{original.id}.seeds"
        files[seeds_name] = seeds_source.read_bytes()
        data["seeds"] = {k: v for k, v in data["seeds"].items() if k not in ("grading", "grading_file")}
        data["seeds"]["grading_file"] = seeds_name
    else:
        wanted = original.all_grading_seeds()
        notes.append(f"the grading seeds are inline in {rubric_path.name} (seeds.grading); if that file is public "
                     "(the shipped rubrics are), students know them: pass --seeds-file private.seeds")
    if len(wanted) < original.episodes:
        raise RubricError(f"{original.episodes} episodes, but only {len(wanted)} grading seeds")
    if original.baselines:
        src = original.resolve(original.baselines)
        if not src.is_file():
            raise SetupError(f"the rubric names the baselines file {original.baselines}, which does not exist "
                             f"({src}); run `grade baselines --rubric {rubric_path}` first")
        files[f"baselines/{src.name}"] = src.read_bytes()
        data["baselines"] = f"baselines/{src.name}"
    _bundle_reference_prints(original, data, files)
    header = (f"Rubric {original.id!r} for the Gradescope autograder, written by `grade gradescope` from "
              f"{rubric_path.name}\n(sha256 {original.sha256[:16]}...): the same rubric, with paths inside the zip.")
    files[name] = toml_dumps(data, header=header).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="rl-grader-rubric-") as tmp:
        for rel, raw in files.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_bytes(raw)
        bundled = load_rubric(Path(tmp) / name)
        expected = original.materialize()
        problems = []
        if bundled.all_grading_seeds() != wanted:
            problems.append("grading seeds")
        if bundled.public_seeds() != original.public_seeds():
            problems.append("public seeds")
        if bundled.thresholds() != expected.thresholds() or bundled.scoring != expected.scoring:
            problems.append("scoring")
        if bundled.model_dump(exclude={"seeds", "baselines", "references", "duplicates"}) != \
                expected.model_dump(exclude={"seeds", "baselines", "references", "duplicates"}) or \
                bundled.duplicates.reference_copy != expected.duplicates.reference_copy:
            problems.append("settings")
        if problems:
            raise SetupError(f"internal error: the bundled rubric differs from {rubric_path} in its {', '.join(problems)}")
    bundled.path = None
    return RubricBundle(rubric_name=name, rubric=bundled, files=files, notes=notes)


# --- the wheel --------------------------------------------------------------------------------------
def source_root(source: str | Path | None = None) -> Path:
    """The folder holding the project's ``pyproject.toml`` and ``grader/`` (``source``, else the one
    this package was imported from)."""
    root = Path(source).resolve() if source is not None else resources.source_root()
    if not (root / "pyproject.toml").is_file() or not (root / "grader" / "__init__.py").is_file():
        where = f"--source {source}" if source is not None else f"the folder above {resources.package_dir()}"
        raise SetupError(f"{where} is not the rl-grader source tree (it needs pyproject.toml and grader/); "
                         "pass --source DIR, the folder of a checkout of the grader")
    return root


# Where an instructor keeps course files beside the shipped ones (a private rubric, seeds inline; an
# exam's model): these packages ship only what pyproject.toml lists by name.
LISTED_DATA = ("grader._data.rubrics", "grader._data.rubrics.baselines", "grader._data.reference.models",
               "grader._data.lock")


def _wheel_folder(package: str) -> str:
    return package.replace(".", "/") + "/"


def shipped_data(source: Path) -> set[str]:
    """The wheel paths of the shipped rubrics, baselines and models: pyproject.toml's explicit list
    (package data of :data:`LISTED_DATA`, by name; a glob there would ship whatever lies in the folder)."""
    conf = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("setuptools", {})
    out = set()
    for package, names in conf.get("package-data", {}).items():
        if package in LISTED_DATA:
            if any(ch in name for name in names for ch in "*?["):
                raise SetupError(f"pyproject.toml: package data of {package} must be listed by name, not {names}")
            out |= {_wheel_folder(package) + name for name in names}
    return out


def _unlisted_data(names: list[str], stage: Path) -> list[str]:
    """Files of the wheel in :data:`LISTED_DATA`'s folders that pyproject.toml does not list."""
    folders, listed = {_wheel_folder(p) for p in LISTED_DATA}, shipped_data(stage)
    return sorted(n for n in names if n.rsplit("/", 1)[0] + "/" in folders and n not in listed)


def build_wheel(source: Path, dest: Path) -> Path:
    """Build the grader as a wheel into ``dest`` from a staged copy of what the wheel is made of
    (``pyproject.toml``, the README, ``grader/``, ``rubrics/``, ``reference/models/``): the project's
    own packaging ships only the ``grader`` package, with the rubrics and models as its data."""
    with tempfile.TemporaryDirectory(prefix="rl-grader-wheel-") as tmp:
        stage = Path(tmp) / "src"
        stage.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.grading", ".*")
        shutil.copyfile(source / "pyproject.toml", stage / "pyproject.toml")
        readme = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8")).get("project", {}).get("readme")
        if isinstance(readme, str) and (source / readme).is_file():
            shutil.copyfile(source / readme, stage / readme)
        for folder in ("grader", "rubrics", "reference/models", "lock"):
            if (source / folder).is_dir():  # a tree without them fails in pip, with its message below
                shutil.copytree(source / folder, stage / folder, ignore=ignore)
        out = Path(tmp) / "wheel"
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(stage)]
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SetupError(f"cannot build the grader's wheel ({exc}); install pip and the build backend: "
                             f"{sys.executable} -m pip install 'setuptools>=77'") from None
        wheels = sorted(out.glob("rl_grader-*.whl")) if out.is_dir() else []
        if proc.returncode != 0 or len(wheels) != 1:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise SetupError(f"building the grader's wheel failed (pip wheel exited {proc.returncode}):\n{tail}\n"
                             f"install the build backend into this environment and retry: "
                             f"{sys.executable} -m pip install 'setuptools>=77'")
        with zipfile.ZipFile(wheels[0]) as z:
            names = z.namelist()
        stray = [n for n in names if not n.startswith(("grader/", "rl_grader-"))]
        if stray:
            raise SetupError(f"internal error: the wheel holds files outside grader/: {', '.join(stray[:5])}")
        unlisted = _unlisted_data(names, stage)
        if unlisted:
            raise SetupError(f"the wheel would hold data files that pyproject.toml does not list as shipped: "
                             f"{', '.join(unlisted[:5])}; list them under [tool.setuptools.package-data] by name")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / wheels[0].name
        shutil.copyfile(wheels[0], target)
        return target


# --- what setup.sh installs ------------------------------------------------------------------------
LOCK_ENTRY = "requirements.lock"  # in the zip: the lock's subset the rubric needs (docs/environment.md)
TORCH_PIN = re.compile(r"^# unhashed: (torch==\S+)", re.M)


@dataclass
class Install:
    """What the zip's setup.sh installs: the lock file's bytes, the torch pin (None: no torch) and
    what each is for, in words for the builder's summary."""

    lock: bytes
    torch: str | None
    parts: list[str]


def runs_torch(task: str) -> bool:
    """Whether grading ``task``'s notebooks runs their torch code: its notebook module says so with
    ``RUNS_TORCH``; a module that does not say is taken to need torch (never grade less)."""
    from grader.tasks.contract import get_task

    module = get_task(task).notebook_module()
    return module is not None and bool(getattr(module, "RUNS_TORCH", True))


def install_for(rubric: Rubric, root: Path) -> Install:
    """The lock subset that grades every part of ``rubric``: the grader alone, or with torch (the CPU
    build, pinned in the lock) when the rubric has notebook checks that run the notebook's torch
    code. Raises :class:`SetupError` when the source tree's lock cannot install a part: a zip never
    silently grades less than its rubric."""
    notebook_points = float(sum(rubric.notebook.points.values()))
    torch_needed = notebook_points > 0 and runs_torch(rubric.task)
    name = "notebooks.txt" if torch_needed else "grader.txt"
    path = root / "lock" / name
    if not path.is_file():
        raise SetupError(f"the grader's lock has no {path.relative_to(root)}, which the zip's setup.sh installs to "
                         f"grade {'notebooks' if torch_needed else 'models'}; run `python3 tools/update_lock.py` "
                         "in the grader's source tree (docs/environment.md)")
    data = path.read_bytes()
    found = TORCH_PIN.search(data.decode("utf-8"))
    torch = found[1] if found else None
    parts = [f"ONNX models ({rubric.scoring.points:g} points) with the grader from {path.name}"]
    if notebook_points and not torch_needed:
        parts.append(f"notebooks ({notebook_points:g} points), read without running them: no torch")
    if torch_needed:
        if torch is None:
            raise SetupError(f"rubric {rubric.id!r} grades notebooks ({notebook_points:g} points), but "
                             f"{path.relative_to(root)} pins no torch, without which every notebook gets 0; "
                             "run `python3 tools/update_lock.py`")
        parts.append(f"notebooks ({notebook_points:g} points) with {torch} (CPU build)")
    return Install(lock=data, torch=torch if torch_needed else None, parts=parts)


# --- the zip ----------------------------------------------------------------------------------------
def run_autograder_script(config: dict) -> str:
    text = (TEMPLATES / "gradescope_run_autograder.py").read_text(encoding="utf-8")
    marker = "CONFIG = {}  # filled in by `grade gradescope`"
    if marker not in text:
        raise SetupError("internal error: the run_autograder template has no CONFIG line")
    return text.replace(marker, "CONFIG = " + json.dumps(config, indent=4, sort_keys=True), 1)


def _zip_bytes(entries: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            data, mode = entries[name]
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that the permission bits (the executable run_autograder) count
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
    return buf.getvalue()


def build_autograder(*, rubric: Path, out: Path, grading_seeds_file: Path | None = None, source: Path | None = None,
                     episode_table: str = "after_published", timeout_s: int = DEFAULT_TIMEOUT_S) -> Path:
    """Write Gradescope's autograder zip for ``rubric`` to ``out`` and return ``out``.

    ``grading_seeds_file`` replaces the rubric's grading seeds; ``source`` is the grader's source tree
    (default: the one this package runs from); ``episode_table`` the visibility of the returns by
    episode in results.json (``after_published``, ``after_due_date`` or ``none``); ``timeout_s`` how
    long run_autograder lets one grading run. The student's upload is graded as one submission
    (model, notebook and weights together, by the grader's one rule). Raises :class:`~grader.errors.SetupError` (or
    :class:`~grader.scoring.rubric.RubricError`) saying what to fix.
    """
    return _build_autograder(rubric=rubric, out=out, grading_seeds_file=grading_seeds_file, source=source,
                             episode_table=episode_table, timeout_s=timeout_s)[0]


def _build_autograder(*, rubric, out, grading_seeds_file, source, episode_table, timeout_s) -> tuple[Path, RubricBundle]:
    if episode_table not in EPISODE_TABLE_CHOICES:
        raise SetupError(f"episode_table must be one of {', '.join(EPISODE_TABLE_CHOICES)}, not {episode_table!r}")
    if timeout_s < 10:
        raise SetupError("the timeout must be at least 10 s")
    out = Path(out)
    if out.is_dir():
        raise SetupError(f"{out} is a folder; give the zip's file name, e.g. --out autograder.zip")
    bundle = bundle_rubric(Path(rubric), grading_seeds_file=grading_seeds_file)
    bundle.rubric.check_baselines_follow_seeds(command="grade gradescope")  # thresholds on other seeds: refused
    root = source_root(source)
    # the rubric, its seeds and baselines: readable by the grader's user only (setup.sh also closes source/)
    entries: dict[str, tuple[bytes, int]] = {name: (raw, 0o600) for name, raw in bundle.files.items()}
    install = install_for(bundle.rubric, root)
    entries[LOCK_ENTRY] = (install.lock, 0o644)
    with tempfile.TemporaryDirectory(prefix="rl-grader-zip-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        entries[wheel.name] = (wheel.read_bytes(), 0o644)
    config = {"rubric": bundle.rubric_name, "task": bundle.rubric.task, "episode_table": episode_table,
              "timeout_s": int(timeout_s),
              "max_points": max_points(bundle.rubric)}
    entries["run_autograder"] = (run_autograder_script(config).encode("utf-8"), 0o755)
    entries["setup.sh"] = ((TEMPLATES / "gradescope_setup.sh").read_bytes(), 0o755)
    from grader.outputs.fsutil import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, _zip_bytes(entries))
    bundle.notes[:0] = [f"setup.sh installs what grades {part}" for part in install.parts]
    return out, bundle


# --- grade gradescope ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rubric", type=Path, required=True, help="rubric TOML, e.g. rubrics/lunarlander.toml")
    p.add_argument("--out", type=Path, default=Path("autograder.zip"), help="the zip to write (default autograder.zip)")
    p.add_argument("--seeds-file", type=Path, help="private grading seeds (replaces the rubric's own)")
    p.add_argument("--source", type=Path, help="the grader's source tree to build the wheel from (default: this one)")
    p.add_argument("--episode-table", choices=EPISODE_TABLE_CHOICES, default="after_published",
                   help="when students see the returns by episode (default after_published; none: never, and their "
                        "total score shows at once)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help=f"seconds per grading (default {DEFAULT_TIMEOUT_S})")


def run(args: argparse.Namespace) -> int:
    from grader.outputs import console

    try:
        out, bundle = _build_autograder(rubric=args.rubric, out=args.out, grading_seeds_file=args.seeds_file,
                                        source=args.source, episode_table=args.episode_table, timeout_s=args.timeout)
    except (SetupError, RubricError) as exc:
        console.fail(str(exc))
        return 1
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB): {', '.join(names)}")
    for note in bundle.notes:
        print(f"note: {note}")
    r = bundle.rubric
    print(f"rubric {r.id!r}: {r.episodes} episodes on the grading seeds, {max_points(r):g} points in all")
    print("next: on Gradescope, create a Programming Assignment with those total points; under Configure "
          f"Autograder choose the Ubuntu 22.04 base image, upload {out.name}, and set the timeout above "
          f"{args.timeout} s. Then test it with a reference model (docs/gradescope.md).")
    return 0
