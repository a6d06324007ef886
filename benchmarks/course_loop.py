"""The course's own evaluation loop, as a whole process: one env, one onnxruntime call per step.

    python benchmarks/course_loop.py MODEL --task lunarlander|mspacman --seeds A-B [--numpy] [--json]

The LunarLander notebook's test loop and the lesson's ``run_episode`` (acting greedily), with
default session options. MsPacman frames go through the lesson's torch preprocessing when torch
is installed, or, with ``--numpy`` (or without torch), through the grader's numpy function,
which gives the same arrays. ``--json`` prints ``{seed: [return, length]}``.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grader.tasks.contract import make_env  # noqa: E402


def per_step_loop(model_path: str, task: str, seeds: list[int], *, use_torch: bool = True) -> tuple[dict, dict]:
    """The course's loop: reset, then one session.run per step on state[None], argmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    env = make_env(task)
    preprocess = _lesson_preprocess(use_torch)
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


def _lesson_preprocess(use_torch: bool = True):
    """The lesson's per-frame preprocessing in torch when torch is installed (as students run it)."""
    from grader.tasks.mspacman import preprocess_frame

    if not use_torch:
        return preprocess_frame
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



def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from grader.scoring.rubric import parse_seeds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--task", required=True, choices=("lunarlander", "mspacman"))
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--numpy", action="store_true", help="MsPacman: numpy preprocessing instead of the lesson's torch")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results, _ = per_step_loop(args.model, args.task, parse_seeds(args.seeds, where="--seeds"), use_torch=not args.numpy)
    if args.json:
        print(json.dumps({str(s): [r, n] for s, (r, n) in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
