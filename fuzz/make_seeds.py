#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/seeds/TARGET/: valid
requests of every RPC shape and protocol, the abuse suite's attack shapes, and
small inputs of each parser. Run with the test tools' Python (it compiles the
contract with grpcio-tools): target/test-tools/venv/bin/python fuzz/make_seeds.py

The `connection` seeds are the bytes hyper's client sends for the `requests`
seeds, recorded by `scripts/fuzz.sh --record`; the `h2_frames` seeds, since
its inputs are `arbitrary`'s, are the 40 largest inputs of a 60-second run
minimized with libFuzzer's `-merge=1`.
"""
import base64
import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def contract():
    out = tempfile.mkdtemp()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.join(ROOT, "proto"),
         "--python_out=" + out, "echo/v1/echo.proto", "grpc/testing/messages.proto",
         "grpc/testing/empty.proto"], check=True)
    sys.path.insert(0, out)
    from echo.v1 import echo_pb2
    # By file: the name `grpc` is grpcio's package.
    spec = importlib.util.spec_from_file_location(
        "messages_pb2", os.path.join(out, "grpc", "testing", "messages_pb2.py"))
    messages_pb2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(messages_pb2)
    return echo_pb2, messages_pb2


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def envelope(message, flags=0):
    return struct.pack(">BI", flags, len(message)) + message


def main():
    echo, interop = contract()
    plain = echo.EchoRequest(message="hello", payload=b"\x00\x01\x02").SerializeToString()
    delayed = echo.EchoRequest(message="slow", response_size=64)
    delayed.delay.FromMilliseconds(250)
    failing = echo.EchoRequest(message="fail")
    failing.error.code = echo.STATUS_CODE_UNAVAILABLE
    failing.error.message = "asked"
    failing.error.details["reason"] = "fuzz"
    echoed = echo.EchoRequest(message="meta", echo_metadata=echo.METADATA_ECHO_BOTH)
    streamed = echo.EchoRequest(message="tick")
    streamed.stream.count = 3
    streamed.stream.interval.FromMilliseconds(10)
    goaway = echo.EchoRequest(message="bye")
    goaway.connection.action = echo.CONNECTION_ACTION_GOAWAY
    reset = echo.EchoRequest(message="reset")
    reset.connection.action = echo.CONNECTION_ACTION_RESET_STREAM
    reset.connection.reset_code = 8
    too_much = echo.EchoRequest(response_size=1 << 30)
    too_much.delay.seconds = 10**9
    requests = {
        "plain": plain, "delayed": delayed.SerializeToString(),
        "error": failing.SerializeToString(), "metadata": echoed.SerializeToString(),
        "stream": streamed.SerializeToString(), "goaway": goaway.SerializeToString(),
        "reset": reset.SerializeToString(), "too-much": too_much.SerializeToString(),
    }
    for name, message in requests.items():
        write("controls", name, message)

    simple = interop.SimpleRequest(response_size=314, fill_username=True)
    simple.payload.body = b"\x00" * 271
    simple.response_status.code = 2
    simple.response_status.message = "interop"
    output = interop.StreamingOutputCallRequest()
    for size in (31415, 9, 2653):
        output.response_parameters.add(size=size, interval_us=100)
    output.response_status.code = 0
    streaming_input = interop.StreamingInputCallRequest()
    streaming_input.payload.body = b"\x00" * 2718

    # requests: every shape and protocol (see echo_fuzz::request for the format).
    def request(name, first, headers, body=b""):
        head = first + "\n" + "".join(h + "\n" for h in headers) + "\n"
        write("requests", name, head.encode() + body)

    grpc = ["content-type: application/grpc", "te: trailers"]
    request("grpc-echo", "h2 POST /echo.v1.EchoService/Echo", grpc, envelope(plain))
    request("grpc-echo-error", "h2 POST /echo.v1.EchoService/Echo", grpc + ["grpc-timeout: 5S"],
            envelope(requests["error"]))
    request("grpc-echo-metadata", "h2 POST /echo.v1.EchoService/Echo", grpc + ["x-trace: 1"],
            envelope(requests["metadata"]))
    request("grpc-echo-gzip", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["grpc-encoding: gzip", "grpc-accept-encoding: gzip"],
            envelope(gzip.compress(plain, mtime=0), 1))
    request("grpc-server-stream", "h2 POST /echo.v1.EchoService/ServerStream", grpc,
            envelope(requests["stream"]))
    request("grpc-client-stream", "h2 POST /echo.v1.EchoService/ClientStream", grpc,
            envelope(plain) + envelope(requests["metadata"]))
    request("grpc-bidi", "h2 POST /echo.v1.EchoService/BidiStream", grpc,
            envelope(plain) + envelope(requests["delayed"]))
    request("grpc-goaway", "h2 POST /echo.v1.EchoService/Echo", grpc, envelope(requests["goaway"]))
    request("grpc-reset", "h2 POST /echo.v1.EchoService/ServerStream", grpc,
            envelope(requests["reset"]))
    request("grpc-behavior", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["x-echo-behavior: delay=200ms:50%; error=UNAVAILABLE:10%",
                    "rpc-behavior: sleep-1,succeed-on-retry-attempt-1",
                    "grpc-previous-rpc-attempts: 1", "x-request-id: seed"],
            envelope(plain))
    request("grpc-reflect-wire", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["x-echo-reflect: wire", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "grpc-timeout: 3S", "user-agent: fuzz/1"],
            envelope(plain + b"\x48\x01"))
    request("connect-reflect-wire", "h1 POST /echo.v1.EchoService/Echo",
            ["content-type: application/json", "x-echo-reflect: wire", "connect-timeout-ms: 900"],
            json.dumps({"message": "w", "reflectWire": True}).encode())
    request("interop-empty", "h2 POST /grpc.testing.TestService/EmptyCall", grpc, envelope(b""))
    request("interop-unary", "h2 POST /grpc.testing.TestService/UnaryCall",
            grpc + ["x-user-ip: 1.2.3.4"], envelope(simple.SerializeToString()))
    request("interop-output", "h2 POST /grpc.testing.TestService/StreamingOutputCall", grpc,
            envelope(output.SerializeToString()))
    request("interop-input", "h2 POST /grpc.testing.TestService/StreamingInputCall", grpc,
            envelope(streaming_input.SerializeToString()) * 2)
    request("interop-full-duplex", "h2 POST /grpc.testing.TestService/FullDuplexCall", grpc,
            envelope(output.SerializeToString()))
    request("interop-unimplemented", "h2 POST /grpc.testing.TestService/UnimplementedCall", grpc,
            envelope(b""))
    request("example-unary", "h2 POST /grpc.examples.echo.Echo/UnaryEcho", grpc,
            envelope(b"\x0a\x02hi"))
    request("health-check", "h2 POST /grpc.health.v1.Health/Check", grpc, envelope(b""))
    request("reflection-list", "h2 POST /grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            grpc, envelope(b"\x3a\x00"))
    request("reflection-file", "h2 POST /grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            grpc, envelope(b"\x22\x13echo.v1.EchoService"))
    request("grpc-json", "h2 POST /echo.v1.EchoService/Echo",
            ["content-type: application/grpc+json", "te: trailers"],
            envelope(json.dumps({"message": "hi", "delay": "0.1s"}).encode()))
    request("grpc-web", "h1 POST /echo.v1.EchoService/Echo",
            ["content-type: application/grpc-web+proto", "x-grpc-web: 1"], envelope(plain))
    request("grpc-web-text", "h1 POST /echo.v1.EchoService/ServerStream",
            ["content-type: application/grpc-web-text", "accept: application/grpc-web-text"],
            b"@grpc-web-text\n" + envelope(requests["stream"]))
    request("grpc-web-json", "h2 POST /echo.v1.EchoService/Echo",
            ["content-type: application/grpc-web+json"],
            envelope(json.dumps({"message": "hi"}).encode()))
    request("connect-proto", "h1 POST /echo.v1.EchoService/Echo",
            ["content-type: application/proto", "connect-protocol-version: 1",
             "connect-timeout-ms: 5000"], plain)
    request("connect-json", "h1 POST /echo.v1.EchoService/Echo",
            ["content-type: application/json", "connect-protocol-version: 1"],
            json.dumps({"message": "hi", "error": {"code": "STATUS_CODE_NOT_FOUND"}}).encode())
    request("connect-json-gzip", "h2 POST /echo.v1.EchoService/Echo",
            ["content-type: application/json", "content-encoding: gzip",
             "accept-encoding: gzip"], gzip.compress(b'{"message":"zipped"}', mtime=0))
    query = base64.urlsafe_b64encode(plain).decode().rstrip("=")
    request("connect-get", "h1 GET /echo.v1.EchoService/Echo?connect=v1&encoding=proto&base64=1&message="
            + query, [])
    request("connect-get-json", "h1 GET /echo.v1.EchoService/Echo?connect=v1&encoding=json&message=%7B%22message%22%3A%22hi%22%7D",
            [])
    request("connect-stream", "h2 POST /echo.v1.EchoService/ServerStream",
            ["content-type: application/connect+json"],
            envelope(json.dumps({"message": "s", "stream": {"count": 2}}).encode()))
    request("connect-client-stream", "h1 POST /echo.v1.EchoService/ClientStream",
            ["content-type: application/connect+proto"], envelope(plain) + envelope(plain))
    request("cors-preflight", "h1 OPTIONS /echo.v1.EchoService/Echo",
            ["origin: http://page", "access-control-request-method: POST"])
    # Attack shapes of the abuse suite.
    request("attack-huge-length", "h2 POST /echo.v1.EchoService/Echo", grpc,
            struct.pack(">BI", 0, 0xFFFFFFF0) + b"\x0a")
    request("attack-gzip-bomb", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["grpc-encoding: gzip"], envelope(gzip.compress(b"\x0a\x00" * (8 << 20), mtime=0), 1))
    request("attack-compressed-without-encoding", "h2 POST /echo.v1.EchoService/Echo", grpc,
            envelope(plain, 1))
    request("attack-bad-timeout", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["grpc-timeout: 999999999999H"], envelope(plain))
    request("attack-many-headers", "h2 POST /echo.v1.EchoService/Echo",
            grpc + ["x-pad-%d: %s" % (i, "v" * 200) for i in range(60)], envelope(plain))
    request("attack-truncated", "h2 POST /echo.v1.EchoService/ClientStream", grpc,
            envelope(plain)[:-3])
    request("http1-get", "h1 GET /", [])

    write("grpc_timeout", "seconds", "1S")
    write("grpc_timeout", "millis", "100m")
    write("grpc_timeout", "max-hours", "99999999H")
    write("grpc_timeout", "nanos", "5n")

    write("framing", "split", b"\x00\x03" + envelope(plain) + envelope(b"") + envelope(plain)[:4])
    write("framing", "gzip", b"\x01" + gzip.compress(plain, mtime=0))
    write("framing", "gzip-bomb", b"\x01" + gzip.compress(b"\x00" * (16 << 20), mtime=0))
    zstd = b"\x28\xb5\x2f\xfd\x20\x05\x29\x00\x00hello"  # a zstd frame holding "hello"
    write("framing", "zstd", b"\x02" + zstd)
    write("framing", "envelopes", b"\x03" + envelope(plain) + envelope(b'{"error":{}}', 2))

    write("token_file", "tokens", "# tokens, one a line\nalpha\n\n   beta  \n#gamma\n")
    for name, args in {
        "delays": ["--max-delay", "10s", "--shutdown-grace", "0s"],
        "fault": ["--fault", "delay=1s:50%; error=UNAVAILABLE:10%", "--fault-seed", "7"],
        "limits": ["--max-message-size", "16", "--max-concurrent-streams", "1",
                   "--max-concurrent-calls", "1"],
        "budgets": ["--request-buffer-budget", "65536", "--connection-request-buffer-budget", "1024"],
        "http2": ["--keepalive-interval", "1ms", "--max-connection-age", "1s"],
    }.items():
        write("flags", name, "\n".join(args))
    write("behavior", "echo", "x-echo-behavior: delay=200ms:5%,2s:0.5%; error=UNAVAILABLE:10%,DEADLINE_EXCEEDED:1%")
    write("behavior", "rpc", "rpc-behavior: sleep-1,error-code-14,succeed-on-retry-attempt-2\ngrpc-previous-rpc-attempts: 1")
    write("behavior", "hostname", "rpc-behavior: hostname=fuzz keep-open, hostname=other error-code-3")
    write("behavior", "attempts", "x-echo-behavior: fail-attempts=2; error=ABORTED; message=try again; on=fuzz\nx-request-id: r1")

    write("json", "echo", 'echo.v1.EchoRequest\n{"message":"hi","payload":"AAEC","delay":"1.5s","responseSize":3,'
          '"error":{"code":"STATUS_CODE_ABORTED","details":{"a":"b"}},"stream":{"count":2,"interval":"0.01s"}}')
    write("json", "interop", 'grpc.testing.SimpleRequest\n{"responseType":"COMPRESSABLE","responseSize":1,'
          '"payload":{"body":"AA=="},"fillUsername":true,"responseCompressed":{"value":true}}')
    write("json", "reflection", 'grpc.reflection.v1.ServerReflectionRequest\n{"host":"h","listServices":""}')
    write("json", "proto", b"echo.v1.EchoRequest\n" + plain)

    write("template", "actions", '{"id":"{{.RequestNumber}}","w":{{.WorkerID}},"c":{{.ConnectionID}},"u":"{{.UUID}}"}')
    write("template", "times", "{{.Timestamp}} {{.TimestampUnix}} {{.TimestampUnixMilli}} {{.TimestampUnixNano}}")
    write("template", "random", "{{randomString 8}}-{{randomInt 1 10}}")

    error = json.dumps({"code": "unavailable", "message": "down", "details": [
        {"type": "google.rpc.ErrorInfo", "value": "CgZyZWFzb24SBmRvbWFpbg"}]})
    write("connect_answers", "error", b"\x00\x01\x2c" + error.encode())
    write("connect_answers", "error-not-json", b"\x00\x01\x9f<html>bad gateway</html>")
    end = json.dumps({"error": json.loads(error), "metadata": {"x-a": ["1", "2"], "x-b-bin": ["AAE"]}})
    write("connect_answers", "end-stream", b"\x01" + end.encode())
    write("connect_answers", "stream", b"\x02\x07" + envelope(plain) + envelope(b"{}", 2))
    write("connect_answers", "stream-error", b"\x02\x03" + envelope(plain) + envelope(end.encode(), 2))
    write("connect_answers", "stream-cut", b"\x02\x40" + envelope(plain)[:-1])

    write("connection", "http1-get", b"GET / HTTP/1.1\r\nhost: fuzz\r\n\r\n")
    write("connection", "ping", b"\x00" + b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678")


if __name__ == "__main__":
    main()
