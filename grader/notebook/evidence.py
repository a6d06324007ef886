"""What the notebook collectors hand to the grading pipeline: judged checks, produced models, logs.

Nothing here is trusted that came from the sandbox, except as *data*: ``ProducedModel.data`` is
the untrusted (size-capped) bytes of an ONNX file the notebook's code exported, to be graded by
the pipeline exactly like an uploaded file; ``logs`` are what the notebook printed. The checks
were judged in the grader process, on outputs the student's code produced for inputs it was
given, against answers it never saw. Points are left to the pipeline (``points=None``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from grader.result import CheckResult

ModelRole = Literal["network", "trained"]


@dataclass(frozen=True)
class ProducedModel:
    """An ONNX model the notebook produced in the sandbox.

    ``network``: the notebook's network class exported with fresh weights (checked for shapes
    only); ``trained``: the class loaded with handed-in weights (scored by episodes).

    ``own_state``: a network exported on the notebook's own state (its preprocessing is the
    student's: MsPacman's homework) takes that state's shape, not a contract's; the state
    (``[1, ...]``, float32, the notebook's preprocessing of real frames) is what its model checks
    run it on.
    """

    role: ModelRole
    label: str  # for messages, e.g. "DQN with policy.pt"
    data: bytes  # the ONNX bytes as produced (untrusted, capped)
    own_state: np.ndarray | None = None


@dataclass
class NotebookEvidence:
    """The result of one notebook collector; the pipeline scores and writes it."""

    checks: list[CheckResult] = field(default_factory=list)  # points=None, max_points=None
    models: list[ProducedModel] = field(default_factory=list)
    logs: dict[str, bytes] = field(default_factory=dict)  # file name -> capped content
    # What a check can only judge once the graded model is known (MsPacman: whether the notebook's
    # preprocessing agrees with the model's input contract): the collector's module ``resolve``s it.
    pending: Any = None
    not_run: str | None = None  # the code was not run, and why: a set-up problem (no bubblewrap), never the student's
