"""The one place where the notebook grader hands an ONNX file to the ONNX grading core.

``grader.grading.grade_onnx_file(path, *, rubric, out_dir, task) -> GradeResult`` is written on
another branch. Until it is merged, :func:`grade_onnx` returns ``None`` and the notebook result
records a note check ``onnx_grading`` saying the ONNX grade is unavailable.
"""

from __future__ import annotations

from pathlib import Path

from grader.result import CheckResult, GradeResult


def _grade_onnx_file():
    try:
        from grader.grading import grade_onnx_file  # type: ignore[attr-defined]
    except ImportError:
        return None
    return grade_onnx_file


def onnx_grading_available() -> bool:
    return _grade_onnx_file() is not None


def grade_onnx(path: Path, *, rubric, out_dir: Path, task: str) -> GradeResult | CheckResult:
    """The ONNX grade of ``path``, or a note check explaining why there is none."""
    fn = _grade_onnx_file()
    if fn is None:
        return CheckResult(
            name="onnx_grading", passed=False, severity="note",
            message=f"onnx grading unavailable: {path.name} was not played (grader.grading.grade_onnx_file is not in this build)",
            hint="grade the file with the ONNX grader (`grade` on the .onnx file)",
        )
    try:
        return fn(path, rubric=rubric, out_dir=out_dir, task=task)
    except Exception as exc:  # the core should not raise; never let it take the notebook grade down
        return CheckResult(name="onnx_grading", passed=False, severity="error",
                           message=f"the ONNX grader failed on {path.name}: {type(exc).__name__}: {exc}",
                           hint="report this to the course staff with the notebook and the .onnx file")


def merge(nb: GradeResult, onnx: GradeResult, *, label: str) -> GradeResult:
    """Fold the ONNX grade of ``label`` into the notebook result (checks, episodes, score)."""
    for c in onnx.checks:
        nb.checks.append(c.model_copy(update={"message": f"[{label}] {c.message}"}))
    nb.episodes = onnx.episodes
    nb.summary = onnx.summary
    nb.band = onnx.band
    nb.rubric = onnx.rubric
    nb.score = round(nb.score + onnx.score, 4)
    nb.max_score = round(nb.max_score + onnx.max_score, 4)
    if onnx.status == "error" and nb.status != "invalid":
        nb.status = "error"
    elif onnx.status == "invalid":
        nb.status = "invalid"
    return nb
