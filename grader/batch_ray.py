"""``grade batch --backend ray --address HOST:PORT``: the grading slots are Ray actors.

Each actor (``num_cpus=1``) holds a persistent one-worker :class:`~grader.engine.Engine`, like a
local slot, so the sandbox is the same on every node. The driver (this process) keeps everything
else: it claims the gradebook rows, reads each file and sends its bytes (nodes need no access to the
class folder), receives the result, the probe actions and the report folder as a tar archive, and
finalizes exactly as the local backend does (report folder renamed into place, then the row
finished in one transaction). Resume, ``--force`` and the exports are therefore identical.

The ``grader`` package is shipped to the cluster with ``runtime_env={"py_modules": [...]}``, so the
nodes run the driver's code. An actor or node that dies costs only its current submission, which is
recorded as a grader ``error`` (rerun with ``--force`` for those rows, or fix the cluster).
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from grader.result import GradeResult

if TYPE_CHECKING:
    from grader.batch import BatchRun, Job, JobOptions

GRADER_DIR = Path(__file__).resolve().parent


class RayGrader:
    """The remote side: one persistent engine, grades submissions it is sent one at a time."""

    def __init__(self) -> None:
        self.engine = None

    def where(self) -> dict:
        import grader

        return {"node": socket.gethostname(), "pid": os.getpid(), "grader": grader.__file__}

    def grade(self, name: str, data: bytes, kind: str, rel: str, opts: "JobOptions") -> dict:
        from grader.batch import run_job
        from grader.engine import Engine

        if self.engine is None and kind == "model":
            self.engine = Engine(1)
        with tempfile.TemporaryDirectory(prefix="grader-ray-") as tmp:
            workdir = Path(tmp)
            result, actions = run_job(name, data, kind=kind, rel=rel, opts=opts, engine=self.engine, workdir=workdir)
            report = workdir / "report"
            report.mkdir(exist_ok=True)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(report, arcname=".")
        return {"result": result.to_json(), "actions": None if actions is None else actions.tolist(),
                "tar": buf.getvalue(), "node": socket.gethostname()}

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def _extract(tar_bytes: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python < 3.10.12 without extraction filters
            for m in tar.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise ValueError(f"unsafe member in a report archive: {m.name!r}")
            tar.extractall(dest)


def run_ray(run: "BatchRun", jobs: list["Job"], opts: "JobOptions") -> None:
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install 'rl-grader[ray]'") from None
    ray.init(address=run.address, runtime_env={"py_modules": [str(GRADER_DIR)], "excludes": ["__pycache__"]},
             logging_level="ERROR", log_to_driver=False, configure_logging=False)
    actors: list = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(run.workers, cpus, len(jobs)))
        actor_cls = ray.remote(num_cpus=1, max_restarts=0)(RayGrader)
        actors = [actor_cls.remote() for _ in range(n)] if jobs else []
        opts_ref = ray.put(opts)
        todo = list(jobs)
        idle = list(actors)
        pending: dict = {}
        where = f"ray:{run.address}"
        while todo or pending:
            while idle and todo and not run._stop.is_set():
                job = todo.pop(0)
                if run.gradebook.claim(job.attempt_id, worker=where) is None:
                    continue
                t0 = time.perf_counter()
                data, problem = run.check_bytes(job)
                if data is None:
                    run.record(job, GradeResult(submission=job.rel, task=run.rubric.task, status="error", error=problem),
                               None, run.new_workdir(job.attempt_id), 0.0)
                    continue
                actor = idle.pop()
                ref = actor.grade.remote(job.path.name, data, job.kind, job.rel, opts_ref)
                pending[ref] = (job, actor, t0)
            if not pending:
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                job, actor, t0 = pending.pop(ref)
                actions = None
                workdir = run.new_workdir(job.attempt_id)
                try:
                    out = ray.get(ref)
                    result = GradeResult.from_json(out["result"])
                    actions = None if out["actions"] is None else np.asarray(out["actions"], dtype=np.uint8)
                    _extract(out["tar"], workdir / "report")
                    idle.append(actor)
                except ray.exceptions.RayActorError as exc:
                    result = GradeResult(submission=job.rel, task=run.rubric.task, status="error",
                                         error=f"the Ray grading actor died ({type(exc).__name__}); rerun this submission")
                    replacement = actor_cls.remote()
                    actors.append(replacement)
                    idle.append(replacement)
                except Exception as exc:  # noqa: BLE001 - this row only
                    result = GradeResult(submission=job.rel, task=run.rubric.task, status="error",
                                         error=f"remote grading failed ({type(exc).__name__}: {str(exc)[:300]})")
                    idle.append(actor)
                run.record(job, result, actions, workdir, time.perf_counter() - t0)
    except KeyboardInterrupt:
        run.interrupted = True
        run._stop.set()
    finally:
        try:
            ray.get([a.close.remote() for a in actors], timeout=20)
        except Exception:  # noqa: BLE001 - dead actors: killed below
            pass
        for a in actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        ray.shutdown()
