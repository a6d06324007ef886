"""LunarLander actor-critic notebooks: the Keras actor read statically, nothing executed.

The notebook's ``model.onnx`` is not looked for here: the pipeline's bundle rule decides which
files belong to the student and grades that model itself (``models`` stays empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from grader.notebook import keras_static
from grader.notebook.common import ParsedNotebook, check
from grader.notebook.evidence import NotebookEvidence
from grader.notebook.sandbox import Limits
from grader.result import CheckResult

FRAMEWORK = "keras"  # the course's notebook: hints speak Keras (grader.pipeline)
MARKERS: list[str] = [r"LunarLander", r"\bkeras\b", r"actor_model", r"critic_model", r"layers\.Dense", r"num_inputs\s*=\s*8",
                      r"\.export\(\s*[\"'][^\"']*\.onnx"]

N_INPUTS, N_ACTIONS = 8, 4
# The checks read the notebook, they run none of it: grading needs no torch (the Gradescope zip's
# setup.sh installs torch only for notebook modules that run code; the default is that they do).
RUNS_TORCH = False


def collect(nb: ParsedNotebook, *, limits: Limits, sandbox: str | None, weights: Sequence[Path]) -> NotebookEvidence:
    """``actor_input``, ``actor_output``, ``actor_hidden``; ``limits``, ``sandbox`` and ``weights`` are unused (static)."""
    plans = [(p.tree, p.cell.source) for p in nb.plans if p.tree is not None and not p.cell.skipped_magic]
    try:
        m = keras_static.analyse([tree for tree, _ in plans], [source for _, source in plans])
    except RecursionError:  # an expression deep enough to parse, too deep to follow
        m = keras_static.KerasModel()
    return NotebookEvidence(checks=[_input_check(m), _output_check(m), _hidden_note(m)])


def _input_check(m: keras_static.KerasModel) -> CheckResult:
    shapes = [s for _, s in m.inputs if s is not None]
    if not m.inputs:
        return check("actor_input", False, "no keras Input layer found (expected layers.Input(shape=(8,)))",
                     "define the input as inputs = layers.Input(shape=(num_inputs,)) with num_inputs = 8 (the 8 numbers of a "
                     "LunarLander observation)")
    if any(s == (N_INPUTS,) for s in shapes):
        return check("actor_input", True, "input layer of shape (8,)")
    return check("actor_input", False, f"input shape {shapes[0] if shapes else 'unknown'} instead of (8,)",
                 "a LunarLander-v3 observation has 8 numbers: layers.Input(shape=(8,))")


def _output_check(m: keras_static.KerasModel) -> CheckResult:
    out = m.actor_output
    if out is None:
        return check("actor_output", False, "no actor output layer found (expected layers.Dense(4, activation='softmax'))",
                     "end the actor with action = layers.Dense(num_actions, activation='softmax')(common) with num_actions = 4, "
                     "and build actor_model = keras.Model(inputs=inputs, outputs=action)")
    if out.units == N_ACTIONS and out.activation == "softmax":
        return check("actor_output", True, f"actor output Dense(4, softmax){' of ' + m.actor_name if m.actor_name else ''}")
    problems = []
    if out.units != N_ACTIONS:
        problems.append(f"{out.units} units instead of 4 (LunarLander has 4 actions)")
    if out.activation != "softmax":
        problems.append(f"activation {out.activation!r} instead of 'softmax' (the actor samples its action from probabilities)")
    return check("actor_output", False, f"actor output layer `{out.line}`: " + "; ".join(problems),
                 "the actor's last layer must be layers.Dense(4, activation='softmax')")


def _hidden_note(m: keras_static.KerasModel) -> CheckResult:
    hidden = keras_static.hidden_sizes(m)
    return check("actor_hidden", True, f"hidden Dense layers: {', '.join(str(h) for h in hidden) or 'none found'}"
                 + (f"; critic output Dense({m.critic_output.units})" if m.critic_output else ""), severity="note")
