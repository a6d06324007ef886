"""What the diagnostics cost: the same seeds played with and without them, side by side in one run.

    python benchmarks/bench_diagnostics.py [--task lunarlander|mspacman|both] [--model FILE] [--episodes N]
                                           [--repeats R] [--workers W]

One engine, one model; ``Engine.evaluate(seeds, diagnostics=False)`` and ``diagnostics=True``
alternate ``R`` times (off, on, on, off, ... so that drift and warm-up fall on both), after one
warm-up evaluation. It prints the median wall time of each, the ratio on/off, and checks that
both gave identical returns. Then it grades once end to end (checks, episodes, three videos, the
report) and times what the diagnostics add in the parent (the summary, the report's section and
its plots), and prints the whole cost as a share of that grading. The diagnostics are measured during the scored play itself (no
extra runs): their cost is the per-decision bookkeeping in the worker (action counts, a reference
to the output row, the task's tracker) and the per-episode summary at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.runtime.engine import Engine  # noqa: E402

DEFAULT_MODELS = {"lunarlander": ROOT / "reference/models/lunarlander_improved.onnx",
                  "mspacman": ROOT / "reference/models/mspacman_dqn.onnx"}


def bench(task: str, model: Path, episodes: int, repeats: int, workers: int) -> tuple[float, float]:
    seeds = list(range(episodes))
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}  # the workers' CPU time: less sensitive to a busy machine
    results = {}
    with Engine(workers) as engine:
        engine.load(model.read_bytes(), task=task)
        engine.evaluate(seeds[: 2 * workers])  # warm-up: imports and env construction
        for r in range(repeats):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                results[on] = engine.evaluate(seeds, diagnostics=on)
                times[on].append(time.perf_counter() - t0)
                cpu[on].append(engine.stats["cpu_s"])
    steps = sum(length for _, length in results[True].values())
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"\n== {task}: {episodes} episodes ({steps} env steps), model {model.name}, {workers} workers, {repeats} repeats")
    print(f"diagnostics off  median {off:7.3f} s   (all: {', '.join(f'{t:.3f}' for t in times[False])})")
    print(f"diagnostics on   median {on:7.3f} s   (all: {', '.join(f'{t:.3f}' for t in times[True])})")
    c_off, c_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"on / off = {on / off:.3f}x ({100 * (on / off - 1):+.1f}%) wall;  workers' CPU {c_off:.3f} s -> {c_on:.3f} s "
          f"= {c_on / c_off:.3f}x ({100 * (c_on / c_off - 1):+.1f}%);  identical returns: {results[True] == results[False]}")
    return (on - off, (c_on - c_off) / workers)


def bench_grading(task: str, model: Path, episodes: int, repeats: int, workers: int) -> tuple[float, float]:
    """The whole grading (checks, episodes, videos, report) once, and what the diagnostics add to it
    outside the episodes: the summary in the parent and the report's diagnostics section (plots)."""
    import tempfile

    from grader.api import grade
    from grader.outputs.report import render_html
    from grader.tasks import get_task

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = grade(model, seeds=range(episodes), workers=workers, out=Path(tmp) / "out")
        total = time.perf_counter() - t0
    with Engine(workers) as engine:
        engine.load(model.read_bytes(), task=task)
        engine.evaluate(list(range(episodes)))
        facts = engine.facts
    spec, returns = get_task(task), [e.return_ for e in result.episodes]
    summary, with_d, without_d = [], [], []
    diag = result.diagnostics
    for _ in range(repeats):
        t0 = time.perf_counter()
        spec.diagnose([facts[s] for s in range(episodes)], returns)
        summary.append(time.perf_counter() - t0)
        result.diagnostics = diag
        t0 = time.perf_counter()
        render_html(result)
        with_d.append(time.perf_counter() - t0)
        result.diagnostics = None
        t0 = time.perf_counter()
        render_html(result)
        without_d.append(time.perf_counter() - t0)
    s, r = statistics.median(summary), statistics.median(with_d) - statistics.median(without_d)
    print(f"whole grading with videos and report: {total:.2f} s (episodes {result.timings.get('episodes', 0):.2f} s)")
    print(f"parent side: summary {1000 * s:.1f} ms, report section and plots {1000 * r:.0f} ms "
          f"= {100 * (s + r) / total:.1f}% of the grading")
    return s + r, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("lunarlander", "mspacman", "both"), default="both")
    p.add_argument("--model", type=Path)
    p.add_argument("--episodes", type=int, help="default: 100 LunarLander, 10 MsPacman")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    for task in ("lunarlander", "mspacman") if args.task == "both" else (args.task,):
        model, n = args.model or DEFAULT_MODELS[task], args.episodes or (100 if task == "lunarlander" else 10)
        wall_cost, cpu_cost = bench(task, model, n, args.repeats, args.workers)
        parent_cost, total = bench_grading(task, model, n, args.repeats, args.workers)
        for what, cost in (("wall", wall_cost), ("CPU per worker", cpu_cost)):
            print(f"diagnostics in all ({what} of the episodes): {1000 * (cost + parent_cost):.0f} ms of a {total:.2f} s "
                  f"grading = {100 * (cost + parent_cost) / total:.1f}%")


if __name__ == "__main__":
    main()
