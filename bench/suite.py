#!/usr/bin/env python3
"""The grpc-echo benchmark suite: our echo-server against a plain tonic echo
server (bench/stock-tonic, the baseline), a plain grpc-go echo server
(bench/grpc-go, built from Debian's Go and golang-google-grpc-dev) and the
floors beneath them (a raw TCP echo, and nghttpd serving a static HTTP/2
response), under the same load shapes, side by side in one run; and our
server over TLS with the same echo-client load over HTTP/2 and HTTP/3.

The server under test runs on CPU 0 and the load on CPU 1 (taskset). Each run
starts every server afresh and measures every shape; runs are interleaved
(ours, baseline, floors, then again), and each figure is the median of the runs
with their min..max.

    bench/suite.py                      # 3 runs of 5 s per shape, release builds
    bench/suite.py --runs 5 --markdown BENCHMARKS-table.md --chart docs/pictures/benchmarks.svg
    bench/suite.py --smoke              # seconds: checks that everything runs and parses
    bench/suite.py --json bench/baseline.json               # save this run
    bench/suite.py --compare bench/baseline.json            # each ratio against the saved run

Needs h2load, nghttpd, taskset, Go, grpc-go and openssl (Debian: nghttp2-client,
nghttp2-server, util-linux, golang-go, golang-google-grpc-dev, openssl): installs them
with scripts/install-tools.sh, or says what to run.
"""

import argparse
import base64
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chart

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
LOAD_CPU = "1"
PAYLOAD = 64
BIG_PAYLOAD = 64 * 1024
IDLE_CONNECTIONS = 10_000
# Where build_shipped() puts the release binaries.
SHIPPED_BIN = ROOT / "target" / "bins" / "release"
# The functions the server's build links first (written by bench/link_order.py).
LINK_ORDER = ROOT / "services" / "echo-server" / "link-order.txt"


def fail(message):
    print(f"bench/suite.py: {message}", file=sys.stderr)
    sys.exit(1)


# The servers of each run, in the order they run.
SERVERS = ["ours", "baseline", "grpc-go", "h2 floor", "tcp floor"]

# Where Debian's golang-google-grpc-dev puts grpc-go (GOPATH mode).
GOCODE = "/usr/share/gocode"


def build_grpc_go(out):
    """bench/grpc-go with Debian's Go and grpc-go, in GOPATH mode: no module
    downloads."""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOCODE, GOFLAGS="",
               GOCACHE=str(out.parent / "cache"))
    subprocess.run(["go", "build", "-o", str(out), str(ROOT / "bench" / "grpc-go" / "main.go")],
                   cwd=ROOT, env=env, check=True)


def install_tools(needs, caller="bench/suite.py"):
    """Installs what `caller` needs with scripts/install-tools.sh (apt-get
    as root or with sudo), or stops with the command to run."""
    result = subprocess.run([str(ROOT / "scripts" / "install-tools.sh"), "--for", caller, *needs])
    if result.returncode != 0:
        sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


def varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


# The field the payload travels in: a `bytes payload` in both servers'
# messages, echoed back as it came (a `string` would add a UTF-8 check the
# baseline does not make).
OURS_FIELD = 2  # echo.v1.EchoRequest.payload
BASELINE_FIELD = 1  # bench.Msg.payload


def payload_field(field: int, size: int) -> bytes:
    """Protobuf field `field` (length-delimited) of `size` bytes of '*'."""
    return varint(field << 3 | 2) + varint(size) + b"*" * size


BASELINE_BODY = grpc_frame(payload_field(BASELINE_FIELD, PAYLOAD))

# The 64-byte unary request to our server in each content type a call can be
# made in (echo.v1.EchoRequest's `payload`).
PROTOCOL_BODIES = {
    "application/grpc": grpc_frame(payload_field(OURS_FIELD, PAYLOAD)),
    "application/grpc-web+proto": grpc_frame(payload_field(OURS_FIELD, PAYLOAD)),
    "application/proto": payload_field(OURS_FIELD, PAYLOAD),
    "application/json": json.dumps({"payload": base64.b64encode(b"*" * PAYLOAD).decode()}).encode(),
}


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    """One HTTP/2 frame."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_length(length):
    """An HPACK string length (7-bit prefix, no Huffman)."""
    if length < 127:
        return bytes([length])
    out, length = bytes([127]), length - 127
    while length >= 128:
        out += bytes([(length & 0x7F) | 0x80])
        length >>= 7
    return out + bytes([length])


def grpc_headers(port, path, extra=()):
    """A gRPC request's header block, every header an HPACK literal."""
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
               (b":authority", f"127.0.0.1:{port}".encode()),
               (b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra]
    return b"".join(b"\0" + hpack_length(len(name)) + name + hpack_length(len(value)) + value
                    for name, value in headers)


