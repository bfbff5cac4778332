// The test-only acme.inventory.v1.Inventory service (tests/proto) in Node
// @grpc/grpc-js with @grpc/reflection, for the tests of `echo-client list,
// describe, call` and `bench --call` against a server we did not write.
//
// Usage: node inventory_server.mjs PROTO_DIR. Listens on a free loopback
// port, prints `listening PORT` once it serves.

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import protobuf from "protobufjs";

const [protoDir] = process.argv.slice(2);
const definition = protoLoader.loadSync("acme/inventory/v1/inventory.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  oneofs: true,
});
const inventory = grpc.loadPackageDefinition(definition).acme.inventory.v1.Inventory;

// google.rpc.Status with one ErrorInfo, encoded for grpc-status-details-bin.
const rpc = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
`, { keepCase: true }).root;

function notFound(sku) {
  const info = rpc.lookupType("google.rpc.ErrorInfo");
  const status = rpc.lookupType("google.rpc.Status");
  const details = status.encode({
    code: grpc.status.NOT_FOUND,
    message: `no item ${sku}`,
    details: [{
      type_url: "type.googleapis.com/google.rpc.ErrorInfo",
      value: info.encode({ reason: "ITEM_MISSING", domain: "inventory.acme.example", metadata: { sku } }).finish(),
    }],
  }).finish();
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(details));
  return { code: grpc.status.NOT_FOUND, details: `no item ${sku}`, metadata };
}

function listedItem(index) {
  return {
    sku: `sku-${index}`,
    quantity: String(-(2 ** 40) - index),
    photo: Buffer.from([index, 255]),
    condition: "CONDITION_USED",
    tags: ["a", `t${index}`],
    stock_by_site: { lon: index },
    cents: String(199 + index),
    dimensions: { width: 2.5 },
    added: { seconds: String(1_700_000_000 + index), nanos: 0 },
  };
}

const server = new grpc.Server();
const seen = [];
server.addService(inventory.service, {
  PutItem: (call, callback) => {
    seen.push(`${call.request.sku}|${call.metadata.get("x-tag")[0] ?? ""}`);
    callback(null, call.request);
  },
  Seen: (call, callback) => callback(null, { items: seen.length, skus: seen }),
  GetItem: (call, callback) => callback(notFound(call.request.sku)),
  ListItems: (call) => {
    for (let index = 0; index < call.request.count; index++) call.write(listedItem(index));
    call.end();
  },
  AddItems: (call, callback) => {
    const summary = { items: 0, total_quantity: 0n, skus: [] };
    call.on("data", (item) => {
      summary.items += 1;
      summary.total_quantity += BigInt(item.quantity);
      summary.skus.push(item.sku);
    });
    call.on("end", () => callback(null, { ...summary, total_quantity: String(summary.total_quantity) }));
  },
  Exchange: (call) => {
    call.on("data", (item) => call.write(item));
    call.on("end", () => call.end());
  },
});
new ReflectionService(definition).addToServer(server);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});
