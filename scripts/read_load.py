"""Reads what a server tells load balancers, with Envoy's and gRPC's own
protos (PyPI xds-protos, grpcio-channelz), and prints it as JSON: the tests'
independent decoder of ORCA load reports and channelz.

    read_load.py trailer BASE64            one endpoint-load-metrics-bin value
    read_load.py stream ADDR INTERVAL_MS N N reports of OpenRcaService
    read_load.py channelz ADDR [TOKEN]     the servers and their sockets
"""

import base64
import json
import os
import sys

import grpc
from google.protobuf import duration_pb2, json_format
from grpc_channelz.v1 import channelz_pb2, channelz_pb2_grpc

# Envoy's protos, installed apart (scripts/test.sh says why); last on the
# path and after the imports above, so that nothing else they ship (their
# own `google` package among them) shadows an installed one.
sys.path.append(os.environ["ECHO_TEST_XDS_PROTOS"])
from xds.data.orca.v3 import orca_load_report_pb2  # noqa: E402
from xds.service.orca.v3 import orca_pb2  # noqa: E402

STREAM_CORE_METRICS = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"


def as_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def trailer(value):
    padded = value + "=" * (-len(value) % 4)
    report = orca_load_report_pb2.OrcaLoadReport.FromString(base64.b64decode(padded))
    print(json.dumps(as_json(report), sort_keys=True))


def stream(addr, interval_ms, count):
    with grpc.insecure_channel(addr) as channel:
        call = channel.unary_stream(
            STREAM_CORE_METRICS,
            request_serializer=orca_pb2.OrcaLoadReportRequest.SerializeToString,
            response_deserializer=orca_load_report_pb2.OrcaLoadReport.FromString,
        )
        interval = duration_pb2.Duration()
        interval.FromMilliseconds(int(interval_ms))
        reports = call(orca_pb2.OrcaLoadReportRequest(report_interval=interval))
        for _, report in zip(range(int(count)), reports):
            print(json.dumps(as_json(report), sort_keys=True), flush=True)
        reports.cancel()


def channelz(addr, token=None):
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(addr) as channel:
        stub = channelz_pb2_grpc.ChannelzStub(channel)
        servers = stub.GetServers(channelz_pb2.GetServersRequest(), metadata=metadata)
        result = []
        for server in servers.server:
            sockets = stub.GetServerSockets(
                channelz_pb2.GetServerSocketsRequest(server_id=server.ref.server_id),
                metadata=metadata,
            )
            result.append(
                {
                    "server": as_json(server),
                    "sockets": [
                        as_json(
                            stub.GetSocket(
                                channelz_pb2.GetSocketRequest(socket_id=ref.socket_id),
                                metadata=metadata,
                            ).socket
                        )
                        for ref in sockets.socket_ref
                    ],
                }
            )
        print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"trailer": trailer, "stream": stream, "channelz": channelz}[command](*args)
