#!/usr/bin/env bash
# The portable build (CPU variants chosen at run time) against a native build
# (-C target-cpu=native, llama.cpp linked in statically): prompt and generation
# tokens/s of bench/bench.c through each library, in alternating rounds of one run.
#   bench/portable.sh [MODEL.gguf] [THREADS] [ROUNDS]
# Builds the native library into target/native (a full llama.cpp build the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-${TABAGENT_TEST_MODEL:-$HOME/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
threads="${2:-${BENCH_THREADS:-$(nproc)}}"
rounds="${3:-3}"
cargo build --release -q -p tabagent
CARGO_TARGET_DIR=target/native RUSTFLAGS="-C target-cpu=native" \
    cargo build --release -q -p tabagent --no-default-features
mkdir -p build/bench
inc_p=$(dirname "$(ls -t target/release/build/llama-cpp-sys-2-*/out/include/llama.h | head -1)")
inc_n=$(dirname "$(ls -t target/native/release/build/llama-cpp-sys-2-*/out/include/llama.h | head -1)")
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -I"$inc_p" bench/bench.c -o build/bench/bench_portable \
    -Ltarget/release -Wl,-rpath,"$PWD/target/release" -ltabagent -lllama -lggml -lggml-base -lm
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -I"$inc_n" bench/bench.c -o build/bench/bench_native \
    target/native/release/libtabagent.a -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl
variant=$(examples/c/build/info 2>/dev/null | sed -n 's/^ *CPU code: \([^ ]*\) .*/\1/p' || true)
echo "model=$(basename "$model") threads=$threads rounds=$rounds portable_variant=${variant:-?}"
get() { sed -n "s/^$1=//p" "$2"; }
pp_p=(); pp_n=(); tg_p=(); tg_n=()
export BENCH_PP_TG_ONLY=1
for i in $(seq "$rounds"); do
    build/bench/bench_native "$model" "$threads" > build/bench/native.out
    build/bench/bench_portable "$model" "$threads" > build/bench/portable.out
    pp_n+=("$(get pp_lib_tok_s build/bench/native.out)"); tg_n+=("$(get tg_lib_tok_s build/bench/native.out)")
    pp_p+=("$(get pp_lib_tok_s build/bench/portable.out)"); tg_p+=("$(get tg_lib_tok_s build/bench/portable.out)")
    echo "round $i: native pp ${pp_n[-1]} tg ${tg_n[-1]} | portable pp ${pp_p[-1]} tg ${tg_p[-1]} tok/s"
done
python3 - "${pp_p[*]}" "${pp_n[*]}" "${tg_p[*]}" "${tg_n[*]}" <<'EOF'
import statistics as st, sys
pp_p, pp_n, tg_p, tg_n = ([float(x) for x in a.split()] for a in sys.argv[1:5])
print(f"portable_pp_tok_s={st.median(pp_p):.1f}")
print(f"native_pp_tok_s={st.median(pp_n):.1f}")
print(f"portable_pp_ratio={st.median(pp_p) / st.median(pp_n):.3f}")
print(f"portable_tg_tok_s={st.median(tg_p):.1f}")
print(f"native_tg_tok_s={st.median(tg_n):.1f}")
print(f"portable_tg_ratio={st.median(tg_p) / st.median(tg_n):.3f}")
EOF
