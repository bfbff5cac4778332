// The page's calls: Connect and gRPC-Web, both with JSON messages, spoken
// with fetch alone (no framework, nothing from a CDN). console.js, loaded
// after it, shares its framing and decoding helpers.
"use strict";

const SERVICE = "/echo.v1.EchoService/";
const $ = (id) => document.getElementById(id);

// One message in an envelope: flags, big-endian length, bytes.
function frame(bytes) {
  const framed = new Uint8Array(5 + bytes.length);
  new DataView(framed.buffer).setUint32(1, bytes.length);
  framed.set(bytes, 5);
  return framed;
}

const envelope = (json) => frame(new TextEncoder().encode(JSON.stringify(json)));

// Yields [flags, bytes] for each envelope of a streamed response body.
async function* envelopes(body) {
  const reader = body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
      if (buffer.length < 5 + length) break;
      yield [buffer[0], buffer.slice(5, 5 + length)];
      buffer = buffer.slice(5 + length);
    }
    const { done, value } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
  }
}

const text = (bytes) => new TextDecoder().decode(bytes);

function request(stream) {
  const message = { message: $("message").value, echoMetadata: $("echo-metadata").value };
  const delay = Number($("delay-ms").value);
  if (delay > 0) message.delay = `${delay / 1000}s`;
  if ($("response-size").value !== "") message.responseSize = Number($("response-size").value);
  if ($("error-code").value) {
    message.error = { code: `STATUS_CODE_${$("error-code").value}`, message: $("error-message").value };
    if ($("detail-key").value) message.error.details = { [$("detail-key").value]: $("detail-value").value };
  }
  if (stream) {
    message.stream = { count: Number($("stream-count").value), interval: `${Number($("stream-interval-ms").value) / 1000}s` };
  }
  return message;
}

function headers(contentType) {
  const h = { "content-type": contentType };
  if ($("metadata-name").value) h[$("metadata-name").value] = $("metadata-value").value;
  return h;
}

// Reads a protobuf message's fields: [number, wire type, value] (varint or bytes).
function fields(bytes) {
  const out = [];
  let i = 0;
  const varint = () => {
    let value = 0, shift = 0, b;
    do { b = bytes[i++]; value += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
    return value;
  };
  while (i < bytes.length) {
    const key = varint();
    const wire = key & 7;
    if (wire === 0) out.push([Math.floor(key / 8), wire, varint()]);
    else if (wire === 2) { const n = varint(); out.push([Math.floor(key / 8), wire, bytes.slice(i, i + n)]); i += n; }
    else break;
  }
  return out;
}

const unbase64 = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(s.length / 4) * 4, "=")), (c) => c.charCodeAt(0));

// A google.rpc detail as text: ErrorInfo's reason, domain and metadata; other types by name.
function describeDetail(type, value) {
  if (type !== "google.rpc.ErrorInfo") return type;
  const parts = [];
  for (const [number, , v] of fields(value)) {
    if (number === 1) parts.push(`reason=${text(v)}`);
    if (number === 2) parts.push(`domain=${text(v)}`);
    if (number === 3) {
      const entry = Object.fromEntries(fields(v).map(([n, , x]) => [n, text(x)]));
      parts.push(`${entry[1]}=${entry[2]}`);
    }
  }
  return `${type}: ${parts.join(", ")}`;
}

// gRPC's grpc-status-details-bin: a google.rpc.Status whose details are Any.
function grpcDetails(value) {
  if (!value) return [];
  return fields(unbase64(value)).filter(([n]) => n === 3).map(([, , any]) => {
    const f = Object.fromEntries(fields(any).map(([n, , v]) => [n, v]));
    return describeDetail(text(f[1] || new Uint8Array()).split("/").pop(), f[2] || new Uint8Array());
  });
}

const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
  "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

// Connect: unary as plain JSON, streams as enveloped JSON with an end-of-stream message.
async function callConnect(method, stream, show) {
  const echoed = [];
  const response = await fetch(SERVICE + method, {
    method: "POST",
    headers: { ...headers(stream ? "application/connect+json" : "application/json"), "connect-protocol-version": "1" },
    body: stream ? envelope(request(true)) : JSON.stringify(request(false)),
  });
  response.headers.forEach((v, k) => echoed.push(`${k}: ${v}`));
  if (!stream) {
    const body = await response.json();
    if (response.ok) { show.message(body); return { code: "OK", echoed }; }
    return connectError(body, echoed);
  }
  for await (const [flags, bytes] of envelopes(response.body)) {
    const json = JSON.parse(text(bytes));
    if (flags & 2) {
      for (const [k, values] of Object.entries(json.metadata || {})) echoed.push(`${k}: ${values.join(", ")} (trailer)`);
      return json.error ? connectError(json.error, echoed) : { code: "OK", echoed };
    }
    show.message(json);
  }
  return { code: "UNKNOWN", message: "the stream ended without its end message", echoed };
}

