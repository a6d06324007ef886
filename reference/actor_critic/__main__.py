"""``python -m reference.actor_critic --flavour seed|improved --out DIR [--minutes M] [--seed S] ...``

Trains the chosen flavour, exports ``DIR/model.onnx`` (input ``[b, 8]`` float32, output ``[b, 4]``
softmax probabilities), verifies it with onnxruntime and scores its argmax policy on held-out
seeds (``--eval-episodes``, default 100: seeds 1_000_000..1_000_099), writing ``DIR/result.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

from grader.tasks.lunarlander import TASK as LUNARLANDER
from reference.common import OnnxPolicy, build_parser, evaluate, export_onnx, heldout_seeds, save_json, summary


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--flavour", choices=["seed", "improved"], default="improved")
    pre.add_argument("--eval-episodes", type=int, default=100)
    known, rest = pre.parse_known_args(argv)
    if known.flavour == "seed":
        from reference.actor_critic import seed as flavour
    else:
        from reference.actor_critic import improved as flavour
    parser = build_parser(flavour.Args, argparse.ArgumentParser(
        prog="python -m reference.actor_critic", parents=[pre],
        description=f"Train the {known.flavour!r} actor-critic on LunarLander-v3."))
    ns = vars(parser.parse_args(argv))
    ns.pop("flavour"), ns.pop("eval_episodes")
    args = flavour.Args(**ns)

    policy, hist = flavour.train(args)
    path = export_onnx(policy, LUNARLANDER, f"{args.out}/model.onnx")
    result = {"flavour": known.flavour, "args": vars(args), "wall_seconds": hist["wall_seconds"],
              "onnx": str(path)}
    for k in ("cpu_seconds", "steps", "solved", "best_validation", "final_validation"):
        if k in hist:  # the seed flavour keeps per-episode step counts: report the last
            result[k] = hist[k][-1] if isinstance(hist[k], list) else hist[k]
    if hist.get("val_step"):
        result["validation"] = [[s, v] for s, v in zip(hist["val_step"], hist["val_mean"])]
    if "episode" in hist:
        result["episodes"] = len(hist["episode"])
    print(f"trained in {hist['wall_seconds'] / 60:.1f} min wall, {hist['cpu_seconds'] / 60:.1f} min CPU; exported {path}")
    if known.eval_episodes:
        t0 = time.monotonic()
        seeds = heldout_seeds(known.eval_episodes)
        returns = evaluate(OnnxPolicy(path, LUNARLANDER), LUNARLANDER, seeds)
        result.update(eval_seeds=[seeds.start, seeds.stop - 1], eval_mean=float(returns.mean()),
                      eval_std=float(returns.std()), eval_success=float((returns >= 200).mean()),
                      eval_returns=[float(r) for r in returns], eval_seconds=time.monotonic() - t0)
        print(f"argmax policy on held-out seeds {seeds.start}..{seeds.stop - 1}: {summary(returns)}, "
              f"{100 * (returns >= 200).mean():.0f}% >= 200")
    save_json(f"{args.out}/result.json", result)


if __name__ == "__main__":
    main()
