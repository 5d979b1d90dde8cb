#!/usr/bin/env bash
# Runs examples/c/build/pull against the hub imitation serving the test model:
# pulls the Q4_1 variant into a fresh HF-layout cache, prints its path, loads it;
# then pulls again, which must be answered from the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
: "${TABAGENT_TEST_MODEL:=$HOME/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
work=build/pull-test
rm -rf "$work" && mkdir -p "$work/repo"
ln -s "$TABAGENT_TEST_MODEL" "$work/repo/SmolLM2-135M-Instruct-Q4_1.gguf"
"$PY" tests/hub/fake_hub.py --port 0 --repo test/SmolLM2-135M-Instruct-GGUF="$work/repo" > "$work/hub.out" &
hub=$!
trap 'kill $hub 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$work/hub.out" ] && break; sleep 0.1; done
export HF_ENDPOINT=$(head -1 "$work/hub.out") HF_HUB_CACHE="$work/cache" HF_TOKEN=
path=$(./examples/c/build/pull test/SmolLM2-135M-Instruct-GGUF Q4_1 2> "$work/pull.err") || { cat "$work/pull.err"; exit 1; }
case "$path" in "$work/cache/models--test--SmolLM2-135M-Instruct-GGUF/snapshots/"*) ;; *) echo "bad path $path"; exit 1;; esac
cmp "$path" "$TABAGENT_TEST_MODEL"
kill $hub; wait $hub 2>/dev/null || true
# The hub is gone: a second pull must come from the cache.
HF_HUB_OFFLINE=1 ./examples/c/build/pull test/SmolLM2-135M-Instruct-GGUF Q4_1 >/dev/null
echo "pull example: downloaded, verified, loaded, then reused offline"
