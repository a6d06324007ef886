"""``grade doctor``: does this machine simulate the environment the grades were made in?

Run it on any machine before grading (docs/environment.md). It reports

- the installed versions against the lock (``lock/requirements.txt``) and against the versions
  recorded in each shipped rubric's baselines file;
- the sandbox: bubblewrap, user namespaces, and what the fallback would be;
- onnxruntime's execution providers (CUDA included);
- the dynamics, verified: each rubric's random policy and reference models replayed on a few of
  the baselines file's seeds, every return compared with the file's exactly.

It exits 1 (a set-up problem) when a return differs, naming the task, seed, expected and got, or
when a package that decides returns is not at its locked version; 0 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.errors import EXIT_ERROR, EXIT_GRADED
from grader.scoring.versions import DECISIVE, installed_versions, normalize, same_release, version_drift

# Installed but never in the lock: the installer itself and the project.
NOT_LOCKED = {"pip", "wheel", "rl-grader"}
UNHASHED = "# unhashed: "
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]*?))?\s*\\?$")
DEFAULT_REPLAYS = 2


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` is ok, info, warn or fail."""

    level: str
    topic: str
    message: str


def lock_path(*, name: str = "requirements.txt") -> Path:
    """The lock file: the checkout's ``lock/``, else the copy the wheel carries."""
    from grader.resources import lock_dir

    return lock_dir() / name


def read_lock(path: Path, *, environment: dict[str, str] | None = None) -> dict[str, str]:
    """name -> pinned version, for the lines of ``path`` whose markers hold on this interpreter
    (or in ``environment``); the unhashed torch pin of the header included."""
    from packaging.markers import Marker

    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(UNHASHED):
            line = line[len(UNHASHED):].split()[0]
        m = _PIN.match(line)
        if m and (not m[3] or Marker(m[3]).evaluate(environment)):
            pins[normalize(m[1])] = m[2]
    return pins


def check_lock(pins: dict[str, str], installed: dict[str, str], *,
               core: frozenset[str] | set[str] = frozenset()) -> list[Finding]:
    """Installed versions against the lock: a decisive package off its pin fails, others warn."""
    out = []
    for name, pinned in sorted(pins.items()):
        got = installed.get(name)
        if got is None:
            if name in core or name in DECISIVE:
                out.append(Finding("fail", "lock", f"{name} is not installed (the lock pins {pinned}); "
                                                   "install from the lock (docs/environment.md)"))
        elif not same_release(got, pinned):
            level = "fail" if name in DECISIVE else "warn"
            out.append(Finding(level, "lock", f"{name} {got} is installed, the lock pins {pinned}"
                                              + ("; it decides returns" if name in DECISIVE else "")))
    extra = sorted(n for n in installed if n not in pins and n not in NOT_LOCKED)
    if extra:
        out.append(Finding("info", "lock", f"not in the lock (not used by the grader): {', '.join(extra)}"))
    if not any(f.level in ("fail", "warn") for f in out):
        shown = ", ".join(f"{n} {installed[n]}" for n in DECISIVE if n in installed)
        out.append(Finding("ok", "lock", f"every locked package at its pin ({shown})"))
    return out


