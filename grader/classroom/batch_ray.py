"""``grade batch --backend ray [--address HOST:PORT]``: the grading slots are Ray actors.

Without ``--address`` the driver starts a Ray of its own on this machine (``num_cpus`` = the
workers), with its own authentication token in its environment (never ``~/.ray/auth_token``, which
other Ray users on the machine share), and stops it at the end.

Each actor (``num_cpus=1``) holds a persistent one-worker :class:`~grader.runtime.engine.Engine`, like a
local slot, so the sandbox is the same on every node. The driver runs the same claim -> grade ->
record loop as local slots (:func:`grader.classroom.slots.run_slot`), one thread per actor: it claims the
gradebook rows, reads each bundle and sends its bytes (nodes need no access to the class folder),
receives the result, the probe actions and the report folder as a tar archive, and records exactly
as the local backend does. Resume, ``--force`` and the exports are therefore identical.

The ``grader`` package is shipped to the cluster with ``runtime_env={"py_modules": [...]}``, so the
nodes run the driver's code. An actor or node that dies costs only its current submission, which is
recorded as a grader ``error`` (rerun with ``--retry-errors``), and the actor is replaced.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.classroom.slots import JobOutcome
from grader.errors import GraderBug, MissingDependency
from grader.resources import package_dir
from grader.result import GradeResult

if TYPE_CHECKING:
    from grader.classroom.batch import BatchRun, Job
    from grader.classroom.duplicates import ProbeSet
    from grader.classroom.jobs import JobOptions
    from grader.runtime.engine import Engine

GRADER_DIR = package_dir()


class RayGrader:
    """The remote side: one persistent engine, grades the submissions it is sent one at a time."""

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def where(self) -> dict:
        import grader

        return {"node": socket.gethostname(), "pid": os.getpid(), "grader": grader.__file__}

    def grade(self, sub, opts: JobOptions, probe: ProbeSet | None = None) -> dict:
        """Grade ``sub``; ``probe``, the class's probe set, travels apart (put once: MsPacman's raw frames are
        150 MB), so that a late job's own options stay small."""
        from grader.classroom.jobs import grade_job
        from grader.runtime.engine import Engine

        if probe is not None:
            opts = replace(opts, probe=probe)
        if self.engine is None:
            self.engine = Engine(1)
        with tempfile.TemporaryDirectory(prefix="grader-ray-") as tmp:
            outcome = grade_job(sub, opts, engine=self.engine, workdir=Path(tmp))
            report = outcome.report_dir
            if report is None:
                raise GraderBug("grade_job returned no report folder for a job given a work folder")
            report.mkdir(exist_ok=True)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                tar.add(report, arcname=".")
        return {"result": outcome.result.to_json(), "extra": outcome.extra, "tar": buf.getvalue(), "node": socket.gethostname()}

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
                    raise ValueError(f"unsafe member in a report archive: {m.name!r}") from None
            tar.extractall(dest)


class _ActorSlot:
    """The driver side of one actor: a :class:`grader.classroom.slots.SlotGrader` for :func:`grader.classroom.slots.run_slot`."""

    def __init__(self, run: BatchRun, actor_cls: Any, opts_ref: Any, probe_ref: Any):
        self.run, self.actor_cls, self.opts_ref, self.probe_ref = run, actor_cls, opts_ref, probe_ref
        self.actor = actor_cls.remote()

    def grade(self, job: Job) -> JobOutcome:
        import ray

        t0 = time.perf_counter()
        sub, problem = self.run.read_job(job)
        if sub is None:
            return JobOutcome(GradeResult(submission=job.label, task=self.run.rubric.task, status="error", error=problem))
        workdir = self.run.new_workdir(job.attempt_id)
        try:
            # a late part: this job's own options, without the probe set (sent once, by reference)
            opts = self.opts_ref if job.late is None else replace(self.run.options_for(job), probe=None)
            out = ray.get(self.actor.grade.remote(sub, opts, self.probe_ref))
        except ray.exceptions.RayActorError as exc:
            self.actor = self.actor_cls.remote()  # replace the dead actor; this row is the grader's error
            result = GradeResult(submission=job.label, task=self.run.rubric.task, status="error",
                                 error=f"the Ray grading actor died ({type(exc).__name__}); rerun this submission")
            return JobOutcome(result, workdir / "report", wall_s=time.perf_counter() - t0)
        _extract(out["tar"], workdir / "report")
        return JobOutcome(GradeResult.from_json(out["result"]), workdir / "report", out["extra"], time.perf_counter() - t0)

    def close(self) -> None:
        import ray

        try:
            ray.get(self.actor.close.remote(), timeout=20)
        except Exception:  # noqa: BLE001 - a dead actor: killed below
            pass
        try:
            ray.kill(self.actor)
        except Exception:  # noqa: BLE001
            pass


# The variables a local Ray of our own sets, and what they were before (restored by shutdown()).
_SAVED_ENV: dict[str, str | None] = {}


def _private_token() -> None:
    """Token authentication for a local Ray of our own, with a fresh token in the environment (the
    Ray processes inherit it): Ray would otherwise read or write ``~/.ray/auth_token``, shared by
    every Ray on the machine. An operator's own RAY_AUTH_MODE / RAY_AUTH_TOKEN are left alone."""
    import secrets

    if "RAY_AUTH_MODE" in os.environ or "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ:
        return
    for key, value in (("RAY_AUTH_MODE", "token"), ("RAY_AUTH_TOKEN", secrets.token_hex(32))):
        _SAVED_ENV[key] = os.environ.get(key)
        os.environ[key] = value


def _refresh_auth() -> None:
    """Make Ray read the authentication settings again from the environment: it caches the mode and
    the token per process, and this process may have talked to another cluster before."""
    import importlib

    try:
        raylet = importlib.import_module("ray._raylet")
        config, loader = raylet.Config, raylet.AuthenticationTokenLoader
    except (ImportError, AttributeError):  # a Ray without token authentication: nothing cached
        return
    config.initialize("")
    loader.instance().reset_cache()


def _init(ray: Any, *, address: str | None, n: int) -> None:
    """Connect to the cluster at ``address``; without one, start a local Ray with ``n`` CPUs."""
    common = {"runtime_env": {"py_modules": [str(GRADER_DIR)], "excludes": ["__pycache__"]},
              "logging_level": "ERROR", "log_to_driver": False, "configure_logging": False}
    if address:
        _refresh_auth()
        ray.init(address=address, **common)
        return
    _private_token()
    _refresh_auth()
    ray.init(address="local", num_cpus=max(1, n), include_dashboard=False, **common)


def ray_graders(run: BatchRun, opts: JobOptions, *, n: int) -> list[_ActorSlot]:
    """Connect to the cluster (or start a local one) and start ``n`` actors (at most one per CPU)."""
    try:
        import ray
    except ImportError:
        raise MissingDependency("--backend ray", install="pip install 'rl-grader[ray]'") from None
    _init(ray, address=run.address, n=n)
    if n < 1:
        return []
    cpus = int(ray.cluster_resources().get("CPU", 1))
    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(RayGrader)
    opts_ref, probe_ref = ray.put(replace(opts, probe=None)), ray.put(opts.probe)
    return [_ActorSlot(run, actor_cls, opts_ref, probe_ref) for _ in range(max(1, min(n, cpus)))]


def shutdown() -> None:
    """Disconnect (a local Ray of our own stops with it) and restore the environment it changed."""
    try:
        import ray

        ray.shutdown()
    except ImportError:
        pass
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _SAVED_ENV.clear()
