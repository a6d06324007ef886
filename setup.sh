#!/usr/bin/env bash
# Set up the project in ./.venv (idempotent).
#   ./setup.sh          the grader itself (what `grade` needs; no torch)
#   ./setup.sh --test   plus torch (CPU), the test tools, the optional extras, and on Debian
#                       as root: chromium (browser tests) and bubblewrap (notebook sandbox)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
want_tests=0
[[ "${1:-}" == "--test" ]] && want_tests=1

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
pip_quiet=(--quiet --disable-pip-version-check)
if [[ $want_tests == 1 ]]; then
  # Pin torch first: an unpinned torch pulls a CUDA build of several GB. 2.13.0 is the CPU build.
  pip install "${pip_quiet[@]}" "torch==2.13.0"
  pip install "${pip_quiet[@]}" -e ".[test,site,ray]"
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    missing=()
    command -v chromium >/dev/null || missing+=(chromium chromium-driver)
    command -v bwrap >/dev/null || missing+=(bubblewrap)
    if [[ ${#missing[@]} -gt 0 ]]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
        || echo "setup.sh: could not install ${missing[*]}; browser tests skip and the notebook sandbox falls back" >&2
    fi
  fi
else
  pip install "${pip_quiet[@]}" -e .
fi
# The grader's bytecode, written once here: the sandboxed workers cannot write it (the sources are
# bound read-only) and PYTHONDONTWRITEBYTECODE stops the parent, so without it every `grade`
# compiled its modules from source, in the parent and in each worker (3% of a LunarLander grade).
python -m compileall -q grader >/dev/null
echo "setup.sh: ready (.venv/bin/grade)"
