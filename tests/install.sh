#!/usr/bin/env bash
# `make install` into a scratch prefix, then build examples/c/chat.c the ways a
# user would: pkg-config (shared, and static through Libs.private) and CMake's
# find_package (shared and static targets). Each binary must stream a reply.
#   tests/install.sh MODEL.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"
out="$PWD/build/install-test"
prefix="$out/prefix"
rm -rf "$out" && mkdir -p "$out"
make -s install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion tabagent)" = "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ]
cc -std=c11 -Wall -Wextra -Werror examples/c/chat.c -o "$out/chat_pc" \
    $(pkg-config --cflags --libs tabagent) -Wl,-rpath,"$prefix/lib"
# Static: the archive itself, then what Libs.private says it needs.
cc -std=c11 -Wall -Wextra -Werror examples/c/chat.c -o "$out/chat_pc_static" \
    $(pkg-config --cflags tabagent) "$prefix/lib/libtabagent.a" \
    $(pkg-config --static --libs tabagent | sed 's/ -ltabagent / /') -Wl,-rpath,"$prefix/lib"
if ldd "$out/chat_pc_static" | grep -q libtabagent; then
    echo "FAIL: the static build links libtabagent.so"; exit 1
fi
cmake -S examples/c -B "$out/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_RPATH="$prefix/lib" >/dev/null
cmake --build "$out/cmake" >/dev/null
for bin in "$out/chat_pc" "$out/chat_pc_static" "$out/cmake/chat" "$out/cmake/chat_static"; do
    "$bin" "$model" "What is 2+2?" 4 2>/dev/null | grep -q . || { echo "FAIL: $bin gave no reply"; exit 1; }
done
# The installed library picks its CPU variant from the installed folder.
"$out/chat_pc_static" "$model" "Hi" 1 >/dev/null 2>&1
[ -f "$prefix/lib/libggml-cpu-x64.so" ] || { echo "FAIL: CPU variants not installed"; exit 1; }
echo "install: pkg-config and CMake builds, shared and static, all answer"
