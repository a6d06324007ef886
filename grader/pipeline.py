"""The one grading pipeline behind every front end.

``grade``, ``grade check``, ``grade batch`` (local slots and Ray actors) and the site all call
:func:`grade_submission` on a :class:`~grader.submission.bundle.Submission` (the bytes of one student's
bundle, :mod:`grader.submission.bundle`). It runs, in order:

1. **read** -- the bundle was read once, capped (reading problems make it invalid);
2. **notebook** -- when there is one: parsed, its task recognised, its definitions run in the
   sandbox, which returns *evidence* only (:mod:`grader.notebook`);
3. **model** -- the uploaded ONNX model, else the model the notebook produced with the handed-in
   weights: parsed from bytes, static checks, loaded and probed in a sandboxed worker, played on
   the seeds, videos recorded. A model the notebook's code exported goes through exactly the same
   path as an upload (:func:`_play_model`); the untrained export of the notebook's network is
   checked the same way, without episodes;
4. **score** -- :func:`grader.scoring.points.compose`, the one function that adds up points;
5. **decide** -- the caller's last word (``decide``): ``grade batch``'s duplicate evidence, the
   site's wording;
6. **outputs** -- ``result.json``, ``report.html``, logs (videos were recorded in step 3), written
   once by :func:`write_outputs` through :class:`~grader.outputs.fsutil.OutputDir` (never through a link
   the folder arrived with).

Whose fault (:mod:`grader.errors`): a bad submission is a result with status ``invalid``; the
instructor's set-up (a bad rubric, a missing optional dependency) raises :class:`SetupError`;
anything else is the grader's bug: status ``error``, the traceback in ``grader_error.log`` in the
output folder, and a message that does not blame the student.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import os
import platform
import shlex
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import GraderBug, SetupError, SubmissionError, TaskDetectionError
from grader.limits import DEFAULT_WORKERS
from grader.result import CheckResult, EpisodeResult, GradeResult, RubricInfo, VideoInfo
from grader.scoring.rubric import Rubric, RubricError
from grader.submission.bundle import NamedBytes, Submission

if TYPE_CHECKING:
    import numpy as np

    from grader.notebook.evidence import NotebookEvidence, ProducedModel
    from grader.outputs.fsutil import OutputDir
    from grader.result import Late
    from grader.runtime.engine import Engine
    from grader.runtime.replies import RecordedEpisode
    from grader.tasks.base import Task

log = logging.getLogger("grader")
Progress = Callable[[str, int, int], None]  # (phase, done, total)
BUG_LOG = "grader_error.log"


def no_progress(phase: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class Options:
    """How to grade; the defaults are the final grading's."""

    seeds: tuple[int, ...] | None = None  # exactly these seeds (overrides the rubric)
    episodes: int | None = None  # the rubric's first N seeds
    selfcheck: bool = False  # the public seeds and the rubric's selfcheck_episodes
    video: bool = True
    report: bool = True
    workers: int = DEFAULT_WORKERS
    device: str = "cpu"
    sandbox: str | None = None  # notebook sandbox: auto | bwrap | fallback
    task: str | None = None  # the caller's choice of task (else the rubric's, else recognised)
    command: str = ""  # how this grading was asked for (shown as the reproducing command)
    video_names: str = "seed"  # seed: best_seed3.mp4 / best_episode3.mp4 (hidden seeds); label: best.mp4 (the site)
    late: Late | None = None  # when the channel knows the hand-in time (the "late" part)


@dataclass
class _Run:
    """The state of one grading as it goes through the stages."""

    sub: Submission
    options: Options
    rubric: Rubric | None
    progress: Progress
    out: OutputDir | None
    result: GradeResult
    engine: Engine | None = None
    own_engine: bool = False
    task: Task | None = None
    evidence: NotebookEvidence | None = None
    invalid: bool = False
    prepared: bool = False  # the workers were told the episodes' task and seeds (_prepare_episodes)
    shipped_rubrics: dict[str, Rubric] = field(default_factory=dict)  # read by _shipped_rubric
    layout_problems: list[str] = field(default_factory=list)  # how the files were gathered (grader.submission.bundle)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def graded_by(self) -> Rubric:
        """The rubric, once the task is known (given, or set by _set_task): asking earlier is a bug."""
        if self.rubric is None:
            raise GraderBug("the rubric was asked for before the homework was known")
        return self.rubric

    @property
    def graded_task(self) -> Task:
        """The task, once known (given, from the rubric, or recognised)."""
        if self.task is None:
            raise GraderBug("the task was asked for before it was known")
        return self.task

    @property
    def started_engine(self) -> Engine:
        """The engine, once started (:func:`_start_engine`)."""
        if self.engine is None:
            raise GraderBug("the engine was asked for before it was started")
        return self.engine

    @property
    def out_dir(self) -> OutputDir:
        """The output folder (only asked for when there is one)."""
        if self.out is None:
            raise GraderBug("the output folder was asked for, but this grading writes none")
        return self.out


RECORDED_DISTRIBUTIONS = ("gymnasium", "box2d", "ale-py", "onnxruntime", "onnx", "numpy", "rl-grader")


