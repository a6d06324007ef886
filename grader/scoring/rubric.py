"""Rubrics: which seeds to play, how many episodes, and how a statistic becomes points.

A rubric is a TOML file validated by pydantic; an unknown or wrong key is rejected with a
message naming the file and the key. Seeds are written as ``"A-B"`` (inclusive ranges), lists of
numbers and ranges, or a ``grading_file`` holding them: instructors keep their grading seeds in
a private file beside the rubric, students see only the public seeds.

Scoring is linear: ``points * clip((stat - zero) / (full - zero), 0, 1)`` where ``zero`` and
``full`` are numbers or names of baselines (``random``, ``reference``, ...) resolved through the
rubric's baselines file, so a rubric can say "zero at random play, full at the reference agent".
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grader import limits as L
from grader.errors import GraderBug, SetupError
from grader.resources import default_rubric_path as _default_rubric_path
from grader.scoring.deadline import Deadline

if TYPE_CHECKING:
    from grader.scoring.baselines import BaselinesFile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Statistic = Literal["mean", "median", "iqm", "ci_low", "success_rate"]
MAX_SEEDS = 100_000


class RubricError(SetupError, ValueError):
    """A rubric or seed specification is invalid (the instructor's input); the message says where and why."""


def parse_seeds(spec: str | int | list, *, where: str = "seeds") -> list[int]:
    """Parse ``"0-9"``, ``"1, 5, 10-12"``, ``7`` or ``[1, "3-4"]`` into a list of seeds.

    Seeds are non-negative integers below 2**31; the order is kept, duplicates are rejected.
    """
    items: list = spec if isinstance(spec, list) else [spec]
    seeds: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise RubricError(f"{where}: {item!r} is not a seed")
        if isinstance(item, int):
            seeds.append(item)
            continue
        if not isinstance(item, str):
            raise RubricError(f"{where}: {item!r} is not a seed or a range like '0-99'")
        for part in re.split(r"[,\s]+", item.strip()):
            if not part:
                continue
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise RubricError(f"{where}: {part!r} is not a seed or a range like '0-99'")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise RubricError(f"{where}: range {part!r} ends before it starts")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise RubricError(f"{where}: more than {MAX_SEEDS} seeds")
            seeds.extend(range(lo, hi + 1))
    for s in seeds:
        if not 0 <= s < 2**31:
            raise RubricError(f"{where}: seed {s} is outside 0..2**31-1")
    if len(set(seeds)) != len(seeds):
        raise RubricError(f"{where}: a seed is listed twice")
    if not seeds:
        raise RubricError(f"{where}: no seeds given")
    return seeds


def read_seeds_file(path: Path) -> list[int]:
    """Seeds from a text file: numbers and ranges separated by commas or white space; ``#`` comments."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RubricError(f"cannot read the grading seeds file {path}: {exc.strerror}") from None
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return parse_seeds(text, where=str(path))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Seeds(_Strict):
    public: str | list[int | str] = Field(description="self-check seeds, shown to students")
    grading: str | list[int | str] | None = Field(None, description="grading seeds, if not in a file")
    grading_file: str | None = Field(None, description="file of grading seeds, relative to the rubric")

    @field_validator("public", "grading")
    @classmethod
    def _parse(cls, v):
        if v is not None:
            parse_seeds(v)
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if self.grading is None and self.grading_file is None:
            raise ValueError("give either seeds.grading or seeds.grading_file")
        return self


class Scoring(_Strict):
    statistic: Statistic = "mean"
    zero: float | str = Field(description="statistic value that earns 0 points, or a baseline name")
    full: float | str = Field(description="statistic value that earns full points, or a baseline name")
    points: float = Field(10.0, gt=0)


PartUse = Literal["required", "optional", "extra"]


class Parts(_Strict):
    """What a hand-in is made of, and how each part counts (see :mod:`grader.scoring.points`).

    * ``model``: the agent that plays the episodes -- an uploaded ONNX model, or the notebook's
      network with the trained weights handed in beside it (``policy.pt``); it earns
      ``scoring.points``.
    * ``notebook``: the notebook checks of ``[notebook.points]``.

    ``required`` parts count in the maximum, and a hand-in without one is invalid; ``optional``
    parts count in the maximum and earn 0 when not handed in; ``extra`` parts (extra credit) are
    added on top of a maximum that leaves them out. A part left out of the table is not graded.
    ``bands`` names what the bands (and the leaderboard's bands) describe: ``model`` (what the
    agent does in the episodes, the default) or ``total`` (all the points).
    """

    model: PartUse | None = "required"
    notebook: PartUse | None = None
    bands: Literal["model", "total"] = "model"


class Band(_Strict):
    name: str
    min_fraction: float = Field(ge=0, le=1)


class NotebookRubric(_Strict):
    """How a notebook is graded: points per notebook check and the sandbox limits."""

    points: dict[str, float] = Field(default_factory=dict, description="check name -> points")
    timeout_s: float = Field(60.0, gt=0, le=3600)
    memory_mb: int = Field(3072, ge=256, le=65536)
    file_size_mb: int = Field(128, ge=1, le=65536, description="largest file the notebook's code may write")
    processes: int = Field(64, ge=8, le=4096, description="processes and threads the notebook's code may run")
    lesson_preprocessing: bool = Field(False, description="the notebook's preprocessing must be the lesson's; by default "
                                       "a deliberate change passes when the model handed in agrees with it")


class Budgets(_Strict):
    """What a model may cost while it is graded (defaults: :mod:`grader.limits`); over budget, it fails."""

    decision_s: float = Field(L.BUDGET_DECISION_S, gt=0, le=60,
                              description="mean wall time of one policy call (one decision for the pool), over decision_window calls")
    decision_window: int = Field(L.BUDGET_DECISION_WINDOW, ge=1, le=100_000)
    call_max_s: float = Field(L.BUDGET_CALL_MAX_S, gt=0, le=600, description="hard cap on any single policy call")
    episodes_wall_s: float = Field(L.BUDGET_EPISODES_WALL_S, gt=0, le=86_400, description="wall time of the episodes phase")
    episodes_cpu_s: float = Field(L.BUDGET_EPISODES_CPU_S, gt=0, le=86_400, description="CPU time of the episodes phase")
    load_s: float = Field(L.BUDGET_LOAD_S, gt=0, le=3600)
    probe_s: float = Field(L.BUDGET_PROBE_S, gt=0, le=3600)
    record_s: float = Field(L.BUDGET_RECORD_S, gt=0, le=3600)


class DuplicatesRubric(_Strict):
    """``[duplicates]``: what a copy of one of the rubric's reference models does to a grading."""

    reference_copy: Literal["flag", "invalid"] = Field(
        "flag", description="flag: graded as usual, flagged for the instructor; invalid: the submission is invalid")
    reference_prints: str | None = Field(
        None, description="JSON file of the references' weight prints, relative to the rubric (written by "
                          "`grade gradescope`, whose zip ships no reference model)")


class ReferencePrint(_Strict):
    """A reference model as duplicate detection compares it (set by :meth:`Rubric.materialize`)."""

    file: str
    sha256: str
    prints: list[list] | None = None  # grader.submission.weights.weight_prints


Choose = Literal["last", "best"]


class FinalPhase(_Strict):
    """The final evaluation (``grade final``): each student's chosen model on fresh private seeds."""

    seeds: str | list[int | str] | None = Field(None, description="the final seeds, if not in a file")
    seeds_file: str | None = Field(None, description="file of the final seeds, relative to the rubric")
    episodes: int | None = Field(None, gt=0, le=MAX_SEEDS, description="default: every final seed")
    choose: Choose = Field("last", description="which submission of each student: their last, or their best")
    baselines: str | None = Field(
        None, description="baselines JSON file computed on the final seeds (`grade baselines --final`), relative to the "
                          "rubric; needed when a scoring threshold names a baseline")

    @field_validator("seeds")
    @classmethod
    def _parse(cls, v):
        if v is not None:
            parse_seeds(v, where="final.seeds")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.seeds is None) == (self.seeds_file is None):
            raise ValueError("give exactly one of final.seeds or final.seeds_file")
        return self


