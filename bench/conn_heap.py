#!/usr/bin/env python3
"""What an idle HTTP/2 connection allocates, site by site: our echo-server
against the plain tonic baseline (bench/stock-tonic), each under heaptrack
with N connections that send the preface and an empty SETTINGS and nothing
more (the suite's "RSS with 10,000 idle connections" shape).

For each server: every allocation site that allocates once or more per
connection, with its bytes per connection at the heap's peak (every
connection open) and its allocations per connection, and the totals. A site
is named by the innermost function of the project or a library that called
the allocator (not `alloc`'s, `core`'s or `std`'s own). Allocations made
count those freed since (a timer that ended, a string copied once).

heaptrack sees only malloc's calls, so ours is built with the
`system-allocator` feature (the system allocator in place of mimalloc), in
target/heap-profile; otherwise as it ships, so a function inlined into
another is counted as the other's. Bytes allocated are not bytes resident:
most of h2's buffers are never touched (BENCHMARKS.md).

    bench/conn_heap.py                         # 2,000 connections each
    bench/conn_heap.py --connections 5000 --limit 40
    bench/conn_heap.py --no-build -- --keepalive-interval 1h   # flags for ours

Needs heaptrack (Debian: heaptrack).
"""

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from suite import PREFACE, ROOT, fail, frame, free_port, install_tools, listening

OURS = ROOT / "target" / "heap-profile" / "release" / "echo-server"
TONIC = ROOT / "target" / "stock-tonic" / "release" / "stock-server"
# Frames of the allocator and of Rust's own allocation helpers: a site is
# named by the first frame outside them, counting outwards from malloc.
ALLOCATOR_FRAMES = re.compile(r"^<?(alloc|core|std)::|^(__rust|__rdl|_?RNv|malloc|calloc|realloc)")
# Legacy Rust mangling, as heaptrack leaves it half decoded.
LEGACY_ESCAPES = {"$LT$": "<", "$GT$": ">", "$C$": ",", "$u20$": " ", "$u7b$": "{", "$u7d$": "}",
                  "$RF$": "&", "$BP$": "*", "$u27$": "'", "$u5b$": "[", "$u5d$": "]", "$u3b$": ";",
                  "$u2b$": "+", "$u22$": '"'}


def readable(name):
    """A frame's function, its mangling escapes decoded and its hash dropped."""
    for escape, text in LEGACY_ESCAPES.items():
        name = name.replace(escape, text)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name).replace("..", "::")
    return name.removeprefix("_")


def build():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "echo-server",
                    "--bin", "echo-server", "--features", "system-allocator",
                    "--target-dir", "target/heap-profile"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--manifest-path", "bench/stock-tonic/Cargo.toml",
                    "--target-dir", "target/stock-tonic"], cwd=ROOT, check=True)


def record(argv, port, connections, out):
    """Runs `argv` under heaptrack, holds `connections` idle connections to
    `port` for a second, stops it; returns heaptrack's data file."""
    server = subprocess.Popen(["heaptrack", "-o", str(out), *argv],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not listening(port):
        if server.poll() is not None or time.monotonic() > deadline:
            fail(f"{argv[0]} did not start serving under heaptrack")
        time.sleep(0.05)
    sockets = []
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(PREFACE + frame(4, 0, 0))  # and an empty SETTINGS
            sockets.append(s)
        time.sleep(1.0)
    finally:
        for s in sockets:
            s.close()
    # heaptrack runs the server as its child: the signal goes to the server.
    subprocess.run(["pkill", "-INT", "-f", f"^{re.escape(argv[0])} "], check=False)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        fail(f"{argv[0]} did not stop under heaptrack")
    return Path(f"{out}.zst")


def costs(data, cost_type, work):
    """Cost per site: `peak` bytes (at the heap's peak) or `allocations`."""
    flamegraph = work / f"{data.stem}.{cost_type}"
    subprocess.run(["heaptrack_print", "-f", str(data), "--print-flamegraph", str(flamegraph),
                    "--flamegraph-cost-type", cost_type], check=True, stdout=subprocess.DEVNULL)
    by_site = defaultdict(int)
    for line in flamegraph.read_text().splitlines():
        stack, _, cost = line.rpartition(" ")
        frames = [readable(name) for name in stack.rstrip(";").split(";")]
        site = next((name for name in reversed(frames) if not ALLOCATOR_FRAMES.match(name)), frames[-1])
        by_site[site] += int(cost)
    return by_site


def per_connection(data, connections, work):
    """(site, bytes, allocations) per connection for each site that
    allocates at least once per connection, largest first."""
    peak = costs(data, "peak", work)
    allocations = costs(data, "allocations", work)
    rows = [(site, peak[site] / connections, count / connections)
            for site, count in allocations.items() if count >= connections and peak[site] >= connections]
    return sorted(rows, key=lambda row: -row[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000, help="idle connections held (default 2,000)")
    parser.add_argument("--limit", type=int, default=25, help="sites shown per server")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("flags", nargs="*", help="after --: flags for our server")
    options = parser.parse_args()
    install_tools(["heaptrack=heaptrack", "heaptrack_print=heaptrack", "pkill=procps"],
                  caller="bench/conn_heap.py")
    if not options.no_build:
        build()
    with tempfile.TemporaryDirectory(prefix="conn-heap-") as work:
        work = Path(work)
        totals = {}
        for name, binary in (("ours", OURS), ("tonic", TONIC)):
            port = free_port()
            argv = ([str(binary), "--listen", f"127.0.0.1:{port}", *options.flags] if name == "ours"
                    else [str(binary), f"127.0.0.1:{port}"])
            data = record(argv, port, options.connections, work / name)
            rows = per_connection(data, options.connections, work)
            totals[name] = (sum(row[1] for row in rows), sum(row[2] for row in rows))
            print(f"\n{name}: {options.connections:,} idle connections, per connection\n")
            print("| bytes at peak | allocations made | allocated by |\n| ---: | ---: | --- |")
            for site, size, count in rows[:options.limit]:
                print(f"| {size:,.0f} | {count:.2f} | `{site[:110]}` |")
            if len(rows) > options.limit:
                rest = rows[options.limit:]
                print(f"| {sum(r[1] for r in rest):,.0f} | {sum(r[2] for r in rest):.2f} | "
                      f"{len(rest)} more sites |")
            print(f"| **{totals[name][0]:,.0f}** | **{totals[name][1]:.2f}** | in all |")
        (ours_bytes, ours_count), (tonic_bytes, tonic_count) = totals["ours"], totals["tonic"]
        print(f"\nours - tonic: {ours_bytes - tonic_bytes:+,.0f} bytes and "
              f"{ours_count - tonic_count:+.2f} allocations per connection")


if __name__ == "__main__":
    main()
