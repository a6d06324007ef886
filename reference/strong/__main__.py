"""``python -m reference.strong [train options]`` trains; ``python -m reference.strong export ...`` exports."""

from __future__ import annotations

import sys
from pathlib import Path

from reference.common import export_arguments, parse_args
from reference.strong.train import Args, export, plot_run, train


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        p = export_arguments("python -m reference.strong export", "Export a checkpoint's Q-network to ONNX and optionally score it.")
        p.add_argument("--curve", default=None, help="also plot the run's learning curve (from checkpoint.pt "
                       "beside --checkpoint) to this PNG, e.g. for the model card")
        a = p.parse_args(argv[1:])
        export(a.checkpoint, a.out, a.episodes)
        if a.curve:
            plot_run(Path(a.checkpoint).with_name("checkpoint.pt"), a.curve)
            print(f"wrote {a.curve}")
        return
    train(parse_args(Args, argv, description="Train the strong MsPacman reference (double + dueling n-step DQN) "
                     "(or: python -m reference.strong export --help).", prog="python -m reference.strong"))


if __name__ == "__main__":
    main()
