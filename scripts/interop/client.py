"""A grpc.testing.TestService client in Python grpcio, written from the gRPC
interop test descriptions, to test the Rust server with an independent
implementation.

Usage: client.py HOST:PORT CASE[,CASE...]   Prints PASS/FAIL per case and a
closing `N passed, M failed`; exits 1 on any failure.
"""

import sys

import grpc

import protos

empty_pb2, messages_pb2, test_pb2, test_pb2_grpc = protos.load()


def payload(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


def check_payload(response, size):
    body = response.payload.body
    assert len(body) == size, f"payload of {len(body)} bytes, expected {size}"
    assert body == b"\0" * size, "payload is not all zeros"


def large_unary(stub):
    request = messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE, response_size=314159, payload=payload(271828)
    )
    check_payload(stub.UnaryCall(request, timeout=10), 314159)


def server_streaming(stub):
    sizes = [31415, 9, 2653, 58979]
    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=s) for s in sizes],
    )
    responses = list(stub.StreamingOutputCall(request, timeout=10))
    assert [len(r.payload.body) for r in responses] == sizes, "wrong response sizes"
    for response, size in zip(responses, sizes):
        check_payload(response, size)


class Requests:
    """A request iterator the test feeds one message at a time."""

    def __init__(self):
        import queue

        self.queue = queue.Queue()

    def send(self, request):
        self.queue.put(request)

    def close(self):
        self.queue.put(None)

    def __iter__(self):
        return self

    def __next__(self):
        request = self.queue.get()
        if request is None:
            raise StopIteration
        return request


def ping_pong(stub):
    exchanges = [(27182, 31415), (8, 9), (1828, 2653), (45904, 58979)]
    requests = Requests()
    responses = stub.FullDuplexCall(requests, timeout=10)
    for request_size, response_size in exchanges:
        requests.send(
            messages_pb2.StreamingOutputCallRequest(
                response_type=messages_pb2.COMPRESSABLE,
                response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                payload=payload(request_size),
            )
        )
        check_payload(next(responses), response_size)
    requests.close()
    assert next(responses, None) is None, "a response after half-close"


INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")


def check_echoed(initial, trailing):
    assert INITIAL in list(initial), f"initial metadata {initial}"
    assert TRAILING in list(trailing), f"trailing metadata {trailing}"


def custom_metadata(stub):
    metadata = [INITIAL, TRAILING]
    request = messages_pb2.SimpleRequest(
        response_type=messages_pb2.COMPRESSABLE, response_size=314159, payload=payload(271828)
    )
    response, call = stub.UnaryCall.with_call(request, metadata=metadata, timeout=10)
    check_payload(response, 314159)
    check_echoed(call.initial_metadata(), call.trailing_metadata())

    request = messages_pb2.StreamingOutputCallRequest(
        response_type=messages_pb2.COMPRESSABLE,
        response_parameters=[messages_pb2.ResponseParameters(size=314159)],
        payload=payload(271828),
    )
    call = stub.FullDuplexCall(iter([request]), metadata=metadata, timeout=10)
    responses = list(call)
    assert len(responses) == 1, f"{len(responses)} responses"
    check_payload(responses[0], 314159)
    check_echoed(call.initial_metadata(), call.trailing_metadata())


CASES = {f.__name__: f for f in (large_unary, server_streaming, ping_pong, custom_metadata)}


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    target, cases = sys.argv[1], sys.argv[2].split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    stub = test_pb2_grpc.TestServiceStub(grpc.insecure_channel(target))
    passed = failed = 0
    for case in cases:
        try:
            CASES[case](stub)
            passed += 1
            print(f"PASS {case}", flush=True)
        except (AssertionError, grpc.RpcError, StopIteration) as err:
            failed += 1
            print(f"FAIL {case}: {err!r}", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
