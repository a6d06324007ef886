"""Engine speed, measured side by side on the same seeds in one run: in-process and whole-process.

    python benchmarks/bench_engine.py [--task lunarlander|mspacman|both] [--model FILE] [--episodes N]
                                      [--workers 2] [--runs 5]

Three ways to play the same episodes with the same model, timed first inside this process:

* per-step loop: the course's own test loop (``benchmarks/course_loop.py``), one process, one
  onnxruntime call per step (default session options), as the LunarLander notebook and the
  lesson do it (the lesson's torch preprocessing of each frame when torch is installed);
* floor: the recorded actions of those episodes replayed with no inference at all, split over
  the same number of processes as the engine: what stepping the environments costs;
* engine: ``grader.runtime.engine.Engine`` (persistent sandboxed workers, env pools, batched inference).

then as whole processes (start-up, imports, sandbox, outputs and exit included), ``--runs``
times each, interleaved, medians:

* ``grade MODEL --task T --seeds 0-N --no-video --json --out DIR`` (this checkout's grader);
* the floor: ``benchmarks/floor.py replay`` of the recorded actions in ``--workers`` spawn
  processes (starts, replays exactly the same env steps, exits);
* the course loop: ``benchmarks/course_loop.py --numpy`` (MsPacman frames preprocessed by numpy,
  so that the loop's time does not include importing torch); for MsPacman, when torch is
  installed, also the lesson's loop as students run it (torch imported, each frame preprocessed
  by torch; the network still through onnxruntime, so it is the faster of the two).

It prints the times and the ratios engine/floor and per-step/engine both ways, and checks that
every way gives identical per-episode returns. It also prints the model's own compute in the
graded runs (the workers' time inside its calls, ``timings.inference`` of ``result.json``): work
the floor does not do, which depends on the model (the course DQN's first dense layer reads 7 MB
of weights per call), and ``grade`` without it against the floor: the grader's own overhead.
This is a benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.course_loop import per_step_loop  # noqa: E402
from benchmarks.floor import replay_plan, save_actions  # noqa: E402
from grader.runtime.engine import Engine  # noqa: E402
from grader.tasks.contract import get_task  # noqa: E402

DEFAULT_MODELS = {"lunarlander": ROOT / "reference/models/lunarlander_improved.onnx",
                  "mspacman": ROOT / "reference/models/mspacman_dqn.onnx"}


def _replay(args) -> dict:
    return replay_plan(*args)  # the whole-process floor's own replay, in a pool of processes


def floor(task: str, actions: dict, workers: int) -> dict:
    seeds = list(actions)
    plans = [(task, [(s, actions[s]) for s in seeds[i::workers]]) for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_replay, [(task, [])] * workers)  # start-up is not part of the floor
        t0 = time.perf_counter()
        parts = pool.map(_replay, plans)
        elapsed = time.perf_counter() - t0
    merged = {k: v for part in parts for k, v in part.items()}
    return merged, elapsed


def bench(task: str, model: Path, episodes: int, workers: int, runs: int = 5) -> None:
    get_task(task)  # an unknown task fails here, before anything runs
    seeds = list(range(episodes))
    print(f"\n== {task}: {episodes} episodes, model {model.name}, {workers} workers")
    t0 = time.perf_counter()
    loop_results, actions = per_step_loop(str(model), task, seeds)
    t_loop = time.perf_counter() - t0
    floor_results, t_floor = floor(task, actions, workers)
    with Engine(workers) as engine:
        engine.load(model.read_bytes(), task=task)
        engine.evaluate(seeds[:workers])  # warm-up: imports and env construction
        t0 = time.perf_counter()
        engine_results = engine.evaluate(seeds)
        t_engine = time.perf_counter() - t0
    steps = sum(length for _, length in loop_results.values())
    same = loop_results == floor_results == engine_results
    print(f"env steps: {steps}, mean return {np.mean([r for r, _ in engine_results.values()]):.1f}")
    print("in-process:")
    print(f"  per-step loop (1 process)       {t_loop:7.2f} s")
    print(f"  floor, no inference ({workers} proc)   {t_floor:7.2f} s")
    print(f"  engine ({workers} workers)            {t_engine:7.2f} s")
    print(f"  engine / floor = {t_engine / t_floor:.2f}x   per-step / engine = {t_loop / t_engine:.2f}x   "
          f"identical returns: {same}")
    if not same:
        bad = [s for s in seeds if not (loop_results[s] == floor_results[s] == engine_results[s])]
        print(f"  MISMATCH on seeds {bad[:10]}")
    if runs > 0:
        whole_process(task, model, seeds, workers, runs, loop_results, actions)


def whole_process(task: str, model: Path, seeds: list[int], workers: int, runs: int, loop_results: dict,
                  actions: dict) -> None:
    """grade, the floor and the course loop as whole processes, interleaved; medians of ``runs``."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    npz = tmp / "actions.npz"
    save_actions(npz, task, seeds, loop_results, actions)
    span = f"{seeds[0]}-{seeds[-1]}"
    py = sys.executable
    commands = {
        "grade": [py, "-m", "grader.cli", str(model), "--task", task, "--seeds", span, "--no-video", "--json",
                  "--workers", str(workers), "--out", str(tmp / "out")],
        "floor": [py, str(ROOT / "benchmarks/floor.py"), "replay", str(npz), "--workers", str(workers)],
        "loop": [py, str(ROOT / "benchmarks/course_loop.py"), str(model), "--task", task, "--seeds", span, "--numpy"],
    }
    if task == "mspacman" and importlib.util.find_spec("torch") is not None:
        # the lesson's loop as students run it: torch imported, each frame preprocessed by torch
        commands["lesson"] = commands["loop"][:-1]
    # One run of each, untimed, whose output says whether the returns are identical.
    graded = json.loads(subprocess.run(commands["grade"], cwd=ROOT, capture_output=True, check=True).stdout)
    graded = {e["seed"]: (e["return"], e["length"]) for e in graded["episodes"]}
    floor_ok = subprocess.run(commands["floor"] + ["--check", str(tmp / "out" / "result.json")], cwd=ROOT,
                              capture_output=True).returncode == 0
    looped = json.loads(subprocess.run(commands["loop"] + ["--json"], cwd=ROOT, capture_output=True, check=True).stdout)
    looped = {int(s): (r, n) for s, (r, n) in looped.items()}
    same = graded == loop_results == looped and floor_ok
    if "lesson" in commands:
        lesson = json.loads(subprocess.run(commands["lesson"] + ["--json"], cwd=ROOT, capture_output=True, check=True).stdout)
        same = same and {int(s): (r, n) for s, (r, n) in lesson.items()} == looped
    times: dict[str, list[float]] = {k: [] for k in commands}
    inference: list[float] = []  # per grade run: the workers' time inside the model's calls, summed
    for _ in range(runs):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
            if name == "grade":
                timings = json.loads((tmp / "out" / "result.json").read_text())["timings"]
                inference.append(float(timings.get("inference", 0.0)))
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in times.items()}
    print(f"whole process (median of {runs}, interleaved; min-max):")
    if "lesson" in med:
        print(f"  course loop, torch preprocessing {med['lesson']:6.2f} s  ({spread['lesson']})  (the lesson's own; torch imported)")
    print(f"  course loop (1 process)         {med['loop']:7.2f} s  ({spread['loop']})" + ("  (numpy preprocessing)" if "lesson" in med else ""))
    print(f"  floor, no inference ({workers} proc)   {med['floor']:7.2f} s  ({spread['floor']})")
    print(f"  grade --no-video ({workers} workers)  {med['grade']:7.2f} s  ({spread['grade']})")
    print(f"  grade / floor = {med['grade'] / med['floor']:.2f}x   course loop / grade = {med['loop'] / med['grade']:.2f}x   "
          + (f"   lesson's loop / grade = {med['lesson'] / med['grade']:.2f}x" if "lesson" in med else "")
          + f"   identical returns (grade, floor, loop{', lesson' if 'lesson' in med else ''}, in-process): {same}")
    # The model's own compute is work the floor does not do and the grader cannot avoid: each grade
    # run's workers spent `inference` seconds inside the model's calls (result.json's timings),
    # which the workers share. Without it, what is left is the grader's own overhead.
    own = statistics.median(t - i / workers for t, i in zip(times["grade"], inference))
    print(f"  the model's own compute: {statistics.median(inference):.2f} s of worker time (median), "
          f"{statistics.median(inference) / workers:.2f} s per worker; grade without it / floor = {own / med['floor']:.2f}x")


def _fallback_model(task: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import onnx_fixtures as F

    path = Path(tempfile.mkdtemp()) / f"{task}.onnx"
    return Path(F.mlp(path, hidden=64, scale=1.0) if task == "lunarlander" else F.conv_policy(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("lunarlander", "mspacman", "both"), default="both")
    p.add_argument("--model", type=Path, help="ONNX model (default: the shipped reference, else a random network)")
    p.add_argument("--episodes", type=int, help="default: 100 LunarLander, 10 MsPacman")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--runs", type=int, default=5, help="whole-process runs of each command (0: in-process only)")
    args = p.parse_args()
    for task in ("lunarlander", "mspacman") if args.task == "both" else (args.task,):
        model = args.model or (DEFAULT_MODELS[task] if DEFAULT_MODELS[task].exists() else _fallback_model(task))
        bench(task, model, args.episodes or (100 if task == "lunarlander" else 10), args.workers, args.runs)


if __name__ == "__main__":
    main()