# --- the sandbox and the providers ------------------------------------------------------------------
def user_namespaces() -> str:
    """Whether unprivileged user namespaces are available, in words."""
    limit = Path("/proc/sys/user/max_user_namespaces")
    if limit.is_file() and limit.read_text().strip() == "0":
        return "disabled (user.max_user_namespaces = 0)"
    clone = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if clone.is_file() and clone.read_text().strip() == "0" and os.getuid() != 0:
        return "disabled for unprivileged users (kernel.unprivileged_userns_clone = 0)"
    if not shutil.which("unshare"):
        return "unknown (no `unshare` to try)"
    try:
        ok = subprocess.run(["unshare", "--user", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return "available" if ok else "not available (`unshare --user` failed)"


def fallback_description() -> str:
    """What the model workers would run in without bubblewrap (GRADER_SANDBOX=fallback)."""
    from grader.runtime.bwrap import fallback_uid, unshare_net_prefix

    uid = fallback_uid()
    user = f"uid {uid}" if uid is not None else "the grader's user"
    net = "network cut off with `unshare --net`" if unshare_net_prefix(uid) else "network NOT cut off (unshare failed)"
    return (f"{user}, the host's files visible, a clean environment, resource limits and an empty working "
            f"folder; {net}")


def notebook_policy() -> str:
    """Whether notebook code would run without bubblewrap (docs/security.md)."""
    from grader.runtime.bwrap import ALLOW_UNSANDBOXED_ENV_VAR, unsandboxed_allowed

    if unsandboxed_allowed():
        return (f"{ALLOW_UNSANDBOXED_ENV_VAR}=1 is set: notebook code runs in that fallback too (acceptable only "
                "where the machine is one submission's throw-away container)")
    return (f"notebook code is NOT run there (a set-up error, never the student's fault) unless "
            f"{ALLOW_UNSANDBOXED_ENV_VAR}=1 says the machine is one submission's throw-away container")


def check_sandbox() -> list[Finding]:
    """bubblewrap, user namespaces, and what the model workers would run in."""
    from grader.runtime.isolation import isolation

    out = [Finding("info", "sandbox", f"user namespaces: {user_namespaces()}")]
    iso = isolation("auto")
    if iso.mode == "bwrap":
        out.append(Finding("ok", "sandbox", f"bubblewrap ({shutil.which('bwrap')}) runs the model workers and the "
                                            "notebooks as an unprivileged user"))
        out.append(Finding("info", "sandbox", f"without it, the model workers' fallback: {fallback_description()}; "
                                              f"{notebook_policy()}"))
    else:
        out.append(Finding("warn", "sandbox", "; ".join(iso.warnings) + ". Install bubblewrap "
                                              "(apt-get install bubblewrap) for the full sandbox"))
        out.append(Finding("warn", "sandbox", f"notebooks: {notebook_policy()}"))
    return out


def check_providers() -> list[Finding]:
    """onnxruntime's execution providers; the grader runs the CPU one."""
    import onnxruntime as ort

    providers = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in providers
    return [Finding("ok" if "CPUExecutionProvider" in providers else "fail", "onnxruntime",
                    f"{ort.__version__}, providers: {', '.join(providers)} (CUDA {'available' if cuda else 'not available'}; "
                    "grades are played on the CPU provider)")]


# --- the dynamics ----------------------------------------------------------------------------------
def replay_plan(rubric, baselines, *, per_entry: int) -> tuple[list[tuple[str, bytes | None, list[int], list[float]]],
                                                                 list[Finding]]:
    """For each baselines entry the rubric can replay: (entry, model bytes or None for random,
    seeds, expected returns). Findings for entries that cannot be replayed."""
    seeds = rubric.all_grading_seeds()[: baselines.n_seeds]
    plan, problems = [], []
    for name, entry in baselines.entries.items():
        data = None
        if entry.policy != "random":
            rel = rubric.references.get(name)
            if rel is None:  # e.g. the rubric in a Gradescope zip, which ships no reference models
                problems.append(Finding("info", rubric.task, f"baseline {name!r} not replayed: the rubric names "
                                                             "no model for it (random play checks the dynamics)"))
                continue
            path = rubric.resolve(rel)
            if not path.is_file():
                problems.append(Finding("fail", rubric.task, f"baseline {name!r}: its reference model {rel} is missing"))
                continue
            data = path.read_bytes()
            if entry.sha256 and hashlib.sha256(data).hexdigest() != entry.sha256:
                problems.append(Finding("fail", rubric.task, f"baseline {name!r}: {rel} is not the model the "
                                                             "baselines file was made with (its sha256 differs)"))
                continue
        plan.append((name, data, [seeds[i] for i in picks_of(len(seeds), per_entry)],
                     [entry.returns[i] for i in picks_of(len(seeds), per_entry)]))
    return plan, problems


def picks_of(n: int, k: int) -> list[int]:
    """Which of a baselines file's ``n`` seeds to replay: the first ``k - 1`` and the last (a seed
    list shifted or cut short shows up at its end)."""
    if k >= n:
        return list(range(n))
    return sorted(set(range(k - 1)) | {n - 1})


def check_dynamics(rubric_path: Path, *, per_entry: int = DEFAULT_REPLAYS, workers: int = 2) -> list[Finding]:
    """Replay the rubric's baselines entries on a few of their seeds; every return must be identical."""
    from grader.errors import EngineFailure
    from grader.runtime.engine import Engine
    from grader.scoring.baselines import load_baselines
    from grader.scoring.rubric import load_rubric

    rubric = load_rubric(rubric_path, materialize=False)
    if not rubric.baselines:
        return [Finding("info", rubric.task, f"{rubric_path.name}: no baselines file, nothing to replay")]
    baselines = load_baselines(rubric.resolve(rubric.baselines))
    plan, out = replay_plan(rubric, baselines, per_entry=per_entry)
    played = 0
    with Engine(workers) as engine:
        for name, data, seeds, expected in plan:
            try:
                engine.load(data, task=rubric.task)
                got = engine.evaluate(seeds)
            except EngineFailure as exc:
                out.append(Finding("fail", rubric.task, f"{rubric.id}: {name} could not be replayed: {exc}"))
                continue
            for seed, want in zip(seeds, expected):
                ret = got[seed][0]
                played += 1
                if ret != want:
                    out.append(Finding("fail", rubric.task, f"{rubric.id}: {name} on seed {seed}: expected return "
                                                            f"{want!r} (from {rubric.baselines}), got {ret!r}"))
    if not any(f.level == "fail" for f in out):
        out.append(Finding("ok", rubric.task, f"{rubric.id}: {played} replayed episodes "
                                              f"({', '.join(n for n, *_ in plan)}) match {rubric.baselines} exactly"))
    drift = version_drift(baselines.versions)
    if drift:
        out.append(Finding("warn", rubric.task, f"{rubric.baselines} was made with other versions: {'; '.join(drift)}"))
    else:
        made = ", ".join(f"{k} {v}" for k, v in baselines.versions.items() if normalize(k) in DECISIVE)
        out.append(Finding("info", rubric.task, f"{rubric.baselines} was made with the installed versions ({made})"))
    return out


def shipped_rubrics() -> list[Path]:
    """The shipped rubrics, in name order."""
    from grader.resources import rubrics_dir

    return sorted(rubrics_dir().glob("*.toml"))


# --- the command -----------------------------------------------------------------------------------
def diagnose(*, rubrics: list[Path], lock: Path, per_entry: int = DEFAULT_REPLAYS, workers: int = 2) -> list[Finding]:
    """Every check, in the order of the report."""
    import platform

    out = [Finding("info", "python", f"{platform.python_version()} ({sys.executable})")]
    if lock.is_file():
        core = set(read_lock(lock.with_name("grader.txt"))) if lock.with_name("grader.txt").is_file() else set()
        out += check_lock(read_lock(lock), installed_versions(), core=core)
    else:
        out.append(Finding("warn", "lock", f"no lock file at {lock}: versions not checked"))
    out += check_sandbox()
    out += check_providers()
    for path in rubrics:
        out += check_dynamics(path, per_entry=per_entry, workers=workers)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rubric", type=Path, action="append",
                   help="check this rubric's references and baselines (repeatable; default: every shipped rubric)")
    p.add_argument("--lock", type=Path, help="the lock file to compare with (default: lock/requirements.txt)")
    p.add_argument("--replays", type=int, default=DEFAULT_REPLAYS,
                   help=f"seeds replayed per baselines entry (default {DEFAULT_REPLAYS})")
    p.add_argument("--workers", type=int, default=2)


MARKS = {"ok": "ok  ", "info": "    ", "warn": "WARN", "fail": "FAIL"}


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when anything failed."""
    from grader.errors import GraderError

    if args.replays < 1:
        print("grade doctor: --replays must be at least 1", file=sys.stderr)
        return EXIT_ERROR
    try:
        findings = diagnose(rubrics=args.rubric or shipped_rubrics(), lock=args.lock or lock_path(),
                            per_entry=args.replays, workers=max(1, args.workers))
    except (GraderError, OSError) as exc:
        print(f"grade doctor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for f in findings:
        print(f"{MARKS[f.level]}  {f.topic:<12} {f.message}")
    failed = [f for f in findings if f.level == "fail"]
    print(f"grade doctor: {len(failed)} problem(s): grades on this machine may differ" if failed
          else "grade doctor: this machine simulates the locked environment")
    return EXIT_ERROR if failed else EXIT_GRADED
