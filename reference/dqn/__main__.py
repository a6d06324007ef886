"""``python -m reference.dqn [train options]`` trains; ``python -m reference.dqn export ...`` exports."""

from __future__ import annotations

import sys

from reference.common import export_arguments, parse_args
from reference.dqn.train import Args, export, train


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        p = export_arguments("python -m reference.dqn export", "Export a DQN checkpoint to ONNX and optionally score it.")
        a = p.parse_args(argv[1:])
        export(a.checkpoint, a.out, a.episodes)
        return
    train(parse_args(Args, argv, description="Train the lesson's DQN on MsPacman "
                     "(or: python -m reference.dqn export --help).", prog="python -m reference.dqn"))


if __name__ == "__main__":
    main()
