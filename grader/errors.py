"""One error hierarchy, by whose fault it is. Every error the grader raises derives from
:class:`GraderError`, through one of three branches:

* :class:`InvalidSubmission` -- the student's fault: the submission is *invalid* (exit 2). The
  message says what is wrong, in words the student can act on, and ``hint`` how to fix it.
  Pipelines turn these into failed checks rather than raising them to the user.

  - :class:`SubmissionError`: a hand-in that cannot be graded (its ``check`` names the check);
  - :class:`ModelLoadError`: bytes that are not a usable ONNX model;
  - :class:`ExternalDataError`: a model whose weights live in a separate file (torch's sidecar);
  - :class:`TaskDetectionError`: a model whose inputs and outputs fit no task;
  - :class:`EngineFailure`: the model could not be loaded or run in the sandbox (parent side);
  - :class:`PolicyFailure` / :class:`BudgetExceeded`: the model failed while acting (worker side);
  - :class:`MalformedMessage`: bytes on the channel that are not a well-formed message (what a
    worker taken over by a model would send).

* :class:`SetupError` -- the instructor's set-up: a bad rubric, a missing optional dependency, a
  missing file on the command line (exit 1). The message says what to install or change. Its
  subclasses live beside the code that detects them (``RubricError``, ``BaselinesError``,
  ``RosterError``, ``LmsFormatError``, ``OutputDirError``, ``UnknownTask``) plus
  :class:`MissingDependency` here.

* :class:`GraderBug` -- the grader's own failure (exit 1, status ``error``): it wraps an
  unexpected exception; the traceback goes to a log file in the output folder, and the student is
  never blamed. :class:`EngineBug` is one inside a worker (it carries the worker's traceback).

Every front end maps these the same way (:data:`STATUS_EXIT`). Classes that were once plain
``ValueError`` / ``RuntimeError`` keep those as second bases, so callers catching them still do.
"""

from __future__ import annotations

EXIT_GRADED, EXIT_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
STATUS_EXIT = {"graded": EXIT_GRADED, "invalid": EXIT_INVALID, "error": EXIT_ERROR}


class GraderError(Exception):
    """Base of the grader's own exceptions."""

    exit_code = EXIT_ERROR


class InvalidSubmission(GraderError):
    """The student's fault: the submission is invalid (exit 2); ``str(exc)`` is student-facing."""

    exit_code = EXIT_INVALID


class SubmissionError(InvalidSubmission):
    """The submission is invalid; ``check`` names the failed check, ``hint`` says how to fix it."""

    def __init__(self, message: str, *, hint: str = "", check: str = "submission"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.check = check


class ModelLoadError(InvalidSubmission, ValueError):
    """The bytes are not a usable ONNX model; ``str(exc)`` is the student-facing message."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ExternalDataError(InvalidSubmission, ValueError):
    """The model keeps its weights in a separate file (torch's external data) that is missing or unusable."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message, self.hint = message, hint


class TaskDetectionError(InvalidSubmission, ValueError):
    """The model's inputs and outputs fit none of the tasks; the message lists what each expects."""


class EngineFailure(InvalidSubmission, RuntimeError):
    """The model could not be loaded or run in the sandbox; ``str(exc)`` is the student-facing reason."""


class PolicyFailure(InvalidSubmission, RuntimeError):
    """The model failed while acting (bad output, NaN, onnxruntime error); the message is student-facing."""


class BudgetExceeded(PolicyFailure):
    """The model is slower than the rubric's budgets allow; the message says by how much."""


class MalformedMessage(InvalidSubmission, ValueError):
    """Bytes on the channel that are not a well-formed grader message (never unpickled, never run)."""


class SetupError(GraderError):
    """The instructor's set-up is wrong or incomplete; the message says what to install or fix."""


class MissingDependency(SetupError):
    """An optional dependency the grader needs for this submission is not installed."""

    def __init__(self, what: str, *, install: str):
        super().__init__(f"{what} needs a package that is not installed here: {install}")
        self.install = install


class GraderBug(GraderError):
    """The grader failed on its own; ``log`` is the file holding the traceback, when written."""

    def __init__(self, message: str, *, log: str | None = None):
        super().__init__(message)
        self.log = log


class EngineBug(GraderBug):
    """The grader's own code failed inside a worker (not the model); ``traceback`` is the worker's."""

    def __init__(self, message: str, *, traceback: str = ""):
        super().__init__(message)
        self.traceback = traceback
