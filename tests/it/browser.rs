//! The `--web` page in a real headless Chromium: a unary call, a server
//! stream and failing calls made through the page's own controls, over
//! Connect and gRPC-Web, read back from the DOM; the screenshot the protocols guide
//! shows is saved under `target/browser/`. Needs Debian's chromium and
//! chromium-driver.

use echo_tests::browser::Browser;
use echo_tests::process::workspace_root;
use echo_tests::{TestServer, config};

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
