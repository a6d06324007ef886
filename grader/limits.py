"""The grader's limits and defaults, in one place.

Every cap on student input and every default of a command lives here, so that a reviewer can
see at once what a submission may cost and where to change it.
"""

from __future__ import annotations

import os

# --- what a submission may be ------------------------------------------------------------------------
MAX_MODEL_BYTES = 64 * 1024 * 1024  # the lesson's DQN is 7 MB; ONNX's own protobuf cap is 2 GB
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
MAX_WEIGHT_BYTES = 200 * 1024 * 1024  # a state_dict handed in beside a notebook

# --- defaults of the commands --------------------------------------------------------------------------
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))  # worker processes of one grading
DEFAULT_BATCH_SLOTS = max(1, os.cpu_count() or 1)  # submissions graded at once by `grade batch`
