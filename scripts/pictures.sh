#!/usr/bin/env bash
# Regenerates the pictures in docs/pictures (never by hand):
#   latency.png     a real `echo-client bench --plot` run against a local echo-server
#   benchmarks.svg  BENCHMARKS.md's table as a chart (bench/chart.py)
# Usage: scripts/pictures.sh
set -euo pipefail
cd "$(dirname "$0")/.."

out=docs/pictures
mkdir -p "$out"
cargo build --release --locked -p echo-server -p echo-cli --bins --target-dir target/bins
bin=target/bins/release
addr=127.0.0.1:50071

"$bin/echo-server" --listen "$addr" &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$bin/echo-client" --addr "$addr" health >/dev/null 2>&1 && break
  sleep 0.1
done

# Open loop, so that the curve is latency from each call's scheduled start.
"$bin/echo-client" --addr "$addr" bench --rpc unary --connections 4 --concurrency 8 \
  --rps 5000 --duration 10s --warmup 1s --plot "$out/latency.png"
python3 bench/chart.py BENCHMARKS.md "$out/benchmarks.svg"
echo "wrote $out/latency.png and $out/benchmarks.svg"