class Rubric(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    task: str = Field(description="a task plug-in's name (grader/tasks/)")
    title: str = ""
    episodes: int = Field(gt=0, le=MAX_SEEDS, description="grading episodes, one per seed")
    selfcheck_episodes: int = Field(5, gt=0, le=1000)
    baselines: str | None = Field(None, description="baselines JSON file, relative to the rubric")
    show_names: bool = Field(False, description="leaderboards show names instead of pseudonyms")
    references: dict[str, str] = Field(
        default_factory=dict, description="baseline name -> reference ONNX file (relative to the rubric) for `grade baselines`"
    )
    seeds: Seeds
    scoring: Scoring
    parts: Parts | None = Field(None, description="what a hand-in is made of (default: a required model; with "
                                                  "[notebook.points], an optional model and an optional notebook)")
    bands: list[Band] = []
    notebook: NotebookRubric = Field(default_factory=NotebookRubric)
    budgets: Budgets = Field(default_factory=Budgets)
    duplicates: DuplicatesRubric = Field(default_factory=DuplicatesRubric)
    deadline: Deadline | None = Field(None, description="when the work is due and what lateness costs (grader.scoring.deadline)")
    final: FinalPhase | None = Field(None, description="the final evaluation's fresh seeds (`grade final`)")
    # Filled in by materialize(): baseline name -> value of the scoring statistic (for the report).
    baseline_marks: dict[str, float] = Field(default_factory=dict)
    # Filled in by materialize(): reference name -> its sha256 and weight prints (every channel
    # compares a submission with them, also where the models themselves are not shipped).
    reference_weights: dict[str, ReferencePrint] = Field(default_factory=dict)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from grader.tasks import UnknownTask, get_task

        try:
            task = get_task(v)
        except UnknownTask as exc:
            raise ValueError(str(exc)) from None
        if task.homework_name != v:  # a rubric grades a homework, whichever of its input contracts a model takes
            raise ValueError(f"{v!r} is an input contract of the {task.homework_name} homework: the rubric's task is "
                             f"{task.homework_name!r}")
        return v

    @model_validator(mode="after")
    def _parts_declared(self):
        """The parts table filled in (an older rubric without one keeps its meaning), and consistent."""
        if self.parts is None:  # as before parts were declared: whatever was handed in earns its points
            self.parts = Parts(model="optional", notebook="optional") if self.notebook.points else Parts()
        if self.parts.model is None and self.parts.notebook is None:
            raise ValueError("parts: the assignment must have a model or a notebook part")
        if self.parts.notebook is not None and not self.notebook.points:
            raise ValueError(f"parts.notebook = {self.parts.notebook!r} but [notebook.points] scores no check")
        if self.parts.notebook is None and self.notebook.points:
            raise ValueError("[notebook.points] scores notebook checks but parts.notebook is not set "
                             "(set it to \"required\", \"optional\" or \"extra\", or remove the points)")
        if self.parts.bands == "model" and self.parts.model is None:
            raise ValueError("parts.bands = \"model\" but the assignment has no model part (use bands = \"total\")")
        return self

    @model_validator(mode="after")
    def _consistent(self):
        """Checks of the whole rubric that need no other file (the rest: :meth:`materialize`)."""
        public = parse_seeds(self.seeds.public, where="seeds.public")
        if self.selfcheck_episodes > len(public):
            if "selfcheck_episodes" not in self.model_fields_set:  # the default: as many as there are
                self.selfcheck_episodes = len(public)
                return self._consistent_grading(public)
            raise ValueError(f"selfcheck_episodes = {self.selfcheck_episodes} but seeds.public has only {len(public)} seeds")
        return self._consistent_grading(public)

    def _consistent_grading(self, public: list[int]):
        if self.seeds.grading is not None and self.seeds.grading_file is None:
            self._check_grading(parse_seeds(self.seeds.grading, where="seeds.grading"), public, "seeds.grading")
        return self

    def _check_grading(self, grading: list[int], public: list[int], where: str) -> None:
        if self.episodes > len(grading):
            raise ValueError(f"episodes = {self.episodes} but {where} has only {len(grading)} seeds")
        overlap = sorted(set(grading) & set(public))
        if overlap:
            raise ValueError(f"{where} and seeds.public share {len(overlap)} seeds (e.g. {overlap[0]}): "
                             "students would see grading seeds")

    # Set by load_rubric, not by the file.
    path: Path | None = Field(None, exclude=True)
    sha256: str = Field("", exclude=True)
    # Set by materialize(): on which seeds the baselines were computed, in words, and whether they are the grading seeds.
    baselines_on: str = Field("", exclude=True)
    baselines_match: bool | None = Field(None, exclude=True)

    def resolve(self, relative: str) -> Path:
        base = self.path.parent if self.path else Path.cwd()
        return (base / relative).resolve()

    def public_seeds(self) -> list[int]:
        return parse_seeds(self.seeds.public, where="seeds.public")

    def all_grading_seeds(self) -> list[int]:
        if self.seeds.grading_file:
            return read_seeds_file(self.resolve(self.seeds.grading_file))
        if self.seeds.grading is None:  # Seeds' validator requires one of the two
            raise RubricError(f"rubric {self.id!r}: no grading seeds")
        return parse_seeds(self.seeds.grading, where="seeds.grading")

    def grading_seeds(self) -> list[int]:
        """The first ``episodes`` grading seeds."""
        seeds = self.all_grading_seeds()
        if len(seeds) < self.episodes:
            raise RubricError(
                f"rubric {self.id!r} asks for {self.episodes} episodes but has only {len(seeds)} grading seeds"
            )
        return seeds[: self.episodes]

    def part_use(self, part: str) -> str | None:
        """``required``, ``optional``, ``extra`` or None (not graded) for ``model`` or ``notebook``."""
        return getattr(self.parts or Parts(), part)

    @property
    def part_points(self) -> dict[str, float]:
        """Part -> the points it can earn, for the parts the assignment grades."""
        points = {"notebook": float(sum(self.notebook.points.values())), "model": float(self.scoring.points)}
        return {part: value for part, value in points.items() if self.part_use(part) is not None}

    @property
    def max_points(self) -> float:
        """The maximum: the points of every required and optional part (extra credit is on top)."""
        return float(sum(v for part, v in self.part_points.items() if self.part_use(part) != "extra"))

    def materialize(self, *, grading_seeds: bool = True) -> Rubric:
        """A copy that needs no other file: grading seeds inline, thresholds as numbers, the
        baselines' values kept for the report. Raises :class:`RubricError` naming the key.

        ``grading_seeds=False`` is the student's self-check: it plays public seeds only, so a
        private seeds file the student does not have is left unread (everything else is checked).
        """
        where = f"{self.path.name if self.path else self.id}"
        if not grading_seeds and self.seeds.grading_file and not self.resolve(self.seeds.grading_file).is_file():
            grading = None
        else:
            grading = self.all_grading_seeds()
            try:
                self._check_grading(grading, self.public_seeds(),
                                    "seeds.grading_file" if self.seeds.grading_file else "seeds.grading")
            except ValueError as exc:
                raise RubricError(f"{where}: {exc}") from None
        zero, full = self.thresholds()
        marks = dict(self.baseline_marks)
        baselines_on, baselines_match = self.baselines_on, self.baselines_match
        if self.baselines:
            baselines_on, baselines_match = self._baselines_seeds(grading)
            if baselines_match is False and not any(isinstance(t, str) for t in (self.scoring.zero, self.scoring.full)):
                baselines_match = None  # only the report's marks use them (and say on which seeds)
            for name, entry in self._baselines(self.baselines).entries.items():
                value = getattr(entry.summary, self.scoring.statistic)
                if value is not None:
                    marks[name] = float(value)
        scoring = self.scoring.model_copy(update={"zero": zero, "full": full})
        seeds = self.seeds if grading is None else self.seeds.model_copy(update={"grading": grading, "grading_file": None})
        out = self.model_copy(update={"scoring": scoring, "seeds": seeds, "baselines": None, "baseline_marks": marks,
                                      "reference_weights": self.reference_weights or self.read_reference_weights()})
        out.path, out.sha256 = self.path, self.sha256
        out.baselines_on, out.baselines_match = baselines_on, baselines_match
        return out

    def _baselines_seeds(self, grading: list[int] | None) -> tuple[str, bool | None]:
        """(in words, on which seeds the baselines file was computed; whether those are this rubric's
        first grading seeds: None when it cannot be told)."""
        from grader.scoring.baselines import seeds_fingerprint

        if not self.baselines:
            return "", None
        b = self._baselines(self.baselines)
        if b.seeds_sha256 is None:
            return f"{b.n_seeds} seeds not recorded in {self.baselines} (run `grade baselines` to record them)", None
        if grading is None:  # a self-check without the private seeds file
            return f"{b.n_seeds} grading seeds", None
        if len(grading) >= b.n_seeds and seeds_fingerprint(grading[: b.n_seeds]) == b.seeds_sha256:
            return f"the first {b.n_seeds} grading seeds of this rubric", True
        return f"{b.n_seeds} other seeds than this rubric's grading seeds", False

    def check_baselines_follow_seeds(self, *, command: str) -> None:
        """Refuse (:class:`RubricError`) a materialised rubric whose thresholds name baselines
        computed on other seeds than its grading seeds, saying which command computes them again.
        ``command`` is the refusing command, for the message. (Baselines that only mark the report's
        plot are kept; the report says on which seeds they were computed.)"""
        if self.baselines_match is False:
            where = self.path.name if self.path else self.id
            fix = (f"set `final.baselines` in {where} to a new file (e.g. \"baselines/{self.id}.json\") and run "
                   f"`grade baselines --rubric {where} --final`" if command == "grade final" else
                   f"set `seeds.grading_file` in {where} to the private seeds file and run "
                   f"`grade baselines --rubric {where}`")
            raise RubricError(
                f"`{command}`: the baselines of rubric {self.id!r} were computed on {self.baselines_on}, and its "
                f"scoring thresholds name them. Compute them on its grading seeds: {fix}")

    def fingerprint(self) -> str:
        """sha256 of everything in the materialised rubric that decides a grade, and the grader's version.

        Changing the grading seeds (inline or in the seeds file), a baseline a threshold names, the
        scoring, the episodes or the notebook points changes it; comments and key order do not.
        """
        import json

        from grader import __version__

        m = self if self.seeds.grading_file is None and self.baselines is None else self.materialize()
        # The deadline is not in it: lateness is checked per submission (grade batch regrades a student
        # whose lateness changed); the final phase has its own rubric (final_rubric()).
        decides = m.model_dump(mode="json", exclude={"title", "show_names", "references", "baseline_marks", "bands",
                                                      "reference_weights", "duplicates", "deadline", "final"})
        decides["reference_copy"] = m.duplicates.reference_copy
        decides["bands"] = [b.model_dump(mode="json") for b in m.bands]
        decides["grader"] = __version__
        return hashlib.sha256(json.dumps(decides, sort_keys=True).encode()).hexdigest()

    def read_reference_weights(self) -> dict[str, ReferencePrint]:
        """The references' sha256 and weight prints: from ``duplicates.reference_prints`` when set,
        else from the ``references`` models themselves (a missing or unreadable model is left
        out: ``grade baselines`` is where a bad reference is an error)."""
        import json

        from grader.submission.weights import file_prints

        if self.duplicates.reference_prints:
            path = self.resolve(self.duplicates.reference_prints)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                return {name: ReferencePrint.model_validate(entry) for name, entry in data.items()}
            except (OSError, ValueError) as exc:
                raise RubricError(f"duplicates.reference_prints: cannot read {path}: {exc}") from None
        out = {}
        for name, rel in self.references.items():
            known = file_prints(self.resolve(rel))
            if known is not None:
                out[name] = ReferencePrint(file=Path(rel).name, sha256=known[0], prints=known[1])
        return out

    def final_seeds(self) -> list[int]:
        """The final evaluation's seeds: fresh, private, none of them public or a term grading seed."""
        if self.final is None:
            raise RubricError(f"rubric {self.id!r} has no [final] table; add one with the final evaluation's seeds "
                              "(final.seeds or final.seeds_file) to run `grade final`")
        if self.final.seeds_file:
            where, seeds = "final.seeds_file", read_seeds_file(self.resolve(self.final.seeds_file))
        else:  # FinalPhase validates that exactly one of the two is given
            where, seeds = "final.seeds", parse_seeds(self.final.seeds or [], where="final.seeds")
        used = set(self.public_seeds()) | set(self.all_grading_seeds())
        overlap = sorted(set(seeds) & used)
        if overlap:
            raise RubricError(f"rubric {self.id!r}: {where} shares {len(overlap)} seeds with the public or term grading "
                              f"seeds (e.g. {overlap[0]}); the final evaluation needs fresh seeds")
        episodes = self.final.episodes or len(seeds)
        if episodes > len(seeds):
            raise RubricError(f"rubric {self.id!r}: final.episodes = {episodes} but {where} has only {len(seeds)} seeds")
        return seeds[:episodes]

    def final_rubric(self) -> Rubric:
        """The rubric of the final evaluation, not yet materialised: this one (as loaded, with
        ``materialize=False``) with the final seeds as its grading seeds, the final phase's baselines
        file (computed on those seeds by ``grade baselines --final``; else the term's, which
        :meth:`check_baselines_follow_seeds` then refuses where a threshold names it) and the id
        ``<id>.final``, so that term and final grades live side by side in one gradebook."""
        seeds = self.final_seeds()
        final = self.final
        if final is None:  # final_seeds() refused already
            raise GraderBug("final_rubric() without a [final] table")
        out = self.model_copy(update={
            "id": f"{self.id}.final"[:64], "episodes": final.episodes or len(seeds),
            "title": f"{self.title or self.id}: final evaluation",
            "seeds": self.seeds.model_copy(update={"grading": seeds, "grading_file": None}),
            "baselines": final.baselines or self.baselines,
        })
        out.path, out.sha256 = self.path, self.sha256
        return out

    def threshold(self, value: float | str, *, statistic: str | None = None) -> float:
        """A threshold as a number: numbers pass through, names are looked up in the baselines."""
        if not isinstance(value, str):
            return float(value)
        if not self.baselines:
            raise RubricError(f"rubric {self.id!r}: scoring names baseline {value!r} but the rubric sets no `baselines` file")
        baselines = self._baselines(self.baselines)
        entry = baselines.entries.get(value)
        if entry is None:
            known = ", ".join(sorted(baselines.entries)) or "none"
            raise RubricError(f"baseline {value!r} is not in {self.baselines} (it has: {known}); run `grade baselines`")
        stat = getattr(entry.summary, statistic or self.scoring.statistic)
        if stat is None:
            raise RubricError(f"baseline {value!r} has no {statistic or self.scoring.statistic}")
        return float(stat)

    def _baselines(self, relative: str) -> BaselinesFile:
        """The baselines file named by ``relative`` (the rubric's ``baselines`` key)."""
        from grader.scoring.baselines import BaselinesError, load_baselines

        try:
            return load_baselines(self.resolve(relative))
        except BaselinesError as exc:
            raise RubricError(f"rubric {self.id!r}, key `baselines`: {exc}") from None

    def thresholds(self) -> tuple[float, float]:
        zero, full = self.threshold(self.scoring.zero), self.threshold(self.scoring.full)
        if math.isclose(zero, full) or full < zero:
            raise RubricError(f"rubric {self.id!r}: the full-marks threshold ({full:g}) must be above zero ({zero:g})")
        return zero, full

    def points_for(self, statistic_value: float) -> float:
        zero, full = self.thresholds()
        fraction = min(1.0, max(0.0, (statistic_value - zero) / (full - zero)))
        return round(self.scoring.points * fraction, 4)



@dataclass(frozen=True)
class RubricKey:
    """What the gradebook keys an attempt on besides the submission's bytes (for ``grade batch``
    and the site alike): the rubric's id and its fingerprint (the materialised rubric, the grader's
    version, and any ``--episodes`` override). The gradebook's ``rubric_sha256`` column holds it."""

    id: str
    sha256: str


def rubric_key(rubric: Rubric, episodes: int | None = None) -> RubricKey:
    fingerprint = rubric.fingerprint()
    if episodes is None:
        return RubricKey(rubric.id, fingerprint)
    return RubricKey(rubric.id, hashlib.sha256(f"{fingerprint}\nepisodes={episodes}".encode()).hexdigest())


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid rubric"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key (check its spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def load_rubric(path: str | Path, *, materialize: bool = True, selfcheck: bool = False) -> Rubric:
    """Read and validate a rubric TOML file as a whole; raises :class:`RubricError` with a readable message.

    With ``materialize`` (the default) the result is :meth:`Rubric.materialize`'d: its seeds file
    and baselines file are read and checked now, before any submission is touched. ``grade
    baselines`` loads without it (it writes the baselines file the thresholds may name).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RubricError(f"cannot read rubric {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RubricError(f"{path}: not valid TOML: {exc}") from None
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        raise RubricError(_format_validation_error(path, exc)) from None
    rubric.path = path.resolve()
    rubric.sha256 = hashlib.sha256(raw).hexdigest()
    return rubric.materialize(grading_seeds=not selfcheck) if materialize else rubric


def default_rubric_path(task: str) -> Path:
    """The shipped rubric of ``task`` (works from a checkout and from an installed wheel)."""
    from grader.tasks import get_task

    path = _default_rubric_path(get_task(task).homework_name)
    if not path.is_file():
        raise RubricError(f"task {task!r} ships no default rubric ({path} is missing); pass --rubric FILE")
    return path
