"""Benchmark `grade batch`: a generated class of LunarLander ONNX submissions, graded with the
shipped rubric (100 episodes each), reports and videos, on all cores.

    python benchmarks/bench_batch.py [--n 100] [--workers N] [--no-video] [--episodes E] [--dir DIR] [--keep]

Submissions are built with onnx.helper: 90% are Gymnasium's heuristic lander written as an ONNX
graph plus the logits of a random MLP (8 -> 64 -> 4) scaled by 0.6..1.6, which gives a class from
"lands in ~260 steps, return ~250" through hoverers hitting the 1000-step limit to crashers;
10% are untrained MLPs in another ONNX style (transposed Gemm, opset 13), which crash early.
Episodes average roughly 300 steps, like trained student policies. Prints the
wall time, the per-submission breakdown (median and max of each grading phase) and the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import classgen as g  # noqa: E402


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting on I/O), from /proc/stat.

    The workers are killed at the end rather than waited for, so their CPU never reaches this
    process's rusage; the machine's own accounting sees them (and everything else running)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def make_class(root: Path, n: int) -> Path:
    d = root / "class"
    for i in range(n):
        if i % 10 == 9:  # an untrained network: crashes within ~100 steps
            data = g.mlp_model(g.mlp_weights(i), style="matmul", prefix=f"s{i}_", opset=13, ir=7)
        else:  # the heuristic lander plus a random network's logits: from landing well to hovering
            data = g.heuristic_model(i, 0.6 + (i % 20) / 19)
        g.write(d / f"student{i:03d}" / "model.onnx", data)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="submissions (default 100)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--episodes", type=int, help="override the rubric's 100 episodes")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--rubric", type=Path, default=Path(__file__).resolve().parent.parent / "rubrics" / "lunarlander.toml")
    args = ap.parse_args(argv)

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    root.mkdir(parents=True, exist_ok=True)
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    class_dir = make_class(root, args.n)
    from grader.cli import main as grade_main

    cmd = ["batch", str(class_dir), "--rubric", str(args.rubric), "--out", str(out), "--workers", str(args.workers)]
    cmd += ["--no-video"] if args.no_video else []
    cmd += ["--episodes", str(args.episodes)] if args.episodes else []
    t0 = time.perf_counter()
    busy0 = _machine_busy_s()
    code = grade_main(cmd)
    wall = time.perf_counter() - t0
    busy = _machine_busy_s() - busy0
    if code != 0:
        print(f"grade batch exited with {code}", file=sys.stderr)
        return code

    conn = sqlite3.connect(out / "gradebook.sqlite")
    rows = conn.execute("SELECT status, timings_json, result_json FROM attempts").fetchall()
    conn.close()
    phases: dict[str, list[float]] = {}
    steps = 0
    videos = 0
    for _status, timings, result in rows:
        for k, v in json.loads(timings or "{}").items():
            phases.setdefault(k, []).append(v)
        r = json.loads(result)
        steps += sum(e["length"] for e in r["episodes"])
        videos += len(r["videos"])
    statuses = {s: sum(1 for r in rows if r[0] == s) for s in ("graded", "invalid", "error")}
    print()
    print(f"class: {args.n} LunarLander submissions, {args.episodes or 100} episodes each, "
          f"videos {'off' if args.no_video else 'on'}, {args.workers} grading slots, {os.cpu_count()} cores")
    print(f"wall time: {wall:.1f} s ({wall / 60:.2f} min) for the whole `grade batch` (incl. exports)  -> "
          f"{args.n / wall * 60:.1f} submissions/min")
    cores = os.cpu_count() or 1
    print(f"machine CPU busy during the run: {busy:.0f} s of {wall * cores:.0f} s on {cores} cores "
          f"({100 * busy / (wall * cores):.0f}%; every process on the machine, so only a quiet machine's figure is the grader's); "
          f"{busy / args.n:.2f} s per submission (load average now: {os.getloadavg()[0]:.1f})")
    print(f"results: {statuses}; {steps} env steps graded ({steps / wall:.0f} steps/s), {videos} videos")
    print("per submission (s):   median     mean      max")
    for k in ("static_checks", "load_and_probe", "episodes", "videos", "total", "wall"):
        if k in phases:
            v = phases[k]
            print(f"  {k:<18} {statistics.median(v):8.2f} {statistics.fmean(v):8.2f} {max(v):8.2f}")
    print(f"output: {out}")
    if not args.keep and args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
