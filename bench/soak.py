#!/usr/bin/env python3
"""A soak of the release echo-server (not run in CI): mixed RPC shapes and
protocols at a share of its peak, the abuse attacks at a low rate alongside,
and the server's RSS, open file descriptors and runtime tasks sampled every
10 s. Reports each sample's slope after the first minute (a leak shows as a
climb) and the share of well-behaved calls that succeeded.

    bench/soak.py                        # 30 minutes at 70% of peak
    bench/soak.py --minutes 3 --share 50 --markdown soak.md

The server runs on CPU 0, the load and the attacks on CPU 1 (taskset), as in
bench/suite.py. The well-behaved load, split by calls per second:
- gRPC unary (`echo-client bench --method`, 64 B): 40%
- gRPC bidi ping-pong (`echo-client bench --rpc bidi`, messages): 15%
- gRPC server streams of 10 messages (`echo-client bench --rpc server-stream`): 10%
- Connect unary JSON over HTTP/1.1 (h2load --h1): 20%
- gRPC-Web unary over HTTP/2 (h2load): 15%
Each generator checks its answers: echo-client every gRPC status, h2load the
HTTP status (gRPC-Web statuses travel in the body; the server's
grpc_server_handled_total counts them, reported beside).

The attacks, one every 2 s in turn, each from a fresh connection: rapid
reset (HEADERS then RST_STREAM, 200 times), a header list over the limit,
a slow preface (slowloris, up to 20 held open), a PING flood, garbage after
the preface, and a message announcing 1 GiB.

Needs h2load (Debian: nghttp2-client) and taskset.
"""

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import (LOAD_CPU, OURS_FIELD, PREFACE, PROTOCOL_BODIES, SERVER_CPU, SHIPPED_BIN,  # noqa: E402
                   build_shipped, fail, frame, free_port, grpc_headers, install_tools, unary_call)

SAMPLE_SECONDS = 10
SETTLE_SECONDS = 60
# Share of the well-behaved load (calls, or messages for bidi) per kind.
MIX = {"grpc unary": 0.40, "grpc bidi": 0.15, "grpc server-stream": 0.10,
       "connect json http/1.1": 0.20, "grpc-web http/2": 0.15}


class Attacks:
    """The abuse attacks, one every 2 s in turn, on their own thread."""

    def __init__(self, port):
        self.port, self.stop, self.count = port, threading.Event(), 0
        self.slow = []

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.settimeout(5)
        return s

    def drain(self, s, seconds=1.0):
        """Reads what the server sends until it closes or `seconds` pass."""
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                s.settimeout(max(0.01, end - time.monotonic()))
                if not s.recv(65536):
                    return
        except OSError:
            return

    def rapid_reset(self):
        with self.connect() as s:
            burst = PREFACE + frame(4, 0, 0)
            for stream in range(1, 400, 2):
                burst += frame(1, 0x4, stream, grpc_headers(self.port, "/echo.v1.EchoService/Echo"))
                burst += frame(3, 0, stream, (8).to_bytes(4, "big"))  # RST_STREAM CANCEL
            s.sendall(burst)
            self.drain(s)

    def header_flood(self):
        with self.connect() as s:
            big = grpc_headers(self.port, "/echo.v1.EchoService/Echo", [(b"x-flood", b"a" * 60_000)])
            s.sendall(PREFACE + frame(4, 0, 0) + frame(1, 0x4, 1, big[:16_000])
                      + frame(9, 0, 1, big[16_000:32_000]) + frame(9, 0, 1, big[32_000:48_000])
                      + frame(9, 0x4, 1, big[48_000:]))
            self.drain(s)

    def slowloris(self):
        s = self.connect()
        s.sendall(PREFACE[:3])
        self.slow.append(s)
        # Each held connection trickles one more byte; the server cuts them
        # at its handshake timeout.
        for held in list(self.slow):
            try:
                held.sendall(b"*")
            except OSError:
                held.close()
                self.slow.remove(held)
        while len(self.slow) > 20:
            self.slow.pop(0).close()

    def ping_flood(self):
        with self.connect() as s:
            s.sendall(PREFACE + frame(4, 0, 0) + frame(6, 0, 0, b"12345678") * 2000)
            self.drain(s)

    def garbage(self):
        with self.connect() as s:
            s.sendall(PREFACE + random.randbytes(4096))
            self.drain(s)

    def huge_message(self):
        with self.connect() as s:
            s.sendall(PREFACE + frame(4, 0, 0)
                      + frame(1, 0x4, 1, grpc_headers(self.port, "/echo.v1.EchoService/Echo"))
                      + frame(0, 0, 1, b"\0" + (1 << 30).to_bytes(4, "big") + b"*" * 1000))
            self.drain(s)

    def run(self):
        kinds = [self.rapid_reset, self.header_flood, self.slowloris, self.ping_flood,
                 self.garbage, self.huge_message]
        while not self.stop.wait(2.0):
            attack = kinds[self.count % len(kinds)]
            try:
                attack()
            except OSError:
                pass  # the server cut it short: what it should do
            self.count += 1
        for s in self.slow:
            s.close()


