#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (written by
# `grade gradescope`; see docs/gradescope.md). It installs the grader's wheel and its
# dependencies into a virtual environment, so that the system python3, which Gradescope's own
# harness uses, is left alone: every package from the lock in the zip (requirements.lock: exact
# versions, hashes checked; docs/environment.md), torch's CPU build only when the rubric grades
# notebooks (the lock then pins it). Then `grade doctor` proves the installation simulates the
# environment the rubric's baselines were made in, or stops the build naming the seed.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="$ROOT/rl-grader-venv"
LOCK="$SOURCE/requirements.lock"
# torch's CPU build comes from PyTorch's own index (PyPI's Linux torch is the CUDA build, several GB).
# RL_GRADER_TORCH_INDEX="" uses pip's configured index instead (tests, mirrors).
TORCH_INDEX="${RL_GRADER_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
export DEBIAN_FRONTEND=noninteractive
pip_quiet=(--quiet --disable-pip-version-check --no-input)

apt_install() {
  command -v apt-get >/dev/null || { echo "setup.sh: no apt-get to install $*" >&2; return 1; }
  apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
}

# python3 with venv and pip (Ubuntu ships python3 without ensurepip unless python3-venv is installed).
if ! command -v python3 >/dev/null || ! python3 -c "import ensurepip, venv" 2>/dev/null; then
  apt_install python3 python3-pip python3-venv
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else
  "setup.sh: rl-grader needs Python >= 3.10; choose the Ubuntu 22.04 (or newer) base image")'

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install "${pip_quiet[@]}")
torch=$(sed -n 's/^# unhashed: \(torch==[^ ]*\).*/\1/p' "$LOCK")
if [[ -n "$torch" ]]; then
  # First and on its own (--no-deps): its dependencies are in the lock, hashed.
  "${pip[@]}" --no-deps ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$torch"
fi
if ! "${pip[@]}" --require-hashes --no-deps -r "$LOCK"; then
  # A dependency without a wheel for this Python (Box2D) builds from source: give it a compiler.
  apt_install build-essential swig python3-dev
  "${pip[@]}" --require-hashes --no-deps -r "$LOCK"
fi
wheel=("$SOURCE"/rl_grader-*.whl)
"${pip[@]}" --no-deps "${wheel[0]}"
"$VENV/bin/python" -m pip check
rubric=("$SOURCE"/*.toml)
# Versions against the lock, the sandbox, and the dynamics replayed against the rubric's baselines.
"$VENV/bin/grade" doctor --lock "$LOCK" --rubric "${rubric[0]}"

# The student's code (a notebook's definitions run in the grader's sandbox) must not read the
# rubric's grading seeds: only root may enter the source folder.
chmod 700 "$SOURCE"
chmod 755 "$SOURCE/run_autograder" 2>/dev/null || true
echo "setup.sh: ready ($VENV/bin/grade)"
