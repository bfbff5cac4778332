"""The test-only acme.inventory.v1.Inventory service (tests/proto) in Python
grpcio, with grpcio-reflection, for the tests of `echo-client list, describe,
call` and `bench --call` against a server we did not write.

Usage: inventory_server.py [--no-reflection]. Listens on a free loopback port,
prints `listening PORT` once it serves; stops on SIGTERM/SIGINT.
"""

import os
import signal
import sys
import tempfile
import threading
from concurrent import futures
from importlib import resources

import grpc
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(os.path.dirname(HERE), "proto")
PROTO = "acme/inventory/v1/inventory.proto"


def load():
    out = tempfile.mkdtemp(prefix="grpc-echo-inventory-")
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out}",
            f"--grpc_python_out={out}", PROTO]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    sys.path.insert(0, out)
    from acme.inventory.v1 import inventory_pb2, inventory_pb2_grpc  # noqa: E402

    return inventory_pb2, inventory_pb2_grpc


inventory_pb2, inventory_pb2_grpc = load()


def listed_item(index):
    item = inventory_pb2.Item(
        sku=f"sku-{index}", quantity=-(2**40) - index, serial=2**63 + index, photo=bytes([index, 255]),
        condition=inventory_pb2.CONDITION_USED, tags=["a", f"t{index}"], cents=199 + index)
    item.stock_by_site["lon"] = index
    item.dimensions.width = 2.5
    item.added.seconds = 1_700_000_000 + index
    item.shelf_life.seconds = 86_400
    item.shelf_life.nanos = 500_000_000
    item.attributes.update({"colour": "red", "sizes": [1, 2], "fragile": True, "none": None})
    if index % 3 == 0:
        item.extra.Pack(inventory_pb2.Note(text=f"note {index}"))
    elif index % 3 == 1:
        # A well-known type that no file of the service imports.
        item.extra.Pack(wrappers_pb2.StringValue(value="packed"))
    else:
        # A type that neither the service's files nor the well-known types define.
        item.extra.type_url = "type.googleapis.com/acme.hidden.v1.Secret"
        item.extra.value = b"\x0a\x03abc"
    return item


class Inventory(inventory_pb2_grpc.InventoryServicer):
    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def PutItem(self, request, context):
        tag = dict(context.invocation_metadata()).get("x-tag", "")
        with self.lock:
            self.seen.append(f"{request.sku}|{tag}")
        return request

    def Seen(self, request, context):
        with self.lock:
            return inventory_pb2.Summary(items=len(self.seen), skus=self.seen)

    def GetItem(self, request, context):
        details = [
            error_details_pb2.ErrorInfo(reason="ITEM_MISSING", domain="inventory.acme.example",
                                        metadata={"sku": request.sku}),
            error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="sku", description="no such item")]),
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2)),
            error_details_pb2.ResourceInfo(resource_type="item", resource_name=request.sku,
                                           description="not in stock"),
            error_details_pb2.LocalizedMessage(locale="en-GB", message="No such item"),
        ]
        packed = []
        for detail in details:
            wrapper = any_pb2.Any()
            wrapper.Pack(detail)
            packed.append(wrapper)
        status = status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"no item {request.sku}",
                                   details=packed)
        context.abort_with_status(rpc_status.to_status(status))

    def ListItems(self, request, context):
        for index in range(request.count):
            yield listed_item(index)

    def AddItems(self, request_iterator, context):
        summary = inventory_pb2.Summary()
        for item in request_iterator:
            summary.items += 1
            summary.total_quantity += item.quantity
            summary.skus.append(item.sku)
        return summary

    def Exchange(self, request_iterator, context):
        for item in request_iterator:
            yield item


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    inventory_pb2_grpc.add_InventoryServicer_to_server(Inventory(), server)
    if "--no-reflection" not in sys.argv:
        names = (inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
