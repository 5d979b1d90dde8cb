#!/usr/bin/env bash
# Test the wheel as users get it: build it (or take WHEEL=path), install it into a
# fresh virtualenv (build/py-pkg-venv) with pytest and tqdm, and run
# bindings/python/tests from a temporary directory outside the source tree, so
# `import tabagent` is the installed package and its library the one in the wheel.
#
#   bindings/python/test.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
whl=${WHEEL:-}
[ -n "$whl" ] || whl=$(bindings/python/build-wheel.sh)
whl=$(cd "$(dirname "$whl")" && pwd)/$(basename "$whl")
venv=$root/build/py-pkg-venv
rm -rf "$venv"
"$PY" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$whl" pytest tqdm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
env -u TABAGENT_LIB -u PYTHONPATH TABAGENT_EXPECT_INSTALLED=1 \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$work" --import-mode=importlib \
    "$root/bindings/python/tests" "$@"
