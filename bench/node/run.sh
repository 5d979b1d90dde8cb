#!/usr/bin/env bash
# Node benchmarks: per-token callback cost, and chat tokens/s of the `tabagent`
# Node package vs the C API vs node-llama-cpp 3.21.1 (installed here on first use
# into build/bench-node-llama-cpp from the npm registry; it ships prebuilt binaries).
#   bench/node/run.sh [MODEL.gguf] [THREADS=2] [TOKENS=128] [ROUNDS=5]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
model="${1:-${TABAGENT_TEST_MODEL:-$HOME/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf}}"
threads="${2:-2}" tokens="${3:-128}" rounds="${4:-5}"
cd "$root"
[ -d bindings/node/node_modules/koffi ] || (cd bindings/node && npm install --no-audit --no-fund --loglevel=error)
[ -f bindings/node/prebuilds/linux-x64/libtabagent.so ] || bindings/node/pack.sh >/dev/null
nlc="$root/build/bench-node-llama-cpp"
if [ ! -d "$nlc/node_modules/node-llama-cpp" ]; then
    mkdir -p "$nlc"
    printf '{ "name": "bench-node-llama-cpp", "private": true, "type": "module" }\n' > "$nlc/package.json"
    (cd "$nlc" && npm i -E node-llama-cpp@3.21.1 --no-audit --no-fund --loglevel=error)
fi
node bench/node/callback.mjs 200000
NLC_DIR="$nlc" node bench/node/run.mjs --model "$model" --threads "$threads" --tokens "$tokens" --rounds "$rounds"
