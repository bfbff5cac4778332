"""A grpc.testing.TestService server in Python grpcio, written from the gRPC
interop test descriptions, as an independent implementation to test
`echo-client interop` against.

It does not implement the CompressedRequest feature (`expect_compressed`):
grpcio tells a handler neither the message's compressed flag nor the call's
grpc-encoding, so the client_compressed_* cases do not apply to it.

Usage: server.py [PORT]   (0 or nothing: any free port). Prints `listening PORT`
once it serves; stops on SIGTERM/SIGINT.
"""

import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import protos

empty_pb2, messages_pb2, test_pb2, test_pb2_grpc = protos.load()

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def echo_metadata(context):
    """Echoes the interop metadata keys: initial as a header, trailing-bin as a trailer."""
    metadata = context.invocation_metadata()
    initial = [(k, v) for k, v in metadata if k == ECHO_INITIAL]
    trailing = [(k, v) for k, v in metadata if k == ECHO_TRAILING]
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def payload(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


def end_with_status(status, context):
    """Sets the status a request asked for; returns whether it was an error."""
    if status.code == 0:
        return False
    context.set_code(next(c for c in grpc.StatusCode if c.value[0] == status.code))
    context.set_details(status.message)
    return True


class TestService(test_pb2_grpc.TestServiceServicer):
    def EmptyCall(self, request, context):
        echo_metadata(context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        if end_with_status(request.response_status, context):
            return messages_pb2.SimpleResponse()
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        else:
            context.set_compression(grpc.Compression.NoCompression)
        return messages_pb2.SimpleResponse(payload=payload(request.response_size))

    def CacheableUnaryCall(self, request, context):
        context.send_initial_metadata([("cache-control", "max-age=60")])
        return self.UnaryCall(request, context)

    def _answer(self, requests, context):
        context.set_compression(grpc.Compression.Gzip)
        for request in requests:
            for parameters in request.response_parameters:
                if parameters.interval_us:
                    time.sleep(parameters.interval_us / 1e6)
                if not parameters.compressed.value:
                    context.disable_next_message_compression()
                yield messages_pb2.StreamingOutputCallResponse(payload=payload(parameters.size))
            if end_with_status(request.response_status, context):
                return

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        yield from self._answer([request], context)

    def StreamingInputCall(self, request_iterator, context):
        echo_metadata(context)
        total = 0
        for request in request_iterator:
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        yield from self._answer(request_iterator, context)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        yield from self._answer(list(request_iterator), context)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"listening {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
