"""Check names, default points and the helper that builds a :class:`CheckResult`.

Names are stable (reports, rubrics and tests key on them). Points come from the rubric's
``[notebook.points]`` table; a check missing from it gets the default below.
"""

from __future__ import annotations

from grader.result import CheckResult

DEFAULT_POINTS: dict[str, dict[str, float]] = {
    "mspacman": {
        "cells_parse": 1,
        "definitions_run": 1,
        "preprocess_shape": 1,
        "preprocess_range": 1,
        "preprocess_values": 2,
        "network_constructs": 1,
        "network_forward": 2,
        "network_batch_independent": 1,
        "network_onnx_export": 1,
    },
    "lunarlander": {
        "cells_parse": 1,
        "actor_input": 1,
        "actor_output": 2,
    },
}

# checks without points: error = blocking (status invalid), warning / note = information
UNSCORED = {
    "notebook_format": "error",
    "task_detected": "error",
    "sandbox": "error",
    "sandbox_isolation": "warning",
    "skipped_statements": "note",
    "params": "note",
    "network_weights": "note",
    "actor_hidden": "note",
    "model_onnx_present": "error",
    "onnx_grading": "note",
}


class CheckList:
    def __init__(self, task: str | None, points: dict[str, float] | None):
        self.task = task
        self.points = dict(DEFAULT_POINTS.get(task or "", {}))
        # the rubric sets the points of this task's scored checks; other names are ignored
        self.points.update({k: float(v) for k, v in (points or {}).items() if k in self.points})
        self.items: list[CheckResult] = []

    def add(self, name: str, passed: bool, message: str, hint: str = "", *, severity: str | None = None) -> CheckResult:
        pts = self.points.get(name)
        if severity is None:
            severity = UNSCORED.get(name, "warning")
        c = CheckResult(
            name=name, passed=bool(passed), message=message, hint="" if passed else hint, severity=severity,
            points=(float(pts) if passed else 0.0) if pts is not None else None,
            max_points=float(pts) if pts is not None else None,
        )
        self.items.append(c)
        return c

    def fail_missing_scored(self, reason: str, hint: str) -> None:
        """Every scored check not yet reported fails with ``reason`` (e.g. the sandbox died)."""
        done = {c.name for c in self.items}
        for name in self.points:
            if name not in done:
                self.add(name, False, f"not checked: {reason}", hint)
