"""Duplicate flags on the 100-submission benchmark class (``bench_batch.make_class``): how many
pairs the old fixed threshold flags and how many the class's own distribution flags, on the old
public probe states and on the hidden ones, plus the cost of the hidden probe set.

    python benchmarks/bench_duplicates.py [--n 100] [--copies 2]

The policies are our own generated graphs, so their actions are computed here with onnxruntime
directly (grading computes them in the sandboxed engine: the same argmax). ``--copies`` adds
that many planted copies: a student's model with every weight perturbed by 1e-3 (different
bytes, different weights, the same behaviour), the case only the behaviour comparison catches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import classgen as g  # noqa: E402


def class_models(n: int, copies: int) -> dict[str, bytes]:
    """The benchmark class (90 % heuristic landers with random logits, 10 % untrained MLPs) and planted copies."""
    models = {}
    for i in range(n):
        if i % 10 == 9:
            models[f"student{i:03d}"] = g.mlp_model(g.mlp_weights(i), style="matmul", prefix=f"s{i}_", opset=13, ir=7)
        else:
            models[f"student{i:03d}"] = g.heuristic_model(i, 0.6 + (i % 20) / 19)
    for k in range(copies):
        i = 10 * k + 3
        models[f"copy_of_{i:03d}"] = g.perturbed(models[f"student{i:03d}"], seed=k)
    return models


def actions(data: bytes, states: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the planted lookups' unused tensors are not news
    s = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: states})[0].argmax(axis=1).astype(np.uint8)


def flags(models: dict[str, bytes], states: np.ndarray, *, threshold: float, fixed: bool):
    """The duplicate report of the class on ``states``: the old rule (``fixed``) or the class's own."""
    from grader.classroom import duplicates as D

    cands = [D.Candidate(label=k, file=k, sha256=k, actions=actions(v, states)) for k, v in models.items()]
    saved = D.MIN_CLASS
    D.MIN_CLASS = 10**9 if fixed else saved  # the old rule: the fixed threshold whatever the class
    try:
        return D.find_duplicates(cands, threshold=threshold)
    finally:
        D.MIN_CLASS = saved


def main(argv: list[str] | None = None) -> int:
    from grader.classroom.duplicates import hidden_probe_set, probe_set
    from grader.scoring.rubric import load_rubric

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--copies", type=int, default=2)
    args = p.parse_args(argv)
    models = class_models(args.n, args.copies)
    rubric = load_rubric(Path(__file__).resolve().parent.parent / "rubrics" / "lunarlander.toml")
    public, _ = probe_set("lunarlander")
    t, c = time.perf_counter(), time.process_time()
    hidden = hidden_probe_set(rubric).states
    print(f"hidden probe set: {hidden.shape[0]} states in {time.perf_counter() - t:.2f} s wall, "
          f"{time.process_time() - c:.2f} s CPU (once per class)")
    for name, states in (("public probe states", public), ("hidden probe states", hidden)):
        old = flags(models, states, threshold=0.95, fixed=True)
        new = flags(models, states, threshold=0.95, fixed=False)
        planted = [k for k in models if k.startswith("copy_of_")]
        found = {k: next((f"cluster {f.cluster}" for f in new.flags if k in (f.a.label, f.b.label)
                          and k.replace("copy_of_", "student") in (f.a.label, f.b.label)), "NOT FLAGGED") for k in planted}
        print(f"{name}: fixed 95% threshold: {len(old.flags)} behaviour flags; the class's distribution "
              f"(median {100 * new.median:.1f}%): {len(new.flags)} flags in {len(new.clusters)} clusters of sizes "
              f"{[len(c.members) for c in new.clusters]}; planted copies: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
