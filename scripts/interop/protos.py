"""Compiles proto/grpc/testing/*.proto with grpcio-tools and imports the modules.

Shared by the Python interop server and client, which are written from the gRPC
interop test descriptions as an independent second implementation.
"""

import os
import tempfile

from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
FILES = ["grpc/testing/empty.proto", "grpc/testing/messages.proto", "grpc/testing/test.proto"]


def load():
    """Returns the (empty_pb2, messages_pb2, test_pb2, test_pb2_grpc) modules."""
    out = tempfile.mkdtemp(prefix="grpc-echo-interop-")
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", *FILES]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + ", ".join(FILES))
    # The generated modules live in the package grpc.testing, and grpcio owns
    # the package grpc: let it find the generated subpackage too.
    import grpc

    grpc.__path__.append(os.path.join(out, "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2, test_pb2_grpc  # noqa: E402

    return empty_pb2, messages_pb2, test_pb2, test_pb2_grpc