function connectError(error, echoed) {
  return {
    code: (error.code || "unknown").toUpperCase(),
    message: error.message || "",
    details: (error.details || []).map((d) => describeDetail(d.type, unbase64(d.value))),
    echoed,
  };
}

// gRPC-Web: enveloped JSON messages, then a trailers frame (flag 0x80).
async function callGrpcWeb(method, stream, show) {
  const echoed = [];
  const response = await fetch(SERVICE + method, {
    method: "POST",
    headers: { ...headers("application/grpc-web+json"), "x-grpc-web": "1" },
    body: envelope(request(stream)),
  });
  response.headers.forEach((v, k) => echoed.push(`${k}: ${v}`));
  let trailers = new Map();
  if (response.headers.has("grpc-status")) {
    response.headers.forEach((v, k) => trailers.set(k, v));
  } else {
    for await (const [flags, bytes] of envelopes(response.body)) {
      if (flags & 0x80) {
        for (const line of text(bytes).split("\r\n")) {
          const at = line.indexOf(":");
          if (at > 0) {
            const [k, v] = [line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim()];
            trailers.set(k, v);
            if (!k.startsWith("grpc-")) echoed.push(`${k}: ${v} (trailer)`);
          }
        }
      } else {
        show.message(JSON.parse(text(bytes)));
      }
    }
  }
  const code = CODES[Number(trailers.get("grpc-status") ?? 2)] || "UNKNOWN";
  return {
    code,
    message: decodeURIComponent(trailers.get("grpc-message") || ""),
    details: grpcDetails(trailers.get("grpc-status-details-bin")),
    echoed,
  };
}

// A call's outcome: its status (code and message, marked failed unless OK)
// and each error detail. The console shows its calls' the same way.
function showOutcome(status, details, result) {
  status.textContent = result.code + (result.message ? `: ${result.message}` : "");
  status.dataset.code = result.code;
  status.className = result.code === "OK" ? "" : "failed";
  for (const detail of result.details || []) {
    const pre = document.createElement("pre");
    pre.className = "detail";
    pre.textContent = detail;
    details.append(pre);
  }
}

async function run(method, stream) {
  const status = $("status");
  const list = $("responses");
  list.replaceChildren();
  $("details").replaceChildren();
  status.textContent = "calling…";
  status.className = "";
  status.removeAttribute("data-code");
  status.dataset.state = "running";
  const started = performance.now();
  const show = {
    message(json) {
      const item = document.createElement("li");
      item.textContent = JSON.stringify(json);
      list.append(item);
      $("latency").textContent = `first answer after ${(performance.now() - started).toFixed(1)} ms`;
    },
  };
  let result;
  try {
    const call = $("protocol").value === "grpc-web" ? callGrpcWeb : callConnect;
    result = await call(method, stream, show);
  } catch (err) {
    result = { code: "UNAVAILABLE", message: String(err), echoed: [] };
  }
  showOutcome(status, $("details"), result);
  $("echoed-headers").textContent = result.echoed.filter((h) => h.startsWith($("metadata-name").value || "\0") || h.includes("(trailer)")).join("\n") || "(none)";
  $("latency").textContent = `${list.children.length} answer(s) in ${(performance.now() - started).toFixed(1)} ms over ${$("protocol").value}`;
  status.dataset.state = "done";
}

async function refreshStats() {
  try {
    const stats = await (await fetch("stats")).json();
    $("stat-connections").textContent = stats.open_connections;
    $("stat-calls").textContent = stats.in_flight_calls;
    $("stat-streams").textContent = stats.open_streams;
    $("stat-messages").textContent = stats.stream_messages_sent;
  } catch (_) { /* the server may be restarting; try again next tick */ }
}

$("unary").addEventListener("click", () => run("Echo", false));
$("server-stream").addEventListener("click", () => run("ServerStream", true));
refreshStats();
setInterval(refreshStats, 1000);
