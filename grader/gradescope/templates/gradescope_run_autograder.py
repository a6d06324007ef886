#!/usr/bin/env python3
"""Gradescope runs this for every submission (written by `grade gradescope`; see docs/gradescope.md).

It grades the student's folder ``$ROOT/submission`` (``ROOT`` is ``$GRADESCOPE_ROOT``, default
``/autograder``) as one submission, with ``grade DIR --rubric $ROOT/source/RUBRIC --gradescope
$ROOT/results/results.json`` (``grade`` is ``$GRADESCOPE_GRADE``, default ``grade`` from the
virtual environment that setup.sh made) and makes sure a results.json exists even when the grader
cannot run. Standard library only: it must work before and without the grader's environment.
Everything printed here goes to Gradescope's stdout, which only instructors see.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

CONFIG = {}  # filled in by `grade gradescope`

ROOT = Path(os.environ.get("GRADESCOPE_ROOT") or "/autograder")
SOURCE, SUBMISSION, RESULTS = ROOT / "source", ROOT / "submission", ROOT / "results"
RESULTS_JSON = RESULTS / "results.json"
REPORT_DIR = RESULTS / "report"
SIDECAR_ENDINGS = (".onnx.data", ".onnx_data", ".data")
SKIPPED_DIRS = {"__MACOSX", "__pycache__"}


class Problem(Exception):
    """The submission cannot be graded; the message says what the student should hand in."""


def log(message):
    print(f"run_autograder: {message}", flush=True)


def find_submission(folder):
    """(folder to grade, notes): the submission folder, or the one folder inside it when the student
    uploaded a zip of a folder. Which files in it are graded is the grader's one rule (``grade DIR``:
    the model, the notebook and the weights of one student)."""
    if not folder.is_dir():
        raise Problem(f"no submission folder ({folder})")
    notes = []
    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".") and e.name not in SKIPPED_DIRS]
    while len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        notes.append(f"grading the folder {entries[0].name}/ (the only entry of the upload)")
        folder = entries[0]
        entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".") and e.name not in SKIPPED_DIRS]
    # A checkpoint (.pt / .pth) alone goes to the grader too: it says what the file is and how to export it.
    if not any(e.name.lower().endswith((".onnx", ".ipynb", ".pt", ".pth")) for e in entries):
        if any(e.name.lower().endswith(SIDECAR_ENDINGS) for e in entries):
            raise Problem("only an external-data file was handed in, no .onnx model; upload model.onnx with it")
        raise Problem("no .onnx model (or .ipynb notebook) was handed in; upload model.onnx")
    return folder, notes


def write_fallback(message):
    """The last resort, when the grader did not write results.json: score 0 out of the rubric's points."""
    points = CONFIG.get("max_points") or 0
    data = {
        "score": 0.0,
        "output": message,
        "output_format": "text",
        "stdout_visibility": "hidden",
        "tests": [{"name": "submission", "score": 0.0, "max_score": points, "status": "failed",
                   "output": message, "visibility": "visible"}],
    }
    tmp = RESULTS_JSON.with_name(".results.json.part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, RESULTS_JSON)
    log(f"wrote {RESULTS_JSON} (score 0): {message}")


def valid_results():
    try:
        data = json.loads(RESULTS_JSON.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("score"), (int, float))


def hand_in_args():
    """``--submitted`` (Gradescope's ``created_at``) and ``--student`` (the first user's e-mail, for an
    extension) from ``submission_metadata.json``; nothing when it is missing or unreadable. The
    rubric's [deadline] decides the late part; without one the time changes nothing."""
    try:
        meta = json.loads((ROOT / "submission_metadata.json").read_text())
        created = meta.get("created_at")
        users = meta.get("users") or [{}]
        email = users[0].get("email") if isinstance(users[0], dict) else None
    except (OSError, ValueError, AttributeError, IndexError):
        return []
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        return []
    args = ["--submitted", created]
    if isinstance(email, str) and email and not email.startswith("-"):
        args += ["--student", email]
    return args


def run_grader(cmd, env, timeout_s):
    """Exit status of ``cmd`` or None when it ran past ``timeout_s`` (its whole process group is killed)."""
    proc = subprocess.Popen(cmd, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def print_episodes():
    """The returns by seed, for the instructor (stdout is hidden from students)."""
    try:
        result = json.loads((REPORT_DIR / "result.json").read_text())
    except (OSError, ValueError):
        return
    episodes = result.get("episodes") or [] if isinstance(result, dict) else []
    if episodes:
        log("returns by grading seed (instructors only):")
        for e in episodes:
            print(f"  seed {e.get('seed')}: return {e.get('return')} in {e.get('length')} steps")


def main():
    start = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        RESULTS_JSON.unlink()
    except FileNotFoundError:
        pass
    try:
        path, notes = find_submission(SUBMISSION)
    except Problem as exc:
        write_fallback(f"Not graded: {exc}.")
        return 0
    for note in notes:
        log(note)
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / 'rl-grader-venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["RL_GRADER_GRADESCOPE_EPISODES"] = CONFIG.get("episode_table", "after_published")
    env.setdefault("PYTHONWARNINGS", "ignore")
    # Gradescope's container is one submission's, thrown away afterwards: a notebook's code may run in
    # the weaker sandbox where bubblewrap cannot (uid 65534, clean environment; docs/security.md).
    env["GRADER_ALLOW_UNSANDBOXED"] = "1"
    grade = shlex.split(os.environ.get("GRADESCOPE_GRADE") or "grade")
    cmd = grade + [str(path), "--rubric", str(SOURCE / CONFIG["rubric"]), "--out", str(REPORT_DIR), "--no-video",
                   "--gradescope", str(RESULTS_JSON)] + hand_in_args()
    log(f"grading {path}: {shlex.join(cmd)}")
    timeout_s = CONFIG.get("timeout_s", 1200)
    try:
        rc = run_grader(cmd, env, timeout_s)
    except OSError as exc:
        write_fallback(f"Not graded: the autograder could not start the grader ({exc}). This is not your fault; "
                       "the course staff have been told in the autograder's log.")
        return 0
    if rc is None:
        write_fallback(f"Not graded: grading took longer than {timeout_s} s and was stopped. Make sure the model "
                       "answers quickly (a small network on the CPU) and hand it in again.")
    elif not valid_results():
        write_fallback(f"Not graded: the grader stopped (exit status {rc}) without a result. This is not your "
                       "fault; the course staff can see the autograder's log.")
    else:
        log(f"grade exited with {rc}; wrote {RESULTS_JSON}")
        print_episodes()
    log(f"done in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