def scrape(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        return response.read().decode()


def metric(text, name, labels=None):
    total = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not match or match.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (match.group(2) or "") for k, v in labels.items()):
            continue
        total = (total or 0) + float(match.group(3))
    return total


def slope_per_minute(samples):
    """Least-squares slope of (seconds, value) samples, per minute."""
    xs, ys = [x for x, _ in samples], [y for _, y in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in samples) / spread * 60


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--share", type=float, default=70.0, help="percent of the measured peak")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    options = parser.parse_args()
    install_tools(["taskset=util-linux", "h2load=nghttp2-client"], "bench/soak.py")
    if not options.no_build:
        build_shipped()
    port, metrics_port = free_port(), free_port()
    server = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, str(SHIPPED_BIN / "echo-server"), "--listen", f"127.0.0.1:{port}",
         "--metrics-addr", f"127.0.0.1:{metrics_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"grpc-echo-soak-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        deadline = time.monotonic() + 30
        while not unary_call(port, "/echo.v1.EchoService/Echo", PROTOCOL_BODIES["application/grpc"]):
            if server.poll() is not None or time.monotonic() > deadline:
                fail("the server did not start")
            time.sleep(0.05)
        seconds = round(options.minutes * 60)

        def echo_bench(*args, duration):
            return ["taskset", "-c", LOAD_CPU, str(SHIPPED_BIN / "echo-client"), "--addr", f"127.0.0.1:{port}",
                    "--json", "bench", "--duration", f"{duration}s", "--warmup", "0s", *args]

        unary = ["--method", "/echo.v1.EchoService/Echo", "--field", str(OURS_FIELD)]
        peak = json.loads(subprocess.run(
            echo_bench("--connections", "50", "--concurrency", "20", *unary, duration=5),
            capture_output=True, text=True, check=True).stdout)["calls_per_second"]
        rate = peak * options.share / 100
        print(f"peak {peak:,.0f} unary calls/s; soaking at {rate:,.0f}/s for {seconds} s", file=sys.stderr)

        bodies = {}
        for content_type in ("application/json", "application/grpc-web+proto"):
            bodies[content_type] = work / content_type.replace("/", "-")
            bodies[content_type].write_bytes(PROTOCOL_BODIES[content_type])

        def h2load(content_type, connections, total_rate, http1):
            per_client = max(1, round(total_rate / connections))
            return ["taskset", "-c", LOAD_CPU, "h2load", "-D", str(seconds), "-c", str(connections),
                    "--rps", str(per_client), "-d", str(bodies[content_type]),
                    "-H", f"content-type: {content_type}", *(["--h1"] if http1 else []),
                    f"http://127.0.0.1:{port}/echo.v1.EchoService/Echo"]

        generators = {
            "grpc unary": echo_bench("--connections", "10", "--concurrency", "10", *unary,
                                     "--rps", f"{rate * MIX['grpc unary']:.0f}", duration=seconds),
            "grpc bidi": echo_bench("--connections", "5", "--concurrency", "4", "--rpc", "bidi",
                                    "--rps", f"{rate * MIX['grpc bidi']:.0f}", duration=seconds),
            "grpc server-stream": echo_bench("--connections", "5", "--concurrency", "4", "--rpc", "server-stream",
                                             "--messages", "10",
                                             "--rps", f"{rate * MIX['grpc server-stream'] / 10:.0f}",
                                             duration=seconds),
            "connect json http/1.1": h2load("application/json", 20, rate * MIX["connect json http/1.1"], True),
            "grpc-web http/2": h2load("application/grpc-web+proto", 10, rate * MIX["grpc-web http/2"], False),
        }
        running = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for name, argv in generators.items()}
        attacks = Attacks(port)
        attacker = threading.Thread(target=attacks.run, daemon=True)
        attacker.start()

        samples, started = [], time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(SAMPLE_SECONDS - (time.monotonic() - started) % SAMPLE_SECONDS)
            if server.poll() is not None:
                fail(f"the server exited during the soak ({server.returncode})")
            text = scrape(metrics_port)
            status = Path(f"/proc/{server.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            sample = {"seconds": round(time.monotonic() - started), "rss_kib": rss,
                      "fds": len(os.listdir(f"/proc/{server.pid}/fd")),
                      "tasks": metric(text, "tokio_alive_tasks"),
                      "connections": metric(text, "grpc_server_open_connections")}
            samples.append(sample)
            print(json.dumps(sample), file=sys.stderr)
        attacks.stop.set()
        attacker.join()

        results = {}
        for name, process in running.items():
            out, err = process.communicate(timeout=120)
            if name.startswith("grpc "):
                report = json.loads(out)
                results[name] = (report["calls"], sum(report["errors"].values()), report["errors"])
            else:
                done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                                 r"(\d+) failed, (\d+) errored", out)
                if not done:
                    fail(f"cannot parse h2load output for {name}:\n{out}{err}")
                failed = int(done.group(1)) - int(done.group(2))
                results[name] = (int(done.group(1)), failed, {"not 2xx or errored": failed} if failed else {})
        text = scrape(metrics_port)
    finally:
        server.terminate()
        server.wait(timeout=30)

    settled = [s for s in samples if s["seconds"] > SETTLE_SECONDS]
    lines = [f"Soak: {options.minutes:g} min at {options.share:g}% of a peak of {peak:,.0f} unary calls/s "
             f"({rate:,.0f}/s), {attacks.count} attacks alongside; samples every {SAMPLE_SECONDS} s.", "",
             "| load | calls | failed | succeeded | failures |", "| --- | --- | --- | --- | --- |"]
    total_calls = total_failed = 0
    for name, (calls, failed, why) in results.items():
        total_calls, total_failed = total_calls + calls, total_failed + failed
        causes = ", ".join(f"{cause}: {count:,}" for cause, count in why.items())
        lines.append(f"| {name} | {calls:,} | {failed:,} | {100 * (calls - failed) / max(calls, 1):.4f}% | {causes} |")
    success = 100 * (total_calls - total_failed) / max(total_calls, 1)
    lines.append(f"| all | {total_calls:,} | {total_failed:,} | {success:.4f}% | |")
    web_errors = (metric(text, "grpc_server_handled_total") or 0) - (
        metric(text, "grpc_server_handled_total", {"grpc_code": "OK"}) or 0)
    lines += ["", f"The server counted {web_errors:,.0f} calls ending in an error status in all "
              f"(attacks included: their calls are refused or reset by design).", "",
              "| after the first minute | first | last | min | max | slope per minute | trend |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    flat = True
    for key, label, unit in [("rss_kib", "RSS", "KiB"), ("fds", "open fds", ""), ("tasks", "runtime tasks", "")]:
        series = [(s["seconds"], s[key]) for s in settled if s[key] is not None]
        if len(series) < 2:
            lines.append(f"| {label} | | | | | too few samples | |")
            continue
        values = [v for _, v in series]
        slope = slope_per_minute(series)
        # Rising: the fitted climb over the settled soak is more than 5% of
        # the mean (and more than noise: 1 MiB for RSS, 5 fds or tasks).
        climb = slope * (series[-1][0] - series[0][0]) / 60
        rising = climb > max(0.05 * statistics.fmean(values), 1024 if key == "rss_kib" else 5)
        flat &= not rising
        lines.append(f"| {label} ({unit or 'count'}) | {values[0]:,.0f} | {values[-1]:,.0f} | {min(values):,.0f} | "
                     f"{max(values):,.0f} | {slope:+.2f} | {'rising' if rising else 'flat'} |")
    report = "\n".join(lines)
    print(report)
    if options.markdown:
        options.markdown.write_text(report + "\n")
    if not flat or success < 99.9:
        sys.exit(1)


if __name__ == "__main__":
    main()
