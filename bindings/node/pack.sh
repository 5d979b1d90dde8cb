#!/usr/bin/env bash
# Pack the `tabagent` npm package with the library inside it:
#   1. copy the lead's `make dist` output (build/dist/lib: libtabagent, libllama,
#      libggml*, the libggml-cpu-* variants and tabagent-probe) into
#      prebuilds/<platform>-<arch>/ — each versioned library under its SONAME, as
#      the loader looks for it (npm packs no symlinks);
#   2. build the native companion (native/tabagent_node.c) against build/dist/include;
#   3. npm pack into build/npm/.
# Prints the tarball's path. TABAGENT_DIST overrides build/dist.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dist="${TABAGENT_DIST:-$root/build/dist}"
if [ ! -f "$dist/lib/libtabagent.so" ]; then
    echo "pack.sh: $dist/lib/libtabagent.so is missing: run 'make dist' first" >&2
    exit 1
fi
plat="$(node -p 'process.platform + "-" + process.arch')"
pre="$here/prebuilds/$plat"
rm -rf "$here/prebuilds"
mkdir -p "$pre"
for f in "$dist"/lib/*; do
    [ -L "$f" ] && continue
    name="$(basename "$f")"
    soname="$(readelf -d "$f" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p' || true)"
    if [ -n "$soname" ]; then
        name="$soname"
    elif [[ "$name" =~ ^(.*\.so\.[0-9]+)\.[0-9.]+$ ]]; then
        name="${BASH_REMATCH[1]}"
    fi
    cp "$f" "$pre/$name"
done
chmod 755 "$pre/tabagent-probe" "$pre/libtabagent.so"
inc="$dist/include"
[ -f "$inc/tabagent.h" ] || inc="$root/include"
TABAGENT_INCLUDE="$inc" "$here/scripts/build-native.sh" "$pre" >/dev/null
mkdir -p "$root/build/npm"
cd "$here"
tgz="$(npm pack --pack-destination "$root/build/npm" --silent | tail -1)"
echo "$root/build/npm/$tgz"
