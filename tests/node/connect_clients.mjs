// Calls every echo.v1 RPC shape through each transport of the official
// Connect clients for Node (Connect in protobuf and JSON, gRPC, gRPC-Web),
// over HTTP/1.1 and HTTP/2, and prints one JSON object: for each transport,
// each case's outcome ("ok", or what went wrong). tests/it/protocols_clients.rs
// runs it against a real server and says which outcomes each cell must have.
//
// Usage: node connect_clients.mjs BASE_URL

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { EchoService, MetadataEcho, StatusCode } from "./gen/echo/v1/echo_pb.js";

const baseUrl = process.argv[2];
const compression = { sendCompression: compressionGzip, acceptCompression: [compressionGzip] };

const transports = {
  "connect http/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "connect http/2": createConnectTransport({ baseUrl, httpVersion: "2" }),
  "connect+json http/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "connect+json http/2": createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: false }),
  "connect GET http/1.1": createConnectTransport({ baseUrl, httpVersion: "1.1", useHttpGet: true }),
  "connect gzip http/2": createConnectTransport({ baseUrl, httpVersion: "2", ...compression }),
  "grpc http/2": createGrpcTransport({ baseUrl }),
  "grpc+json http/2": createGrpcTransport({ baseUrl, useBinaryFormat: false }),
  "grpc gzip http/2": createGrpcTransport({ baseUrl, ...compression }),
  "grpc-web http/1.1": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  "grpc-web http/2": createGrpcWebTransport({ baseUrl, httpVersion: "2" }),
  "grpc-web+json http/1.1": createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  "grpc-web gzip http/2": createGrpcWebTransport({ baseUrl, httpVersion: "2", ...compression }),
};

function check(condition, what) {
  if (!condition) throw new Error(what);
}

async function* requests(messages) {
  for (const message of messages) yield { message };
}

const cases = {
  // One message, the caller's metadata echoed in headers and trailers.
  async unary(client) {
    let header, trailer;
    const response = await client.echo(
      { message: "héllo", echoMetadata: MetadataEcho.BOTH },
      { headers: { "x-case": "unary" }, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    check(response.message === "héllo", `message ${JSON.stringify(response.message)}`);
    check(header?.get("x-case") === "unary", `echoed header ${header?.get("x-case")}`);
    check(trailer?.get("x-case") === "unary", `echoed trailer ${trailer?.get("x-case")}`);
  },
  // A 100 KB payload both ways (compressed where the transport compresses).
  async large(client) {
    const payload = new Uint8Array(100_000).fill(7);
    const response = await client.echo({ message: "big", payload });
    check(response.payload.length === 100_000, `payload of ${response.payload.length} bytes`);
  },
  // Five answers, in order.
  async server_stream(client) {
    const sequences = [];
    for await (const response of client.serverStream({ message: "s", stream: { count: 5 } })) {
      sequences.push(Number(response.sequence));
    }
    check(JSON.stringify(sequences) === "[0,1,2,3,4]", `sequences ${JSON.stringify(sequences)}`);
  },
  async client_stream(client) {
    const response = await client.clientStream(requests(["a", "b", "c"]));
    check(Number(response.count) === 3, `count ${response.count}`);
    check(response.messages.join() === "a,b,c", `messages ${response.messages}`);
  },
  async bidi_stream(client) {
    const messages = [];
    for await (const response of client.bidiStream(requests(["x", "y"]))) {
      messages.push(response.message);
    }
    check(messages.join() === "x,y", `messages ${messages}`);
  },
  // The code, message and google.rpc details the request asks for.
  async error(client) {
    try {
      await client.echo({
        message: "fail",
        error: { code: StatusCode.NOT_FOUND, message: "no such thing", details: { key: "value" } },
      });
    } catch (err) {
      const error = ConnectError.from(err);
      check(error.code === Code.NotFound, `code ${Code[error.code]}`);
      check(error.rawMessage === "no such thing", `message ${JSON.stringify(error.rawMessage)}`);
      const types = error.details.map((detail) => detail.type ?? detail.desc?.typeName);
      check(types.includes("google.rpc.ErrorInfo"), `details ${JSON.stringify(types)}`);
      return;
    }
    throw new Error("the call succeeded");
  },
  // A deadline shorter than the requested delay, kept by the client's own timer.
  async deadline(client) {
    const started = Date.now();
    try {
      await client.echo({ message: "slow", delay: { nanos: 900_000_000 } }, { timeoutMs: 150 });
    } catch (err) {
      const error = ConnectError.from(err);
      check(error.code === Code.DeadlineExceeded, `code ${Code[error.code]}: ${error.message}`);
      check(Date.now() - started < 850, `took ${Date.now() - started} ms`);
      return;
    }
    throw new Error("the call succeeded");
  },
  // The same deadline in the protocol's header alone, with no timer in the
  // client: only the server can end the call early, as the header asks.
  async serverDeadline(client, name) {
    const header = name.startsWith("connect") ? ["connect-timeout-ms", "150"] : ["grpc-timeout", "150m"];
    const started = Date.now();
    try {
      await client.echo({ message: "slow", delay: { nanos: 900_000_000 } }, { headers: [header] });
    } catch (err) {
      const error = ConnectError.from(err);
      check(error.code === Code.DeadlineExceeded, `code ${Code[error.code]}: ${error.message}`);
      check(Date.now() - started < 850, `took ${Date.now() - started} ms`);
      return;
    }
    throw new Error(`the call succeeded after ${Date.now() - started} ms: the server ignored ${header[0]}`);
  },
};

const results = {};
for (const [name, transport] of Object.entries(transports)) {
  const client = createClient(EchoService, transport);
  results[name] = {};
  for (const [caseName, run] of Object.entries(cases)) {
    try {
      await Promise.race([
        run(client, name),
        new Promise((_, reject) => setTimeout(() => reject(new Error("no answer in 10 s")), 10_000)),
      ]);
      results[name][caseName] = "ok";
    } catch (err) {
      const error = err instanceof ConnectError ? `${Code[err.code]}: ${err.rawMessage}` : String(err.message ?? err);
      results[name][caseName] = error;
    }
  }
}
console.log(JSON.stringify(results, null, 1));
process.exit(0);
