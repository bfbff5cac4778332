// The console: any method the server serves, listed from its own
// descriptors (console/methods), called over Connect or gRPC-Web in JSON or
// binary. The server carries messages between JSON and protobuf
// (console/encode, console/decode), so the page needs no protobuf library.
// Uses app.js's helpers ($, frame, envelopes, text, unbase64, CODES,
// showOutcome); its own names stay inside this function, clear of app.js's
// globals.
"use strict";
(() => {

const HISTORY_KEY = "grpc-echo.console.history";
const HISTORY_LIMIT = 50;
const methods = new Map(); // "package.Service/Method" -> its shape, types and template

const shapeOf = (m) => m.clientStreaming ? (m.serverStreaming ? "bidi streaming" : "client streaming")
  : (m.serverStreaming ? "server streaming" : "unary");
const current = () => methods.get($("console-method").value);

async function loadMethods() {
  const listing = await (await fetch("console/methods")).json();
  const select = $("console-method");
  for (const service of listing.services) {
    const group = document.createElement("optgroup");
    group.label = service.name;
    for (const method of service.methods) {
      const key = `${service.name}/${method.name}`;
      methods.set(key, method);
      group.append(new Option(`${method.name} (${shapeOf(method)})`, key));
    }
    select.append(group);
  }
  $("console-count").textContent = `${listing.services.length} services, ${methods.size} methods`;
}

// Shows `key`'s form, its editor holding `data` (JSON text) or the method's template.
function choose(key, data) {
  const method = methods.get(key);
  if (!method) {
    showValidation(`this server serves no method ${key}`, false);
    return false;
  }
  $("console-method").value = key;
  $("console-shape").textContent = `${shapeOf(method)}: ${method.input} → ${method.output}` +
    (method.clientStreaming ? " (the request is a list of messages, sent in turn)" : "");
  let initial = data ?? JSON.stringify(method.clientStreaming ? [method.template] : method.template);
  try { initial = JSON.stringify(JSON.parse(initial), null, 2); } catch (_) { /* shown as typed; validation names the error */ }
  $("console-request").value = initial;
  validate();
  return true;
}

// The messages the editor holds: one object, or a list of them for a
// client-streaming or bidi method. Throws a readable Error.
function requestMessages(method) {
  let value;
  try {
    value = JSON.parse($("console-request").value);
  } catch (err) {
    throw new Error(`not JSON: ${err.message}`);
  }
  if (method.clientStreaming) {
    const list = Array.isArray(value) ? value : [value];
    if (list.some((m) => m === null || typeof m !== "object" || Array.isArray(m))) {
      throw new Error(`a list of ${method.input} objects is expected`);
    }
    return list;
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`a ${method.input} object is expected`);
  }
  return [value];
}

function showValidation(message, valid) {
  const box = $("console-validation");
  box.textContent = message;
  box.dataset.valid = String(valid);
  box.dataset.state = "done";
}

// Checks the editor as the person types: JSON at once, then the server's
// own parser (the one the call will meet) a moment after typing stops.
let validation = 0;
let validationTimer;
function validate() {
  const ticket = ++validation;
  const method = current();
  clearTimeout(validationTimer);
  if (!method) return;
  let messages;
  try {
    messages = requestMessages(method);
  } catch (err) {
    showValidation(err.message, false);
    return;
  }
  const box = $("console-validation");
  box.dataset.state = "checking";
  delete box.dataset.valid;
  box.textContent = "checking…";
  validationTimer = setTimeout(async () => {
    for (const [i, message] of messages.entries()) {
      const answer = await fetch(`console/encode?type=${method.input}`, {
        method: "POST", headers: { "content-type": "text/plain" }, body: JSON.stringify(message),
      });
      if (ticket !== validation) return;
      if (!answer.ok) {
        const where = messages.length > 1 ? `message ${i + 1}: ` : "";
        showValidation(where + (await answer.text()).trim(), false);
        return;
      }
    }
    if (ticket === validation) showValidation(`valid: ${messages.length} × ${method.input}`, true);
  }, 250);
}

// A message as the wire carries it: JSON text, or protobuf from the server's encoder.
async function encodeMessage(type, message, encoding) {
  const json = JSON.stringify(message);
  if (encoding === "json") return new TextEncoder().encode(json);
  const answer = await fetch(`console/encode?type=${type}`, { method: "POST", headers: { "content-type": "text/plain" }, body: json });
  if (!answer.ok) throw new Error((await answer.text()).trim());
  return new Uint8Array(await answer.arrayBuffer());
}

async function decodeMessage(type, bytes, encoding) {
  if (encoding === "json") return JSON.parse(text(bytes));
  const answer = await fetch(`console/decode?type=${type}`, {
    method: "POST", headers: { "content-type": "application/octet-stream" }, body: bytes,
  });
  if (!answer.ok) return { "(undecodable)": (await answer.text()).trim() };
  return answer.json();
}

// A google.rpc detail (type name and protobuf bytes) as JSON, when the server knows the type.
async function describeAny(type, bytes) {
  const json = await decodeMessage(type, bytes, "proto");
  return `${type} ${JSON.stringify(json)}`;
}

function metadataRows() {
  return [...document.querySelectorAll("#console-metadata .metadata-row")]
    .map((row) => [row.querySelector(".name").value.trim(), row.querySelector(".value").value])
    .filter(([name]) => name);
}

function addMetadataRow(name = "", value = "") {
  const row = document.createElement("div");
  row.className = "metadata-row pair";
  row.innerHTML = '<input class="name" placeholder="name"><span class="pair"><input class="value" placeholder="value"><button class="secondary remove" title="remove">×</button></span>';
  row.querySelector(".name").value = name;
  row.querySelector(".value").value = value;
  row.querySelector(".remove").addEventListener("click", () => row.remove());
  $("console-metadata").append(row);
}

// Connect: unary as one message (trailers as trailer- headers, errors as
// JSON); streams as envelopes ending with an end-of-stream message.
async function connectCall(path, method, bodies, options, answers) {
  const streaming = method.clientStreaming || method.serverStreaming;
  const subtype = options.encoding === "json" ? "json" : "proto";
  const headers = { ...options.headers, "connect-protocol-version": "1",
    "content-type": streaming ? `application/connect+${subtype}` : `application/${subtype}` };
  if (options.deadline) headers["connect-timeout-ms"] = String(options.deadline);
  const response = await fetch(path, { method: "POST", headers, body: streaming ? joined(bodies.map(frame)) : bodies[0] });
  answers.headers(response);
  const result = { trailers: [] };
  if (!streaming) {
    response.headers.forEach((v, k) => { if (k.startsWith("trailer-")) result.trailers.push(`${k.slice(8)}: ${v}`); });
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (response.ok) {
      await answers.message(bytes);
      return { ...result, code: "OK" };
    }
    return { ...result, ...await connectError(bytes.length ? JSON.parse(text(bytes)) : { code: "unknown", message: `HTTP ${response.status}` }) };
  }
  if (!response.ok) return { ...result, code: "UNKNOWN", message: `HTTP ${response.status}: ${(await response.text()).trim()}` };
  for await (const [flags, bytes] of envelopes(response.body)) {
    if (flags & 2) {
      const end = JSON.parse(text(bytes));
      for (const [k, values] of Object.entries(end.metadata || {})) result.trailers.push(`${k}: ${values.join(", ")}`);
      return end.error ? { ...result, ...await connectError(end.error) } : { ...result, code: "OK" };
    }
    await answers.message(bytes);
  }
  return { ...result, code: "UNKNOWN", message: "the stream ended without its end message" };
}

async function connectError(error) {
  const details = [];
  for (const detail of error.details || []) details.push(await describeAny(detail.type, unbase64(detail.value)));
  return { code: (error.code || "unknown").toUpperCase(), message: error.message || "", details };
}

// gRPC-Web: envelopes, then a trailers frame (flag 0x80), or trailers-only in the headers.
async function grpcWebCall(path, method, bodies, options, answers) {
  const headers = { ...options.headers, "x-grpc-web": "1",
    "content-type": options.encoding === "json" ? "application/grpc-web+json" : "application/grpc-web+proto" };
  if (options.deadline) headers["grpc-timeout"] = `${options.deadline}m`;
  const response = await fetch(path, { method: "POST", headers, body: joined(bodies.map(frame)) });
  answers.headers(response);
  const trailers = new Map();
  if (response.headers.has("grpc-status")) {
    response.headers.forEach((v, k) => trailers.set(k, v));
  } else if (!response.ok) {
    return { trailers: [], code: "UNKNOWN", message: `HTTP ${response.status}: ${(await response.text()).trim()}` };
  } else {
    for await (const [flags, bytes] of envelopes(response.body)) {
      if (!(flags & 0x80)) {
        await answers.message(bytes);
        continue;
      }
      for (const line of text(bytes).split("\r\n")) {
        const at = line.indexOf(":");
        if (at > 0) trailers.set(line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim());
      }
    }
  }
  const details = [];
  if (trailers.has("grpc-status-details-bin")) {
    const status = await decodeMessage("google.rpc.Status", unbase64(trailers.get("grpc-status-details-bin")), "proto");
    for (const { "@type": type, ...fields } of status.details || []) details.push(`${type.split("/").pop()} ${JSON.stringify(fields)}`);
  }
  return {
    trailers: [...trailers].filter(([k]) => !["grpc-status", "grpc-message", "grpc-status-details-bin"].includes(k)).map(([k, v]) => `${k}: ${v}`),
    code: CODES[Number(trailers.get("grpc-status") ?? 2)] || "UNKNOWN",
    message: decodeURIComponent(trailers.get("grpc-message") || ""),
    details,
  };
}

function joined(parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { all.set(part, at); at += part.length; }
  return all;
}

function formOptions() {
  return {
    protocol: $("console-protocol").value,
    encoding: $("console-encoding").value,
    deadline: Number($("console-deadline").value) || 0,
    metadata: metadataRows(),
  };
}

async function runCall() {
  const key = $("console-method").value;
  const method = methods.get(key);
  const status = $("console-status");
  const list = $("console-responses");
  for (const id of ["console-responses", "console-details"]) $(id).replaceChildren();
  for (const id of ["console-headers", "console-trailers"]) $(id).textContent = "";
  status.className = "";
  status.removeAttribute("data-code");
  status.dataset.state = "running";
  status.textContent = "calling…";
  const options = formOptions();
  options.headers = Object.fromEntries(options.metadata);
  const started = performance.now();
  const timing = {};
  const mark = (name) => { timing[name] ??= performance.now() - started; };
  const answers = {
    headers(response) {
      mark("headers");
      const lines = [`HTTP ${response.status}`];
      response.headers.forEach((v, k) => { if (!k.startsWith("trailer-")) lines.push(`${k}: ${v}`); });
      $("console-headers").textContent = lines.join("\n");
    },
    async message(bytes) {
      mark("first message");
      const item = document.createElement("li");
      item.textContent = JSON.stringify(await decodeMessage(method.output, bytes, options.encoding));
      list.append(item);
      timing["last message"] = performance.now() - started;
    },
  };
  let result;
  try {
    const messages = requestMessages(method);
    const bodies = [];
    for (const message of messages) bodies.push(await encodeMessage(method.input, message, options.encoding));
    const call = options.protocol === "grpc-web" ? grpcWebCall : connectCall;
    result = await call(`/${key}`, method, bodies, options, answers);
  } catch (err) {
    result = { code: "UNAVAILABLE", message: err.message || String(err), trailers: [] };
  }
  timing.total = performance.now() - started;
  showOutcome(status, $("console-details"), result);
  $("console-trailers").textContent = result.trailers.join("\n") || "(none)";
  $("console-timing").textContent = Object.entries(timing).map(([name, ms]) => `${name} ${ms.toFixed(1)} ms`).join(" · ") +
    ` · ${list.children.length} message(s) over ${options.protocol} (${options.encoding})`;
  remember({ call: key, data: $("console-request").value, ...options, headers: undefined, code: result.code, at: Date.now() });
  status.dataset.state = "done";
}

// A URL that opens this form filled in: #call=SERVICE/METHOD&data=JSON[&protocol=..][&encoding=..].
function linkTo(entry) {
  const params = new URLSearchParams({ call: entry.call });
  let data = entry.data;
  try { data = JSON.stringify(JSON.parse(data)); } catch (_) { /* kept as typed */ }
  params.set("data", data);
  if (entry.protocol && entry.protocol !== "connect") params.set("protocol", entry.protocol);
  if (entry.encoding && entry.encoding !== "json") params.set("encoding", entry.encoding);
  if (entry.deadline) params.set("deadline", String(entry.deadline));
  return `${location.pathname}#${params.toString().replace(/\+/g, "%20")}`;
}

function restore(entry) {
  if (entry.protocol) $("console-protocol").value = entry.protocol;
  if (entry.encoding) $("console-encoding").value = entry.encoding;
  $("console-deadline").value = entry.deadline || "";
  $("console-metadata").replaceChildren();
  for (const [name, value] of entry.metadata || []) addMetadataRow(name, value);
  return choose(entry.call, entry.data);
}

function savedCalls() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch (_) { return []; }
}

