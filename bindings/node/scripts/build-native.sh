#!/usr/bin/env bash
# Build the package's native companion (native/tabagent_node.c) into OUT_DIR
# (default prebuilds/<platform>-<arch>). Needs a C compiler and tabagent.h.
#   scripts/build-native.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
plat="$(node -p 'process.platform + "-" + process.arch')"
out="${1:-$here/prebuilds/$plat}"
inc="${TABAGENT_INCLUDE:-}"
if [ -z "$inc" ]; then
    if [ -f "$root/build/dist/include/tabagent.h" ]; then inc="$root/build/dist/include"; else inc="$root/include"; fi
fi
mkdir -p "$out"
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
    -I"$inc" "$here/native/tabagent_node.c" -o "$out/libtabagent_node.so" -lpthread -ldl
echo "$out/libtabagent_node.so"
