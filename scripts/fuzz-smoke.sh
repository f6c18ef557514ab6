#!/bin/sh
# A bounded run of the policy parser's fuzz target (fuzz/fuzz_targets/parse.rs):
# passes when libFuzzer finds no panic in FUZZ_SECONDS (default 60).
# Skips, saying so, when cargo-fuzz is not installed (make fuzz-smoke installs
# it with FUZZ_INSTALL=1). cargo fuzz needs nightly flags (-Zsanitizer); on a
# stable toolchain RUSTC_BOOTSTRAP=1 allows them.
set -eu
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ "${FUZZ_INSTALL:-0}" = 1 ]; then
        cargo install cargo-fuzz --locked
    else
        echo "SKIP fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz, or FUZZ_INSTALL=1)"
        exit 0
    fi
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
cp fuzz/corpus/parse/* "$corpus"/
cd fuzz
cargo fuzz run parse "$corpus" -- -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048