function remember(entry) {
  const entries = [entry, ...savedCalls()].slice(0, HISTORY_LIMIT);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(entries));
  showHistory();
}

function showHistory() {
  const list = $("console-history");
  list.replaceChildren(...savedCalls().map((entry) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = linkTo(entry);
    link.textContent = `${entry.code} ${entry.call} (${entry.protocol}, ${entry.encoding}) ${new Date(entry.at).toLocaleTimeString()}`;
    link.addEventListener("click", (event) => { event.preventDefault(); restore(entry); });
    item.append(link);
    return item;
  }));
}

// Opens the call a deep link names, and runs it when the link says `run`.
function openLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (!params.has("call")) return;
  const entry = { call: params.get("call"), data: params.get("data") ?? undefined, protocol: params.get("protocol") || "connect",
    encoding: params.get("encoding") || "json", deadline: Number(params.get("deadline")) || 0, metadata: [] };
  if (restore(entry) && params.has("run")) runCall();
}

$("console-method").addEventListener("change", () => choose($("console-method").value));
$("console-request").addEventListener("input", validate);
$("console-add-metadata").addEventListener("click", () => addMetadataRow());
$("console-run").addEventListener("click", runCall);
$("console-link-button").addEventListener("click", () => {
  const link = linkTo({ call: $("console-method").value, data: $("console-request").value, ...formOptions() });
  history.replaceState(null, "", link);
  $("console-link").href = link;
  $("console-link").textContent = location.href;
});
window.addEventListener("hashchange", openLink);
loadMethods().then(() => {
  showHistory();
  if (location.hash.includes("call=")) openLink();
  else choose($("console-method").options[0]?.value);
});
})();
