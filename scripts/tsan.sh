#!/usr/bin/env bash
# ThreadSanitizer over the concurrency tests of tests/sequences.rs: the library
# (and Rust's std, rebuilt with -Zbuild-std) instrumented; llama.cpp's C/C++ is
# not, so its internal threading is outside what TSan checks (see tests/tsan.supp).
# Needs a nightly toolchain with rust-src; installs one through rustup if it can.
set -euo pipefail
cd "$(dirname "$0")/.."
have() {
    cargo +nightly --version >/dev/null 2>&1 &&
        [ -d "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library" ]
}
if ! have && command -v rustup >/dev/null; then
    timeout 900 rustup toolchain install nightly --profile minimal --component rust-src >/dev/null 2>&1 || true
fi
if ! have; then
    echo "test-tsan: SKIPPED: no nightly toolchain with rust-src (rustup toolchain install nightly --component rust-src)"
    exit 0
fi
target=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=0 second_deadlock_stack=1 report_signal_unsafe=0"
export CARGO_TARGET_DIR=target/tsan
# One statically linked CPU backend: the variants add nothing to what TSan checks.
cargo +nightly test -q -Zbuild-std --target "$target" --release --no-default-features --test sequences -- \
    --test-threads=1 concurrent_sequences cancel_one_sequence a_sequence_freed a_full_window \
    shared_prefixes the_context_calls
echo "test-tsan: no data races reported"
