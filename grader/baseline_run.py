"""``grade baselines --rubric R``: play the random policy and the rubric's reference models on its
grading seeds, and write the baselines file (:mod:`grader.scoring.baselines`) that thresholds can name."""

from __future__ import annotations

from pathlib import Path

from grader.scoring.baselines import BaselineEntry, BaselinesFile


# --- `grade baselines`: compute and write the file ---------------------------------------------
def compute_baselines(rubric, *, workers: int = 2, episodes: int | None = None, progress=None) -> BaselinesFile:
    """Play the random policy and each of the rubric's reference models on its grading seeds."""
    import datetime as dt
    import hashlib

    from grader.errors import ModelLoadError
    from grader.limits import MAX_MODEL_BYTES
    from grader.pipeline import Options, package_versions, resolve_seeds
    from grader.runtime.engine import Engine
    from grader.scoring.rubric import RubricError
    from grader.scoring.stats import summarize
    from grader.submission import checks as C
    from grader.submission.bundle import read_capped
    from grader.submission.onnx_model import parse_model
    from grader.tasks.contract import get_task

    spec = get_task(rubric.task)
    seeds, _ = resolve_seeds(rubric, Options(episodes=episodes))  # more episodes than seeds: an error, never fewer
    policies: dict[str, tuple[str, bytes | None]] = {"random": ("random", None)}
    for name, rel in rubric.references.items():
        path = rubric.resolve(rel)
        try:
            parsed = parse_model(read_capped(path, MAX_MODEL_BYTES))
        except (OSError, ModelLoadError) as exc:
            raise RubricError(f"reference {name!r} ({rel}): {getattr(exc, 'strerror', None) or exc}") from None
        failed = [c for c in C.static_checks(parsed, spec) if c.blocking]
        if failed:
            raise RubricError(f"reference {name!r} ({rel}) fails the check {failed[0].name}: {failed[0].message}")
        policies[name] = (rel, parsed.data)
    entries: dict[str, BaselineEntry] = {}
    with Engine(max(1, min(workers, len(seeds)))) as engine:
        for name, (label, data) in policies.items():
            engine.load(data, task=spec.name)
            done = [0]

            def tick(seed: int, ret: float, length: int, name: str = name, done: list[int] = done) -> None:
                done[0] += 1
                if progress:
                    progress(name, done[0], len(seeds))

            outcome = engine.evaluate(seeds, on_episode=tick)
            returns = [outcome[s][0] for s in seeds]
            entries[name] = BaselineEntry(
                policy=label, sha256=hashlib.sha256(data).hexdigest() if data else None,
                summary=summarize(returns, success_threshold=spec.success_threshold), returns=returns,
            )
    from grader.scoring.baselines import seeds_fingerprint

    return BaselinesFile(
        task=spec.name, rubric_id=rubric.id, seed_set="grading", n_seeds=len(seeds), seeds_sha256=seeds_fingerprint(seeds),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), versions=package_versions(),
        entries=entries,
    )


def add_arguments(p) -> None:
    p.add_argument("--rubric", type=Path, required=True, help="rubric TOML; its `baselines` key names the output file")
    p.add_argument("--out", type=Path, help="write here instead of the rubric's baselines file")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--episodes", type=int, help="fewer episodes than the rubric's (for a quick look)")
    p.add_argument("--final", action="store_true",
                   help="on the [final] table's seeds, into its `baselines` file (for `grade final`)")


def run(args) -> int:
    from rich.table import Table

    from grader.outputs import console
    from grader.scoring.rubric import RubricError, load_rubric

    if args.episodes is not None and args.episodes < 1:
        console.fail("--episodes must be at least 1")
        return 1
    try:
        rubric = load_rubric(args.rubric, materialize=False)
        if args.final:
            if rubric.final is None or not rubric.final.baselines and args.out is None:
                raise RubricError(f"rubric {rubric.id!r}: --final needs a [final] table with a `baselines` file "
                                  "(or pass --out)")
            rubric = rubric.final_rubric()  # the final seeds; its `baselines` is the final phase's file
        out = args.out or (rubric.resolve(rubric.baselines) if rubric.baselines else None)
        if out is None:
            raise RubricError(f"rubric {rubric.id!r} sets no `baselines` file; pass --out")
        with console.progress_bar() as progress:
            result = compute_baselines(rubric, workers=args.workers, episodes=args.episodes, progress=progress)
    except RubricError as exc:
        console.fail(str(exc))
        return 1
    from grader.outputs.fsutil import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, result.model_dump_json(indent=2))
    table = Table("baseline", "policy", "mean ± std", "95% CI", "success")
    for name, e in result.entries.items():
        s = e.summary
        table.add_row(name, e.policy, f"{s.mean:.1f} ± {s.std:.1f}", f"[{s.ci_low:.1f}, {s.ci_high:.1f}]",
                      "-" if s.success_rate is None else f"{100 * s.success_rate:.0f}%")
    console.Console(highlight=False).print(table)
    console.Console(highlight=False).print(f"wrote {out} ({result.n_seeds} grading seeds of rubric {rubric.id!r})")
    return 0