def unary_call(port, path, body, timeout=2.0):
    """Makes one gRPC unary call over a new HTTP/2 connection; True once the
    answer came: a message, then trailers. The same probe for every server,
    so start-up is measured alike."""
    block = grpc_headers(port, path)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(PREFACE + frame(4, 0, 0)
                      + frame(1, 0x4, 1, block) + frame(0, 0x1, 1, body))
            received, answered = b"", False
            while True:
                while len(received) < 9 or len(received) < 9 + int.from_bytes(received[:3], "big"):
                    chunk = s.recv(65536)
                    if not chunk:
                        return False
                    received += chunk
                length = int.from_bytes(received[:3], "big")
                kind, flags = received[3], received[4]
                stream = int.from_bytes(received[5:9], "big") & 0x7FFFFFFF
                received = received[9 + length:]
                if kind == 4 and not flags & 0x1:
                    s.sendall(frame(4, 0x1, 0))  # SETTINGS ACK
                elif stream == 1 and kind == 0 and length > 0:
                    answered = True
                elif stream == 1 and kind == 1 and flags & 0x1:
                    return answered  # trailers-only: an error status
                elif kind == 3 or kind == 7:  # RST_STREAM, GOAWAY
                    return False
    except OSError:
        return False


def self_signed(work):
    """A self-signed certificate for localhost in `work`, made once (openssl): (cert, key)."""
    cert, key = work / "cert.pem", work / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-addext",
                        "basicConstraints=critical,CA:FALSE"], check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def idle_connections(port, count):
    """Holds `count` HTTP/2 connections to `port` that sent the preface and
    an empty SETTINGS, then nothing, from a second after the last opened."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(PREFACE + frame(4, 0, 0))
            sockets.append(s)
        time.sleep(1.0)
        yield
    finally:
        for s in sockets:
            s.close()


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def load(args, timeout=600):
    """Runs a load generator on the load CPU; returns its stdout."""
    result = subprocess.run(
        ["taskset", "-c", LOAD_CPU, *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        fail(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


class Server:
    """A server process pinned to the server CPU."""

    def __init__(self, name, argv, port, ready_probe):
        self.name, self.port = name, port
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = started + 30
        while True:
            if self.process.poll() is not None:
                fail(f"{name} exited at start ({self.process.returncode})")
            if time.monotonic() > deadline:
                fail(f"{name} did not start serving")
            if ready_probe():
                break
            time.sleep(0.001)
        self.startup_seconds = time.monotonic() - started

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        fail(f"no VmRSS for {self.name}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Suite:
    def __init__(self, options):
        self.options = options
        profile = "debug" if options.smoke else "release"
        # Smoke mode measures nothing, so it takes the workspace's dev build
        # (the tests' build made it); figures come from the shipped packages
        # built alone in a directory of their own.
        self.bin = ROOT / "target" / "debug" if options.smoke else SHIPPED_BIN
        self.stock_bin = ROOT / "target" / "stock-tonic" / profile
        self.grpc_go_bin = ROOT / "target" / "grpc-go" / "grpc-go-echo"
        self.seconds = options.duration
        self.results = {}  # (shape, server) -> [value per run]
        self.work = Path(tempfile.mkdtemp(prefix="grpc-echo-bench-"))
        self.baseline_body_file = self.work / "request.baseline"
        self.baseline_body_file.write_bytes(BASELINE_BODY)
        # The same 64-byte message in the other protocols (PROTOCOL_ROWS).
        self.protocol_body_files = {}
        for index, (content_type, body) in enumerate(PROTOCOL_BODIES.items()):
            self.protocol_body_files[content_type] = self.work / f"request.{index}"
            self.protocol_body_files[content_type].write_bytes(body)
        self.static_dir = self.work / "static"
        self.static_dir.mkdir()
        # nghttpd's answer: the same bytes a gRPC echo would send back.
        (self.static_dir / "echo").write_bytes(PROTOCOL_BODIES["application/grpc"])

    def record(self, shape, server, value):
        if value is None or value != value or value <= 0:
            fail(f"{shape} on {server}: no figure ({value})")
        self.results.setdefault((shape, server), []).append(value)

    # -- load generators -------------------------------------------------

    def h2load(self, port, path, connections, streams, body_file,
               headers=("content-type: application/grpc", "te: trailers"), http1=False):
        argv = ["h2load", "-D", str(max(1, round(self.seconds))), "-c", str(connections),
                "-m", str(streams), "-d", str(body_file)]
        for header in headers:
            argv += ["-H", header]
        if http1:
            argv.append("--h1")
        out = load(argv + [f"http://127.0.0.1:{port}{path}"])
        done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
        rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        if not done or not rate:
            fail(f"cannot parse h2load output:\n{out}")
        if done.group(3) != done.group(2):
            fail(f"h2load saw failures:\n{out}")
        return float(rate.group(1)), int(done.group(3))

    def echo_bench(self, port, method, rpc, connections, concurrency, payload=PAYLOAD,
                   messages=None, rps=None, call=None, field=None, client_args=()):
        """`call`: (method, JSON data) for `bench --call`, in place of `rpc`;
        `client_args`: global flags (TLS, the HTTP version)."""
        argv = [
            str(self.bin / "echo-client"), "--addr", f"127.0.0.1:{port}", *client_args, "--json", "bench",
            "--connections", str(connections), "--concurrency", str(concurrency),
            "--duration", f"{self.seconds:g}s", "--warmup", f"{self.options.warmup:g}s",
        ]
        if call:
            argv += ["--call", call[0], "-d", call[1]]
        else:
            argv += ["--rpc", rpc, "--payload-size", str(payload)]
        if method:
            argv += ["--method", method, "--field", str(field)]
        if messages:
            argv += ["--messages", str(messages)]
        if rps:
            argv += ["--rps", f"{rps:.0f}"]
        report = json.loads(load(argv))
        if report["errors"]:
            fail(f"echo-client bench saw errors: {report}")
        return report

    def tcp_pingpong(self, port, connections, size):
        out = load([str(self.stock_bin / "tcp-pingpong"), f"127.0.0.1:{port}",
                    str(connections), str(size), str(max(1, round(self.seconds)))])
        match = re.search(r"([\d.]+) round trips/s", out)
        if not match:
            fail(f"cannot parse tcp-pingpong output: {out}")
        return float(match.group(1))

    def idle_connections_rss(self, server, count):
        """The server's RSS with `count` idle HTTP/2 connections open."""
        with idle_connections(server.port, count):
            if server.process.poll() is not None:
                fail(f"{server.name} died holding {count} connections")
            return server.rss_kib()

    def http3_rows(self, connections):
        """Our server with TLS and --http3: the same echo-client bench load
        over HTTP/2 and over HTTP/3 (QUIC), unary and bidi."""
        cert, key = self_signed(self.work)
        port = free_port()
        server = Server("ours (TLS, --http3)", [str(self.bin / "echo-server"), "--listen", f"127.0.0.1:{port}",
                                               "--tls-cert", str(cert), "--tls-key", str(key), "--http3"],
                        port, lambda: listening(port))
        try:
            tls = ["--ca", str(cert), "--tls-server-name", "localhost"]
            for version, client_args in (("HTTP/2", tls), ("HTTP/3", [*tls, "--http3"])):
                report = self.echo_bench(port, None, "unary", connections, 20, client_args=client_args)
                self.record(HTTP3_ROWS["unary"].format(c=connections, version=version), "ours",
                            report["calls_per_second"])
                report = self.echo_bench(port, None, "bidi", 4, 25, client_args=client_args)
                self.record(HTTP3_ROWS["bidi"].format(version=version), "ours", report["messages_per_second"])
        finally:
            server.stop()

    # -- servers ---------------------------------------------------------

    def start(self, name):
        port = free_port()
        if name == "ours":
            unary, body = "/echo.v1.EchoService/Echo", PROTOCOL_BODIES["application/grpc"]
            tcp_port = free_port()
            server = Server(name, [str(self.bin / "echo-server"), "--listen", f"127.0.0.1:{port}",
                                   "--tcp-echo-addr", f"127.0.0.1:{tcp_port}"], port,
                            lambda: unary_call(port, unary, body))
            server.tcp_port = tcp_port
            server.unary, server.bidi = unary, "/echo.v1.EchoService/BidiStream"
            server.field, server.body_file = OURS_FIELD, self.protocol_body_files["application/grpc"]
        elif name == "baseline":
            unary = "/bench.Echo/Unary"
            server = Server(name, [str(self.stock_bin / "stock-server"), f"127.0.0.1:{port}"], port,
                            lambda: unary_call(port, unary, BASELINE_BODY))
            server.unary, server.bidi = unary, "/bench.Echo/Bidi"
            server.field, server.body_file = BASELINE_FIELD, self.baseline_body_file
        elif name == "grpc-go":
            unary = "/bench.Echo/Unary"
            server = Server(name, [str(self.grpc_go_bin), f"127.0.0.1:{port}"], port,
                            lambda: unary_call(port, unary, BASELINE_BODY))
            server.unary, server.bidi = unary, "/bench.Echo/Bidi"
            server.field, server.body_file = BASELINE_FIELD, self.baseline_body_file
        elif name == "tcp floor":
            server = Server(name, [str(self.stock_bin / "tcp-echo"), f"127.0.0.1:{port}"], port,
                            lambda: listening(port))
        elif name == "h2 floor":
            server = Server(name, ["nghttpd", "--no-tls", "-d", str(self.static_dir), str(port)], port,
                            lambda: listening(port))
        return server

    # -- one run ---------------------------------------------------------

    def run_once(self, baseline_peak):
        connections = 20 if self.options.smoke else 50
        for name in SERVERS:
            server = self.start(name)
            try:
                if name in ("ours", "baseline", "grpc-go"):
                    self.record("start to serving (ms)", name, server.startup_seconds * 1000)
                    self.record("idle RSS (MiB)", name, server.rss_kib() / 1024)
                if name == "tcp floor":
                    self.record("64 B ping-pong, 50 conns (round trips/s)", name,
                                self.tcp_pingpong(server.port, 50, PAYLOAD))
                    self.record("64 KiB ping-pong, 1 conn (MB/s one way)", name,
                                self.tcp_pingpong(server.port, 1, BIG_PAYLOAD) * BIG_PAYLOAD / 1e6)
                    continue
                if name == "h2 floor":
                    for c, m in [(1, 1), (connections, 20)]:
                        rate, _ = self.h2load(server.port, "/echo", c, m, self.protocol_body_files["application/grpc"])
                        self.record(f"unary 64 B {c}x{m}, h2load (req/s)", name, rate)
                    continue
                for c, m in [(1, 1), (connections, 20)]:
                    before = server.cpu_seconds()
                    rate, requests = self.h2load(server.port, server.unary, c, m, server.body_file)
                    self.record(f"unary 64 B {c}x{m}, h2load (req/s)", name, rate)
                    if m > 1:
                        cpu = server.cpu_seconds() - before
                        self.record("server CPU ms per 1,000 unary calls", name, cpu / requests * 1e6)
                for c, m in [(1, 1), (connections, 20)]:
                    report = self.echo_bench(server.port, server.unary, "unary", c, m, field=server.field)
                    self.record(f"unary 64 B {c}x{m}, echo-client bench (req/s)", name,
                                report["calls_per_second"])
                    if c == 1:
                        for quantile in ("p50", "p99"):
                            self.record(f"{quantile} ms, unary 1x1", name, report["latency_ms"][quantile])
                for c, m in [(10, 5), (4, 25)]:
                    report = self.echo_bench(server.port, server.bidi, "bidi", c, m, field=server.field)
                    self.record(f"bidi ping-pong 64 B, {c}x{m} streams (msg/s)", name,
                                report["messages_per_second"])
                report = self.echo_bench(server.port, server.bidi, "bidi", 1, 1, payload=BIG_PAYLOAD,
                                         field=server.field)
                self.record("64 KiB ping-pong, 1 stream (MB/s one way)", name,
                            report["messages_per_second"] * BIG_PAYLOAD / 1e6)
                if name == "ours":
                    # Dynamic messages from reflection, the same 64 bytes.
                    report = self.echo_bench(server.port, None, None, connections, 20, call=(
                        "echo.v1.EchoService/Echo",
                        json.dumps({"payload": base64.b64encode(b"*" * PAYLOAD).decode()})))
                    self.record(f"unary 64 B {connections}x20, echo-client bench --call (req/s)", name,
                                report["calls_per_second"])
                    for shape, content_type, http1 in PROTOCOL_ROWS:
                        c, m = (connections, 1) if http1 else (connections, 20)
                        rate, _ = self.h2load(
                            server.port, server.unary, c, m,
                            self.protocol_body_files[content_type],
                            headers=(f"content-type: {content_type}",), http1=http1)
                        self.record(shape.format(c=c, m=m), name, rate)
                    report = self.echo_bench(server.port, None, "server-stream", 1, 1, messages=1000)
                    self.record("server stream 64 B, 1 call x 1000 msgs (msg/s)", name,
                                report["messages_per_second"])
                    report = self.echo_bench(server.port, None, "server-stream", 1, 1,
                                             payload=BIG_PAYLOAD, messages=100)
                    self.record("server stream 64 KiB (MB/s)", name,
                                report["messages_per_second"] * BIG_PAYLOAD / 1e6)
                    self.record("tcp echo (ours) 64 B ping-pong, 50 conns (round trips/s)", name,
                                self.tcp_pingpong(server.tcp_port, 50, PAYLOAD))
                    self.http3_rows(connections)
                if baseline_peak:
                    for share in (50, 80):
                        report = self.echo_bench(server.port, server.unary, "unary", connections, 20,
                                                 rps=baseline_peak * share / 100, field=server.field)
                        quantiles = ("p50", "p99") if share == 50 else ("p99",)
                        for quantile in quantiles:
                            self.record(f"{quantile} ms, open loop at {share}% of baseline peak", name,
                                        report["latency_ms"][quantile])
                count = 200 if self.options.smoke else IDLE_CONNECTIONS
                self.record(f"RSS with {count} idle connections (MiB)", name,
                            self.idle_connections_rss(server, count) / 1024)
            finally:
                server.stop()
        if self.options.instructions:
            ours = str(self.bin / "echo-server")
            for shape, name, args in ((INSTRUCTIONS_SHAPE, "ours", ["--server", ours]),
                                      (INSTRUCTIONS_SHAPE, "baseline", ["--server", "stock"]),
                                      (HTTP3_ROWS["instructions"].format(version="HTTP/2"), "ours",
                                       ["--server", ours, "--tls", "h2"]),
                                      (HTTP3_ROWS["instructions"].format(version="HTTP/3"), "ours",
                                       ["--server", ours, "--tls", "h3"])):
                out = subprocess.run([sys.executable, str(ROOT / "bench" / "instructions.py"),
                                      *args, "--calls", "5000"],
                                     capture_output=True, text=True, check=True).stdout
                match = re.search(r"([\d,]+) instructions per unary call", out)
                if not match:
                    fail(f"cannot parse bench/instructions.py output: {out}")
                self.record(shape, name, int(match.group(1).replace(",", "")))

    def baseline_peak(self):
        """The baseline's closed-loop unary peak with echo-client bench, which
        sets the open-loop rates."""
        server = self.start("baseline")
        try:
            connections = 20 if self.options.smoke else 50
            return self.echo_bench(server.port, server.unary, "unary", connections, 20,
                                   field=server.field)[
                "calls_per_second"]
        finally:
            server.stop()

    # -- report ----------------------------------------------------------

    def medians(self, server):
        return {shape: statistics.median(values)
                for (shape, name), values in self.results.items() if name == server}

    def table(self):
        servers = SERVERS
        shapes = list(dict.fromkeys(shape for shape, _ in self.results))
        lines = ["| shape | " + " | ".join(servers) + " | ours / baseline | ours / grpc-go |",
                 "| --- |" + " --- |" * (len(servers) + 2)]
        for shape in shapes:
            cells, medians = [], {}
            for server in servers:
                values = self.results.get((shape, server))
                if not values:
                    cells.append("")
                    continue
                median = statistics.median(values)
                medians[server] = median
                cell = fmt(median)
                if len(values) > 1:
                    cell += f" ({fmt(min(values))}..{fmt(max(values))})"
                cells.append(cell)
            ratios = []
            for peer in ("baseline", "grpc-go"):
                ratio = ""
                if "ours" in medians and peer in medians:
                    ratio = f"{medians['ours'] / medians[peer]:.2f}x"
                ratios.append(ratio)
            lines.append(f"| {shape} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        ours = self.medians("ours")
        reference = next((value for shape, value in ours.items()
                          if shape.startswith("unary 64 B") and "h2load" in shape
                          and not shape.startswith("unary 64 B 1x1")), None)
        protocol_rows = [(shape, value) for shape, value in ours.items() if shape.startswith("protocol:")]
        if reference and protocol_rows:
            lines += ["", "| protocol (ours, h2load) | req/s | / our gRPC 50x20 |", "| --- | --- | --- |"]
            for shape, median in protocol_rows:
                lines.append(f"| {shape} | {fmt(median)} | {median / reference:.2f}x |")
        http3 = [(shape, ours.get(shape.replace("HTTP/3", "HTTP/2")), value)
                 for shape, value in ours.items() if "HTTP/3" in shape]
        if http3:
            lines += ["", "| HTTP/3 (ours, TLS, echo-client bench) | HTTP/3 | HTTP/2 | HTTP/3 / HTTP/2 |",
                      "| --- | --- | --- | --- |"]
            for shape, h2, h3 in http3:
                ratio = f"{h3 / h2:.2f}x" if h2 else ""
                lines.append(f"| {shape.replace(', HTTP/3', '')} | {fmt(h3)} | {fmt(h2) if h2 else ''} | {ratio} |")
        lines += ["", "| target (issue #33; the protocols' floor: #28) | measured | met |", "| --- | --- | --- |"]
        for target, ratio, met in self.targets(reference):
            lines.append(f"| {target} | {ratio:.2f}x | {'yes' if met else 'no'} |")
        return "\n".join(lines)

    def targets(self, grpc_reference):
        """(target, measured ratio, met) for each of issue #33's targets
        that one suite run measures: every shape at least level with the
        baseline (tonic), the unary and bidi shapes ahead of tonic and grpc-go
        by their factors, idle RSS within 1.3x; and the protocols' floor."""
        ours, baseline, grpc_go = self.medians("ours"), self.medians("baseline"), self.medians("grpc-go")
        rows = []
        for shape in [shape for shape in ours if shape in baseline]:
            ratio = ours[shape] / baseline[shape]
            if shape == "idle RSS (MiB)":
                rows.append((f"{shape}: ours / baseline <= 1.3x", ratio, ratio <= 1.3))
            elif chart.LOWER_IS_BETTER.search(shape):
                rows.append((f"{shape}: ours / baseline <= 1.0x", ratio, ratio <= 1.0))
            else:
                rows.append((f"{shape}: ours / baseline >= 1.0x", ratio, ratio >= 1.0))
            for prefix, against_tonic, against_go in SHAPE_TARGETS:
                if not shape.startswith(prefix):
                    continue
                rows.append((f"{shape}: ours / baseline >= {against_tonic}x", ratio, ratio >= against_tonic))
                if shape in grpc_go:
                    go_ratio = ours[shape] / grpc_go[shape]
                    rows.append((f"{shape}: ours / grpc-go >= {against_go}x", go_ratio, go_ratio >= against_go))
        if grpc_reference:
            for shape, value in ours.items():
                if shape.startswith("protocol:"):
                    ratio = value / grpc_reference
                    rows.append((f"{shape}: / our gRPC 50x20 >= 0.7x", ratio, ratio >= 0.7))
        return rows


INSTRUCTIONS_SHAPE = "callgrind instructions per unary call"
# Issue #33's shapes with a lead to keep: (shape prefix, ours / tonic, ours / grpc-go).
SHAPE_TARGETS = [
    ("unary 64 B 50x20, h2load", 1.5, 1.5),
    ("bidi ping-pong 64 B, 4x25 streams", 1.5, 1.2),
]
# A row whose ratio moved this much the wrong way since the saved run is flagged.
REGRESSION = 0.10


def saved_run(suite, options):
    """The run as --json saves it: each server's median per shape, and our
    ratios to each peer (higher is better for every ratio: inverted for the
    shapes where lower is better)."""
    medians = {server: suite.medians(server) for server in SERVERS}
    ratios = {}
    for shape, ours in medians["ours"].items():
        for peer in ("baseline", "grpc-go"):
            theirs = medians[peer].get(shape)
            if theirs:
                better = theirs / ours if chart.LOWER_IS_BETTER.search(shape) else ours / theirs
                ratios.setdefault(shape, {})[peer] = better
    return {
        "date": time.strftime("%Y-%m-%d"),
        "runs": options.runs,
        "seconds_per_shape": options.duration,
        "medians": medians,
        "ratios": ratios,
    }


def compare(now, saved):
    """Each ratio's change against a saved run, beside the medians behind it
    (so that a ratio moved by the peer's own figure shows as such); the rows
    more than REGRESSION worse. Prints the table and returns whether none was."""
    print("\n| shape | peer | saved | now | change | ours: saved -> now | peer: saved -> now |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    worse = []
    for shape, peers in now["ratios"].items():
        ours = median_change(saved, now, "ours", shape)
        for peer, ratio in peers.items():
            before = saved.get("ratios", {}).get(shape, {}).get(peer)
            if not before:
                continue
            change = ratio / before - 1
            flag = ""
            if change < -REGRESSION:
                worse.append(f"{shape} vs {peer}")
                # Ours no more than REGRESSION worse on its own: the peer's figure moved.
                ours_held = ours is not None and ours[2] >= -REGRESSION
                flag = " **worse** (the peer's figure moved)" if ours_held else " **worse**"
            theirs = median_change(saved, now, peer, shape)
            print(f"| {shape} | {peer} | {before:.2f}x | {ratio:.2f}x | {change:+.0%}{flag} "
                  f"| {describe(ours)} | {describe(theirs)} |")
    print(f"\ncompared with the run of {saved.get('date', '?')}: "
          + (f"{len(worse)} row(s) more than {REGRESSION:.0%} worse: {'; '.join(worse)}" if worse
             else f"no row more than {REGRESSION:.0%} worse"), file=sys.stderr)
    return not worse


def median_change(saved, now, server, shape):
    """`server`'s median of `shape` in both runs and how much better it got
    (negative: worse, whichever way the shape counts), or None."""
    then = saved.get("medians", {}).get(server, {}).get(shape)
    current = now.get("medians", {}).get(server, {}).get(shape)
    if not then or not current:
        return None
    better = then / current if chart.LOWER_IS_BETTER.search(shape) else current / then
    return then, current, better - 1


def describe(change):
    """A median_change as `saved -> now (+x%)`, or nothing."""
    if change is None:
        return ""
    then, current, better = change
    return f"{fmt(then)} -> {fmt(current)} ({better:+.0%})"


# Unary calls in the other protocols, against our server only: (shape, body,
# content type, HTTP/1.1). HTTP/1.1 rows use one request at a time per
# connection, as browsers and curl do (no pipelining).
PROTOCOL_ROWS = [
    ("protocol: Connect unary proto, HTTP/2 {c}x{m} (req/s)", "application/proto", False),
    ("protocol: Connect unary JSON, HTTP/2 {c}x{m} (req/s)", "application/json", False),
    ("protocol: gRPC-Web unary, HTTP/2 {c}x{m} (req/s)", "application/grpc-web+proto", False),
    ("protocol: Connect unary proto, HTTP/1.1 {c}x{m} (req/s)", "application/proto", True),
    ("protocol: Connect unary JSON, HTTP/1.1 {c}x{m} (req/s)", "application/json", True),
    ("protocol: gRPC-Web unary, HTTP/1.1 {c}x{m} (req/s)", "application/grpc-web+proto", True),
]


# Our server over TLS, the same load over HTTP/2 and HTTP/3 (issue #30's
# rows: measured and explained, no target).
HTTP3_ROWS = {
    "unary": "TLS unary 64 B {c}x20, echo-client bench, {version} (req/s)",
    "bidi": "TLS bidi ping-pong 64 B, 4x25 streams, {version} (msg/s)",
    "instructions": "callgrind instructions per unary call, TLS, {version}",
}


def fmt(value):
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def build_shipped():
    """The binaries as they ship (the packages alone, as the Dockerfile builds
    them), in a directory of their own (SHIPPED_BIN)."""
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "echo-server", "-p", "echo-cli",
                    "--bins", "--target-dir", "target/bins"], cwd=ROOT, check=True)


