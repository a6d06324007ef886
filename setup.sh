#!/usr/bin/env bash
# Set up the project in ./.venv (idempotent).
#   ./setup.sh          the grader itself (what `grade` needs; no torch), from lock/grader.txt
#   ./setup.sh --test   plus torch (CPU), the test tools, the optional extras (lock/requirements.txt),
#                       and on Debian as root: chromium, chromium-driver (browser tests) and
#                       bubblewrap (notebook sandbox), whichever is missing
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
# Every package comes from the lock (lock/*.txt, docs/environment.md): exact versions, hashes checked,
# the same on every supported Python. `python3 tools/update_lock.py` updates it.
if [[ $want_tests == 1 ]]; then
  lock=lock/requirements.txt
  # torch first, on its own: its CPU build is a separate download (an unpinned torch pulls a CUDA build
  # of several GB); its dependencies are in the lock.
  pip install "${pip_quiet[@]}" --no-deps "$(sed -n 's/^# unhashed: \(torch==[^ ]*\).*/\1/p' "$lock")"
else
  lock=lock/grader.txt
fi
pip install "${pip_quiet[@]}" --require-hashes --no-deps -r "$lock"
pip install "${pip_quiet[@]}" --no-deps -e .
if [[ $want_tests == 1 ]] && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  # Each piece on its own: a machine with chromium but no driver still gets the driver.
  missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  command -v bwrap >/dev/null || missing+=(bubblewrap)
  if [[ ${#missing[@]} -gt 0 ]]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "setup.sh: could not install ${missing[*]}; browser tests skip and the notebook sandbox falls back" >&2
  fi
fi
# The grader's bytecode, written once here: the sandboxed workers cannot write it (the sources are
# bound read-only) and PYTHONDONTWRITEBYTECODE stops the parent, so without it every `grade`
# compiled its modules from source, in the parent and in each worker (3% of a LunarLander grade).
python -m compileall -q grader >/dev/null
echo "setup.sh: ready (.venv/bin/grade)"
