"""Engine speed, measured side by side on the same seeds in one run.

    python benchmarks/bench_engine.py [--task lunarlander|mspacman|both] [--model FILE] [--episodes N]

Three ways to play the same episodes with the same model:

* per-step loop: the course's own test loop, one process, one onnxruntime call per step
  (default session options), as the LunarLander notebook and the lesson do it (the lesson's
  torch preprocessing of each frame when torch is installed);
* floor: the recorded actions of those episodes replayed with no inference at all, split over
  the same number of processes as the engine: what stepping the environments costs;
* engine: ``grader.engine.Engine`` (persistent spawn workers, env pools, batched inference).

It prints the times and the ratios engine/floor and per-step/engine, and checks that all
three give identical per-episode returns. This is a benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.contract import get_task, make_env, play_episode  # noqa: E402
from grader.tasks.mspacman import preprocess_frame  # noqa: E402
from grader.engine import Engine  # noqa: E402

DEFAULT_MODELS = {"lunarlander": ROOT / "reference/models/lunarlander_improved.onnx",
                  "mspacman": ROOT / "reference/models/mspacman_dqn.onnx"}


def per_step_loop(model_path: str, task: str, seeds: list[int]) -> tuple[dict, dict]:
    """The course's loop: reset, then one session.run per step on state[None], argmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    env = make_env(task)
    preprocess = _lesson_preprocess()
    results, actions = {}, {}
    for seed in seeds:
        taken = []
        if task == "lunarlander":
            state, _ = env.reset(seed=seed)
            total, length, done = 0.0, 0, False
            while not done:  # the notebook's test loop, names looked up each step as it does
                name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name
                action = int(np.argmax(session.run([name_out], {name_in: state[None, :]})[0]))
                taken.append(action)
                state, reward, terminated, truncated, _ = env.step(action)
                total, length, done = total + reward, length + 1, terminated or truncated
        else:  # the lesson's run_episode, acting greedily
            frame, info = env.reset(seed=seed)
            total, length = 0.0, 0
            done = False
            for _ in range(81):
                frame, reward, terminated, truncated, info = env.step(3)
                total, length, done = total + reward, length + 1, terminated or truncated
                if done:
                    break
            stack = deque([preprocess(frame)] * 5, maxlen=5)
            lives = info["lives"]
            name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name
            while not done:
                q = session.run([name_out], {name_in: np.stack(stack)[None]})[0]
                action = int(np.argmax(q))
                taken.append(action)
                frame, reward, terminated, truncated, info = env.step(action)
                total, length, done = total + reward, length + 1, terminated or truncated
                stack.append(preprocess(frame))
                lost, lives = info["lives"] < lives, info["lives"]
                if lost and not done:
                    for _ in range(36):
                        _, reward, terminated, truncated, info = env.step(0)
                        total, length, done = total + reward, length + 1, terminated or truncated
                        if done:
                            break
        results[seed], actions[seed] = (float(total), length), taken
    return results, actions


def _lesson_preprocess():
    """The lesson's per-frame preprocessing in torch when torch is installed (as students run it)."""
    try:
        import torch
    except ImportError:
        return preprocess_frame
    torch.set_num_threads(1)

    def preprocess(observation: np.ndarray) -> np.ndarray:
        obs = torch.tensor(observation, dtype=torch.uint8).float().mean(dim=2).type(torch.uint8)[1:171]
        border = torch.full((2, 160), 150)
        return torch.cat([border, obs, border])[1::4, 1::4].float().numpy()

    return preprocess


def _replay(args) -> dict:
    task, plan = args
    env = make_env(task)
    out = {}
    for seed, actions in plan:
        episode = play_episode(task, env, seed)
        turn = next(episode)
        for action in actions:
            if turn.done:
                break
            turn = episode.send(action)
        out[seed] = (turn.episode_return, turn.length)
    return out


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


def bench(task: str, model: Path, episodes: int, workers: int) -> None:
    get_task(task)
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
    print(f"per-step loop (1 process)     {t_loop:7.2f} s")
    print(f"floor, no inference ({workers} proc) {t_floor:7.2f} s")
    print(f"engine ({workers} workers)          {t_engine:7.2f} s")
    print(f"engine / floor = {t_engine / t_floor:.2f}x   per-step / engine = {t_loop / t_engine:.2f}x   "
          f"identical returns: {same}")
    if not same:
        bad = [s for s in seeds if not (loop_results[s] == floor_results[s] == engine_results[s])]
        print(f"  MISMATCH on seeds {bad[:10]}")


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
    args = p.parse_args()
    for task in ("lunarlander", "mspacman") if args.task == "both" else (args.task,):
        model = args.model or (DEFAULT_MODELS[task] if DEFAULT_MODELS[task].exists() else _fallback_model(task))
        bench(task, model, args.episodes or (100 if task == "lunarlander" else 10), args.workers)


if __name__ == "__main__":
    main()
