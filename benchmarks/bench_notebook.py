"""Time the notebook grader: ``python benchmarks/bench_notebook.py [--n 3] [--sandbox auto|bwrap|fallback]``.

Grades the test fixtures (a correct MsPacman notebook, one with a preprocessing mistake, a
LunarLander notebook) ``n`` times each and prints the per-notebook wall time. Target: < 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import notebook_fixtures as F  # noqa: E402
from grader.notebook import grade_notebook  # noqa: E402
from grader.notebook.sandbox import bwrap_status  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--sandbox", default=None)
    args = ap.parse_args()
    print(f"bubblewrap: {bwrap_status()}")
    cases = {
        "mspacman-correct": F.mspacman_cells(),
        "mspacman-luminance": F.mspacman_cells(preprocess=F.PREPROCESS_VARIANTS["luminance"]),
        "lunarlander": F.LUNAR_CELLS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, cells in cases.items():
            nb = F.write_notebook(Path(tmp) / name / "homework.ipynb", cells)
            times = []
            for i in range(args.n):
                t = time.perf_counter()
                r = grade_notebook(nb, rubric=None, out_dir=Path(tmp) / f"{name}-out{i}", sandbox=args.sandbox)
                times.append(time.perf_counter() - t)
            print(f"{name:22s} {r.status:8s} score {r.score:g}/{r.max_score:g}  "
                  f"median {statistics.median(times):.2f} s  min {min(times):.2f} s  max {max(times):.2f} s  (n={args.n})")


if __name__ == "__main__":
    main()
