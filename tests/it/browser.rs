//! The `--web` page in a real headless Chromium: a unary call, a server
//! stream and failing calls made through the page's own controls, over
//! Connect and gRPC-Web, read back from the DOM; the screenshot the protocols guide
//! shows is saved under `target/browser/`. Needs Debian's chromium and
//! chromium-driver.

use echo_tests::browser::Browser;
use echo_tests::process::{ServerProcess, stdout, workspace_root};
use echo_tests::{TestServer, config};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_page_calls_the_server_from_a_real_browser() {
    let server = TestServer::with_config(config(|c| c.browsers.web = true)).await;
    let url = format!("{}/", server.uri());
    let screenshot = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.open(&url);
        assert_eq!(browser.text("h1"), "grpc-echo");

        // A unary call over Connect, with metadata echoed back.
        browser.fill("#message", "from chromium");
        browser.click("#unary");
        browser.wait_for_attribute("#status", "data-state", "done");
        assert_eq!(browser.text("#status"), "OK");
        assert_eq!(browser.count("#responses li"), 1);
        assert!(
            browser
                .text("#responses")
                .contains(r#""message":"from chromium""#),
            "{}",
            browser.text("#responses")
        );
        assert!(
            browser.text("#echoed-headers").contains("x-from-page: yes"),
            "{}",
            browser.text("#echoed-headers")
        );

        // A server stream over gRPC-Web: every answer, in order.
        browser.select("#protocol", "grpc-web");
        browser.fill("#stream-count", "4");
        browser.fill("#stream-interval-ms", "50");
        browser.click("#server-stream");
        browser.wait_for_attribute("#status", "data-state", "done");
        assert_eq!(browser.text("#status"), "OK");
        assert_eq!(browser.count("#responses li"), 4);
        let answers = browser.text("#responses");
        let sequences: Vec<usize> = (1..4)
            .map(|n| {
                answers
                    .find(&format!(r#""sequence":"{n}""#))
                    .expect("each sequence")
            })
            .collect();
        assert!(
            sequences.windows(2).all(|pair| pair[0] < pair[1]),
            "{answers}"
        );

        // A failing call with details, over each protocol.
        browser.select("#error-code", "NOT_FOUND");
        browser.fill("#error-message", "nothing here");
        browser.fill("#detail-key", "why");
        browser.fill("#detail-value", "asked");
        for protocol in ["grpc-web", "connect"] {
            browser.select("#protocol", protocol);
            browser.click("#unary");
            browser.wait_for_attribute("#status", "data-state", "done");
            assert_eq!(
                browser.text("#status"),
                "NOT_FOUND: nothing here",
                "{protocol}"
            );
            let details = browser.text("#details");
            assert!(
                details.contains("google.rpc.ErrorInfo") && details.contains("why=asked"),
                "{protocol}: {details}"
            );
        }
        let connections: u64 = browser
            .text("#stat-connections")
            .parse()
            .expect("a live counter");
        assert!(connections >= 1);
        browser.screenshot()
    })
    .await
    .unwrap();
    let dir = workspace_root().join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("page.png"), &screenshot).unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
    server.stop().await;
}

