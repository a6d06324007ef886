"""One error hierarchy, by whose fault it is.

* :class:`SubmissionError` -- the student's fault: the submission is *invalid* (exit 2). Its
  message says what is wrong and ``hint`` how to fix it. Pipelines usually turn it into a failed
  check rather than raising it to the user.
* :class:`SetupError` -- the instructor's set-up: a bad rubric, a missing optional dependency, a
  missing file on the command line (exit 1). The message says what to install or change.
* :class:`GraderBug` -- the grader's own failure (exit 1, status ``error``). Raised only to wrap an
  unexpected exception; the traceback goes to a log file in the output folder, and the student is
  never blamed.

Every front end maps these the same way (:data:`EXIT_CODES`).
"""

from __future__ import annotations

EXIT_GRADED, EXIT_ERROR, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
STATUS_EXIT = {"graded": EXIT_GRADED, "invalid": EXIT_INVALID, "error": EXIT_ERROR}


class GraderError(Exception):
    """Base of the grader's own exceptions."""

    exit_code = EXIT_ERROR


class SubmissionError(GraderError):
    """The submission is invalid; ``check`` names the failed check, ``hint`` says how to fix it."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, hint: str = "", check: str = "submission"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.check = check


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
