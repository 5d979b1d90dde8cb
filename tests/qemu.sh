#!/usr/bin/env bash
# The portable build on an old CPU: the C chat example under qemu-user emulating
# an x86-64 without AVX (Nehalem: SSE4.2 at most) must pick a CPU variant that
# CPU runs and stream the same greedy reply as on this machine.
#   tests/qemu.sh MODEL.gguf
set -euo pipefail
cd "$(dirname "$0")/.."
model="$1"
out="$PWD/build/qemu-test"
rm -rf "$out" && mkdir -p "$out"
if [ "$(uname -m)" != x86_64 ]; then
    echo "qemu: SKIPPED (the old-CPU check emulates x86-64 on x86-64 only)"
    exit 0
fi
command -v qemu-x86_64 >/dev/null || { echo "FAIL: qemu-x86_64 missing (scripts/setup.sh installs qemu-user)"; exit 1; }
chat=examples/c/build/chat
info=examples/c/build/info
prompt="What is the capital of France?"
cpu=Nehalem

# What the emulated CPU runs: a variant without AVX.
qemu-x86_64 -cpu "$cpu" "$info" > "$out/info.txt" 2>"$out/info.err"
variant=$(sed -n 's/^ *CPU code: \([^ ]*\) .*/\1/p' "$out/info.txt")
case "$variant" in
    x64|sse42) ;;
    *) echo "FAIL: under -cpu $cpu the library chose '$variant':"; cat "$out/info.txt"; exit 1 ;;
esac
grep -q " avx" <(grep "features:" "$out/info.txt") && { echo "FAIL: the emulated CPU reports AVX"; exit 1; }

# The same greedy reply: here with the best variant, and emulated.
"$chat" "$model" "$prompt" 24 > "$out/native.txt" 2>/dev/null
qemu-x86_64 -cpu "$cpu" "$chat" "$model" "$prompt" 24 > "$out/qemu.txt" 2>"$out/qemu.err"
[ -s "$out/native.txt" ] || { echo "FAIL: no reply natively"; exit 1; }
if ! cmp -s "$out/native.txt" "$out/qemu.txt"; then
    # Different SIMD widths sum in different orders; the same variant must agree
    # exactly, and the emulated run must agree with it.
    TABAGENT_CPU_VARIANT="$variant" "$chat" "$model" "$prompt" 24 > "$out/same-variant.txt" 2>/dev/null
    if cmp -s "$out/same-variant.txt" "$out/qemu.txt"; then
        echo "qemu: note: the $variant variant's greedy text differs from the best variant's"
    else
        echo "FAIL: greedy text under qemu -cpu $cpu differs:"
        diff "$out/native.txt" "$out/qemu.txt" || true
        exit 1
    fi
fi
# Asking for a variant: one this CPU runs is used, one it cannot run is refused.
TABAGENT_CPU_VARIANT=x64 "$info" | grep -q "CPU code: x64 (x64: asked for" || { echo "FAIL: TABAGENT_CPU_VARIANT=x64 not honoured"; exit 1; }
TABAGENT_CPU_VARIANT=x64 "$chat" "$model" "$prompt" 8 2>/dev/null | grep -q . || { echo "FAIL: no reply on x64"; exit 1; }
TABAGENT_CPU_VARIANT=haswell qemu-x86_64 -cpu "$cpu" "$info" | grep -q "CPU code: $variant (TABAGENT_CPU_VARIANT=haswell was refused" \
    || { echo "FAIL: an AVX2 variant was not refused on $cpu"; exit 1; }

# A library folder without its variants: a clear error, not a crash.
bare="$out/bare" && mkdir -p "$bare"
cp -L target/release/libtabagent.so target/release/libllama.so.0 target/release/libggml.so.0 target/release/libggml-base.so.0 "$bare/"
LD_LIBRARY_PATH="$bare" "$info" | grep -q "CPU code:  (no CPU backend (libggml-cpu-\*.so) was found in $bare" \
    || { echo "FAIL: a folder without variants is not reported:"; LD_LIBRARY_PATH="$bare" "$info" | grep "CPU code"; exit 1; }
set +e
LD_LIBRARY_PATH="$bare" "$chat" "$model" "$prompt" 8 > "$out/bare.out" 2>&1
rc=$?
set -e
grep -q "cannot run a model: no CPU backend (libggml-cpu-\*.so) was found" "$out/bare.out" && [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] \
    || { echo "FAIL: loading a model without a CPU backend (rc $rc):"; cat "$out/bare.out"; exit 1; }

echo "qemu: -cpu $cpu ran the $variant variant and streamed the same greedy reply: $(head -c 60 "$out/qemu.txt" | tr '\n' ' ')"
