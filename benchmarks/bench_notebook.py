"""Time the notebook evidence collectors: ``python benchmarks/bench_notebook.py [--n 3] [--sandbox auto|bwrap|fallback]``.

Collects the evidence of the test fixtures (a correct MsPacman notebook, one with a preprocessing
mistake, a LunarLander notebook) ``n`` times each and prints the per-notebook wall time
(parse + collect; scoring and the ONNX grade are the pipeline's). Target: < 10 s.
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

from grader.notebook import lunarlander, mspacman  # noqa: E402
from grader.notebook.common import parse_notebook  # noqa: E402
from grader.notebook.sandbox import Limits, bwrap_status  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--sandbox", default=None)
    args = ap.parse_args()
    print(f"bubblewrap: {bwrap_status()}")
    cases = {
        "mspacman-correct": (mspacman, F.mspacman_cells()),
        "mspacman-luminance": (mspacman, F.mspacman_cells(preprocess=F.PREPROCESS_VARIANTS["luminance"])),
        "lunarlander": (lunarlander, F.LUNAR_CELLS),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (task, cells) in cases.items():
            path = F.write_notebook(Path(tmp) / name / "homework.ipynb", cells)
            times = []
            for _ in range(args.n):
                t = time.perf_counter()
                ev = task.collect(parse_notebook(path), limits=Limits(), sandbox=args.sandbox, weights=[])
                times.append(time.perf_counter() - t)
            passed = sum(c.passed for c in ev.checks)
            print(f"{name:22s} {passed}/{len(ev.checks)} checks passed, {len(ev.models)} models  "
                  f"median {statistics.median(times):.2f} s  min {min(times):.2f} s  max {max(times):.2f} s  (n={args.n})")


if __name__ == "__main__":
    main()
