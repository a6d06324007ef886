"""The whole-process floor of grading: replay the recorded env actions, no inference at all.

    python benchmarks/floor.py record MODEL --task T --seeds A-B --out ACTIONS.npz
    python benchmarks/floor.py replay ACTIONS.npz [--workers 2] [--check RESULT.json]

``record`` plays the seeds once with the model (in this process, the grader's own episode code)
and stores each episode's actions. ``replay`` is the floor, meant to be timed as a whole process
from outside: it starts, replays exactly the same env steps for the same seeds (the task's own
protocol: reset with the seed, the opening and death steps, the preprocessing) in ``--workers``
spawn processes, with the episodes split so that both processes get the same number of steps,
and exits. Nothing is inferred, nothing is written. With ``--check`` it compares the returns
with a ``result.json`` of ``grade`` on the same seeds and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def replay_plan(task: str, plan: list[tuple[int, list[int]]]) -> dict[int, tuple[float, int]]:
    """Play each (seed, recorded actions) under the task's protocol, with no inference: the floor's work."""
    from grader.tasks.contract import get_task

    spec = get_task(task)
    env = spec.make_env(first_seed=plan[0][0] if plan else None)  # ready for its first episode, as the grader's are
    out = {}
    for seed, actions in plan:
        episode = spec.play_episode(env, seed)
        turn = next(episode)
        for action in actions:
            if turn.done:
                break
            turn = episode.send(action)
        out[seed] = (turn.episode_return, turn.length)
    return out


def _replay_part(task: str, plan: list[tuple[int, list[int]]], queue) -> None:
    queue.put(replay_plan(task, plan))


def _split(lengths: dict[int, int], workers: int) -> list[list[int]]:
    """Longest episodes first, each to the process with the fewest steps so far."""
    parts: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for seed in sorted(lengths, key=lambda s: (-lengths[s], s)):
        i = load.index(min(load))
        parts[i].append(seed)
        load[i] += lengths[seed]
    return parts


def replay(path: Path, workers: int) -> dict[int, tuple[float, int]]:
    import multiprocessing as mp

    import numpy as np

    data = np.load(path)
    task = str(data["task"])
    seeds = [int(s) for s in data["seeds"]]
    lengths = {s: int(n) for s, n in zip(seeds, data["lengths"])}
    bounds = np.concatenate([[0], np.cumsum(data["n_actions"])])
    actions = {s: data["actions"][bounds[i]:bounds[i + 1]].tolist() for i, s in enumerate(seeds)}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_replay_part, args=(task, [(s, actions[s]) for s in part], queue))
             for part in _split(lengths, workers) if part]
    for p in procs:
        p.start()
    results: dict[int, tuple[float, int]] = {}
    for _ in procs:
        results.update(queue.get())
    for p in procs:
        p.join()
    return {s: results[s] for s in seeds}


def save_actions(out: Path, task: str, seeds: list[int], results: dict, actions: dict) -> None:
    """The file ``replay`` reads: per seed its return, length and the policy's actions."""
    import numpy as np

    np.savez(out, task=task, seeds=np.array(seeds, np.int64), lengths=np.array([results[s][1] for s in seeds], np.int64),
             returns=np.array([results[s][0] for s in seeds], np.float64),
             n_actions=np.array([len(actions[s]) for s in seeds], np.int64),
             actions=np.array([a for s in seeds for a in actions[s]], np.int8))


def record(model: Path, task: str, seeds: list[int], out: Path) -> None:
    from grader.runtime.episodes import EnvPool, run_episodes
    from grader.runtime.policy import OnnxPolicy
    from grader.tasks.contract import get_task

    spec = get_task(task)
    inner = OnnxPolicy(model.read_bytes(), spec)
    taken: dict[int, list[int]] = {s: [] for s in seeds}

    class Recording:
        fixed_batch_one = inner.fixed_batch_one

        def act(self, states, seeds_, steps):
            actions = inner.act(states, seeds_, steps)
            for s, a in zip(seeds_, actions):
                taken[int(s)].append(int(a))
            return actions

    results = run_episodes(Recording(), spec, seeds, envs=EnvPool().get(spec, spec.pool_size))
    save_actions(out, task, seeds, results, taken)
    steps = sum(results[s][1] for s in seeds)
    print(f"recorded {len(seeds)} episodes ({steps} env steps) of {task} with {model.name} into {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("model", type=Path)
    r.add_argument("--task", required=True)
    r.add_argument("--seeds", required=True, help="A-B or A,B,C")
    r.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("replay")
    p.add_argument("actions", type=Path)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--check", type=Path, help="result.json of `grade` on the same seeds: exit 1 if a return differs")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        from grader.scoring.rubric import parse_seeds

        record(args.model, args.task, parse_seeds(args.seeds, where="--seeds"), args.out)
        return 0
    results = replay(args.actions, args.workers)
    if args.check:
        import json

        graded = {e["seed"]: (e["return"], e["length"]) for e in json.loads(args.check.read_text())["episodes"]}
        same = graded == results
        print(f"floor: {len(results)} episodes, {sum(n for _, n in results.values())} env steps; "
              f"returns identical to {args.check.name}: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
