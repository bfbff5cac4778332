//! `echo-client list`, `describe` and `call` against servers we did not write:
//! a Python grpcio server (with grpcio-reflection) of a service defined only
//! here (`tests/proto/acme/inventory/v1/inventory.proto`), its JSON compared
//! with grpcurl's for the same calls. Needs grpcurl and Python grpcio
//! (`scripts/test.sh` installs them).

use std::process::{Command, Output};

use echo_tests::process::{
    COMMAND_TIMEOUT, ScriptServer, echo_client, echo_client_with_stdin, grpcurl, output_within,
    python, workspace_root,
};
use serde_json::{Value, json};

const SERVICE: &str = "acme.inventory.v1.Inventory";

/// An item with every kind of field: 64-bit integers, bytes, an enum by name,
/// a repeated field, a map, a oneof, a nested message and the well-known
/// Timestamp, Duration, Struct and Any (resolved through the descriptors).
const ITEM: &str = r#"{"sku":"s-1","quantity":"-1099511627776","serial":"18446744073709551615",
 "photo":"AP8=","condition":"CONDITION_NEW","tags":["x","y"],"stockBySite":{"lon":3,"par":-1},
 "freeText":"ask","dimensions":{"width":2.5,"height":1},"added":"2024-02-29T12:00:00Z",
 "shelfLife":"1.500s","attributes":{"colour":"red","n":[1,2.5,null,true]},
 "extra":{"@type":"type.googleapis.com/acme.inventory.v1.Note","text":"hello"}}"#;

fn inventory_server(args: &[&str]) -> ScriptServer {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/servers/inventory_server.py"))
        .args(args);
    ScriptServer::start(command)
}

fn proto_dir() -> String {
    workspace_root().join("tests/proto").display().to_string()
}

/// Every JSON value `bytes` holds, one after another, numbers as f64 (one
/// tool prints `1`, the other `1.0`: the same proto3 JSON value).
fn json_values(bytes: &[u8]) -> Vec<Value> {
    fn normalize(value: Value) -> Value {
        match value {
            Value::Number(number) => json!(number.as_f64().unwrap()),
            Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
            Value::Object(fields) => fields
                .into_iter()
                .map(|(key, value)| (key, normalize(value)))
                .collect(),
            other => other,
        }
    }
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .map(|value| {
            normalize(value.unwrap_or_else(|err| {
                panic!("not JSON ({err}): {}", String::from_utf8_lossy(bytes))
            }))
        })
        .collect()
}

fn succeeded(output: &Output) -> &[u8] {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    &output.stdout
}

/// grpcurl with `flags` (e.g. its own `-proto`) before the address.
fn grpcurl_call_with(flags: &[&str], addr: &str, method: &str, data: &str) -> Output {
    let mut command = Command::new(grpcurl());
    command.args(["-plaintext", "-max-time", "10"]).args(flags);
    command.args(["-d", "@", addr, method]);
    output_within(command, data.as_bytes(), COMMAND_TIMEOUT)
}

fn ours_call(addr: &str, method: &str, data: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--addr", addr, "call", method, "-d", "@-"];
    args.extend_from_slice(extra);
    echo_client_with_stdin(&args, data)
}