def build_stock_tonic(release=("--release",)):
    """The plain tonic baseline's binaries, in target/stock-tonic."""
    subprocess.run(["cargo", "build", *release, "--manifest-path", "bench/stock-tonic/Cargo.toml",
                    "--target-dir", "target/stock-tonic"], cwd=ROOT, check=True)


def link_order_coverage(binary):
    """(found, listed, applied): how many of LINK_ORDER's names `binary`
    defines, and whether its code starts with one of them (the linker read
    the list)."""
    lines = LINK_ORDER.read_text().splitlines() if LINK_ORDER.exists() else []
    names = {line for line in lines if line and not line.startswith("#")}
    symbols = [line.split() for line in subprocess.run(
        ["nm", "--defined-only", str(binary)], capture_output=True, text=True, check=True).stdout.splitlines()]
    symbols = [symbol for symbol in symbols if len(symbol) == 3]
    code = [(int(address, 16), name) for address, kind, name in symbols if kind in "tT"]
    applied = bool(code) and min(code)[1] in names
    return len(names & {name for _, _, name in symbols}), len(names), applied


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (median reported)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per shape")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds not counted (echo-client bench)")
    parser.add_argument("--smoke", action="store_true",
                        help="one short run on debug builds: checks that every shape runs and parses")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--chart", type=Path,
                        help="also draw the table as an SVG chart (bench/chart.py) to this file")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--json", type=Path,
                        help="also save the run (medians and ratios) as JSON to this file (bench/baseline.json "
                             "is the last full run's)")
    parser.add_argument("--compare", type=Path, metavar="BASELINE.json",
                        help="print each ratio's change against a saved run and exit 3 if any is more than "
                             "10%% worse")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per unary call of both servers with callgrind "
                             "(bench/instructions.py; needs valgrind)")
    options = parser.parse_args()
    if options.smoke:
        options.runs, options.duration, options.warmup = 1, 1.0, 0.2
    needs = ["taskset=util-linux", "h2load=nghttp2-client", "nghttpd=nghttp2-server",
             "go=golang-go", f"{GOCODE}/src/google.golang.org/grpc=golang-google-grpc-dev", "openssl=openssl"]
    if options.instructions:
        needs.append("valgrind=valgrind")
    if not options.smoke:
        needs.append("nm=binutils")  # the link order's count
    install_tools(needs)
    if len(os.sched_getaffinity(0)) < 2:
        fail("needs two CPUs: the server runs on CPU 0, the load on CPU 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = IDLE_CONNECTIONS + 1024
    if hard != resource.RLIM_INFINITY and hard < want:
        fail(f"the open-files limit ({hard}) is below {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    # Read before the run, so that --json may overwrite the run compared with.
    saved = json.loads(options.compare.read_text()) if options.compare else None

    if not options.no_build:
        release = [] if options.smoke else ["--release"]
        if options.smoke:
            # As scripts/test.sh builds them, so that after the tests nothing is rebuilt.
            subprocess.run(["cargo", "build", "--locked", "--workspace", "--bins"], cwd=ROOT, check=True)
        else:
            build_shipped()
        build_stock_tonic(release)
        build_grpc_go(ROOT / "target" / "grpc-go" / "grpc-go-echo")

    if not options.smoke:
        found, listed, applied = link_order_coverage(SHIPPED_BIN / "echo-server")
        stale = "" if found >= 0.9 * listed else "; below 90%: run bench/link_order.py"
        print(f"link order: {found} of the {listed} start-up functions listed are in the server binary{stale}; "
              + ("its code starts with them" if applied else "NOT applied: its code does not start with them"),
              file=sys.stderr)
    suite = Suite(options)
    started = time.monotonic()
    for run in range(options.runs):
        peak = suite.baseline_peak()
        print(f"run {run + 1}/{options.runs}: baseline unary peak {peak:,.0f} calls/s", file=sys.stderr)
        suite.run_once(peak)
    table = suite.table()
    print(table)
    print(f"\n{options.runs} run(s), {options.duration:g} s per shape, "
          f"{time.monotonic() - started:.0f} s in all", file=sys.stderr)
    if options.markdown:
        options.markdown.write_text(table + "\n")
    if options.chart:
        options.chart.parent.mkdir(parents=True, exist_ok=True)
        options.chart.write_text(chart.svg(chart.read_table(table)))
    shutil.rmtree(suite.work, ignore_errors=True)
    now = saved_run(suite, options)
    if options.json:
        options.json.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    # A smoke run's debug builds compare with nothing: it shows the table, asserts no speed.
    if saved is not None and not compare(now, saved) and not options.smoke:
        sys.exit(3)


if __name__ == "__main__":
    main()
