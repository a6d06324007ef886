"""Baselines files: how the random policy and the reference agents score on a rubric's seeds.

Rubrics name baselines in their thresholds (``zero = "random"``, ``full = "reference"``); the
values come from a JSON file written by ``grade baselines`` and shipped beside the rubrics.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from grader.errors import SetupError
from grader.result import Summary


class BaselineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str  # "random" or the path of an ONNX file, relative to the repository
    sha256: str | None = None  # of the ONNX file
    summary: Summary
    returns: list[float]


class BaselinesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    rubric_id: str
    seed_set: str  # which seeds: "grading" (the rubric's grading seeds) or "public"
    n_seeds: int
    created: str
    versions: dict[str, str]
    entries: dict[str, BaselineEntry]


@lru_cache(maxsize=16)
def _load(path: Path, mtime: float) -> BaselinesFile:
    return BaselinesFile.model_validate_json(path.read_bytes())


class BaselinesError(SetupError, ValueError):
    """The baselines file cannot be used (the instructor's set-up); the message says what to run."""


def load_baselines(path: str | Path) -> BaselinesFile:
    path = Path(path)
    try:
        return _load(path, path.stat().st_mtime)
    except OSError as exc:
        raise BaselinesError(f"cannot read baselines file {path}: {exc.strerror}; run `grade baselines`") from None
    except ValidationError as exc:
        raise BaselinesError(f"baselines file {path} is invalid: {exc.errors()[0]['msg']}; run `grade baselines`") from None
