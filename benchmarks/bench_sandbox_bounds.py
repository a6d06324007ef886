"""How far code in each sandbox can write: bytes and files in every place, until a write fails.

    python benchmarks/bench_sandbox_bounds.py

Runs :data:`ATTACK` (write 1 MB chunks until a write fails, then create empty files until that
fails, in each place) through the real command lines of the notebook sandbox and of a model
worker, with the default limits, and prints what each place took and how long the whole attack
ran. ``tests/test_sandbox_bounds.py`` runs the same attack with small limits and asserts the
bounds (no timings there). Figures: docs/security.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATTACK = r"""
import errno, json, os, sys
places, byte_cap, file_cap = json.loads(sys.argv[1])
def code(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def fill(d):
    n, err, path = 0, "cap reached", os.path.join(d, "fill")
    try:
        with open(path, "wb", buffering=0) as f:
            while n < byte_cap:
                n += f.write(b"\1" * (1 << 20))
    except OSError as e:
        err = code(e)
    try:
        os.unlink(path)
    except OSError:
        pass
    return n, err
def files(d):
    n, err = 0, "cap reached"
    try:
        while n < file_cap:
            open(os.path.join(d, "f%d" % n), "w").close()
            n += 1
    except OSError as e:
        err = code(e)
    for i in range(n):
        os.unlink(os.path.join(d, "f%d" % i))
    return n, err
print(json.dumps({d: {"bytes": fill(d), "files": files(d)} for d in places}))
"""


def run_attack(cmd: list[str], env: dict, cwd: str, places: list[str], byte_cap: int, file_cap: int) -> dict:
    """``cmd`` (a sandbox's command line) with the program after its last ``--`` replaced by the
    attack; what each place took: ``{place: {"bytes": [n, errno], "files": [n, errno]}}``."""
    cut = len(cmd) - cmd[::-1].index("--")
    argv = cmd[:cut] + [sys.executable, "-I", "-c", ATTACK, json.dumps([places, byte_cap, file_cap])]
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    from grader.limits import WorkerLimits
    from grader.notebook import sandbox
    from grader.runtime import isolation

    limits = sandbox.Limits()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "in").mkdir()
        run = sandbox.SandboxRun(mode="bwrap")
        cmd = sandbox._bwrap_command(Path(tmp), limits, run, (3, 4))
        t = time.monotonic()
        seen = run_attack(cmd, {"PATH": "/usr/bin:/bin"}, "/", ["/", "/dev", "/sandbox", "/tmp", "/dev/shm"],
                          2 << 30, 300_000)
        print(f"notebook ({run.scratch}): {time.monotonic() - t:.1f} s\n  {json.dumps(seen)}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd, env, cwd = isolation.worker_command(isolation.Isolation("bwrap"), 3, tmp, WorkerLimits())
        t = time.monotonic()
        seen = run_attack(cmd, env, cwd, ["/", "/dev", "/tmp", "/dev/shm"], 2 << 30, 300_000)
        print(f"model worker: {time.monotonic() - t:.1f} s\n  {json.dumps(seen)}")


if __name__ == "__main__":
    main()
