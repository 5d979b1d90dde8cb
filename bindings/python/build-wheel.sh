#!/usr/bin/env bash
# Build the tabagent wheel: a platform wheel (py3-none-<platform>) that carries the
# library folder `make dist` produces (libtabagent, llama.cpp/ggml libraries, every
# CPU variant, tabagent-probe) in tabagent/_lib and the header in tabagent/include.
#
#   bindings/python/build-wheel.sh          -> build/wheels/tabagent-<ver>-py3-none-<plat>.whl
#
# Runs `make dist` first when build/dist/lib is missing or older than
# target/release/libtabagent.so. The package is staged in build/python-wheel/ (the
# source tree never gets a _lib folder, so a development install keeps using
# target/release). PYTHON picks the interpreter that runs pip (default python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
dist=build/dist
stage=build/python-wheel
out=build/wheels

if [ ! -f "$dist/lib/libtabagent.so" ] || [ ! -f "$dist/include/tabagent.h" ] \
   || { [ -f target/release/libtabagent.so ] && [ target/release/libtabagent.so -nt "$dist/lib/libtabagent.so" ]; }; then
    echo "build-wheel: make dist" >&2
    make dist >&2
fi

cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
py_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bindings/python/tabagent/_version.py)
if [ "$cargo_version" != "$py_version" ]; then
    echo "build-wheel: bindings/python/tabagent/_version.py says $py_version, Cargo.toml $cargo_version" >&2
    exit 1
fi

rm -rf "$stage"
mkdir -p "$stage" "$out"
cp -r bindings/python/pyproject.toml bindings/python/setup.py bindings/python/README.md "$stage/"
mkdir -p "$stage/tabagent"
cp bindings/python/tabagent/*.py bindings/python/tabagent/py.typed "$stage/tabagent/"
mkdir -p "$stage/tabagent/include"
cp "$dist/include/tabagent.h" "$stage/tabagent/include/"

# The library folder, as the loader needs it: each library under the name others ask
# for (DT_NEEDED, e.g. libllama.so.0), or its own name when nothing links to it
# (libtabagent.so, the dlopen'ed libggml-cpu-*.so variants, tabagent-probe). Wheels
# cannot hold symlinks, so link-time names (libllama.so -> libllama.so.0) are dropped
# instead of stored twice. Modes are kept (tabagent-probe stays executable).
"$PY" - "$dist/lib" "$stage/tabagent/_lib" <<'PYEOF'
import os, shutil, subprocess, sys
src, dst = sys.argv[1:3]
os.makedirs(dst)
names = sorted(os.listdir(src))
def needed(path):
    try:
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit("build-wheel: readelf (binutils) is needed")
    return {l.split("[", 1)[1].split("]", 1)[0] for l in out.splitlines() if "(NEEDED)" in l}
need = set()
for n in names:
    p = os.path.join(src, n)
    if os.path.isfile(p) and not os.path.islink(p):
        need |= needed(p)
by_real = {}
for n in names:
    by_real.setdefault(os.path.realpath(os.path.join(src, n)), []).append(n)
for real, group in sorted(by_real.items()):
    if not os.path.isfile(real):
        sys.exit(f"build-wheel: {group} in {src} points to a missing file")
    keep = [n for n in group if n in need] or [os.path.basename(real) if os.path.basename(real) in group else group[0]]
    for n in keep:
        shutil.copy2(real, os.path.join(dst, n))
missing = sorted(n for n in need if n.startswith(("libllama", "libggml", "libtabagent")) and not os.path.exists(os.path.join(dst, n)))
if missing:
    sys.exit(f"build-wheel: needed but not in {src}: {missing}")
print("build-wheel: _lib:", " ".join(sorted(os.listdir(dst))), file=sys.stderr)
PYEOF

rm -f "$out"/tabagent-*.whl
"$PY" -m pip wheel --no-deps --disable-pip-version-check -q -w "$out" "$stage" >&2
whl=$(ls "$out"/tabagent-*.whl)
case "$whl" in *-py3-none-*.whl) ;; *) echo "build-wheel: not a platform wheel: $whl" >&2; exit 1;; esac
echo "$whl"
