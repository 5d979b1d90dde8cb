#!/usr/bin/env bash
# Benchmarks for issue #2. Prints name=value lines (see README "Performance").
#   bench/run.sh [MODEL.gguf] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-${TABAGENT_TEST_MODEL:-$HOME/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
threads="${2:-${BENCH_THREADS:-$(nproc)}}"
cargo build --release -q
# llama.h and the ggml headers from the very llama.cpp build libtabagent loads. The
# reference loops call llama.h in the same process, on the same libllama and the CPU
# variant the library chose (the benchmarks call ta_model_load first).
inc=$(dirname "$(ls -t target/release/build/llama-cpp-sys-2-*/out/include/llama.h | head -1)")
mkdir -p build/bench
link=(-Ltarget/release -Wl,-rpath,"$PWD/target/release" -ltabagent -lllama -lggml -lggml-base -lm)
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -I"$inc" bench/bench.c -o build/bench/bench "${link[@]}"
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -I"$inc" bench/bench_parallel.c -o build/bench/bench_parallel "${link[@]}"
echo "model=$(basename "$model")"
build/bench/bench "$model" "$threads"
# Sequences (issue 11): N conversations on one context vs a batched llama.h loop.
build/bench/bench_parallel "$model" "$threads"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" bench/bench_py.py
# Embeddings (issue 12): batched vs one text per call, and the NumPy reference.
"$PY" bench/bench_embed.py "" "$threads"
# The native host (issue 13): GENERATE through tabagent-host vs the library direct.
cargo build --release -q -p tabagent-host
"$PY" bench/bench_host.py "$model" "$threads"
