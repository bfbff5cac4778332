#!/usr/bin/env python3
"""What an idle HTTP/2 connection holds, site by site: our echo-server
against the plain tonic baseline (bench/stock-tonic). The connections send
the preface and an empty SETTINGS and nothing more, as in the suite's "RSS
with 10,000 idle connections" row; each server runs alone on the suite's
server CPU.

First the resident bytes per connection: RSS with 10,000 connections less
RSS before them, for ours as it ships, ours on the system allocator, and
tonic, in interleaved rounds. Then each server under heaptrack with N
connections: every site that allocates once or more per connection, with
the bytes it holds at the heap's peak (every connection open) and the
allocations it made (those freed since included: a timer that ended, a
string copied once), per connection, and the totals. A site is named by
the innermost function of the project or a library that called the
allocator (not `alloc`'s, `core`'s or `std`'s own); a function inlined into
another counts as the other's.

heaptrack sees only malloc's calls, so ours runs under it on the system
allocator: built with the `system-allocator` feature in target/heap-profile,
otherwise as it ships. Bytes allocated are not bytes resident: most of h2's
buffers are never touched (BENCHMARKS.md).

    bench/conn_heap.py                         # 2,000 connections under heaptrack
    bench/conn_heap.py --connections 5000 --limit 40 --rounds 3
    bench/conn_heap.py --no-build -- --keepalive-interval 1h   # flags for ours

Needs heaptrack (Debian: heaptrack).
"""

import argparse
import re
import resource
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from suite import IDLE_CONNECTIONS, ROOT, SHIPPED_BIN, Server, build_shipped, build_stock_tonic, fail, \
    free_port, idle_connections, install_tools, listening

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
    build_stock_tonic()
    build_shipped()


def resident_per_connection(argv, port, connections):
    """The server's RSS with `connections` idle connections less its RSS
    before them, per connection."""
    server = Server(argv[0], argv, port, lambda: listening(port))
    try:
        time.sleep(0.5)
        before = server.rss_kib()
        with idle_connections(port, connections):
            after = server.rss_kib()
        return (after - before) * 1024 / connections
    finally:
        server.stop()


def record(argv, port, connections, out):
    """Runs `argv` under heaptrack while it holds `connections` idle
    connections to `port`, then stops it; returns heaptrack's data file."""
    server = Server(argv[0], ["heaptrack", "-o", str(out), *argv], port, lambda: listening(port)).process
    with idle_connections(port, connections):
        pass
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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the resident bytes")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("flags", nargs="*", help="after --: flags for our server")
    options = parser.parse_args()
    install_tools(["heaptrack=heaptrack", "heaptrack_print=heaptrack", "pkill=procps", "taskset=util-linux"],
                  caller="bench/conn_heap.py")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(IDLE_CONNECTIONS, options.connections) + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        fail(f"the open-files limit ({hard}) is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if not options.no_build:
        build()

    def argv(binary, port):
        if binary == TONIC:
            return [str(binary), f"127.0.0.1:{port}"]
        return [str(binary), "--listen", f"127.0.0.1:{port}", *options.flags]

    servers = {"ours, as it ships": SHIPPED_BIN / "echo-server", "ours, system-allocator": OURS,
               "tonic": TONIC}
    resident = {name: [] for name in servers}
    for _ in range(options.rounds):
        for name, binary in servers.items():
            port = free_port()
            resident[name].append(resident_per_connection(argv(binary, port), port, IDLE_CONNECTIONS))
    print(f"resident bytes per connection ({IDLE_CONNECTIONS:,} idle connections, VmRSS with them "
          f"less before; {options.rounds} interleaved rounds):\n")
    for name, figures in resident.items():
        print(f"  {name:<24}" + "  ".join(f"{figure:8,.0f}" for figure in figures))

    with tempfile.TemporaryDirectory(prefix="conn-heap-") as work:
        work = Path(work)
        totals = {}
        for name, binary in (("ours", OURS), ("tonic", TONIC)):
            port = free_port()
            data = record(argv(binary, port), port, options.connections, work / name)
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