def package_versions() -> dict[str, str]:
    """The Python and package versions every result records (those that decide the returns, and
    the grader's). Read in one pass over the import path from the installed distributions'
    ``NAME-VERSION.dist-info`` folders, which the wheel format names so (the first on the path
    wins, as for importlib.metadata); importlib.metadata answers for any not found that way. Seven
    ``metadata.version`` lookups were 12 ms of every grading's start."""
    import re
    import sys
    from importlib import metadata

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    wanted = {norm(d): d for d in RECORDED_DISTRIBUTIONS}
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as listing:
                for item in listing:
                    name, _, version = item.name.removesuffix(".dist-info").rpartition("-")
                    dist = wanted.get(norm(name)) if item.name.endswith(".dist-info") else None
                    if dist is not None and version and dist not in found:
                        found[dist] = version
        except OSError:  # a zip file or a missing folder on the path
            continue
    versions = {"python": platform.python_version()}
    for dist in RECORDED_DISTRIBUTIONS:
        if dist in found:
            versions[dist] = found[dist]
            continue
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def resolve_seeds(rubric: Rubric, options: Options) -> tuple[list[int], str]:
    """The seeds to play and which set they come from (explicit, public or grading)."""
    if options.seeds is not None:
        return list(options.seeds), "explicit"
    if options.selfcheck:
        pool, n, seed_set = rubric.public_seeds(), options.episodes or rubric.selfcheck_episodes, "public"
    else:
        pool, n, seed_set = rubric.all_grading_seeds(), options.episodes or rubric.episodes, "grading"
    if n > len(pool):
        raise RubricError(f"{n} episodes asked for, but rubric {rubric.id!r} has only {len(pool)} {seed_set} seeds")
    return pool[:n], seed_set


# --- the entry point ---------------------------------------------------------------------------------
Decide = Callable[[GradeResult, "Engine | None"], None]  # (result, engine): the caller's last word before the outputs
AlsoWrite = Mapping[str, Callable[[GradeResult], str]]  # file name -> its text, from the decided result


