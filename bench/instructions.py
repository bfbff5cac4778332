#!/usr/bin/env python3
"""Instructions per unary call, counted by callgrind: repeatable on a noisy
machine, where wall-clock figures are not.

The server runs under `valgrind --tool=callgrind`; once it answers, its
counters are zeroed (`callgrind_control -z`), h2load sends N unary calls (the
64-byte request of bench/suite.py), the counters are dumped, and the total
instructions are divided by N.

    bench/instructions.py                       # our release echo-server
    bench/instructions.py --server stock        # the plain tonic baseline
    bench/instructions.py --server path/to/echo-server -- --flag value
    bench/instructions.py --content-type application/json --http1   # Connect JSON over HTTP/1.1
    bench/instructions.py --tls h3              # gRPC over HTTP/3 (QUIC), from echo-client bench
    bench/instructions.py --tls h2              # the same load over HTTP/2 with TLS, to compare

With --tls the load is `echo-client bench` (h2load here has no HTTP/3) with a
certificate made by openssl, the same for both HTTP versions.

Needs valgrind and h2load (Debian: valgrind, nghttp2-client), and openssl for --tls.
"""

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import BASELINE_BODY, PROTOCOL_BODIES, ROOT, SHIPPED_BIN, free_port, self_signed  # noqa: E402


def wait_for_port(port, process, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start listening")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="ours", help="ours, stock, or a path to an echo-server binary")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="also copy the callgrind dump here (for callgrind_annotate)")
    parser.add_argument("--content-type", default="application/grpc", choices=sorted(PROTOCOL_BODIES),
                        help="the protocol of the calls: gRPC, gRPC-Web, Connect unary proto or JSON")
    parser.add_argument("--http1", action="store_true", help="calls over HTTP/1.1 (not gRPC)")
    parser.add_argument("--tls", choices=["h2", "h3"],
                        help="gRPC over TLS from echo-client bench: over HTTP/2, or HTTP/3 (QUIC)")
    parser.add_argument("server_args", nargs="*", help="extra arguments for the server")
    options = parser.parse_args()
    if options.tls and (options.server == "stock" or options.http1 or options.content_type != "application/grpc"):
        sys.exit("--tls measures our server's gRPC calls over HTTP/2 or HTTP/3")
    if options.content_type != "application/grpc" and options.server == "stock":
        sys.exit("the plain tonic baseline speaks gRPC only")
    if options.http1 and options.content_type == "application/grpc":
        sys.exit("gRPC needs HTTP/2: pick another --content-type with --http1")
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (Debian: valgrind, nghttp2-client)")

    port = free_port()
    if options.server == "stock":
        argv = [str(ROOT / "target/stock-tonic/release/stock-server"), f"127.0.0.1:{port}"]
        path = "/bench.Echo/Unary"
    else:
        binary = SHIPPED_BIN / "echo-server" if options.server == "ours" else Path(options.server)
        argv = [str(binary), "--listen", f"127.0.0.1:{port}", *options.server_args]
        path = "/echo.v1.EchoService/Echo"
    work = Path(tempfile.mkdtemp(prefix="grpc-echo-callgrind-"))
    try:
        if options.tls:
            argv, warm_up, load, what = tls_load(options, argv, port, work)
        else:
            warm_up, load, what = h2load_load(options, port, path, work)
        total = count(argv, port, work, options, warm_up, load)
        print(f"{total / options.calls:,.0f} instructions per unary call "
              f"({options.calls} calls, {what}, {argv[0]})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def h2load_load(options, port, path, work):
    """h2load's calls in the chosen protocol: (warm-up, load, what they are)."""
    body = work / "request.bin"
    body.write_bytes(BASELINE_BODY if options.server == "stock" else PROTOCOL_BODIES[options.content_type])
    headers = ["-H", f"content-type: {options.content_type}", "-H", "te: trailers"]
    # HTTP/1.1 takes one call at a time per connection.
    transport = ["--h1", "-c", "10", "-m", "1"] if options.http1 else ["-c", "10", "-m", "10"]
    url = f"http://127.0.0.1:{port}{path}"

    def warm_up():
        subprocess.run(["h2load", "-n", "100", "-c", "1", "-d", str(body), *headers,
                        *(["--h1"] if options.http1 else []), url], check=True, capture_output=True)

    def load():
        result = subprocess.run(["h2load", "-n", str(options.calls), *transport, "-d", str(body), *headers, url],
                                check=True, capture_output=True, text=True)
        done = re.search(r"(\d+) succeeded", result.stdout)
        if not done or int(done.group(1)) != options.calls:
            sys.exit(f"h2load did not complete every call:\n{result.stdout}")

    return warm_up, load, f"{options.content_type}{' over HTTP/1.1' if options.http1 else ''}"


def tls_load(options, argv, port, work):
    """echo-client bench's gRPC calls over TLS, HTTP/2 or HTTP/3: (the server's
    argv with its certificate, warm-up, load, what they are)."""
    cert, key = self_signed(work)
    http3 = ["--http3"] if options.tls == "h3" else []
    argv = [*argv, "--tls-cert", str(cert), "--tls-key", str(key), *http3]
    bench = [str(Path(argv[0]).with_name("echo-client")), "--addr", f"127.0.0.1:{port}", "--ca", str(cert),
             "--tls-server-name", "localhost", *http3, "--json", "bench", "--rpc", "unary",
             "--payload-size", "64", "--warmup", "0s"]

    def warm_up():
        subprocess.run([*bench, "--total", "100"], check=True, capture_output=True)

    def load():
        result = subprocess.run([*bench, "--total", str(options.calls), "--connections", "10",
                                 "--concurrency", "10"], check=True, capture_output=True, text=True)
        report = json.loads(result.stdout)
        if report["errors"] or report["calls"] != options.calls:
            sys.exit(f"echo-client bench did not complete every call: {report}")

    return argv, warm_up, load, f"application/grpc over {'HTTP/3' if http3 else 'HTTP/2 with TLS'}"


def count(argv, port, work, options, warm_up, load):
    """The server's instructions during `load`, under callgrind, after `warm_up`
    (so that start-up and lazy set-up are not counted)."""
    out = work / "callgrind.out"
    server = subprocess.Popen(
        # On one CPU, as the suite runs every server. Names written out in
        # each dump, so that the one kept (--keep) reads on its own.
        ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--compress-strings=no",
         f"--callgrind-out-file={out}", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        warm_up()
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        load()
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        time.sleep(1)
        dumps = sorted(work.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        totals = [int(m.group(1)) for p in dumps
                  for m in [re.search(r"^summary: (\d+)", p.read_text(), re.M)] if m]
        if not totals:
            sys.exit("no callgrind dump was written")
        if options.keep:
            shutil.copy(dumps[-1], options.keep)
        return totals[-1]
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