/// Calls each method of the service with echo-client (`ours` flags) and
/// grpcurl (`theirs`), and checks that they print the same JSON values.
fn assert_every_shape_as_grpcurl(addr: &str, ours: &[&str], theirs: &[&str]) {
    let two_items = r#"{"sku":"a","quantity":"2"} {"sku":"b","quantity":"3","tags":["t"]}"#;
    let newline_items = "{\"sku\":\"a\"}\n{\"sku\":\"b\",\"cents\":\"5\"}\n";
    for (method, data) in [
        ("PutItem", ITEM),
        ("ListItems", r#"{"count":3}"#),
        ("AddItems", two_items),
        ("Exchange", newline_items),
    ] {
        let method = format!("{SERVICE}/{method}");
        let (ours, theirs) = (
            ours_call(addr, &method, data, ours),
            grpcurl_call_with(theirs, addr, &method, data),
        );
        let (ours, theirs) = (
            json_values(succeeded(&ours)),
            json_values(succeeded(&theirs)),
        );
        assert!(!ours.is_empty(), "{method}: no answer");
        assert_eq!(ours, theirs, "{method}");
    }
}

/// GetItem for `sku` fails: NOT_FOUND, exiting as grpcurl does. Its stderr.
fn assert_failure_as_grpcurl(addr: &str, theirs: &[&str], sku: &str) -> String {
    let get = format!("{SERVICE}/GetItem");
    let data = json!({ "sku": sku }).to_string();
    let ours = ours_call(addr, &get, &data, &[]);
    let theirs = grpcurl_call_with(theirs, addr, &get, &data);
    assert_eq!(ours.status.code(), Some(64 + 5));
    assert_eq!(ours.status.code(), theirs.status.code());
    String::from_utf8_lossy(&ours.stderr).into_owned()
}

#[test]
fn lists_describes_and_calls_a_python_grpcio_service_as_grpcurl_does() {
    let server = inventory_server(&[]);
    let addr = server.addr();

    // grpcio serves reflection v1alpha only: the fallback is exercised.
    let services = echo_client(&["--addr", &addr, "list"]);
    let services = String::from_utf8_lossy(succeeded(&services)).into_owned();
    assert!(services.lines().any(|line| line == SERVICE), "{services}");
    let methods = echo_client(&["--addr", &addr, "list", SERVICE]);
    let methods: Vec<String> = String::from_utf8_lossy(succeeded(&methods))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        methods,
        [
            "AddItems",
            "Exchange",
            "GetItem",
            "ListItems",
            "PutItem",
            "Seen"
        ]
        .map(|m| format!("{SERVICE}.{m}"))
    );
    let item = echo_client(&["--addr", &addr, "describe", "acme.inventory.v1.Item"]);
    let item = String::from_utf8_lossy(succeeded(&item)).into_owned();
    for line in [
        "acme.inventory.v1.Item is a message:",
        "  map<string, int32> stock_by_site = 7;",
        "  oneof price {",
        "    string free_text = 9;",
        "  .google.protobuf.Any extra = 14;",
        "  message Dimensions {",
    ] {
        assert!(item.lines().any(|l| l == line), "{line:?} in:\n{item}");
    }
    let method = echo_client(&["--addr", &addr, "describe", &format!("{SERVICE}.AddItems")]);
    assert_eq!(
        String::from_utf8_lossy(succeeded(&method)).trim_end(),
        format!(
            "{SERVICE}.AddItems is a method:\nrpc AddItems ( stream .acme.inventory.v1.Item ) returns ( .acme.inventory.v1.Summary );"
        )
    );

    // Unary: canonical proto3 JSON both ways, the item comes back as sent.
    let put = format!("{SERVICE}/PutItem");
    let answer = ours_call(&addr, &put, ITEM, &[]);
    assert_eq!(
        json_values(succeeded(&answer)),
        json_values(ITEM.as_bytes())
    );

    // Every shape, compared with grpcurl, which names fields as the .proto
    // does when the descriptors have no `json_name` (grpcio's have none).
    assert_every_shape_as_grpcurl(&addr, &["--proto-names"], &[]);

    // A failed call: its code as the exit status (grpcurl's 64 + code), and
    // every google.rpc detail decoded.
    let stderr = assert_failure_as_grpcurl(&addr, &[], "nope");
    assert!(
        stderr.starts_with("error: NOT_FOUND (code 5): no item nope"),
        "{stderr}"
    );
    for detail in [
        r#"google.rpc.ErrorInfo {"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"inventory.acme.example","metadata":{"sku":"nope"},"reason":"ITEM_MISSING"}"#,
        r#""fieldViolations":[{"description":"no such item","field":"sku"}]"#,
        r#""retryDelay":"2s""#,
        r#""resourceName":"nope""#,
        r#""locale":"en-GB","message":"No such item""#,
    ] {
        assert!(stderr.contains(detail), "{detail} in:\n{stderr}");
    }
    let json = echo_client_with_stdin(
        &[
            "--addr",
            &addr,
            "--json",
            "call",
            &format!("{SERVICE}/GetItem"),
            "-d",
            "@-",
        ],
        r#"{"sku":"nope"}"#,
    );
    let error: Value = serde_json::from_slice(&json.stderr).unwrap();
    assert_eq!(error["error"]["name"], "NOT_FOUND");
    assert_eq!(error["error"]["details"].as_array().unwrap().len(), 5);
}

