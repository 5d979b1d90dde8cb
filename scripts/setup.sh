#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to build and test tabagent:
# cmake and a C/C++ toolchain for llama.cpp, clang/libclang for bindgen, Python's
# venv for the test suite. Idempotent: does nothing when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null && command -v c++ >/dev/null || need+=(build-essential)
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v git >/dev/null || need+=(git)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
# The hostile-model corpus runs a sample of its files under valgrind.
command -v valgrind >/dev/null || need+=(valgrind)
# The native host's end-to-end test runs the example extension in Chromium.
command -v chromium >/dev/null || need+=(chromium)
# The Node package's tests (Node >= 18 and npm; Debian's nodejs is 18).
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
# tests/qemu.sh runs the portable build as an x86-64 without AVX.
if [ "$(uname -m)" = x86_64 ]; then command -v qemu-x86_64 >/dev/null || need+=(qemu-user); fi
# tests/install.sh builds the C example through pkg-config.
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: Rust (cargo) is required: https://rustup.rs" >&2
    exit 1
fi

# Test-only Python packages live in a virtualenv inside the repository.
# jinja2 renders chat templates as transformers does (the reference for the template
# fidelity test); numpy, gguf, safetensors and tokenizers build the embedding test model
# and compute its reference vectors.
# playwright drives the system Chromium in the browser test (its own browser
# download is not used). openai, ollama and pexpect drive `tabagent serve` and the
# REPL in tests/cli.
pkgs=(pytest huggingface_hub jinja2 numpy gguf safetensors tokenizers playwright openai ollama pexpect)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pytest, huggingface_hub, jinja2, numpy, gguf, safetensors, tokenizers, playwright, openai, ollama, pexpect' 2>/dev/null; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "${pkgs[@]}"
fi

# The tabagent Python package (bindings/python) in development mode: the repo's tests,
# examples and benches import it; from the source tree it loads target/release/libtabagent.so.
if ! .venv/bin/python -c 'import importlib.util as u, os, sys; s = u.find_spec("tabagent"); sys.exit(not (s and s.origin and s.origin.startswith(os.path.abspath("bindings/python") + os.sep)))' 2>/dev/null; then
    .venv/bin/pip install -q --disable-pip-version-check -e bindings/python
fi
