#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (written by
# `grade gradescope`; see docs/gradescope.md). It installs the grader's wheel and its
# dependencies (no torch: grading ONNX needs none) into a virtual environment, so that the
# system python3, which Gradescope's own harness uses, is left alone.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="$ROOT/rl-grader-venv"
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
"$VENV/bin/python" -m pip install "${pip_quiet[@]}" --upgrade pip
wheel=("$SOURCE"/rl_grader-*.whl)
if ! "$VENV/bin/python" -m pip install "${pip_quiet[@]}" "${wheel[0]}"; then
  # A dependency without a wheel for this Python (Box2D) builds from source: give it a compiler.
  apt_install build-essential swig python3-dev
  "$VENV/bin/python" -m pip install "${pip_quiet[@]}" "${wheel[0]}"
fi
"$VENV/bin/grade" --help >/dev/null

# The student's code (a notebook's definitions run in the grader's sandbox) must not read the
# rubric's grading seeds: only root may enter the source folder.
chmod 700 "$SOURCE"
chmod 755 "$SOURCE/run_autograder" 2>/dev/null || true
echo "setup.sh: ready ($VENV/bin/grade)"
