"""Code shared by the reference trainers: arguments, seeding, progress bar, plots, checkpoints,
ONNX export and verification, and evaluation through the task contract.

Nothing here knows about a particular algorithm; ``reference.dqn`` and ``reference.actor_critic``
both build on it. The environment, the MsPacman preprocessing and the episode protocol are NOT
here: they come from :mod:`grader.tasks.contract`, the project's single implementation of the contract.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grader.tasks.contract import Task, actions_from_output, get_task, make_env, play_episode

# Seeds the reference models are scored on in their model cards. Training never resets an env
# with a seed in this range (trainers use seeds below 1_000_000).
HELDOUT_SEED0 = 1_000_000


# --- arguments -----------------------------------------------------------------------------------
def arg(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text, turned into a ``--flag`` by :func:`parse_args`."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def build_parser(cls: type, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one ``--kebab-case`` option per field of dataclass ``cls``."""
    parser = parser or argparse.ArgumentParser()
    for f in dataclasses.fields(cls):
        name = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        typ = {"int": int, "float": float, "str": str}.get(f.type, f.type) if isinstance(f.type, str) else f.type
        if typ not in (int, float, str):
            typ = str
        kw: dict[str, Any] = {"type": typ, "default": f.default, "help": f"{help_text} (default: %(default)s)"}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        parser.add_argument(name, **kw)
    return parser


def parse_args(cls: type, argv: Sequence[str] | None = None, description: str = "", prog: str | None = None) -> Any:
    """Parse ``argv`` into an instance of dataclass ``cls``."""
    ns = build_parser(cls, argparse.ArgumentParser(prog=prog, description=description)).parse_args(argv)
    return cls(**vars(ns))


# --- seeding, threads ----------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; keep torch on one CPU thread (one core per training run)."""
    import torch

    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch), for a checkpoint."""
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# --- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a torch checkpoint atomically (a crash never leaves a half-written file)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    # The checkpoint holds RNG states and numpy arrays, so it is not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)


def save_json(path: str | Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, default=float) + "\n")


# --- progress bar --------------------------------------------------------------------------------
class Progress:
    """A rich progress bar over ``total`` units with a line of live statistics.

    ``update(n, **stats)`` advances by ``n`` and shows ``stats`` (floats are formatted briefly).
    Falls back to a printed line every ``fallback_seconds`` when stdout is not a terminal, so a
    ``nohup`` log stays readable.
    """

    def __init__(self, total: float, description: str, fallback_seconds: float = 60.0):
        import sys

        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.interactive = sys.stdout.isatty()
        self.total, self.done, self.description = total, 0.0, description
        self.fallback_seconds, self._last_print = fallback_seconds, 0.0
        self.stats: dict[str, Any] = {}
        self._bar = None
        if self.interactive:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                refresh_per_second=2,
            )
            self._task = self._bar.add_task(description, total=total, stats="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        else:
            self._print()

    @staticmethod
    def _fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    def _line(self) -> str:
        return "  ".join(f"{k}={self._fmt(v)}" for k, v in self.stats.items())

    def _print(self) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {self.description} {self.done:.0f}/{self.total:.0f}  {self._line()}", flush=True)

    def update(self, advance: float = 0, **stats: Any) -> None:
        self.done += advance
        self.stats.update(stats)
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, stats=self._line())
        elif time.monotonic() - self._last_print >= self.fallback_seconds:
            self._last_print = time.monotonic()
            self._print()

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.log(message)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- plots ---------------------------------------------------------------------------------------
def moving_average(x: Sequence[float], window: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if len(x) < window or window <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[window:] - c[:-window]) / window


def plot_curves(path: str | Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str = "",
                smooth: int = 1) -> None:
    """Save a grid of line plots: ``curves[name] = (x, y)``; ``smooth`` is a moving-average window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)  # empty curves give empty axes (a run with no finished episode yet)
    cols = 2 if len(names) > 1 else 1
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        x, y = curves[name]
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ax.plot(x, y, alpha=0.3 if smooth > 1 and len(y) > smooth else 1.0, lw=0.8)
        if smooth > 1 and len(y) > smooth:
            ax.plot(x[smooth - 1:], moving_average(y, smooth), lw=1.5)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- ONNX ----------------------------------------------------------------------------------------
def export_onnx(model: Any, task: Task | str, path: str | Path, input_name: str = "state",
                output_name: str = "output") -> Path:
    """Export ``model`` (a torch module, put in eval mode here) to ONNX with the task's I/O:
    input ``[batch, *state_shape]`` float32 with a dynamic batch axis, output ``[batch, n_actions]``.
    Then check the file with :func:`verify_onnx`.
    """
    import torch

    spec = get_task(task) if isinstance(task, str) else task
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.to("cpu").eval()
    example = torch.zeros((2, *spec.state_shape), dtype=torch.float32)
    with torch.no_grad():
        # The legacy TorchScript exporter gives a small self-contained file and dynamic_axes;
        # dynamo=False keeps it that way on torch versions whose default is the dynamo exporter.
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    model.train(was_training)
    verify_onnx(path, spec)
    return path


