#!/usr/bin/env bash
# Pack the npm package (pack.sh), install the tarball into a fresh folder under
# build/ (koffi from the registry), copy the tests in and run them there with
# `node --test`, one file at a time (model tests share the CPU).
#   bindings/node/test.sh [node --test args…]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tgz="$("$here/pack.sh")"
dir="$root/build/node-pkg-test"
rm -rf "$dir"
mkdir -p "$dir/test"
cd "$dir"
printf '{ "name": "tabagent-pkg-test", "private": true, "type": "module" }\n' > package.json
npm install --no-audit --no-fund --no-save --loglevel=error "$tgz" >/dev/null
cp "$here"/test/*.mjs "$here"/test/*.c "$dir/test/"
export TABAGENT_REPO_ROOT="$root" TABAGENT_EXPECT_INSTALLED="$dir/node_modules/tabagent"
unset TABAGENT_LIB TABAGENT_NODE_LIB
node --test --test-concurrency=1 "$@" test/*.test.mjs
