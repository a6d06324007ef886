"""The cost of MsPacman's hidden probe set as raw frames (duplicate detection across contracts).

    python benchmarks/bench_probe_frames.py [--runs 5] [--n 512]

Paired, alternating in one process: the hidden probe set rolled out as before (the lesson's
contract, each frame preprocessed in the episode) and as now (the K = 8 raw contract, its frames
kept once each, the lesson's states computed from them); CPU seconds (``time.process_time``) of
each, their medians and the ratio; both must give the same lesson states. Then, once, what a
model's actions on the set cost in the sandboxed engine: the strong reference under the lesson's
contract, and with the lesson's preprocessing inside under the raw contract (K = 5, sent in
batches under the channel's cap), wall seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def before(rubric, n: int) -> np.ndarray:
    """The hidden probe set as it was rolled out before: the lesson's contract directly."""
    from grader.classroom import duplicates as D
    from grader.tasks import get_task

    seeds = list(rubric.all_grading_seeds())
    key = int.from_bytes(hashlib.sha256(json.dumps(seeds).encode()).digest()[:8], "little")
    return np.stack(D._rollout_states(get_task("mspacman"), seeds, n, first=3, rng_seed=key)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    from grader.classroom.duplicates import hidden_probe_set, probe_actions
    from grader.runtime.engine import Engine
    from grader.scoring.rubric import load_rubric
    from reference import frames as RF

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--n", type=int, default=512)
    args = p.parse_args(argv)
    rubric = load_rubric(ROOT / "rubrics" / "mspacman.toml")
    old, new = [], []
    for _ in range(args.runs):
        c = time.process_time()
        states = before(rubric, args.n)
        old.append(time.process_time() - c)
        c = time.process_time()
        probe = hidden_probe_set(rubric, args.n)
        new.append(time.process_time() - c)
        assert np.array_equal(states, probe.states), "the raw rollout must give the lesson's states"
    assert probe.frames is not None
    print(f"hidden probe set, {args.n} states, CPU s (median of {args.runs}, paired): lesson rollout "
          f"{statistics.median(old):.2f}, raw frames + lesson states from them {statistics.median(new):.2f}, ratio "
          f"{statistics.median(new) / statistics.median(old):.2f}; {len(probe.frames)} distinct frames "
          f"({probe.frames.nbytes / 2**20:.0f} MiB) + the lesson's states ({probe.states.nbytes / 2**20:.0f} MiB)")
    strong = (ROOT / "reference" / "models" / "mspacman_strong.onnx").read_bytes()
    with Engine(1) as engine:
        for label, data, task in (("lesson's contract", strong, "mspacman"),
                                  ("raw frames, K = 5", RF.lesson_inside(strong), "mspacman_raw5")):
            engine.load(data, task=task)
            t = time.perf_counter()
            actions = probe_actions(engine, probe, task)
            print(f"actions on the probe set, {label}: {time.perf_counter() - t:.2f} s wall "
                  f"({0 if actions is None else len(actions)} states)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
