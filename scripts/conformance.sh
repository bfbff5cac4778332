#!/usr/bin/env bash
# Runs the Connect conformance suite (connectrpc/conformance v1.0.5) against
# echo-conformance and prints the runner's summary; exits non-zero on any
# failed case.
#
#   scripts/conformance.sh [server|client|all] [--debug] [RUNNER FLAGS...]
#
# server   echo-server as the server under test, with every feature in
#          services/echo-conformance/server.config.yaml (the default)
# client   the echo-client library as the client under test, with every
#          feature in services/echo-conformance/client.config.yaml
# all      server, then client
# --debug  use the dev build (CI: the tests' build already made it) instead of
#          a release build
# Flags after the mode go to the runner, e.g. `--run '**/Basic/**' -v`.
#
# The runner is CONNECTCONFORMANCE or ../shared/conformance/connectconformance.
# It cannot be installed by this script: it is the `connectconformance` binary
# of the v1.0.5 release of github.com/connectrpc/conformance
# (`go install connectrpc.com/conformance/cmd/connectconformance@v1.0.5`).
set -euo pipefail
cd "$(dirname "$0")/.."

modes=(server)
case "${1:-}" in
    server) shift ;;
    client) modes=(client); shift ;;
    all) modes=(server client); shift ;;
esac
profile=release
if [ "${1:-}" = "--debug" ]; then
    profile=debug
    shift
fi

runner="${CONNECTCONFORMANCE:-../shared/conformance/connectconformance}"
if [ ! -x "$runner" ]; then
    cat >&2 <<EOF
conformance.sh: no conformance runner at $runner.
Get connectconformance v1.0.5 (github.com/connectrpc/conformance, release v1.0.5):
    go install connectrpc.com/conformance/cmd/connectconformance@v1.0.5
and point CONNECTCONFORMANCE at it.
EOF
    exit 1
fi
version="$("$runner" --version 2>&1 || true)"
case "$version" in
    *v1.0.5*) ;;
    *) echo "conformance.sh: $runner is ${version:-of unknown version}; the configs are written for v1.0.5" >&2 ;;
esac

target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
if [ "$profile" = release ]; then
    cargo build --release --locked -p echo-conformance
else
    # As scripts/test.sh builds it (the whole workspace's features), so that
    # after the tests nothing is rebuilt.
    cargo build --locked --workspace --bins
fi
program="$target_dir/$profile/echo-conformance"

status=0
for mode in "${modes[@]}"; do
    log="$target_dir/conformance-$mode.log"
    started=$(date +%s)
    "$runner" --mode "$mode" --conf "services/echo-conformance/$mode.config.yaml" "$@" \
        -- "$program" "$mode" >"$log" 2>&1 || status=$?
    # The failures in full, then the summary (the runner's last lines).
    grep -E -A30 '^FAILED:' "$log" | head -400 || true
    tail -n 3 "$log"
    echo "conformance.sh: $mode mode took $(( $(date +%s) - started )) s (log: $log)"
done
exit $status
