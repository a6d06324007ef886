"""Duplicate detection: identical files, the same used weights, the same behaviour on hidden states.

Three kinds of evidence, each reported as pairs (``duplicates.csv``, ``class.html``, the site's
instructor page), grouped into clusters and ranked by strength:

* ``identical`` -- the same bytes (sha256);
* ``same_weights`` -- the weights the graph actually *uses* (:func:`weight_prints`: initializers
  and Constant tensors consumed, transitively, by the nodes that compute the outputs), compared
  tensor by tensor: each float tensor of at least :data:`MIN_TENSOR_ELEMENTS` elements that is
  not one repeated value becomes a print (the sha256 of its sorted shape and its values rounded
  to :data:`ROUND_DECIMALS` decimals, sorted). Two models have the same weights when the prints
  they share hold at least :data:`SAME_WEIGHTS_SHARE` of the smaller model's used elements
  (:func:`compare_weights`; :mod:`grader.submission.weights`, which every grading also uses to
  compare a submission with the rubric's reference models). Names, the order of tensors, unused extra tensors, opset/IR version,
  transposed matrices (``Gemm(transB=1)`` vs ``MatMul``), permuted hidden units and tensors added
  around a copy (a lookup branch, a padded layer) do not hide a copy; weights perturbed by noise
  do (each perturbed tensor gets another print): the behaviour comparison catches those;
* ``behaviour`` -- the argmax actions of two policies on a common set of *hidden* probe states
  (:func:`hidden_probe_set`: states of random play on the rubric's first grading seeds, which a
  student cannot regenerate without the private seeds). The class's
  own distribution of pairwise agreement decides what stands out (:func:`behaviour_outliers`):
  a pair is flagged when its disagreement is a robust outlier (``z >= Z_MIN`` on log10(1 -
  agreement) over the median and MAD of all pairs) and it agrees on at least
  :data:`MIN_AGREEMENT`; in a class too small for a distribution
  (fewer than :data:`MIN_CLASS` policies with actions) the fixed ``threshold`` applies. Pairs of
  two degenerate policies (one action on >= :data:`DEGENERATE_FRACTION` of the states) are never
  flagged: two untrained constant policies agree without any copying.

Flags are grouped into clusters (union-find over identical files, same weights and agreement of
at least :data:`COPY_AGREEMENT`), so ten copies of one file make one cluster, not 45 flags; a
weaker behaviour flag is a cluster of its own. Clusters and flags are ranked by their evidence
(:attr:`Flag.evidence`). The actions are computed in the sandboxed engine
(``Engine.actions``), which refuses actions that change with the batch size.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from grader.limits import CHANNEL_TO_WORKER_BYTES, PROBE_SET_SIZE
from grader.submission.weights import PRINTS_VERSION, compare_weights

if TYPE_CHECKING:
    from grader.tasks.base import Task

BEHAVIOUR_THRESHOLD = 0.95  # a small class: the fixed agreement that flags a pair
DEGENERATE_FRACTION = 0.9
MIN_CLASS = 8  # policies with actions needed before the class's own distribution decides
Z_MIN = 5.0  # robust z-score of log10(1 - agreement) below the class median that stands out
MIN_AGREEMENT = 0.9  # never flag a pair below this agreement, whatever the class
MIN_SCALE = 0.05  # the least spread assumed of log10(1 - agreement) in a class (12 %: a MAD of 0 flags nothing alone)
COPY_AGREEMENT = 0.99  # behaviour this close (5 of 512 states differ) joins a cluster of copies


# --- hidden probe states -----------------------------------------------------------------------------
PROBE_MESSAGE_BYTES = CHANNEL_TO_WORKER_BYTES // 2  # the probe states sent to a worker in one command, at most


@dataclass(frozen=True)
class ProbeSet:
    """The hidden probe set of a homework, in a form every input contract of it can take.

    ``states`` are the homework's own contract's states (their sha256 is the set's ``id``, which the
    gradebook keeps with each model's actions). A homework whose contracts share raw frames
    (:meth:`grader.tasks.Task.frames_source`: MsPacman's lesson states and raw frames) also keeps
    the rollout's frames compactly (each distinct frame once, ``frames``, and each state as
    ``[n, K]`` indices into them, ``index``): every contract takes its own form of the same states
    from them (:meth:`grader.tasks.Task.states_from_frames`; the homework's ``states`` are that form of
    its own contract), so models under different contracts are compared on the same frames."""

    homework: str
    states: np.ndarray
    id: str
    frames: np.ndarray | None = None
    index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.states)

    def batches(self, spec: Task, *, max_bytes: int = PROBE_MESSAGE_BYTES) -> Iterator[Batch] | None:
        """``spec``'s probe states in consecutive batches of at most ``max_bytes`` of states (512 raw
        stacks of 8 frames are 400 MB, over a worker command's cap), each ``(states, None)`` or, for
        a contract taking the shared frames, compact: ``(frames, index)``, the states being
        ``frames[index]`` (each frame of the batch once, in ``spec``'s :meth:`~grader.tasks.Task.frames_view`);
        None when ``spec`` is not a contract of this homework, or one this set has no form for."""
        if spec.homework_name != self.homework:
            return None
        per_state = int(np.prod(spec.state_shape)) * np.dtype(spec.input_dtype).itemsize
        step = max(1, max_bytes // max(1, per_state))
        if spec.name == self.homework:
            return ((self.states[i:i + step], None) for i in range(0, len(self), step))
        frames, index = self.frames, self.index
        if frames is None or index is None or index.shape[1] < spec.state_shape[0]:
            return None
        return _compact(spec, frames, index[:, index.shape[1] - spec.state_shape[0]:], step)


Batch = tuple[np.ndarray, "np.ndarray | None"]  # states, or frames and [n, K] positions in them


def _compact(spec: Task, frames: np.ndarray, index: np.ndarray, step: int) -> Iterator[Batch]:
    """``step`` states at a time: the frames they use, once each in ``spec``'s view, and their positions."""
    for i in range(0, len(index), step):
        used, local = np.unique(index[i:i + step], return_inverse=True)
        yield spec.frames_view(np.take(frames, used, axis=0)), local.reshape(index[i:i + step].shape)


def probe_actions(engine: Any, probe: ProbeSet, task: str) -> np.ndarray | None:
    """The argmax actions of the model loaded in ``engine`` (under contract ``task``) on ``probe``,
    in its contract's form, batch by batch (:meth:`grader.runtime.engine.Engine.actions`, which
    refuses actions that change with the batch size); None when the set has no form for ``task``."""
    from grader.tasks.contract import get_task

    batches = probe.batches(get_task(task))
    if batches is None:
        return None
    parts = [np.asarray(engine.actions(states, index=index), dtype=np.uint8) for states, index in batches]
    return np.concatenate(parts) if parts else None


def hidden_probe_set(rubric: Any, n: int = PROBE_SET_SIZE, *, episodes: int = 3) -> ProbeSet:
    """States no student can know in advance: every ``probe_stride``-th state of
    random-action episodes on the rubric's first ``episodes`` grading seeds (then the next seeds,
    then seeds derived from them, while states are missing), the actions drawn from a generator
    seeded by the grading seeds. Without
    the private grading seeds they cannot be regenerated, so a lookup cannot single them out.
    A homework with a :meth:`~grader.tasks.Task.frames_source` plays on that contract and keeps
    its frames (:class:`ProbeSet`): the random actions do not depend on the states, so its
    contract's states are the very states its own rollout would give.

    Random actions, not the reference models' play: on the benchmark class, the states of a good
    lander's episodes are the easy states on which every decent policy agrees (302 pairs over
    95 %, 262 still flagged by the class's distribution), while random play visits the varied
    states that tell policies apart (47 flags); see docs/batch.md."""
    from grader.submission.probestates import compact_frames
    from grader.tasks.contract import get_task

    spec = get_task(rubric.task)
    source = spec.frames_source()
    seeds = list(rubric.all_grading_seeds())
    rng_seed = int.from_bytes(hashlib.sha256(json.dumps(seeds).encode()).digest()[:8], "little")
    turns = _rollout_states(source or spec, seeds, n, first=episodes, rng_seed=rng_seed)
    frames = index = None
    if source is not None:
        frames, index = compact_frames(turns)
        states = spec.states_from_frames(frames, index).astype(np.float32, copy=False)
    else:
        states = np.stack(turns).astype(np.float32)
    return ProbeSet(spec.homework_name, states, hashlib.sha256(states.tobytes()).hexdigest()[:16], frames, index)


def _rollout_states(spec: Task, seeds: list[int], n: int, *, first: int, rng_seed: int) -> list[Any]:
    """``n`` states (:attr:`~grader.tasks.Turn.state`) of random play on ``seeds[:first]`` (as many
    from each), then on the further seeds, then on seeds derived from them (never known without
    them) while states are missing."""
    from grader.tasks.contract import make_env, play_episode

    env = make_env(spec)
    rng = np.random.default_rng(rng_seed)
    per_seed = -(-n // max(1, min(first, len(seeds))))
    states: list[Any] = []
    try:
        for seed in _seed_stream(seeds, rng_seed):
            if len(states) >= n:
                break
            episode = play_episode(spec, env, seed)
            turn, t, mine = next(episode), 0, 0
            while not turn.done and mine < per_seed and len(states) < n:
                if t % spec.probe_stride == 0:
                    states.append(turn.state)
                    mine += 1
                turn = episode.send(int(rng.integers(spec.n_actions)))
                t += 1
    finally:
        env.close()
    return states


def _seed_stream(seeds: list[int], key: int):
    """The seeds, then an endless deterministic stream of seeds derived from them and ``key``."""
    yield from seeds
    k = 0
    while True:
        k += 1
        yield int.from_bytes(hashlib.sha256(f"{key}:{k}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def probe_set(task: str, n: int = PROBE_SET_SIZE) -> tuple[np.ndarray, str]:
    """The fixed, public probe states of ``task`` (the runtime checks' rollout) and their id."""
    from grader.submission.probestates import probe_states
    from grader.tasks.contract import get_task

    states = probe_states(get_task(task), n)
    return states, hashlib.sha256(states.tobytes()).hexdigest()[:16]


def encode_actions(actions: np.ndarray) -> str:
    return base64.b64encode(np.asarray(actions, dtype=np.uint8).tobytes()).decode()


def decode_actions(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8)


# --- the comparison ----------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One file in the comparison: a student's current submission or a reference model."""

    label: str  # student id, or "reference:<file>"
    file: str
    sha256: str
    weights: list[list] | None = None  # weight_prints
    actions: np.ndarray | None = None
    is_reference: bool = False

    @property
    def degenerate(self) -> bool:
        if self.actions is None or len(self.actions) == 0:
            return True
        return np.bincount(self.actions).max() / len(self.actions) >= DEGENERATE_FRACTION


KIND_RANK = {"identical": 3.0, "same_weights": 2.0, "behaviour": 1.0}


@dataclass
class Flag:
    kind: str  # identical | same_weights | behaviour
    a: Candidate
    b: Candidate
    agreement: float | None = None
    detail: str = ""
    share: float | None = None  # same_weights: share of the smaller model's used elements
    z: float | None = None  # behaviour: robust z-score of the agreement in this class
    cluster: int = 0

    @property
    def evidence(self) -> float:
        """A rank: the kind first, then the strength within it (share of weights, agreement's z)."""
        within = self.share if self.kind == "same_weights" else (min(self.z, 99.0) / 100 if self.z is not None else
                                                                  (self.agreement or 0.0))
        return KIND_RANK[self.kind] + (within or 0.0) * 0.99

    def row(self) -> dict:
        return {
            "cluster": self.cluster, "kind": self.kind, "student_a": self.a.label, "file_a": self.a.file,
            "student_b": self.b.label, "file_b": self.b.file,
            "agreement": "" if self.agreement is None else f"{self.agreement:.4f}",
            "z": "" if self.z is None else f"{self.z:.1f}", "evidence": f"{self.evidence:.3f}", "detail": self.detail,
        }


@dataclass
class Cluster:
    """Candidates linked by copy-strength evidence (or by one flagged pair)."""

    number: int
    members: list[str]
    kinds: list[str]
    evidence: float


@dataclass
class DuplicateReport:
    flags: list[Flag] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    compared: int = 0
    with_actions: int = 0
    threshold: float = BEHAVIOUR_THRESHOLD
    rule: str = ""  # how behaviour flags were decided, in words
    pairs: int = 0  # behaviour pairs compared
    median: float | None = None  # the class's median agreement

    def students(self) -> set[str]:
        return {c.label for f in self.flags for c in (f.a, f.b) if not c.is_reference}

    def for_student(self, label: str) -> list[Flag]:
        """The flags naming ``label`` (on either side)."""
        return [f for f in self.flags if label in (f.a.label, f.b.label)]


def _different(a: Candidate, b: Candidate) -> bool:
    return a.label != b.label and not (a.is_reference and b.is_reference)


def find_duplicates(candidates: list[Candidate], *, threshold: float = BEHAVIOUR_THRESHOLD) -> DuplicateReport:
    """Flag pairs of candidates from different students (or a student and a reference), cluster
    and rank them."""
    report = DuplicateReport(compared=len(candidates), threshold=threshold)
    flagged: set[tuple[int, int]] = set()
    for i, j in _pairs_by(candidates, lambda c: c.sha256):
        flagged.add((i, j))
        report.flags.append(Flag("identical", candidates[i], candidates[j], None, "same sha256"))
    for i in range(len(candidates)):
        for j in range(i + 1, len(candidates)):
            a, b = candidates[i], candidates[j]
            if (i, j) in flagged or not _different(a, b):
                continue
            match = compare_weights(a.weights, b.weights)
            if match is not None and match.same:
                flagged.add((i, j))
                report.flags.append(Flag("same_weights", a, b, None, match.detail(), share=match.share))
    report.flags += _behaviour_flags(candidates, flagged, report)
    _cluster(report)
    return report


def _pairs_by(candidates: list[Candidate], key) -> list[tuple[int, int]]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(candidates):
        if key(c):
            by[key(c)].append(i)
    return [(g[x], g[y]) for g in by.values() for x in range(len(g)) for y in range(x + 1, len(g))
            if _different(candidates[g[x]], candidates[g[y]])]


def behaviour_outliers(agreements: np.ndarray, *, n_states: int, threshold: float = BEHAVIOUR_THRESHOLD,
                       class_size: int = 0) -> tuple[np.ndarray, np.ndarray | None, str, float | None]:
    """Which agreements stand out: ``(mask, z-scores or None, rule in words, median)``.

    From :data:`MIN_CLASS` policies on, the class's own distribution decides, on the scale where
    copies stand out, the *disagreement* ``d = 1 - agreement`` in log10 (``d`` at least
    ``1 / n_states``, the resolution): a pair stands out when ``log10 d`` lies at least
    :data:`Z_MIN` robust standard deviations (1.4826 x MAD, at least :data:`MIN_SCALE`) below
    the class's median and it agrees on at least :data:`MIN_AGREEMENT`. Disagreeing 10 times
    less than the class typically does is what matters, whether the class agrees on 60 % or on
    96 % of the states. A smaller class uses the fixed ``threshold``."""
    if class_size < MIN_CLASS or agreements.size == 0:
        return agreements >= threshold, None, f"agreement of at least {100 * threshold:.0f}% (a class too small " \
                                               f"for its own distribution: under {MIN_CLASS} policies)", None
    logd = np.log10(np.maximum(1.0 - agreements, 1.0 / max(n_states, 1)))
    centre = float(np.median(logd))
    scale = max(1.4826 * float(np.median(np.abs(logd - centre))), MIN_SCALE)
    z = (centre - logd) / scale
    median = float(np.median(agreements))
    rule = (f"disagreement standing out from this class's ({agreements.size} pairs, median agreement "
            f"{100 * median:.1f}%): a robust z-score of at least {Z_MIN:.0f} on log10(1 - agreement), and at least "
            f"{100 * MIN_AGREEMENT:.0f}% agreement")
    return (z >= Z_MIN) & (agreements >= MIN_AGREEMENT), z, rule, median


def _behaviour_flags(candidates: list[Candidate], flagged: set, report: DuplicateReport) -> list[Flag]:
    acts = {i: c.actions for i, c in enumerate(candidates) if c.actions is not None and len(c.actions)}
    idx = list(acts)
    report.with_actions = len(idx)
    if len(idx) < 2:
        return []
    n = min(len(a) for a in acts.values())
    matrix = np.stack([acts[i][:n] for i in idx]).astype(np.int16)
    pairs: list[tuple[int, int]] = []
    values: list[float] = []
    for x in range(len(idx)):
        agree = (matrix[x + 1:] == matrix[x]).mean(axis=1)
        for off, value in enumerate(agree):
            a, b = candidates[idx[x]], candidates[idx[x + 1 + off]]
            if _different(a, b) and not (a.degenerate and b.degenerate):
                pairs.append((idx[x], idx[x + 1 + off]))
                values.append(float(value))
    students = sum(not candidates[i].is_reference for i in idx)
    mask, z, report.rule, report.median = behaviour_outliers(np.array(values), n_states=n, threshold=report.threshold,
                                                              class_size=students)
    report.pairs = len(values)
    flags = []
    for k in np.nonzero(mask)[0]:
        i, j = pairs[k]
        if (i, j) in flagged:
            continue
        zk = None if z is None else float(z[k])
        median = report.median
        detail = f"argmax actions agree on {100 * values[k]:.1f}% of {n} hidden probe states" + (
            f" (class median {100 * median:.1f}%, z = {zk:.1f})" if zk is not None and median is not None else "")
        flags.append(Flag("behaviour", candidates[i], candidates[j], values[k], detail, z=zk))
    return flags


def _strong(f: Flag) -> bool:
    """Evidence of one copy: the same file, the same weights or (almost) the same every action."""
    return f.kind != "behaviour" or (f.agreement or 0.0) >= COPY_AGREEMENT


def _cluster(report: DuplicateReport) -> None:
    """Number the clusters, strongest first, and sort the flags by cluster and evidence.

    Copies are grouped (union-find over the strong flags: ten hand-ins of one file make one
    cluster); a weaker behaviour flag is a cluster of its own pair unless both of its students
    already are in one, so a chain of similar policies never becomes one giant cluster."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for f in report.flags:
        if _strong(f):
            parent[find(f.a.label)] = find(f.b.label)
    groups: dict[Any, list[Flag]] = defaultdict(list)
    for f in report.flags:
        same = find(f.a.label) == find(f.b.label)
        groups[find(f.a.label) if same else (f.a.label, f.b.label)].append(f)
    ranked = sorted(groups.values(), key=lambda fs: (-max(f.evidence for f in fs), min(f.a.label for f in fs)))
    report.clusters = []
    for number, fs in enumerate(ranked, 1):
        for f in fs:
            f.cluster = number
        members = sorted({c.label for f in fs for c in (f.a, f.b)}, key=lambda s: (s.startswith("reference:"), s))
        report.clusters.append(Cluster(number, members, sorted({f.kind for f in fs}, key=lambda k: -KIND_RANK[k]),
                                       max(f.evidence for f in fs)))
    report.flags.sort(key=lambda f: (f.cluster, -f.evidence, f.a.label, f.b.label))


# --- what the gradebook keeps ------------------------------------------------------------------------
def extra_for(weights: list[list] | None, actions: np.ndarray | None, probe_id: str) -> dict:
    """What the gradebook keeps per attempt (``extra_json``) so a resumed run need not recompute."""
    out: dict = {"weight_prints": weights, "prints_version": PRINTS_VERSION}
    if actions is not None:
        out["probe_id"] = probe_id
        out["actions"] = encode_actions(actions)
    return out


def prints_from_extra(extra: dict) -> list[list] | None:
    """The stored weight prints, or None when absent or of an older version (recompute them)."""
    if extra.get("prints_version") == PRINTS_VERSION and extra.get("weight_prints"):
        return extra["weight_prints"]
    return None


def actions_from_extra(extra: dict, probe_id: str) -> np.ndarray | None:
    if extra.get("probe_id") == probe_id and extra.get("actions"):
        return decode_actions(extra["actions"])
    return None


def reference_candidates(ref_dir: Path | None, task: str, probe: ProbeSet | None) -> list[Candidate]:
    """The reference models of ``task``'s homework in ``ref_dir`` as duplicate candidates, whatever
    their input contract: their sha256, their used weights' prints and, with ``probe``, their
    actions on it in their own contract's form (batch and site alike)."""
    from grader.errors import EngineFailure, ModelLoadError, TaskDetectionError
    from grader.runtime.engine import Engine
    from grader.submission import checks as C
    from grader.submission.onnx_model import parse_model
    from grader.submission.weights import weight_prints
    from grader.tasks.contract import get_task

    if ref_dir is None or not Path(ref_dir).is_dir():
        return []
    homework = get_task(task).homework_name
    out = []
    engine: Engine | None = None
    try:
        for f in sorted(Path(ref_dir).glob("*.onnx")):
            try:
                data = f.read_bytes()
                parsed = parse_model(data)
                contract = C.detect_task(parsed)
            except (OSError, ModelLoadError, TaskDetectionError):
                continue
            if contract.homework_name != homework:
                continue
            cand = Candidate(label=f"reference:{f.name}", file=str(f), sha256=parsed.sha256,
                             weights=weight_prints(data), is_reference=True)
            if probe is not None:
                try:
                    engine = engine or Engine(1)
                    engine.load(data, task=contract.name)
                    cand.actions = probe_actions(engine, probe, contract.name)
                except EngineFailure:
                    pass
            out.append(cand)
    finally:
        if engine is not None:
            engine.close()
    return out