def grade_submission(sub: Submission, *, rubric: Rubric | None = None, options: Options = Options(),
                     out: str | Path | None = None, engine: Engine | None = None, progress: Progress = no_progress,
                     warnings: Sequence[str] = (), decide: Decide | None = None,
                     also_write: AlsoWrite | None = None) -> GradeResult:
    """Grade one submission; write its outputs into ``out`` (nothing is written when it is None).

    ``decide(result, engine)`` is the caller's part (the duplicate evidence of ``grade batch``,
    the site's wording): it runs after the grading, with the model still loaded in ``engine``,
    and before :func:`write_outputs` writes ``result.json``, the report and ``also_write``'s files
    (``grade batch``: Gradescope's ``results.json``), once. Raises
    :class:`SetupError` for the instructor's set-up only; every other outcome is a result.
    """
    from grader.outputs.fsutil import OutputDir

    out_dir = OutputDir(out) if out is not None else None
    result = GradeResult(submission=sub.label or sub.student or "submission", task=None, status="graded",
                         versions=package_versions(), command=options.command,
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    run = _Run(sub=sub, options=options, rubric=rubric, progress=progress, out=out_dir, result=result, engine=engine)
    run.layout_problems = list(warnings)
    run.result.warnings += [*warnings, *sub.notes]
    t0 = time.perf_counter()
    try:
        _start_engine(run)
        _stages(run)
        if decide is not None:
            decide(run.result, run.engine)
    except SetupError:
        raise
    except Exception as exc:  # noqa: BLE001 - the grader's own bug: never the student's fault
        _bug(run, exc)
    finally:
        if run.own_engine and run.engine is not None:
            run.engine.close()
    run.timings["total"] = time.perf_counter() - t0
    run.result.timings = {k: round(v, 3) for k, v in run.timings.items()}
    if out_dir is not None:
        write_outputs(run.result, out_dir, report=options.report, evidence=run.evidence, also_write=also_write)
    return run.result


def _stages(run: _Run) -> None:
    if run.sub.problems:
        name, message, hint = run.sub.problems[0]
        _invalid(run, CheckResult(name=name, passed=False, message=message, hint=hint))
        run.result.warnings += [m for _, m, _ in run.sub.problems[1:]]
    else:
        run.task = _chosen_task(run)
        if run.sub.notebook is not None:
            _notebook_stage(run, run.sub.notebook)
        if not run.invalid:
            _model_stage(run)
    _score(run)
    _notebook_not_run(run)


def _notebook_not_run(run: _Run) -> None:
    """The notebook's code was refused a sandbox (no bubblewrap): a set-up problem, never the student's.

    The result becomes an ``error`` (exit 1; ``grade batch --retry-errors`` regrades it once
    bubblewrap is installed) that keeps what was graded: the model's episodes and points stay in
    the result, the notebook's scored checks say they were not run and why."""
    reason = run.evidence.not_run if run.evidence is not None else None
    if not reason:
        return
    if run.result.status != "graded":  # invalid for the student's own reason: said, and the notebook's too
        run.result.warnings.append(reason)
        return
    from grader.scoring.points import fmt_points

    model = next((p for p in run.result.parts if p.kind == "episodes"), None)
    kept = (f"; the model was graded: {fmt_points(model.points, model.max_points)} for the episodes, kept in this result"
            if model is not None and run.result.summary is not None else "")
    run.result.status = "error"
    run.result.band = None
    run.result.error = f"not graded completely: {reason}{kept}. This is not a problem with the submission"


def _chosen_task(run: _Run):
    from grader.tasks import get_task

    task = get_task(run.options.task) if run.options.task else None
    if task is not None and run.rubric is not None and run.rubric.task != task.name:
        raise RubricError(f"rubric {run.graded_by.id!r} is for {run.graded_by.task}, but --task is {task.name}")
    if task is None and run.rubric is not None:
        task = get_task(run.graded_by.task)
    return task


def _set_task(run: _Run, task) -> None:
    run.task = task  # the input contract the model is graded under (MsPacman: the lesson's, or raw frames)
    run.result.task = task.homework_name  # the homework: its rubric, baselines, every front end
    if run.rubric is None:
        run.rubric = _shipped_rubric(run, task)


def _shipped_rubric(run: _Run, task) -> Rubric:
    """The homework's shipped rubric (``rubrics/<homework>.toml``), read once per grading."""
    from grader.scoring.rubric import default_rubric_path, load_rubric

    name = task.homework_name
    if name not in run.shipped_rubrics:
        run.shipped_rubrics[name] = load_rubric(default_rubric_path(name), selfcheck=run.options.selfcheck)
    return run.shipped_rubrics[name]


def _invalid(run: _Run, check: CheckResult) -> None:
    run.result.checks.append(check)
    run.result.status = "invalid"
    run.invalid = True
    run.result.error = check.message + (f" — {check.hint}" if check.hint else "")


def _bug(run: _Run, exc: BaseException) -> None:
    text = traceback.format_exc()
    log.error("grader error on %s:\n%s", run.sub.label, text)
    where = ""
    if run.out is not None:
        try:
            run.out.write_text(BUG_LOG, text)
            where = f"; the traceback is in {BUG_LOG} in the output folder"
        except OSError:
            pass
    run.result.status = "error"
    run.result.error = (f"internal grader error ({type(exc).__name__}: {str(exc)[:200]}){where}. This is not a "
                        "problem with the submission: tell the course staff")


# --- the notebook ------------------------------------------------------------------------------------
def _notebook_stage(run: _Run, notebook: NamedBytes) -> None:
    from grader.notebook.common import common_checks, detect_notebook_task, parse_notebook
    from grader.tasks import all_tasks, get_task

    with tempfile.TemporaryDirectory(prefix="grader-nb-") as tmp:
        staged = _stage_files(Path(tmp), notebook, run.sub.weights)
        t0 = time.perf_counter()
        try:
            nb = parse_notebook(staged[0])
        except SubmissionError as exc:
            _invalid(run, CheckResult(name=exc.check, passed=False, message=exc.message, hint=exc.hint))
            return
        markers = {t.name: m.MARKERS for t in all_tasks() if (m := t.notebook_module()) is not None}
        name, scores = detect_notebook_task(nb.text, markers)
        if run.task is not None and not run.options.task and name is not None and name != run.task.homework_name:
            _invalid(run, CheckResult(name="task_detected", passed=False,
                                      message=f"this notebook is the {name} homework, but the rubric "
                                              f"{run.graded_by.id!r} grades {run.task.name}",
                                      hint=f"hand in the {run.task.name} notebook (or grade with its own rubric)"))
            return
        if run.task is None:
            if name is None:
                found = ", ".join(f"{k} {v}" for k, v in scores.items())
                _invalid(run, CheckResult(name="task_detected", passed=False,
                                          message=f"cannot tell which homework this notebook is (markers found: {found})",
                                          hint="pass --task " + " or --task ".join(markers)))
                return
            _set_task(run, get_task(name))
        else:
            _set_task(run, run.task)
        if run.graded_by.part_use("notebook") is None:
            run.result.warnings.append(f"{notebook.name}: the assignment {run.graded_by.id!r} grades the model "
                                       "only (the rubric has no notebook part); the notebook was not graded")
            return
        module = run.graded_task.notebook_module()
        if module is None:
            _invalid(run, CheckResult(name="task_detected", passed=False,
                                      message=f"the {run.graded_task.name} homework is not graded from notebooks",
                                      hint="hand in the exported ONNX model"))
            return
        run.result.checks += common_checks(nb)
        extra = {}
        if "lesson_preprocessing" in inspect.signature(module.collect).parameters:  # the rubric's, default false
            extra["lesson_preprocessing"] = bool(run.graded_by.notebook and run.graded_by.notebook.lesson_preprocessing)
        evidence = module.collect(nb, limits=_sandbox_limits(run.graded_by), sandbox=run.options.sandbox,
                                  weights=staged[1:], **extra)
        run.timings["notebook"] = time.perf_counter() - t0
    run.evidence = evidence
    for check in evidence.checks:
        if check.name == "sandbox_isolation":  # how strong the sandbox was: the instructor's business
            if not check.passed:
                run.result.operator_notes.append(f"notebook sandbox: {check.message} ({check.hint})")
            continue
        # Notebook checks cost their points; they never make the whole submission invalid.
        if check.severity == "error" and not check.passed:
            check = check.model_copy(update={"severity": "warning"})
        run.result.checks.append(check)


def _stage_files(folder: Path, notebook: NamedBytes, weights: Sequence[NamedBytes]) -> list[Path]:
    paths = []
    for i, item in enumerate((notebook, *weights)):
        name = Path(item.name).name
        if name in ("", ".", "..") or name.startswith("."):
            name = f"file{i}{Path(item.name).suffix}"  # a hostile or hidden name never becomes a path
        target = folder / name
        target.write_bytes(item.data)
        paths.append(target)
    return paths


def _sandbox_limits(rubric: Rubric):
    from grader.notebook.sandbox import Limits

    return Limits.from_rubric(rubric.notebook)


# --- the model ---------------------------------------------------------------------------------------
def _model_stage(run: _Run) -> None:
    produced = {m.role: m for m in (run.evidence.models if run.evidence is not None else [])}
    if "network" in produced:
        _check_exported_network(run, produced["network"])
    if run.sub.model is not None:
        _play_model(run, run.sub.model.data, label=run.sub.model.name, uploaded=True)
    elif "trained" in produced:
        _play_model(run, produced["trained"].data, label=produced["trained"].label, uploaded=False)
    elif run.sub.notebook is not None:
        module = run.task.notebook_module() if run.task is not None else None
        if getattr(module, "FRAMEWORK", "torch") == "keras":
            how = "the exported actor (actor_model.export('model.onnx', format='onnx'))"
        else:
            how = "the exported model (model.onnx) or the trained weights (torch.save(policy.state_dict(), 'policy.pt'))"
        run.result.checks.append(CheckResult(
            name="model", passed=False, severity="warning",
            message="no trained model to play: no model.onnx, and no weights that load into the notebook's network; "
                    "the episodes earn no points",
            hint=f"hand in {how} with the notebook, in one folder"))
    else:
        why = "; ".join(run.layout_problems) or "no model and no notebook"
        _invalid(run, CheckResult(name="submission", passed=False, message=f"nothing to grade: {why}",
                                  hint="hand in model.onnx (or the notebook), the files themselves"))


def _parse(run: _Run, data: bytes):
    """Parse the model and recognise its task: ``(parsed, task, None)``, or a CheckResult in the
    third place when the model is unusable or is another homework's. It settles nothing: the
    caller settles the task (:func:`_set_task`)."""
    from grader.errors import ModelLoadError
    from grader.submission import checks as C
    from grader.submission.filekind import describe_wrong_kind, sniff_file_kind
    from grader.submission.onnx_model import describe, parse_model
    from grader.tasks import get_task

    kind = sniff_file_kind(data[:4096])
    if kind not in ("onnx", "empty", "unknown"):
        shape = ", ".join(map(str, run.task.state_shape)) if run.task else "..."
        message, hint = describe_wrong_kind(kind, shape)
        return None, None, CheckResult(name="parses", passed=False, message=message, hint=hint)
    try:
        parsed = parse_model(data)
    except ModelLoadError as exc:
        return None, None, CheckResult(name="parses", passed=False, message=str(exc), hint=exc.hint)
    try:
        detected = C.detect_task(parsed)
    except TaskDetectionError as exc:
        if run.task is None:
            return None, None, CheckResult(name="task", passed=False, message=str(exc), hint=C.expected_signatures())
        detected = run.task  # the homework is known: let the input check say what is wrong
    if run.task is not None and detected.homework_name != run.task.homework_name:
        expected = get_task(run.task.homework_name)
        return parsed, None, CheckResult(
            name="task", passed=False,
            message=f"the model takes {detected.input_signature}, a {detected.homework_name} policy, but this is the "
                    f"{expected.name} homework",
            hint=f"hand in the {expected.name} model: its input is {expected.input_signature}")
    run.result.model = describe(parsed)
    return parsed, detected, None  # the model's own input contract (one of the homework's)


def _start_engine(run: _Run) -> None:
    """Start the workers at once, so that their interpreters start while this process parses and
    checks the submission (the engine does not wait for them until the model is loaded)."""
    if run.engine is not None or run.sub.problems or (run.sub.model is None and run.sub.notebook is None):
        return
    from grader.runtime.dispatch import worker_count
    from grader.runtime.engine import Engine

    episodes = len(run.options.seeds) if run.options.seeds is not None else None
    if episodes is None and run.rubric is not None:
        try:
            episodes = len(resolve_seeds(run.graded_by, run.options)[0])
        except RubricError:
            pass  # said when the seeds are resolved
    run.engine = Engine(worker_count(run.options.workers, episodes))
    run.own_engine = True


def _copy_engine_warnings(run: _Run) -> None:
    """The engine's warnings (no bubblewrap: the weaker sandbox) are said, never silent, to the
    instructor: :attr:`GradeResult.operator_notes`, which no student's output shows."""
    for warning in run.started_engine.warnings:
        if warning not in run.result.operator_notes:
            run.result.operator_notes.append(warning)


def _engine(run: _Run, n_seeds: int):
    if run.engine is None:
        from grader.runtime.dispatch import worker_count
        from grader.runtime.engine import Engine

        run.engine = Engine(worker_count(run.options.workers, n_seeds))
        run.own_engine = True
    _copy_engine_warnings(run)
    return run.engine


def _load_and_probe(run: _Run, parsed, device: str, episodes: int | None = None) -> list[CheckResult] | CheckResult:
    """Load the model in the sandboxed workers and run the runtime checks (a failed check on failure)."""
    from grader.errors import EngineFailure
    from grader.submission import checks as C

    engine = run.started_engine
    spec = run.graded_task
    run.progress("loading", 0, 1)
    try:
        engine.load(parsed.data, task=spec.name, device=device, budgets=run.graded_by.budgets, episodes=episodes)
    except EngineFailure as exc:
        _copy_engine_warnings(run)
        return CheckResult(name="loads", passed=False, message=f"onnxruntime cannot run the model: {exc}",
                           hint="open it with onnxruntime.InferenceSession yourself; re-export with a standard opset")
    _copy_engine_warnings(run)  # the sandbox is known once the workers are up
    checks = [CheckResult(name="loads", passed=True, message="onnxruntime creates a session")]
    try:
        probe_raw = engine.probe()
    except EngineFailure as exc:
        shape = ", ".join(map(str, spec.state_shape))
        return CheckResult(name="runs", passed=False, message=f"the model fails on a contract state: {exc}",
                           hint=f"run it yourself with onnxruntime on a {spec.input_dtype} state of shape [1, {shape}]: "
                                "it must return the action scores without errors")
    checks += C.runtime_checks(C.Probe(**probe_raw), spec)
    failed = [c for c in checks if c.blocking]
    return failed[0] if failed else checks


def _check_exported_network(run: _Run, model: ProducedModel) -> None:
    """The notebook's network exported with fresh weights: every model check, no episodes.

    A network exported on the notebook's own state (its preprocessing is the student's:
    ``model.own_state``) is checked against that state's shape instead of a contract's, and run
    on that state in the sandboxed engine."""
    from grader.submission import checks as C

    name = "network_onnx_export"
    parsed, _, problem = _parse(run, model.data)  # the notebook stage settled the task
    task = run.graded_task
    own = model.own_state
    spec = task if own is None else _own_input_task(task, own)
    if problem is None:
        static = C.static_checks(parsed, spec)
        problem = next((c for c in static if c.blocking), None)
    if problem is None:
        engine = _engine(run, 1)
        if own is not None:
            problem = _run_on_own_state(engine, model.data, own, spec.n_actions)
        else:
            outcome = _load_and_probe(run, parsed, "cpu")
            problem = outcome if isinstance(outcome, CheckResult) else None
    run.result.model = None  # the untrained network is not the graded model
    size = f"{len(model.data) / 2**20:.1f} MB"
    if problem is not None:
        run.result.checks.append(CheckResult(name=name, passed=False, severity="warning",
                                             message=f"the exported network fails the model checks: {problem.message}",
                                             hint=problem.hint or "export the network with torch.onnx.export(model.eval(), ...)"))
    elif own is not None:
        shape = ", ".join(map(str, own.shape[1:]))
        run.result.checks.append(CheckResult(name=name, passed=True, message=(
            f"{model.label}: exported to ONNX on the notebook's own states [batch, {shape}] ({size}); it passes every "
            "model check on them (the graded model takes raw frames with this preprocessing inside: docs/mspacman.md)")))
    else:
        run.result.checks.append(CheckResult(name=name, passed=True,
                                             message=f"{model.label}: exported to ONNX ({size}); "
                                                     "it passes every model check the graded file must pass"))


def _own_input_task(task: Task, state: np.ndarray) -> Task:
    """``task`` with the notebook's own state's shape (float32) as the input the model checks expect."""
    import dataclasses

    shape = tuple(int(d) for d in state.shape[1:])
    return dataclasses.replace(task, state_shape=shape, input_dtype="float32", input_hint=(
        f"export the network with the notebook's own preprocessed state as the example input: torch.zeros(1, "
        f"{', '.join(map(str, shape))})"))


def _run_on_own_state(engine: Engine, data: bytes, state: np.ndarray, n_actions: int) -> CheckResult | None:
    """The runtime check of a network on the notebook's own state, in the sandboxed engine: None when
    it gives ``n_actions`` finite values, else the failed check."""
    import numpy as np

    from grader.errors import EngineFailure

    hint = "run it with onnxruntime on the notebook's own preprocessed state: it must return the action scores"
    try:
        outs = engine.tensors(data, np.ascontiguousarray(state, dtype=np.float32), size=n_actions)
    except EngineFailure as exc:
        return CheckResult(name="runs", passed=False, message=f"the model fails on the notebook's own state: {exc}",
                           hint=hint)
    if not outs or not np.isfinite(outs[0]).all():
        return CheckResult(name="runs", passed=False, hint=hint, message=(
            f"the model gives no finite {n_actions} action values on the notebook's own state"))
    return None


def _play_model(run: _Run, data: bytes, *, label: str, uploaded: bool) -> None:
    """The ONNX path every model takes: checks, sandboxed load and probe, episodes, videos.

    A failure invalidates the submission when the model was handed in (``uploaded``); a model the
    notebook produced only loses the episode points.
    """
    from grader.submission import checks as C

    def fail(check: CheckResult) -> None:
        if uploaded:
            _invalid(run, check)
        else:
            run.result.checks.append(check.model_copy(update={
                "severity": "warning", "message": f"{label}: {check.message}"}))

    t0 = time.perf_counter()
    known = run.task or _input_says(data)  # --task or a rubric, else the input's shape read from the bytes
    if known is not None:  # the workers start on the homework now, while this process parses the model
        _prepare_episodes(run, known, early=True)
    parsed, task, problem = _parse(run, data)
    if problem is not None:
        return fail(problem)
    _set_task(run, task)
    run.result.checks.append(CheckResult(name="parses", passed=True,
                                         message=f"{label}: a {len(data) / 1024:.0f} kB ONNX model"))
    seeds, seed_set = resolve_seeds(run.graded_by, run.options)
    _prepare_episodes(run, task)
    if _reference_copy(run, parsed, label=label):
        return None
    static = [_say_sidecar(run, c, label) for c in C.static_checks(parsed, run.graded_task)]
    run.result.checks += [c for c in static if not c.blocking]
    blocking = next((c for c in static if c.blocking), None)
    if blocking is not None:
        return fail(blocking)
    run.timings["static_checks"] = time.perf_counter() - t0
    device = _resolve_device(run.options.device, run.result)
    t0 = time.perf_counter()
    outcome = _load_and_probe(run, parsed, device, episodes=len(seeds))
    if isinstance(outcome, CheckResult):
        return fail(outcome)
    run.result.checks += outcome
    _resolve_notebook(run, parsed.data)
    run.timings["load_and_probe"] = time.perf_counter() - t0
    if not _episodes(run, seeds, seed_set, fail):
        return
    _random_level_check(run)
    t0 = time.perf_counter()
    if _videos_wanted(run):
        run.result.videos = _record_videos(run)  # each video is a batch-1 re-run of its episode
        rerun: dict[int, tuple[float, int | None]] = {v.seed: (v.rerun_return, None) for v in run.result.videos}
        run.timings["videos"] = time.perf_counter() - t0
        reproducible = _reproducible_check(run, rerun)
    else:
        reproducible = _recheck_or_rerun(run)
    run.result.checks.append(reproducible)
    if reproducible.blocking:
        fail(run.result.checks.pop())


def _prepare_episodes(run: _Run, task: Task, *, early: bool = False) -> None:
    """Have the workers build the episodes' environments (each ready for its first seed) and the
    probe states while this process reads and checks the model: sent once, as soon as the
    homework is known (``--task``, a rubric, or the model's input shape read from its bytes),
    before the model is parsed; the workers would otherwise sit idle through the parse and the
    reference comparison (up to 0.15 s of a MsPacman grading, ``docs/benchmarks.md``). Every
    contract of a homework plays the same environments, so the homework's task prepares for any.
    ``early``: a guess the parse may overrule, so it settles nothing (the task and the rubric are
    settled by :func:`_set_task`), and seeds or a rubric that cannot be had are said later."""
    if run.prepared:
        return
    try:
        rubric = run.rubric or _shipped_rubric(run, task)
        seeds, _ = resolve_seeds(rubric, run.options)
    except SetupError:  # a rubric or seeds that cannot be had: said where the homework is settled
        if early:
            return
        raise
    _engine(run, len(seeds)).prepare(task.name, seeds=seeds)
    run.prepared = True


def _input_says(data: bytes) -> Task | None:
    """The contract whose input shape the model's one input has, read from the protobuf bytes
    without parsing the model (:func:`grader.submission.onnx_model.input_dims`); None when it is
    not clear. A hint for :func:`_prepare_episodes` only: the parse recognises the task."""
    from grader.submission.onnx_model import input_dims
    from grader.tasks import task_for_input

    dims = input_dims(data)
    if not dims or any(d is None for d in dims[1:]):
        return None
    return task_for_input(tuple(int(d) for d in dims[1:] if d is not None))


def _say_sidecar(run: _Run, check: CheckResult, label: str) -> CheckResult:
    """``no_external_data`` passes on the model as graded; when its weights came from the file
    beside it (torch's two-file export, read by :mod:`grader.submission.bundle`), it says so, as the
    bundle's note does, instead of "all weights are inside the file"."""
    if check.name != "no_external_data" or not check.passed:
        return check
    note = next((n for n in run.sub.notes if n.startswith(f"{label}:") and "read from" in n), None)
    if note is None:
        return check
    return check.model_copy(update={"message": "the weights were read from the external-data file beside the model "
                                               "(torch's two-file export) and graded as one model"})


def _reference_copy(run: _Run, parsed, *, label: str) -> bool:
    """Compare the model with the rubric's reference models (the same file, or the same used
    weights); record a flag for each match. True when the rubric's ``[duplicates]
    reference_copy = "invalid"`` made the submission invalid."""
    from grader.result import DuplicateFlag
    from grader.submission.weights import compare_weights, weight_prints_of

    references = run.rubric.reference_weights if run.rubric is not None else {}
    if not references:
        return False
    action = run.graded_by.duplicates.reference_copy
    prints = weight_prints_of(parsed.proto)
    for ref in references.values():
        if ref.sha256 == parsed.sha256:
            kind, detail = "identical", f"the same file as the reference model {ref.file} (sha256)"
        else:
            match = compare_weights(prints, ref.prints)
            if match is None or not match.same:
                continue
            kind, detail = "same_weights", f"the weights of the reference model {ref.file}: {match.detail()}"
        run.result.flags.append(DuplicateFlag(kind=kind, other=f"reference:{ref.file}", detail=detail, action=action))
    if not run.result.flags or action != "invalid":
        return False
    flag = run.result.flags[0]
    _invalid(run, CheckResult(
        name="reference_copy", passed=False,
        message=f"{label} is a copy of the course's reference model {flag.other.split(':', 1)[1]} ({flag.detail}); "
                "a reference model is not a hand-in",
        hint="hand in the model you trained yourself"))
    return True


def _resolve_notebook(run: _Run, model: bytes) -> None:
    """Notebook checks that depend on the graded model (MsPacman: does the notebook's preprocessing
    agree with the model's input contract?): the notebook module's ``resolve`` replaces them."""
    pending = run.evidence.pending if run.evidence is not None else None
    module = run.graded_task.notebook_module() if pending is not None else None
    resolve = getattr(module, "resolve", None)
    if resolve is None:
        return
    judged = resolve(pending, task=run.task, tensors=lambda states, size: run.started_engine.tensors(model, states, size=size))
    if judged is None:
        return
    if judged.severity == "error" and not judged.passed:  # notebook checks cost their points, never invalidate
        judged = judged.model_copy(update={"severity": "warning"})
    run.result.checks = [judged if c.name == judged.name else c for c in run.result.checks]


def _videos_wanted(run: _Run) -> bool:
    return bool(run.options.video and run.out is not None)


def _episodes(run: _Run, seeds: list[int], seed_set: str, fail) -> bool:
    from grader.errors import EngineFailure
    from grader.scoring.stats import summarize

    t0 = time.perf_counter()
    done = [0]

    def on_episode(seed: int, ret: float, length: int) -> None:
        done[0] += 1
        run.progress("episodes", done[0], len(seeds))

    run.progress("episodes", 0, len(seeds))
    try:
        # Without videos, the first worker out of seeds computes one episode's decisions again
        # alone while the others finish: the reproducibility check costs little wall time.
        outcomes = run.started_engine.evaluate(seeds, on_episode=on_episode, recheck=not _videos_wanted(run),
                                       on_idle=lambda: _preload_outputs(run, len(seeds)))
    except EngineFailure as exc:
        fail(CheckResult(name="episodes", passed=False, message=f"the model failed during the episodes: {exc}",
                         hint="it must give finite outputs for every state the game produces"))
        return False
    run.timings["episodes"] = time.perf_counter() - t0
    engine_stats = getattr(run.engine, "stats", None) or {}
    if "call_s" in engine_stats:  # the model's own compute: the workers' time inside its calls, summed
        run.timings["inference"] = float(engine_stats["call_s"])
    result, rubric = run.result, run.graded_by
    result.episodes = [EpisodeResult(seed=s, return_=outcomes[s][0], length=outcomes[s][1]) for s in seeds]
    result.summary = summarize([e.return_ for e in result.episodes], success_threshold=run.graded_task.success_threshold)
    facts = getattr(run.engine, "facts", None) or {}  # collected during this one play (no extra runs)
    result.diagnostics = run.graded_task.diagnose([facts.get(s) for s in seeds], [e.return_ for e in result.episodes])
    zero, full = rubric.thresholds()
    result.rubric = RubricInfo(
        id=rubric.id, path=str(rubric.path.name if rubric.path else ""), sha256=rubric.sha256, seed_set=seed_set,
        n_seeds=len(seeds), statistic=rubric.scoring.statistic, zero_at=zero, full_at=full,
        baselines=rubric.baseline_marks, fingerprint="" if run.options.selfcheck else rubric.fingerprint(),
        baselines_on=rubric.baselines_on)
    return True


RANDOM_LEVEL_SHARE = 0.1  # at most this share of the way from the random policy to full marks: "random level"


def _random_level_check(run: _Run) -> None:
    """A warning when the model plays at the random policy's level (its statistic at most
    :data:`RANDOM_LEVEL_SHARE` of the way from the rubric's ``random`` baseline to full marks) and
    its contract names a likely cause (:attr:`grader.tasks.Task.random_level_hint`: MsPacman's
    lesson states fed to a network trained on its own preprocessing)."""
    result, task = run.result, run.task
    hint = task.random_level_hint if task is not None else ""
    random = result.rubric.baselines.get("random") if result.rubric is not None else None
    if not hint or random is None or result.summary is None or result.rubric is None:
        return
    value = float(getattr(result.summary, result.rubric.statistic))
    level = random + RANDOM_LEVEL_SHARE * max(0.0, result.rubric.full_at - random)
    if value <= level:
        result.checks.append(CheckResult(
            name="random_level", passed=False, severity="warning", hint=hint,
            message=f"the {result.rubric.statistic} return {value:.4g} is at the random policy's level (its "
                    f"{result.rubric.statistic} is {random:.4g} in the rubric's baselines; {level:.4g} or less counts "
                    "as random play)"))


def _preload_outputs(run: _Run, episodes: int) -> None:
    """What the summary and the report need loaded, while a processor is free at the end of the
    episodes (``Engine.evaluate``'s ``on_idle``): the imports and template loading then are not on
    the way to the grade (20-40 ms at the end of every grading). A failure here is left to the
    real work to report."""
    from grader.scoring import stats

    try:
        stats.preload(episodes)
        if run.out is not None and run.options.report:
            from grader.outputs import report

            report.preload()
    except Exception:  # noqa: BLE001 - the same step fails again, and is reported, where it is needed
        log.debug("preloading the outputs failed", exc_info=True)


def _recheck_or_rerun(run: _Run) -> CheckResult:
    """Without videos, the cheapest proof that the scored returns do not depend on the batching:
    the decisions of one scored episode computed again alone, which the engine did while the last
    episodes ran (``evaluate(recheck=True)``); else the shortest episode re-run alone here."""
    from grader.outputs.seedpolicy import SeedPolicy
    from grader.submission import checks as C

    done = getattr(run.engine, "last_recheck", None)
    if done and not getattr(run.engine, "played_alone", False):
        return C.check_recheck(done, label=SeedPolicy(run.result).label)
    return _reproducible_check(run, _rerun_one(run))


def _rerun_one(run: _Run) -> dict[int, tuple[float, int | None]] | None:
    """The shortest scored episode re-run alone (a batch of 1); None when every episode was
    already played alone."""
    from grader.errors import EngineFailure

    if getattr(run.engine, "played_alone", False):
        return None  # every episode ran one state per call: a re-run would repeat the same computation
    shortest = min(run.result.episodes, key=lambda e: (e.length, e.seed))
    t0 = time.perf_counter()
    try:
        again = run.started_engine.rerun([shortest.seed])
    except EngineFailure:
        return {}  # the episodes ran; the videos / next grading will say more
    run.timings["rerun"] = time.perf_counter() - t0
    return {s: (ret, None) for s, (ret, _length) in again.items()}


def _reproducible_check(run: _Run, rerun: dict[int, tuple[float, int | None]] | None) -> CheckResult:
    from grader.outputs.seedpolicy import SeedPolicy
    from grader.submission import checks as C

    if rerun is None:
        return CheckResult(name="reproducible", passed=True,
                           message=f"each of the {len(run.result.episodes)} episodes was played alone on its worker, one "
                                   "state per call, as a re-run would play it: no batching to rule out")
    if not rerun:  # the re-run itself failed (the episodes had run): say so, never pass unchecked
        return CheckResult(name="reproducible", passed=False, severity="warning",
                           message="the re-run of an episode one state at a time did not complete, so the scored "
                                   "returns could not be reproduced here", hint="grade again; if it persists, tell the course staff")
    policy = SeedPolicy(run.result)
    scored: dict[int, tuple[float, int | None]] = {e.seed: (e.return_, None) for e in run.result.episodes}
    return C.check_rerun(scored, rerun, label=policy.label)


def pick_video_episodes(episodes: Sequence[EpisodeResult]) -> list[tuple[str, EpisodeResult]]:
    """Best, median and worst episodes (ties broken by seed); fewer when episodes are few."""
    ranked = sorted(episodes, key=lambda e: (-e.return_, e.seed))
    picks = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
    seen: set[int] = set()
    unique = []
    for label, ep in picks:
        if ep.seed not in seen:
            seen.add(ep.seed)
            unique.append((label, ep))
    return unique


def _record_videos(run: _Run) -> list[VideoInfo]:
    from grader.errors import EngineFailure

    result = run.result
    picks = pick_video_episodes(result.episodes)
    hidden = result.rubric is not None and result.rubric.seed_set == "grading"
    number = {e.seed: i + 1 for i, e in enumerate(result.episodes)}
    private = run.out_dir.private_dir()  # made by us: nothing can be planted at the recorder's path
    # Grading seeds are private: the report links the videos, so their names must not show them.
    names = [f"{label}.mp4" if run.options.video_names == "label" else
             f"{label}_episode{number[ep.seed]}.mp4" if hidden else f"{label}_seed{ep.seed}.mp4" for label, ep in picks]
    made: dict[int, VideoInfo] = {}

    def on_video(k: int, info: RecordedEpisode) -> None:
        (label, ep), name = picks[k], names[k]
        run.out_dir.adopt(private / name, name)
        made[k] = VideoInfo(label=label, seed=ep.seed, scored_return=ep.return_, rerun_return=info["return"],
                            matches=info["return"] == ep.return_, path=name, frames=info["frames"])
        run.progress("videos", len(made), len(picks))

    run.progress("videos", 0, len(picks))
    try:
        run.started_engine.record_many([(ep.seed, str((private / name).resolve())) for (_, ep), name in zip(picks, names)],
                               on_video=on_video)
    except EngineFailure as exc:
        missing = ", ".join(label for k, (label, _) in enumerate(picks) if k not in made)
        result.warnings.append(f"could not record the {missing} episode video(s): {exc}")
    finally:
        run.out_dir.discard(private)
    videos = [made[k] for k in sorted(made)]
    run.progress("videos", len(picks), len(picks))
    return videos


def _resolve_device(device: str, result: GradeResult) -> str:
    if device == "cpu":
        return "cpu"
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        result.device = "cuda"
        return "cuda"
    result.warnings.append(
        f"--device {device}: onnxruntime has no CUDA provider here (install onnxruntime-gpu on a CUDA machine); ran on the CPU")
    return "cpu"


# --- score and outputs -------------------------------------------------------------------------------
def _score(run: _Run) -> None:
    from grader.scoring import points as scoring

    result = run.result
    if run.rubric is None:
        if run.task is not None:
            _set_task(run, run.task)
        else:
            return  # no homework could be named: there is no maximum to show
    result.task = result.task or run.graded_by.task
    if result.status == "graded":
        _required_parts(run)
    invalid = result.status != "graded"
    result.late = run.options.late
    result.parts = scoring.compose(run.graded_by, checks=result.checks, summary=result.summary, invalid=invalid,
                                   late=result.late, handed_in=handed_in(run.sub))
    result.score, result.max_score = scoring.total(result.parts)
    result.band = scoring.band_of_parts(run.graded_by, result.parts) if result.status == "graded" else None
    if run.options.selfcheck:
        result.next_step = selfcheck_note(run.graded_by, n_seeds=result.rubric.n_seeds if result.rubric else None)


def _g(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:.4g}"


def selfcheck_note(rubric: Rubric, *, n_seeds: int | None) -> str:
    """What the final grading runs, after a self-check (the terminal and Jupyter show it alike)."""
    from grader.scoring.points import fmt_points

    parts = ", ".join(f"{part} ({use})" for part in ("model", "notebook") if (use := rubric.part_use(part)))
    return (f"This was a self-check on {n_seeds or 'a few'} public seeds. The final grading runs the same checks and "
            f"{rubric.episodes} episodes on seeds you do not see; the episodes earn up to "
            f"{rubric.scoring.points:g} points from the {rubric.scoring.statistic} return ({_g(rubric.scoring.zero)} earns 0, "
            f"{_g(rubric.scoring.full)} earns them all), out of {fmt_points(None, rubric.max_points).split('/ ')[1]} in all. "
            f"The assignment's parts: {parts}.")


def handed_in(sub: Submission) -> set[str]:
    """The parts a submission holds: ``model`` (an ONNX file, or trained weights for the
    notebook's network) and ``notebook``."""
    parts = set()
    if sub.model is not None or (sub.notebook is not None and sub.weights):
        parts.add("model")
    if sub.notebook is not None:
        parts.add("notebook")
    return parts


def _part_files(run: _Run) -> dict[str, str]:
    """How each part is handed in, in the words of the task's notebook framework."""
    module = run.task.notebook_module() if run.task is not None else None
    model = ("the trained model (model.onnx)" if getattr(module, "FRAMEWORK", "torch") == "keras" or module is None
             else "the trained model (model.onnx, or the trained weights policy.pt beside the notebook)")
    return {"model": model, "notebook": "the notebook (homework.ipynb)"}


def _required_parts(run: _Run) -> None:
    """A hand-in without a part the rubric requires is invalid, saying which part and how to add it."""
    have = handed_in(run.sub)
    for part in ("notebook", "model"):
        if run.graded_by.part_use(part) == "required" and part not in have:
            files = _part_files(run)  # imports the notebook module: only for the message
            _invalid(run, CheckResult(
                name=f"{part}_handed_in", passed=False,
                message=f"{files[part]} is not handed in, and the assignment {run.graded_by.id!r} requires it",
                hint=f"hand in {files[part]} with the rest, in one folder"))
            return


def write_outputs(result: GradeResult, out: OutputDir, *, report: bool, evidence: NotebookEvidence | None = None,
                  also_write: AlsoWrite | None = None) -> None:
    """The one writer of a grading's outputs, into an :class:`~grader.outputs.fsutil.OutputDir`:
    the notebook's logs, the report, the caller's ``also_write`` files (``grade batch``:
    Gradescope's ``results.json``) and, last, ``result.json`` (a folder with it is complete).
    Every caller has decided everything in ``result`` before (``grade_submission``'s ``decide``;
    ``grade batch``'s class-level flags, which rewrite the outputs of the flagged students through
    this function once)."""
    if evidence is not None:
        for name, data in evidence.logs.items():
            if data:
                out.write_bytes(Path(name).name, data)
    if report:
        from grader.outputs.report import write_report

        write_report(result, out.path)
    for name, render in (also_write or {}).items():
        out.write_text(name, render(result))
    out.write_text("result.json", result.to_json())


def reproduce_command(path: Path, *, selfcheck: bool, task: str | None, rubric_path: Path | None,
                      seeds: Sequence[int] | None, episodes: int | None) -> str:
    parts = ["grade"] + (["check"] if selfcheck else []) + [path.name]
    if task:
        parts += ["--task", task]
    if rubric_path is not None:
        parts += ["--rubric", f"rubrics/{rubric_path.name}" if rubric_path.parent.name == "rubrics" else rubric_path.name]
    if seeds is not None:
        s = list(seeds)
        contiguous = s == list(range(s[0], s[0] + len(s)))
        parts += ["--seeds", f"{s[0]}-{s[-1]}" if contiguous else ",".join(map(str, s))]
    elif episodes is not None:
        parts += ["--episodes", str(episodes)]
    return shlex.join(parts)
