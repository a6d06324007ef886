"""The grading result: one pydantic schema for ``result.json``, ``--json``, reports and the gradebook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    pass

Status = Literal["graded", "invalid", "error"]
Severity = Literal["error", "warning", "note"]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CheckResult(_Model):
    """One check. A failed ``error`` check makes the submission invalid; warnings and notes inform."""

    name: str
    passed: bool
    message: str
    hint: str = ""  # how to fix it; empty when passed
    severity: Severity = "error"
    points: float | None = None  # notebook checks carry rubric points
    max_points: float | None = None

    @property
    def blocking(self) -> bool:
        return not self.passed and self.severity == "error"


class EpisodeResult(_Model):
    seed: int
    return_: float = Field(alias="return")
    length: int


class Summary(_Model):
    n: int
    mean: float
    std: float
    median: float
    iqm: float
    ci_low: float
    ci_high: float
    success_rate: float | None  # None when the task defines no success threshold
    min: float
    max: float


class TensorInfo(_Model):
    name: str
    dtype: str
    shape: list[int | str | None]


class ModelInfo(_Model):
    sha256: str
    size_bytes: int
    opset: int | None
    ir_version: int | None
    producer: str = ""
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    parameters: int
    operators: dict[str, int]


class VideoInfo(_Model):
    label: str  # best, median, worst
    seed: int
    scored_return: float
    rerun_return: float
    matches: bool  # the rendered re-run gave exactly the scored return
    path: str  # relative to the output folder
    frames: int


class ScorePart(_Model):
    """One scored part of a submission (see :mod:`grader.scoring.points`)."""

    name: str  # a notebook check's name, "episodes", or "late"
    kind: Literal["notebook", "episodes", "late"]
    points: float
    max_points: float
    detail: str = ""
    extra: bool = False  # extra credit: its points add to the score, never to the maximum


class RubricInfo(_Model):
    id: str
    path: str
    sha256: str
    seed_set: Literal["public", "grading", "explicit"]
    n_seeds: int
    statistic: str
    zero_at: float
    full_at: float
    baselines: dict[str, float] = {}  # baseline name -> its value of the statistic (for the report)
    fingerprint: str = ""  # Rubric.fingerprint(): what decided this grade
    baselines_on: str = ""  # on which seeds the baselines were computed, in words ("" without a baselines file)


class OutcomeStat(_Model):
    """How many episodes ended one way (a task's outcome), and how they scored."""

    key: str
    label: str
    success: bool
    count: int
    share: float
    mean_return: float | None  # None when no episode ended this way
    end: dict[str, float] = {}  # mean of the episodes' end facts (final x, y, speed, legs, ...)


class LifeLoss(_Model):
    decision: int  # the policy's decision at which the life was lost (1-based)
    step: int  # env steps so far, protocol steps included
    score: float  # the score at that moment


class EpisodeDiagnostics(_Model):
    """The facts of one scored episode; ``episode`` is its number in ``episodes`` (never a seed)."""

    episode: int
    outcome: str
    return_: float = Field(alias="return")
    decisions: int
    actions: list[int]  # how often each action was chosen
    confidence: float | None = None  # mean entropy or mean top-two gap (see Diagnostics.confidence)
    end: dict[str, float] = {}
    lives: list[LifeLoss] = []  # when each life was lost (tasks with lives)
    life_scores: list[float] = []  # points scored in each life
    droughts: list[list[int]] = []  # [first step, last step, decisions] without any reward, longest first


class ActionUsage(_Model):
    names: list[str]
    counts: list[int]
    shares: list[float]


class Confidence(_Model):
    measure: Literal["entropy", "gap"]  # entropy of probability rows (nats), or gap between the two best scores
    mean: float
    text: str


class Diagnostics(_Model):
    """What the scored episodes did, measured while they were played (no extra runs)."""

    outcomes: list[OutcomeStat]
    actions: ActionUsage
    collapsed: bool  # one action for almost every decision, or an agent that never moves
    collapse: str = ""  # what the collapse is, in words
    confidence: Confidence | None = None  # None for integer action outputs
    hint: str = ""  # the dominant failure, in plain words, with what to change
    summary: list[str] = []  # the terminal's lines
    notes: list[str] = []  # what could not be measured, and why
    episodes: list[EpisodeDiagnostics] = []


class DuplicateFlag(_Model):
    """A sign of copying, always shown to the instructor: a reference model found by this grading
    (``scope`` reference, every channel) or another student found by ``grade batch`` (class)."""

    kind: Literal["identical", "same_weights", "behaviour"]
    other: str  # "reference:<file>" or a student id
    detail: str
    scope: Literal["reference", "class"] = "reference"
    action: Literal["flag", "invalid"] = "flag"  # what the rubric's [duplicates] made of it
    cluster: int | None = None  # grade batch's cluster number (duplicates.csv)

    @property
    def text(self) -> str:
        """The flag in words (the terminal, the report, Gradescope and the site say the same)."""
        what = "the submission is invalid" if self.action == "invalid" else "graded as usual"
        if self.scope == "reference":  # the detail names the reference model already
            return f"a copy of a course reference model: {self.detail} ({what})"
        kind = {"identical": "identical file", "same_weights": "same weights", "behaviour": "same behaviour"}[self.kind]
        return f"{kind} as {self.other}: {self.detail} ({what})"


class Late(_Model):
    """When a submission was handed in against its deadline; stored in ``result.json`` as ``late``."""

    submitted: str | None  # ISO time, None when the channel does not know it
    due: str  # the student's deadline (with any extension)
    source: str  # where the submission time came from
    days_late: int = 0  # started days after the deadline (0: on time)
    extension: str = ""  # the extension in words, when the student has one
    fraction: float = 0.0  # of the maximum lost (before the cap at the points earned)
    over_limit: bool = False  # later than late_max_days: 0 points
    max_days: int = 0  # the rubric's late_max_days

    def same_penalty(self, other: Late | None) -> bool:
        """Whether ``other`` costs the same and says the same deadline (the hand-in time may differ
        by seconds, e.g. a file re-extracted from a new download, as long as the penalty does not)."""
        keys = ("due", "days_late", "extension", "fraction", "over_limit", "max_days")
        return other is not None and (self.submitted is None) == (other.submitted is None) and \
            all(getattr(self, k) == getattr(other, k) for k in keys)

    def describe(self) -> str:
        """The part's detail, in words (no seed, nothing hidden: students see it)."""
        ext = f" (with an extension: {self.extension})" if self.extension else ""
        if self.submitted is None:
            return f"submission time unknown ({self.source}): no late penalty; due {self.due}{ext}"
        if self.days_late == 0:
            return f"on time: submitted {self.submitted} ({self.source}), due {self.due}{ext}"
        days = f"{self.days_late} day{'s' if self.days_late != 1 else ''} late"
        if self.over_limit:
            return (f"submitted {self.submitted} ({self.source}), {days}: late work is accepted for {self.max_days} "
                    f"days after {self.due}{ext}, so the submission earns 0 points")
        return (f"submitted {self.submitted} ({self.source}), {days} after {self.due}{ext}: "
                f"-{100 * self.fraction:g}% of the maximum")


class GradeResult(_Model):
    """Everything known about one grading. ``status`` is graded, invalid or error."""

    schema_version: int = SCHEMA_VERSION
    submission: str
    task: str | None
    status: Status
    checks: list[CheckResult] = []
    episodes: list[EpisodeResult] = []
    summary: Summary | None = None
    score: float = 0.0
    max_score: float = 0.0
    parts: list[ScorePart] = []  # how score and max_score were composed (grader.scoring.points)
    band: str | None = None
    late: Late | None = None  # when the work was handed in against its deadline (the "late" part)
    rubric: RubricInfo | None = None
    model: ModelInfo | None = None
    videos: list[VideoInfo] = []
    diagnostics: Diagnostics | None = None  # None when no episodes were played
    versions: dict[str, str] = {}
    device: str = "cpu"
    warnings: list[str] = []  # for the student: what they handed in, what was not graded
    operator_notes: list[str] = []  # for the instructor only (the sandbox's strength): never in a student's output
    next_step: str = ""  # a self-check: what the final grading runs (terminal and Jupyter alike)
    flags: list[DuplicateFlag] = []  # copies found (never scored; the rubric says whether they invalidate)
    error: str | None = None  # what went wrong, in words, when status is error or invalid
    command: str = ""  # reproduces this result
    # seconds: static_checks, load_and_probe, episodes, videos, total (wall); inference: the workers'
    # time inside the model's calls during the episodes, summed over the workers
    timings: dict[str, float] = {}
    created: str = ""
    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.blocking]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> GradeResult:
        return cls.model_validate_json(text)