def verify_onnx(path: str | Path, task: Task | str, batch: int = 7, atol: float = 1e-4) -> None:
    """Check with onnxruntime: shapes ``[b, *state_shape] -> [b, n_actions]`` float32, and outputs
    that do not depend on the batch (each row alone equals the row in a batch). Raises on failure.
    """
    import onnxruntime as ort

    spec = get_task(task) if isinstance(task, str) else task
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    rng = np.random.default_rng(0)
    scale = 255.0 if spec.name == "mspacman" else 1.0
    x = (rng.random((batch, *spec.state_shape)) * scale).astype(np.float32)
    y = sess.run([out.name], {inp.name: x})[0]
    if y.shape != (batch, spec.n_actions) or y.dtype != np.float32:
        raise AssertionError(f"{path}: output {y.dtype} {y.shape}, expected float32 {(batch, spec.n_actions)}")
    singles = np.concatenate([sess.run([out.name], {inp.name: x[i:i + 1]})[0] for i in range(batch)])
    if not np.allclose(singles, y, atol=atol, rtol=1e-4):
        raise AssertionError(f"{path}: outputs depend on the batch (max diff {np.abs(singles - y).max():.3g})")


class OnnxPolicy:
    """Greedy (argmax) policy of an ONNX file, through the contract's ``actions_from_output``."""

    def __init__(self, path: str | Path, task: Task | str):
        import onnxruntime as ort

        self.spec = get_task(task) if isinstance(task, str) else task
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def __call__(self, states: np.ndarray) -> np.ndarray:
        out = self.sess.run(None, {self.input: np.asarray(states, dtype=np.float32)})[0]
        return actions_from_output(out, self.spec.n_actions)


# --- evaluation ----------------------------------------------------------------------------------
def evaluate(policy: Callable[[np.ndarray], np.ndarray], task: Task | str, seeds: Iterable[int],
             n_envs: int = 8) -> np.ndarray:
    """Episode returns of ``policy`` (a batch of states -> a batch of actions) on ``seeds``, one
    seeded episode each under :func:`grader.tasks.contract.play_episode`. Episodes run ``n_envs`` at a
    time so the policy is called on batches; each return depends only on its own seed.
    """
    spec = get_task(task) if isinstance(task, str) else task
    seeds = list(seeds)
    returns = np.zeros(len(seeds))
    envs = [make_env(spec) for _ in range(min(n_envs, len(seeds)))]
    todo = list(enumerate(seeds))[::-1]
    running: list[tuple[int, Any, Any, Any]] = []  # (index, generator, current turn, env)
    free = list(envs)
    try:
        while todo or running:
            while todo and free:
                i, seed = todo.pop()
                env = free.pop()
                gen = play_episode(spec, env, seed)
                turn = next(gen)
                if turn.done:
                    returns[i] = turn.episode_return
                    free.append(env)
                else:
                    running.append((i, gen, turn, env))
            if not running:
                continue
            actions = policy(np.stack([t.state for _, _, t, _ in running]))
            still = []
            for (i, gen, _, env), a in zip(running, actions):
                turn = gen.send(int(a))
                if turn.done:
                    returns[i] = turn.episode_return
                    free.append(env)
                else:
                    still.append((i, gen, turn, env))
            running = still
    finally:
        for env in envs:
            env.close()
    return returns


def heldout_seeds(n: int) -> range:
    """The ``n`` held-out evaluation seeds of the model cards: 1_000_000 .. 1_000_000+n-1."""
    return range(HELDOUT_SEED0, HELDOUT_SEED0 + n)


def summary(returns: np.ndarray) -> str:
    r = np.asarray(returns)
    return f"{r.mean():.1f} ± {r.std():.1f} (min {r.min():.1f}, max {r.max():.1f}, n={len(r)})"


def export_and_score(model: Any, task: Task | str, out: str | Path, episodes: int = 0) -> np.ndarray | None:
    """Export ``model`` with :func:`export_onnx` (verified), and with ``episodes`` score the ONNX
    file's argmax policy on that many held-out seeds (1_000_000...), printing both; the returns."""
    import torch

    torch.set_num_threads(1)
    path = export_onnx(model, task, out)
    print(f"exported {path} (verified: shapes, batch-independent outputs)")
    if not episodes:
        return None
    returns = evaluate(OnnxPolicy(path, task), task, heldout_seeds(episodes))
    print(f"held-out score over seeds {heldout_seeds(episodes)}: {summary(returns)}")
    print("returns:", [round(float(r)) for r in returns])
    return returns


def export_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    """The ``export`` sub-command's parser shared by the trainers: --checkpoint, --out, --episodes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt or RUN/checkpoint.pt")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--episodes", type=int, default=0, help="score on this many held-out seeds 1_000_000..")
    return p
