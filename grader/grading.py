"""Grading one submission end to end: read, check, play seeded episodes, score, record, report.

:func:`grade` is the Python API behind ``grade SUBMISSION`` and :func:`check` behind
``grade check``. Neither raises for a bad submission: every failure becomes a
:class:`~grader.result.GradeResult` with status ``invalid`` (the submission's fault, with a
message and a hint) or ``error`` (the grader's fault).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grader import checks as C
from grader.contract import get_task
from grader.engine import Engine, EngineFailure
from grader.limits import DEFAULT_WORKERS
from grader.onnx_model import MAX_FILE_BYTES, ModelLoadError, describe, parse_model
from grader.result import CheckResult, EpisodeResult, GradeResult, RubricInfo, VideoInfo
from grader.rubric import Rubric, RubricError, default_rubric_path, load_rubric
from grader.stats import summarize

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class GradeOptions:
    """Defaults in one place; the CLI and the batch grader pass these through."""

    workers: int = DEFAULT_WORKERS
    video: bool = True
    device: str = "cpu"
    report: bool = True


DEFAULTS = GradeOptions()


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("gymnasium", "ale-py", "onnxruntime", "onnx", "numpy", "rl-grader"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def read_capped(path: Path, cap: int = MAX_FILE_BYTES) -> bytes:
    """Read at most ``cap`` + 1 bytes (so that an oversized file is detected without reading it all)."""
    with open(path, "rb") as f:
        return f.read(cap + 1)


read_submission = read_capped


def default_out_dir(submission: Path) -> Path:
    return submission.with_name(submission.name + ".grading")


def _invalid(result: GradeResult, check: CheckResult) -> GradeResult:
    result.checks.append(check)
    result.status = "invalid"
    result.error = f"{check.message}" + (f" — {check.hint}" if check.hint else "")
    return result


def resolve_seeds(rubric: Rubric, *, seeds: Sequence[int] | None, episodes: int | None, selfcheck: bool) -> tuple[list[int], str]:
    """The seeds to play and which set they come from (explicit, public or grading)."""
    if seeds is not None:
        return list(seeds), "explicit"
    if selfcheck:
        pool, n, seed_set = rubric.public_seeds(), episodes or rubric.selfcheck_episodes, "public"
    else:
        pool, n, seed_set = rubric.all_grading_seeds(), episodes or rubric.episodes, "grading"
    if n > len(pool):
        raise RubricError(f"{n} episodes asked for, but rubric {rubric.id!r} has only {len(pool)} {seed_set} seeds")
    return pool[:n], seed_set


def grade(
    submission: str | Path,
    *,
    task: str | None = None,
    rubric: Rubric | str | Path | None = None,
    episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    out: str | Path | None = None,
    workers: int | None = None,
    video: bool = DEFAULTS.video,
    report: bool = DEFAULTS.report,
    device: str = DEFAULTS.device,
    selfcheck: bool = False,
    engine: Engine | None = None,
    progress: Progress = _no_progress,
    display_name: str | None = None,
) -> GradeResult:
    """Grade an ONNX file or a notebook and write ``result.json`` (and the report) to ``out``.

    Raises :class:`~grader.rubric.RubricError` only for a bad rubric or seed specification (the
    instructor's input); a bad submission always comes back as a result.
    """
    submission = Path(submission)
    if isinstance(rubric, (str, Path)):
        rubric = load_rubric(rubric)
    out_dir = Path(out) if out is not None else default_out_dir(submission)
    if submission.suffix.lower() == ".ipynb":
        from grader.notebook import grade_notebook

        onnx_options = dict(episodes=episodes, seeds=seeds, workers=workers, video=video, device=device,
                            selfcheck=selfcheck, engine=engine, progress=progress)
        result = grade_notebook(submission, rubric=rubric, out_dir=out_dir, task=task, onnx_options=onnx_options)
        result.submission = display_name or submission.name
        _write_outputs(result, out_dir, report=report)
        return result
    result = grade_onnx_file(
        submission, task=task, rubric=rubric, episodes=episodes, seeds=seeds, out_dir=out_dir,
        workers=workers, video=video, device=device, selfcheck=selfcheck, engine=engine,
        progress=progress, display_name=display_name,
    )
    _write_outputs(result, out_dir, report=report)
    return result


def grade_onnx_file(
    submission: Path,
    *,
    task: str | None,
    rubric: Rubric | None,
    out_dir: Path,
    episodes: int | None = None,
    seeds: Sequence[int] | None = None,
    workers: int | None = None,
    video: bool = DEFAULTS.video,
    device: str = DEFAULTS.device,
    selfcheck: bool = False,
    engine: Engine | None = None,
    progress: Progress = _no_progress,
    display_name: str | None = None,
) -> GradeResult:
    """Grade one ONNX file (no report written); see :func:`grade`."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    result = GradeResult(
        submission=display_name or submission.name, task=task, status="graded",
        versions=package_versions(), created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    result.command = _reproduce_command(submission, task, rubric, seeds, episodes, selfcheck)
    # 1. Read and parse.
    try:
        data = read_submission(submission)
        parsed = parse_model(data)
    except OSError as exc:
        return _invalid(result, CheckResult(name="readable", passed=False, message=f"cannot read the submission: {exc.strerror}",
                                            hint="check the path and the file's permissions"))
    except ModelLoadError as exc:
        return _invalid(result, CheckResult(name="parses", passed=False, message=str(exc), hint=exc.hint))
    result.checks.append(CheckResult(name="parses", passed=True, message=f"a {len(data) / 1024:.0f} kB ONNX model"))
    result.model = describe(parsed)
    # 2. Which task.
    try:
        spec = get_task(task) if task else C.detect_task(parsed)
    except KeyError as exc:
        raise RubricError(str(exc.args[0])) from None
    except C.TaskDetectionError as exc:
        return _invalid(result, CheckResult(name="task", passed=False, message=str(exc),
                                            hint="LunarLander policies take [batch, 8]; MsPacman DQNs take [batch, 5, 44, 40]"))
    result.task = spec.name
    if rubric is None:
        rubric = load_rubric(default_rubric_path(spec.name))
    if rubric.task != spec.name:
        if task:  # the caller chose both: their mistake
            raise RubricError(f"rubric {rubric.id!r} is for {rubric.task}, but --task is {spec.name}")
        return _invalid(result, CheckResult(
            name="task", passed=False,
            message=f"the model takes {spec.input_signature}, a {spec.name} policy, but this is the {rubric.task} homework",
            hint=f"hand in the {rubric.task} model: its input is {get_task(rubric.task).input_signature}"))
    run_seeds, seed_set = resolve_seeds(rubric, seeds=seeds, episodes=episodes, selfcheck=selfcheck)
    result.max_score = rubric.scoring.points
    # 3. Static checks.
    result.checks += C.static_checks(parsed, spec)
    if result.failed_checks:
        return _invalid(result, result.checks.pop())
    timings["static_checks"] = time.perf_counter() - t_start
    # 4. Run it in the sandboxed workers.
    device = _resolve_device(device, result)
    own_engine = engine is None
    n_workers = max(1, min(workers or DEFAULTS.workers, len(run_seeds)))
    try:
        if own_engine:
            engine = Engine(n_workers)
        try:
            progress("loading", 0, 1)
            t0 = time.perf_counter()
            engine.load(parsed.data, task=spec.name, device=device, budgets=rubric.budgets)
        except EngineFailure as exc:
            return _invalid(result, CheckResult(name="loads", passed=False, message=f"onnxruntime cannot run the model: {exc}",
                                                hint="open it with onnxruntime.InferenceSession yourself; re-export with a standard opset"))
        result.checks.append(CheckResult(name="loads", passed=True, message="onnxruntime creates a session"))
        result.warnings += [w for w in engine.warnings if w not in result.warnings]
        try:
            probe_raw = engine.probe()
        except EngineFailure as exc:
            return _invalid(result, CheckResult(name="runs", passed=False, message=f"the model fails on a contract state: {exc}",
                                                hint=f"run it yourself with onnxruntime on a float32 state of shape [1, {', '.join(map(str, spec.state_shape))}]: "
                                                     "it must return the action scores without errors"))
        timings["load_and_probe"] = time.perf_counter() - t0
        result.checks += C.runtime_checks(C.Probe(**probe_raw), spec)
        if result.failed_checks:
            return _invalid(result, result.failed_checks[0])
        # 5. Episodes.
        t0 = time.perf_counter()
        done = [0]

        def on_episode(seed: int, ret: float, length: int) -> None:
            done[0] += 1
            progress("episodes", done[0], len(run_seeds))

        progress("episodes", 0, len(run_seeds))
        try:
            outcomes = engine.evaluate(run_seeds, on_episode=on_episode)
        except EngineFailure as exc:
            return _invalid(result, CheckResult(name="episodes", passed=False, message=f"the model failed during the episodes: {exc}",
                                                hint="it must give finite outputs for every state the game produces"))
        timings["episodes"] = time.perf_counter() - t0
        result.episodes = [EpisodeResult(seed=s, return_=outcomes[s][0], length=outcomes[s][1]) for s in run_seeds]
        result.summary = summarize([e.return_ for e in result.episodes], success_threshold=spec.success_threshold)
        statistic = getattr(result.summary, rubric.scoring.statistic)
        zero, full = rubric.thresholds()
        result.score = rubric.points_for(statistic)
        result.band = rubric.band_for(result.score)
        result.rubric = RubricInfo(
            id=rubric.id, path=str(rubric.path.name if rubric.path else ""), sha256=rubric.sha256, seed_set=seed_set,
            n_seeds=len(run_seeds), statistic=rubric.scoring.statistic, zero_at=zero, full_at=full,
            baselines=rubric.baseline_marks, fingerprint=rubric.fingerprint(),
        )
        # 6. Videos of the best, median and worst episodes.
        if video:
            t0 = time.perf_counter()
            result.videos = _record_videos(engine, result, out_dir, progress)
            timings["videos"] = time.perf_counter() - t0
    finally:
        if own_engine and engine is not None:
            engine.close()
    timings["total"] = time.perf_counter() - t_start
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    return result


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


def _record_videos(engine: Engine, result: GradeResult, out_dir: Path, progress: Progress) -> list[VideoInfo]:
    out_dir = out_dir.resolve()  # the worker runs in another directory
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = pick_video_episodes(result.episodes)
    hidden = result.rubric is not None and result.rubric.seed_set == "grading"
    number = {e.seed: i + 1 for i, e in enumerate(result.episodes)}
    videos = []
    for n, (label, ep) in enumerate(picks):
        progress("videos", n, len(picks))
        # Grading seeds are private: the report links the videos, so their names must not show them.
        name = f"{label}_episode{number[ep.seed]}.mp4" if hidden else f"{label}_seed{ep.seed}.mp4"
        tmp = out_dir / f".{name}.part.mp4"
        try:
            info = engine.record(ep.seed, str(tmp))
        except EngineFailure as exc:
            result.warnings.append(f"could not record the {label} episode: {exc}; no more videos were recorded")
            tmp.unlink(missing_ok=True)
            break
        os.replace(tmp, out_dir / name)
        videos.append(VideoInfo(label=label, seed=ep.seed, scored_return=ep.return_, rerun_return=info["return"],
                                matches=info["return"] == ep.return_, path=name, frames=info["frames"]))
    progress("videos", len(picks), len(picks))
    for v in videos:
        if not v.matches:
            which = f"episode {number[v.seed]}" if hidden else f"seed {v.seed}"
            result.warnings.append(f"the re-run of {which} returned {v.rerun_return} instead of {v.scored_return}")
    return videos


def _resolve_device(device: str, result: GradeResult) -> str:
    if device == "cpu":
        return "cpu"
    import onnxruntime as ort

    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        result.device = "cuda"
        return "cuda"
    result.warnings.append(
        f"--device {device}: onnxruntime has no CUDA provider here (install onnxruntime-gpu on a CUDA machine); ran on the CPU"
    )
    return "cpu"


def _reproduce_command(submission: Path, task, rubric, seeds, episodes, selfcheck) -> str:
    parts = ["grade"] + (["check"] if selfcheck else []) + [submission.name]
    if task:
        parts += ["--task", task]
    if rubric is not None and rubric.path is not None:
        parts += ["--rubric", f"rubrics/{rubric.path.name}" if rubric.path.parent.name == "rubrics" else rubric.path.name]
    if seeds is not None:
        s = list(seeds)
        contiguous = s == list(range(s[0], s[0] + len(s)))
        parts += ["--seeds", f"{s[0]}-{s[-1]}" if contiguous else ",".join(map(str, s))]
    elif episodes is not None:
        parts += ["--episodes", str(episodes)]
    return shlex.join(parts)


def _write_outputs(result: GradeResult, out_dir: Path, *, report: bool) -> None:
    """Write result.json (atomically) and, when asked, the HTML report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if report:
        try:
            from grader.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            write_report(result, out_dir)
    tmp = out_dir / ".result.json.part"
    tmp.write_text(result.to_json())
    os.replace(tmp, out_dir / "result.json")


def check(submission: str | Path, *, rubric: Rubric | str | Path | None = None, task: str | None = None, **kwargs) -> GradeResult:
    """The student's self-check: the same checks, a few episodes on the public seeds, no videos."""
    kwargs.setdefault("video", False)
    kwargs.setdefault("report", False)
    return grade(submission, rubric=rubric, task=task, selfcheck=True, **kwargs)
