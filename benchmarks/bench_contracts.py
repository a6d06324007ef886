"""MsPacman's two input contracts, the same agent, paired in one run: what raw frames cost.

    python benchmarks/bench_contracts.py [--episodes 10] [--workers 2] [--runs 3] [--model FILE]

The agent is ``--model`` (default: the strong reference), taking the lesson's states
``[batch, 5, 44, 40]``, and the same network with the lesson's preprocessing inside
(:func:`reference.frames.lesson_inside`), taking the last 5 raw frames ``[batch, 5, 210, 160, 3]``
uint8. Each run times, interleaved, on the rubric's first ``--episodes`` grading seeds:

* engine: ``Engine.evaluate`` in this process (workers started and the model loaded beforehand);
* grade: the whole ``grade MODEL --rubric rubrics/mspacman.toml --no-video --json --out DIR``
  process (start-up, parsing, checks, probe, episodes, outputs).

It prints the medians and the ratio raw/lesson of each (the goal: at most 1.3), and checks that
both contracts give identical per-episode returns. A benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.runtime.engine import Engine  # noqa: E402
from grader.scoring.rubric import load_rubric  # noqa: E402
from reference.frames import lesson_inside  # noqa: E402

RUBRIC = ROOT / "rubrics" / "mspacman.toml"
STRONG = ROOT / "reference" / "models" / "mspacman_strong.onnx"


def engine_time(engine: Engine, model: bytes, task: str, seeds: list[int]) -> tuple[float, dict]:
    engine.load(model, task=task)
    t0 = time.perf_counter()
    result = engine.evaluate(seeds)
    return time.perf_counter() - t0, result


def grade_time(path: Path, episodes: int, out: Path) -> tuple[float, list]:
    cmd = [sys.executable, "-m", "grader", str(path), "--rubric", str(RUBRIC), "--episodes", str(episodes),
           "--no-video", "--json", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    result = json.loads((out / "result.json").read_text())
    return elapsed, [(e["seed"], e["return"]) for e in result["episodes"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", type=Path, default=STRONG)
    args = parser.parse_args()
    seeds = load_rubric(RUBRIC).grading_seeds()[: args.episodes]
    lesson_bytes = args.model.read_bytes()
    raw_bytes = lesson_inside(lesson_bytes)
    times: dict[str, list[float]] = {"engine lesson": [], "engine raw": [], "grade lesson": [], "grade raw": []}
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        raw_path.write_bytes(raw_bytes)
        with Engine(args.workers) as engine:
            engine_time(engine, lesson_bytes, "mspacman", seeds[:1])  # warm: imports, first environments
            for _ in range(args.runs):
                t, a = engine_time(engine, lesson_bytes, "mspacman", seeds)
                times["engine lesson"].append(t)
                t, b = engine_time(engine, raw_bytes, "mspacman_raw5", seeds)
                times["engine raw"].append(t)
                if a != b:
                    raise SystemExit(f"the contracts gave different returns: {a} vs {b}")
        for run in range(args.runs):
            t, a = grade_time(args.model, args.episodes, Path(tmp) / f"l{run}")
            times["grade lesson"].append(t)
            t, b = grade_time(raw_path, args.episodes, Path(tmp) / f"r{run}")
            times["grade raw"].append(t)
            if a != b:
                raise SystemExit(f"grade gave different returns: {a} vs {b}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"MsPacman, {args.model.name}, {len(seeds)} episodes (seeds {seeds[0]}..{seeds[-1]}), "
          f"{args.workers} workers, {args.runs} runs, medians; identical returns under both contracts")
    for kind in ("engine", "grade"):
        lesson, raw = med[f"{kind} lesson"], med[f"{kind} raw"]
        print(f"  {kind:6s}  lesson {lesson:6.2f} s   raw frames {raw:6.2f} s   ratio {raw / lesson:.2f}")


if __name__ == "__main__":
    main()
