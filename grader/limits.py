"""The grader's limits and defaults, in one place.

Everything that bounds what a submission may cost (bytes, nodes, tensor elements, memory, time)
and the engine's defaults lives here; the modules that enforce them import these names. The
per-submission time budgets can be overridden by a rubric's ``[budgets]`` table
(:class:`grader.scoring.rubric.Budgets`, whose defaults are the ``BUDGET_*`` values below).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

# --- reading an ONNX file (grader.submission.onnx_model, before anything large is built) -------------------
MAX_FILE_BYTES = 64 * 1024 * 1024  # the lesson's DQN is 7 MB; ONNX's own protobuf cap is 2 GB
MAX_NODES = 5_000  # nodes in all graphs together; a policy network needs a few dozen
MAX_PROTO_ENTRIES = 200_000  # protobuf fields visited by the pre-parse scan (graph entries, attributes)
MAX_SUBGRAPH_DEPTH = 4  # graphs nested in node attributes (Loop/If/Scan are refused anyway)
MAX_TENSOR_ELEMENTS = 50_000_000  # per shape-like constant: stops ConstantOfShape/Expand bombs

# --- probing (grader.runtime.policy.probe, grader.submission.checks) ----------------------------------------------------
PROBE_STATES = 16  # contract states the runtime checks look at
PROBE_SEED = 12345
EXTRA_PROBE_BATCH_SIZES = (2, 3, 7, 16)  # besides 1..pool_size, which the episodes use
PROBE_SET_SIZE = 512  # duplicate detection's behavioural probe set (grader.classroom.duplicates)

# --- worker processes (grader.runtime.engine, grader.runtime.worker) ----------------------------------------------
WORKER_MEMORY_BYTES = 4 * 2**30  # RLIMIT_AS of a worker
WORKER_FILE_BYTES = 256 * 2**20  # RLIMIT_FSIZE: the largest file a worker writes (a video)
WORKER_OPEN_FILES = 256  # RLIMIT_NOFILE
WORKER_TMPFS_BYTES = 512 * 2**20  # the worker's writable places (/tmp, /dev/shm) together, in bytes
WORKER_TMPFS_FILES = 4096  # ... and in files and folders (tmpfs nr_inodes; grader.runtime.bwrap.writable_places)
CHANNEL_TO_WORKER_BYTES = MAX_FILE_BYTES + (8 << 20)  # one command: a model, or probe states
CHANNEL_FROM_WORKER_BYTES = 64 << 20  # one reply: a video is the largest
CHANNEL_HEADER_BYTES = 1 << 20  # the JSON part of one message
HEARTBEAT_S = 1.0  # during episodes a worker reports progress at least this often
DEFAULT_WORKERS = max(1, min(2, os.cpu_count() or 1))

# Silence timeouts (s): how long the engine waits without any message from a worker. They are a
# backstop; the budgets below are what a model is measured against.
TIMEOUT_LOAD_S = 60.0
TIMEOUT_PROBE_S = 60.0
TIMEOUT_EPISODES_S = 60.0
TIMEOUT_RECORD_S = 600.0

# --- per-submission budgets (defaults of a rubric's [budgets]) ----------------------------------
# The lesson's DQN answers a pool of 4 MsPacman states in ~2 ms and an MLP a pool of 16
# LunarLander states in ~0.05 ms on one core, so these leave a margin of 25x and more.
BUDGET_DECISION_S = 0.05  # mean wall time of one policy call, over a window of calls
BUDGET_DECISION_WINDOW = 50  # calls in that window (fails early once the window's total is exceeded)
BUDGET_CALL_MAX_S = 2.0  # hard cap on any single policy call
BUDGET_EPISODES_WALL_S = 900.0  # wall time of the whole episodes phase, whatever the heartbeats
BUDGET_EPISODES_CPU_S = 900.0  # CPU time of the episodes phase, per worker (RLIMIT_CPU) and summed
BUDGET_LOAD_S = 60.0  # creating the onnxruntime session
BUDGET_PROBE_S = 60.0  # the probe (runtime checks) and the duplicate-detection actions
BUDGET_RECORD_S = 600.0  # one video re-run


class BudgetValues(Protocol):
    """What the engine reads of a model's budgets: :class:`ModelBudgets` or a rubric's ``[budgets]``."""

    @property
    def decision_s(self) -> float: ...

    @property
    def decision_window(self) -> int: ...

    @property
    def call_max_s(self) -> float: ...

    @property
    def episodes_wall_s(self) -> float: ...

    @property
    def episodes_cpu_s(self) -> float: ...

    @property
    def load_s(self) -> float: ...

    @property
    def probe_s(self) -> float: ...

    @property
    def record_s(self) -> float: ...


@dataclass(frozen=True)
class ModelBudgets:
    """What a model may cost, as the engine reads it: these defaults, or a rubric's ``[budgets]``
    table (:class:`grader.scoring.rubric.Budgets`, validated, with the same fields)."""

    decision_s: float = BUDGET_DECISION_S
    decision_window: int = BUDGET_DECISION_WINDOW
    call_max_s: float = BUDGET_CALL_MAX_S
    episodes_wall_s: float = BUDGET_EPISODES_WALL_S
    episodes_cpu_s: float = BUDGET_EPISODES_CPU_S
    load_s: float = BUDGET_LOAD_S
    probe_s: float = BUDGET_PROBE_S
    record_s: float = BUDGET_RECORD_S

# --- what a submission may be (grader.submission.bundle) ----------------------------------------------------
MAX_MODEL_BYTES = MAX_FILE_BYTES  # a model with its external-data file inlined, in all
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
MAX_WEIGHT_BYTES = 200 * 1024 * 1024  # a state_dict handed in beside a notebook

# --- defaults of the commands --------------------------------------------------------------------
DEFAULT_BATCH_SLOTS = max(1, os.cpu_count() or 1)  # submissions graded at once by `grade batch`

# Diagnostics of one episode, worker -> parent (grader.runtime.replies.check_facts): plain JSON, bounded.
FACTS_BYTES = 16_384
FACTS_DEPTH = 5


@dataclass(frozen=True)
class WorkerLimits:
    """The resource limits of an engine worker (RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE)."""

    memory_bytes: int = WORKER_MEMORY_BYTES
    file_bytes: int = WORKER_FILE_BYTES
    open_files: int = WORKER_OPEN_FILES
