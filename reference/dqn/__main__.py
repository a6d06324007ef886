"""``python -m reference.dqn [train options]`` trains; ``python -m reference.dqn export ...`` exports."""

from __future__ import annotations

import argparse
import sys

from reference.common import parse_args
from reference.dqn.train import Args, export, train


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        p = argparse.ArgumentParser(prog="python -m reference.dqn export",
                                    description="Export a DQN checkpoint to ONNX and optionally score it.")
        p.add_argument("--checkpoint", required=True, help="RUN/best.pt or RUN/checkpoint.pt")
        p.add_argument("--out", required=True, help="ONNX file to write")
        p.add_argument("--episodes", type=int, default=0, help="score on this many held-out seeds 1_000_000..")
        a = p.parse_args(argv[1:])
        export(a.checkpoint, a.out, a.episodes)
        return
    train(parse_args(Args, argv, description="Train the lesson's DQN on MsPacman "
                     "(or: python -m reference.dqn export --help).", prog="python -m reference.dqn"))


if __name__ == "__main__":
    main()