#[test]
fn lists_describes_calls_and_loads_a_node_grpc_js_service() {
    let dir = echo_tests::pki::temp_dir("node-inventory");
    let project = echo_tests::node::project(&dir);
    let mut command = Command::new("node");
    command
        .current_dir(&project)
        .arg("inventory_server.mjs")
        .arg(proto_dir());
    let server = ScriptServer::start(command);
    let addr = server.addr();

    // @grpc/reflection leaves imports out of the files it sends
    // (grpc/grpc-node#2958): grpcurl cannot describe the service through it;
    // echo-client supplies the imports.
    let theirs = grpcurl_call_with(&[], &addr, &format!("{SERVICE}/PutItem"), ITEM);
    assert!(!theirs.status.success());
    let methods = echo_client(&["--addr", &addr, "list", SERVICE]);
    assert_eq!(
        String::from_utf8_lossy(succeeded(&methods)).lines().count(),
        6
    );
    let item = echo_client(&["--addr", &addr, "describe", "acme.inventory.v1.Item"]);
    let item = String::from_utf8_lossy(succeeded(&item)).into_owned();
    assert!(
        item.contains("  .google.protobuf.Timestamp added = 11;\n"),
        "{item}"
    );

    // So grpcurl reads the .proto file (and prints proto3 JSON's
    // lowerCamelCase names); echo-client the server's reflection.
    let dir = proto_dir();
    let grpcurl_proto = [
        "-import-path",
        dir.as_str(),
        "-proto",
        "acme/inventory/v1/inventory.proto",
    ];
    let answer = ours_call(&addr, &format!("{SERVICE}/PutItem"), ITEM, &[]);
    assert_eq!(
        json_values(succeeded(&answer)),
        json_values(ITEM.as_bytes())
    );
    assert_every_shape_as_grpcurl(&addr, &[], &grpcurl_proto);
    let stderr = assert_failure_as_grpcurl(&addr, &grpcurl_proto, "q");
    assert!(stderr.contains(r#"google.rpc.ErrorInfo {"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"inventory.acme.example","metadata":{"sku":"q"},"reason":"ITEM_MISSING"}"#), "{stderr}");

    let output = echo_client(&[
        "--addr",
        &addr,
        "--json",
        "bench",
        "--call",
        &format!("{SERVICE}/PutItem"),
        "-d",
        ITEM,
        "--total",
        "20",
        "--warmup",
        "0s",
    ]);
    let report: Value = serde_json::from_slice(succeeded(&output)).unwrap();
    assert_eq!(
        (report["calls"].as_u64(), &report["errors"]),
        (Some(20), &json!({}))
    );
}

#[test]
fn bench_loads_every_shape_of_a_python_grpcio_service() {
    let server = inventory_server(&[]);
    let addr = server.addr();
    for (method, data, messages) in [
        // Two requests, sent in turn.
        ("PutItem", r#"{"sku":"a"} {"sku":"b","cents":"1"}"#, 20),
        ("ListItems", r#"{"count":3}"#, 60),
        ("AddItems", r#"{"sku":"a"}"#, 40),
        ("Exchange", r#"{"sku":"a"}"#, 20),
    ] {
        let call = format!("{SERVICE}/{method}");
        let output = echo_client_with_stdin(
            &[
                "--addr",
                &addr,
                "--json",
                "bench",
                "--call",
                &call,
                "-d",
                "@-",
                "--total",
                "20",
                "--warmup",
                "0s",
                "--concurrency",
                "2",
                "--messages",
                "2",
            ],
            data,
        );
        let report: Value = serde_json::from_slice(succeeded(&output)).unwrap();
        assert_eq!(report["call"], call.as_str());
        assert_eq!(report["calls"], 20, "{report}");
        assert_eq!(report["errors"], json!({}), "{report}");
        let sent_or_received = report["messages_per_second"].as_f64().unwrap()
            / report["calls_per_second"].as_f64().unwrap();
        assert!(
            (sent_or_received - f64::from(messages) / 20.0).abs() < 0.01,
            "{method}: {report}"
        );
    }
    // Failures are counted by code, and the exit says so.
    let output = echo_client(&[
        "--addr",
        &addr,
        "--json",
        "bench",
        "--call",
        &format!("{SERVICE}/GetItem"),
        "--total",
        "5",
        "--warmup",
        "0s",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], json!({ "NotFound": 5 }));
    // A gate on the Python service's codes: held (0) or not (3).
    for (assertion, exit) in [("errors[NOT_FOUND]<=5", 0), ("errors[NOT_FOUND]<5", 3)] {
        let output = echo_client(&[
            "--addr",
            &addr,
            "bench",
            "--call",
            &format!("{SERVICE}/GetItem"),
            "--total",
            "5",
            "--warmup",
            "0s",
            "--assert",
            assertion,
        ]);
        assert_eq!(output.status.code(), Some(exit), "{assertion}: {output:?}");
    }
}

#[test]
fn bench_makes_each_request_from_its_templates() {
    let server = inventory_server(&[]);
    let addr = server.addr();
    let output = echo_client(&[
        "--addr",
        &addr,
        "--json",
        "-H",
        "x-tag: c{{.ConnectionID}}",
        "bench",
        "--call",
        &format!("{SERVICE}/PutItem"),
        "-d",
        r#"{"sku":"w{{.WorkerID}}-n{{.RequestNumber}}","tags":["{{randomString 6}}"]}"#,
        "--total",
        "40",
        "--warmup",
        "0s",
        "--connections",
        "2",
        "--concurrency",
        "2",
    ]);
    let report: Value = serde_json::from_slice(succeeded(&output)).unwrap();
    assert_eq!(
        (report["calls"].as_u64(), &report["errors"]),
        (Some(40), &json!({}))
    );
    let seen = echo_client(&[
        "--addr",
        &addr,
        "--json",
        "call",
        &format!("{SERVICE}/Seen"),
    ]);
    let seen = &json_values(succeeded(&seen))[0]["skus"];
    let mut numbers: Vec<u64> = Vec::new();
    for entry in seen.as_array().unwrap() {
        // `w<worker>-n<number>|c<connection>`: workers 0 and 1 share
        // connection 0, workers 2 and 3 connection 1.
        let (sku, tag) = entry.as_str().unwrap().split_once('|').unwrap();
        let (worker, number) = sku.strip_prefix('w').unwrap().split_once("-n").unwrap();
        let worker: usize = worker.parse().unwrap();
        assert!(worker < 4, "{entry}");
        assert_eq!(tag, format!("c{}", worker / 2), "{entry}");
        numbers.push(number.parse().unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (0..40).collect::<Vec<u64>>());

    for (args, expected) in [
        (
            vec!["-d", r#"{"sku":"{{.Nope}}"}"#],
            "unknown template action `{{.Nope}}`",
        ),
        (vec!["-d", r#"{"sku":{{randomInt 1 9}}}"#], "field `sku`"),
        (vec!["-d", r#"{"sku":"{{.UUID"}"#], "never closed"),
    ] {
        let call = format!("{SERVICE}/PutItem");
        let mut full = vec![
            "--addr",
            addr.as_str(),
            "bench",
            "--call",
            &call,
            "--total",
            "1",
        ];
        full.extend(args);
        let output = echo_client(&full);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}

#[test]
fn descriptors_from_proto_files_or_a_protoset_when_reflection_is_not_served() {
    let server = inventory_server(&["--no-reflection"]);
    let addr = server.addr();
    let put = format!("{SERVICE}/PutItem");

    let refused = ours_call(&addr, &put, ITEM, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("does not serve reflection") && stderr.contains("--proto"),
        "{stderr}"
    );

    // Compiled at run time (protox), the well-known imports built in.
    let proto = [
        "--proto",
        "acme/inventory/v1/inventory.proto",
        "--import-path",
    ];
    let mut args: Vec<&str> = proto.to_vec();
    let dir = proto_dir();
    args.push(&dir);
    let answer = ours_call(&addr, &put, ITEM, &args);
    assert_eq!(
        json_values(succeeded(&answer)),
        json_values(ITEM.as_bytes())
    );
    // Listing needs no server at all.
    let mut list = vec!["--addr", "127.0.0.1:1", "list"];
    list.extend_from_slice(&args);
    let listed = echo_client(&list);
    assert_eq!(String::from_utf8_lossy(succeeded(&listed)).trim(), SERVICE);

    // A protoset, as `protoc --descriptor_set_out --include_imports` writes it.
    let set = protox::compile(["acme/inventory/v1/inventory.proto"], [proto_dir()]).unwrap();
    let dir = echo_tests::pki::temp_dir("protoset");
    let protoset = echo_tests::pki::write(
        &dir,
        "inventory.protoset",
        prost::Message::encode_to_vec(&set),
    );
    let protoset = protoset.display().to_string();
    let answer = ours_call(
        &addr,
        &format!("{SERVICE}/ListItems"),
        r#"{"count":2}"#,
        &["--protoset", &protoset],
    );
    assert_eq!(json_values(succeeded(&answer)).len(), 2);
}

#[test]
fn bad_input_gets_a_clear_message_and_a_failing_exit() {
    let server = inventory_server(&[]);
    let addr = server.addr();
    let dir = echo_tests::pki::temp_dir("bad-protoset");
    let garbage = echo_tests::pki::write(&dir, "garbage.protoset", b"\x0a\x05nope");
    let garbage = garbage.display().to_string();
    let cases: [(Vec<&str>, &str, &str); 10] = [
        (
            vec!["call", "acme.Nope/Get"],
            "",
            "the server knows no acme.Nope",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/Nope"],
            "",
            "has no method Nope (its methods: PutItem, GetItem",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/PutItem", "-d", "@-"],
            r#"{"sku":"a","dimensions":{"width":"wide"}}"#,
            "field `dimensions.width`",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/PutItem", "-d", "@-"],
            r#"{"sku":"a"} {"sku":"b"}"#,
            "takes one request message; 2 given",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/PutItem", "-d", "@-"],
            r#"{"sku":"a""#,
            "request 1 is not JSON",
        ),
        (
            vec!["list", "--protoset", &garbage],
            "",
            "is not a valid protoset",
        ),
        // Misspellings get the closest name.
        (
            vec!["describe", "acme.inventory.v1.Itme"],
            "",
            "the server knows no acme.inventory.v1.Itme; did you mean acme.inventory.v1.Item?",
        ),
        (
            vec!["describe", "acme.inventory.v1.Inventory.GetIten"],
            "",
            "did you mean acme.inventory.v1.Inventory.GetItem?",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/PutItem", "-d", "@-"],
            r#"{"skuu":"a"}"#,
            "unrecognized field name 'skuu'; did you mean `sku`?",
        ),
        (
            vec!["call", "acme.inventory.v1.Inventory/PutItem", "-d", "@-"],
            r#"{"sku":"a","dimensions":{"widht":1}}"#,
            "field `dimensions`: unrecognized field name 'widht'; did you mean `width`?",
        ),
    ];
    for (args, stdin, expected) in cases {
        let mut full = vec!["--addr", addr.as_str()];
        full.extend_from_slice(&args);
        let output = echo_client_with_stdin(&full, stdin);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// A protocol matrix against the Python service: gRPC runs; Connect, which
/// grpcio does not speak, is reported as failed, and the run exits 1.
#[test]
fn a_protocol_matrix_reports_what_a_python_grpcio_service_speaks() {
    let server = inventory_server(&[]);
    let addr = server.addr();
    let output = echo_client(&[
        "--addr",
        &addr,
        "--protocol",
        "grpc,connect",
        "--json",
        "bench",
        "--call",
        &format!("{SERVICE}/PutItem"),
        "-d",
        r#"{"sku":"a"}"#,
        "--total",
        "20",
        "--warmup",
        "0s",
    ]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let matrix: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(matrix["runs"][0]["wire"], "gRPC over HTTP/2", "{matrix}");
    assert_eq!(matrix["runs"][0]["calls"], 20, "{matrix}");
    assert_eq!(matrix["runs"][0]["errors"], json!({}), "{matrix}");
    assert_eq!(
        matrix["skipped"][0]["wire"], "Connect over HTTP/2",
        "{matrix}"
    );
    assert_eq!(matrix["skipped"][0]["failed"], true, "{matrix}");
}

/// `--timing` against a server we did not write: each call the command made
/// (the reflection calls, then the method's) with its phases, a call on a
/// connection already open saying so; and bench's phase histograms.
#[test]
fn timing_shows_each_phase_of_calls_to_a_python_grpcio_service() {
    let server = inventory_server(&[]);
    let addr = server.addr();
    let output = echo_client(&[
        "--addr",
        &addr,
        "--timing",
        "call",
        &format!("{SERVICE}/PutItem"),
        "-d",
        r#"{"sku":"a"}"#,
    ]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let headings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("timing "))
        .collect();
    // Reflection (v1 refused, then v1alpha on the same connection), then
    // the method on the command's second client.
    assert!(
        headings[0].starts_with("timing /grpc.reflection.v1.ServerReflection/")
            && headings[0].ends_with("(new connection)"),
        "{stderr}"
    );
    assert!(
        headings[1].starts_with("timing /grpc.reflection.v1alpha.ServerReflection/")
            && headings[1]
                .ends_with("(reused connection: resolve, connect, TLS and HTTP setup skipped)"),
        "{stderr}"
    );
    assert_eq!(
        headings.last().copied(),
        Some(format!("timing /{SERVICE}/PutItem (new connection)").as_str()),
        "{stderr}"
    );
    for phase in [
        "resolve",
        "TCP connect",
        "HTTP/2 setup",
        "response headers",
        "first message",
        "trailers",
    ] {
        assert!(stderr.contains(&format!("  {phase}")), "{phase}: {stderr}");
    }

    let output = echo_client(&[
        "--addr",
        &addr,
        "--timing",
        "--json",
        "bench",
        "--call",
        &format!("{SERVICE}/PutItem"),
        "-d",
        r#"{"sku":"a"}"#,
        "--total",
        "20",
        "--warmup",
        "0s",
    ]);
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let phases = &report["phases_ms"];
    assert_eq!(phases["connection"]["TCP connect"]["count"], 1, "{phases}");
    assert_eq!(phases["call"]["first message"]["count"], 20, "{phases}");
}