/// The console on the same page: every service reflection lists (grpcurl's
/// list, an independent client), a form per method from its descriptor,
/// validation as typed, all four shapes over both protocols in JSON and
/// binary, metadata, a deadline, an error's details, deep links and a
/// history that outlives a reload. Its screenshot is saved beside the page's.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_calls_every_method_the_server_serves() {
    let server = ServerProcess::start(&["--web"]);
    let listed: Vec<String> = stdout(&server.grpcurl(&["ADDR", "list"]))
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        listed.contains(&"grpc.testing.TestService".to_owned()),
        "{listed:?}"
    );
    let base = format!("http://{}/", server.addr);
    let screenshot = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.open(&base);
        browser.wait_for_attribute("#console-validation", "data-valid", "true");

        // The list: every service reflection lists, each with its methods.
        assert_eq!(browser.count("#console-method optgroup"), listed.len());
        for service in &listed {
            let group = format!("#console-method optgroup[label=\"{service}\"]");
            assert_eq!(browser.count(&group), 1, "{service}");
        }
        let test_service = "#console-method optgroup[label=\"grpc.testing.TestService\"] option";
        assert_eq!(browser.count(test_service), 8);

        // A form for TestService/UnaryCall: its request's template, checked as typed.
        browser.select("#console-method", "grpc.testing.TestService/UnaryCall");
        browser.wait_for_attribute("#console-validation", "data-valid", "true");
        assert_eq!(
            browser.text("#console-shape"),
            "unary: grpc.testing.SimpleRequest → grpc.testing.SimpleResponse"
        );
        let template: Value = serde_json::from_str(&browser.value("#console-request")).unwrap();
        assert_eq!(template["responseSize"], 0, "{template}");
        assert_eq!(template["payload"]["type"], "COMPRESSABLE", "{template}");
        browser.fill("#console-request", r#"{"responseSize": 3, "nope": 1}"#);
        browser.wait_for_attribute("#console-validation", "data-valid", "false");
        let complaint = browser.text("#console-validation");
        assert!(complaint.contains("unrecognized field name 'nope'"), "{complaint}");
        browser.fill("#console-request", r#"{"responseSize": "#);
        assert!(browser.text("#console-validation").starts_with("not JSON"));

        // A deep link fills the form and runs it: in JSON over Connect, then
        // in binary over gRPC-Web.
        let data = r#"{"responseSize":5}"#.replace('{', "%7B").replace('}', "%7D").replace('"', "%22");
        for extra in ["", "&protocol=grpc-web&encoding=proto"] {
            browser.open(&format!("{base}#call=grpc.testing.TestService/UnaryCall&data={data}{extra}&run"));
            wait_for_call(&browser);
            assert_eq!(browser.text("#console-status"), "OK", "{extra}");
            assert_eq!(
                browser.text("#console-responses"),
                r#"{"payload":{"body":"AAAAAAA="},"hostname":"bin-test"}"#,
                "{extra}"
            );
            let timing = browser.text("#console-timing");
            assert!(timing.contains("headers") && timing.contains("first message") && timing.contains("total"), "{timing}");
        }
        assert_eq!(browser.value("#console-protocol"), "grpc-web");
        assert_eq!(browser.value("#console-encoding"), "proto");

        // The streaming shapes: each answer as it comes.
        let calls = [
            ("StreamingOutputCall", r#"{"responseParameters":[{"size":1},{"size":2},{"size":3}]}"#, 3),
            ("StreamingInputCall", r#"[{"payload":{"body":"AAA="}},{"payload":{"body":"AAAA"}}]"#, 1),
            ("FullDuplexCall", r#"[{"responseParameters":[{"size":2}]},{"responseParameters":[{"size":4}]}]"#, 2),
        ];
        for protocol in ["connect", "grpc-web"] {
            browser.select("#console-protocol", protocol);
            for (method, request, answers) in calls {
                browser.select("#console-method", &format!("grpc.testing.TestService/{method}"));
                browser.fill("#console-request", request);
                browser.click("#console-run");
                wait_for_call(&browser);
                assert_eq!(browser.text("#console-status"), "OK", "{protocol} {method}");
                assert_eq!(browser.count("#console-responses li"), answers, "{protocol} {method}");
            }
            // Two bytes and three: the server counted both messages sent in turn.
            browser.select("#console-method", "grpc.testing.TestService/StreamingInputCall");
            browser.fill("#console-request", calls[1].1);
            browser.click("#console-run");
            wait_for_call(&browser);
            assert_eq!(browser.text("#console-responses"), r#"{"aggregatedPayloadSize":5}"#);
        }

        // Metadata rows travel as headers and come back echoed; a deadline
        // ends a slow call; an error shows its status and details.
        browser.select("#console-method", "echo.v1.EchoService/Echo");
        browser.click("#console-add-metadata");
        browser.fill("#console-metadata .name", "x-console");
        browser.fill("#console-metadata .value", "yes");
        browser.fill("#console-request", r#"{"message":"hi","echoMetadata":"METADATA_ECHO_BOTH"}"#);
        browser.click("#console-run");
        wait_for_call(&browser);
        assert!(browser.text("#console-headers").contains("x-console: yes"));
        assert!(browser.text("#console-trailers").contains("x-console: yes"));
        browser.fill("#console-deadline", "200");
        browser.fill("#console-request", r#"{"message":"slow","delay":"5s"}"#);
        browser.click("#console-run");
        wait_for_call(&browser);
        assert!(browser.text("#console-status").starts_with("DEADLINE_EXCEEDED"), "{}", browser.text("#console-status"));
        browser.fill("#console-deadline", "");
        browser.fill(
            "#console-request",
            r#"{"message":"x","error":{"code":"STATUS_CODE_NOT_FOUND","message":"nothing here","details":{"why":"asked"}}}"#,
        );
        for protocol in ["connect", "grpc-web"] {
            browser.select("#console-protocol", protocol);
            browser.click("#console-run");
            wait_for_call(&browser);
            assert_eq!(browser.text("#console-status"), "NOT_FOUND: nothing here", "{protocol}");
            let details = browser.text("#console-details");
            assert!(
                details.contains("google.rpc.ErrorInfo") && details.contains(r#""metadata":{"why":"asked"}"#),
                "{protocol}: {details}"
            );
        }

        // The history outlives a reload, and an entry fills the form again.
        let calls_made = browser.count("#console-history li");
        assert!(calls_made >= 14, "{calls_made}");
        browser.open(&base);
        browser.wait_for_attribute("#console-validation", "data-state", "done");
        assert_eq!(browser.count("#console-history li"), calls_made);
        browser.click("#console-history li:last-child a");
        assert_eq!(browser.value("#console-method"), "grpc.testing.TestService/UnaryCall");

        // The screenshot: the deep-linked call, its answer shown.
        browser.open(&format!("{base}#call=grpc.testing.TestService/UnaryCall&data={data}&run"));
        wait_for_call(&browser);
        browser.wait_for_attribute("#console-validation", "data-valid", "true");
        browser.execute("document.getElementById('console').scrollIntoView()");
        browser.screenshot()
    })
    .await
    .unwrap();
    let dir = workspace_root().join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console.png"), &screenshot).unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"), "not a PNG");
}

/// Waits until the console's call has ended (it starts `running` at once).
fn wait_for_call(browser: &Browser) {
    browser.wait_for_attribute("#console-status", "data-state", "done");
}
