"""A test-only OTLP/gRPC trace receiver: the collector's TraceService, built
from the official opentelemetry-proto definitions with grpcio. Every span it
receives is appended to SPANS_FILE as one JSON line (its service, ids in hex,
parent, name, kind, status and attributes), for the tracing tests.

Usage: otlp_receiver.py SPANS_FILE. Listens on a free loopback port, prints
`listening PORT` once it serves; stops on SIGTERM/SIGINT.
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.lock = threading.Lock()
        self.spans = open(path, "a", encoding="utf-8")

    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = json.dumps({
                        "service": resource.get("service.name"),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": KINDS.get(span.kind, str(span.kind)),
                        "status": STATUS.get(span.status.code, str(span.status.code)),
                        "attributes": {a.key: value(a.value) for a in span.attributes},
                    })
                    with self.lock:
                        self.spans.write(line + "\n")
                        self.spans.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(sys.argv[1]), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
