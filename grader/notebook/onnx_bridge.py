"""The one place where the notebook grader hands an ONNX file to the ONNX grading core."""

from __future__ import annotations

from pathlib import Path

from grader.result import CheckResult, GradeResult


def grade_onnx(path: Path, *, rubric, out_dir: Path, task: str, **options) -> GradeResult | CheckResult:
    """The ONNX grade of ``path`` (checks, episodes, videos), or a check saying why there is none."""
    from grader.grading import grade_onnx_file

    try:
        return grade_onnx_file(path, rubric=rubric, out_dir=out_dir, task=task, **options)
    except Exception as exc:  # noqa: BLE001 - the core should not raise; never let it take the notebook grade down
        return CheckResult(name="onnx_grading", passed=False, severity="error",
                           message=f"the ONNX grader failed on {path.name}: {type(exc).__name__}: {exc}",
                           hint="report this to the course staff with the notebook and the .onnx file")


def merge(nb: GradeResult, onnx: GradeResult, *, label: str) -> GradeResult:
    """Fold the ONNX grade of ``label`` into the notebook result (checks, episodes, score, videos)."""
    for c in onnx.checks:
        nb.checks.append(c.model_copy(update={"message": f"[{label}] {c.message}"}))
    nb.episodes = onnx.episodes
    nb.summary = onnx.summary
    nb.band = onnx.band
    nb.rubric = onnx.rubric
    nb.model = onnx.model
    nb.videos = onnx.videos
    nb.warnings += onnx.warnings
    nb.score = round(nb.score + onnx.score, 4)
    nb.max_score = round(nb.max_score + onnx.max_score, 4)
    if onnx.status == "error" and nb.status != "invalid":
        nb.status = "error"
    elif onnx.status == "invalid":
        nb.status = "invalid"
        nb.error = nb.error or onnx.error
    return nb
