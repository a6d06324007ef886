"""How long the grader takes to refuse hostile ONNX files (the timings the tests no longer assert).

    python benchmarks/bench_refusals.py [--runs 3]

* a flood of two million nodes (25 MB), graded as a whole process: refused by the wire scan
  before any protobuf parse (goal: a fraction of a second, a few hundred MB of memory);
* nested subgraphs and a value_info flood handed to ``parse_model`` in this process;

medians of ``--runs``. The tests (tests/test_hostile_models.py) assert that each is refused by the
cap meant for it, and the flood's memory; this is a benchmark: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FLOOD_RUN = """
import json, sys, time
from grader.api import grade
t = time.perf_counter()
r = grade(sys.argv[1], task='lunarlander', out=sys.argv[2], video=False, report=False)
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print(json.dumps({'s': time.perf_counter() - t, 'rss_mb': hwm / 1024, 'status': r.status}))
"""


def flood(runs: int) -> None:
    """The two-million-node flood, graded in a fresh interpreter each run."""
    from test_hostile_models import node_flood_bytes

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flood.onnx"
        path.write_bytes(node_flood_bytes())
        results = []
        for i in range(runs):
            proc = subprocess.run([sys.executable, "-c", FLOOD_RUN, str(path), str(Path(tmp) / f"out{i}")],
                                  capture_output=True, text=True, timeout=300, cwd=ROOT)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"node flood ({path.stat().st_size / 2**20:.0f} MB): refused in {statistics.median(r['s'] for r in results):.2f} s "
              f"(grade() call), peak memory {max(r['rss_mb'] for r in results):.0f} MB, status {results[0]['status']}")


def bombs(runs: int) -> None:
    """Structure bombs handed straight to parse_model."""
    from onnx import TensorProto, helper
    from test_hostile_models import _nested_if, _varint

    from grader.submission.onnx_model import ModelLoadError, parse_model

    def model(nodes, extra=b""):
        graph = helper.make_graph(nodes, "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString() + extra

    vi = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1]).SerializeToString()
    flood = (b"\x6a" + _varint(len(vi)) + vi) * 250_000
    cases = {"nested subgraphs": model(_nested_if(8)),
             "value_info flood": model([helper.make_node("Identity", ["x"], ["y"])], b"\x3a" + _varint(len(flood)) + flood)}
    for name, data in cases.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            try:
                parse_model(data)
            except ModelLoadError:
                pass
            times.append(time.perf_counter() - t)
        print(f"{name} ({len(data) / 2**20:.1f} MB): refused in {statistics.median(times) * 1000:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    flood(args.runs)
    bombs(args.runs)


if __name__ == "__main__":
    main()
