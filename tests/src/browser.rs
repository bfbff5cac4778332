//! A real headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven through WebDriver's HTTP protocol: open a page, type, click, read
//! the DOM, take a screenshot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::EVENT_TIMEOUT;

/// Where Debian installs the two.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One headless browser session; the driver and browser end when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).is_file(),
                "{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
            );
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address").port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
        };
        let started = Instant::now();
        while browser.try_request("GET", "/status", None).is_none() {
            assert!(
                started.elapsed() < EVENT_TIMEOUT,
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,720"],
        }}}});
        let created = browser.request("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.session_request("POST", "/url", Some(json!({"url": url})));
    }

    /// The element `css` selects (the first one).
    pub fn find(&self, css: &str) -> String {
        let found = self.session_request(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_object()
            .and_then(|element| element.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// How many elements `css` selects.
    pub fn count(&self, css: &str) -> usize {
        let found = self.session_request(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found.as_array().map_or(0, Vec::len)
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.session_request(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Replaces the text of the input `css` selects with `text`.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.session_request(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        );
        self.session_request(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Picks the option with `value` in the select `css` selects.
    pub fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// The visible text of the element `css` selects.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        let text = self.session_request("GET", &format!("/element/{element}/text"), None);
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The current value of the input or text area `css` selects.
    pub fn value(&self, css: &str) -> String {
        let element = self.find(css);
        let value =
            self.session_request("GET", &format!("/element/{element}/property/value"), None);
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` in the page; its return value.
    pub fn execute(&self, script: &str) -> Value {
        self.session_request(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The attribute `name` of the element `css` selects.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css);
        let value =
            self.session_request("GET", &format!("/element/{element}/attribute/{name}"), None);
        value.as_str().map(str::to_owned)
    }

    /// Waits until the attribute `name` of `css` is `value`.
    pub fn wait_for_attribute(&self, css: &str, name: &str, value: &str) {
        let started = Instant::now();
        while self.attribute(css, name).as_deref() != Some(value) {
            assert!(
                started.elapsed() < EVENT_TIMEOUT,
                "{css} never had {name}={value} (it has {:?})",
                self.attribute(css, name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let png = self.session_request("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("a PNG in base64")
    }

    fn session_request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.request(method, &format!("/session/{}{path}", self.session), body)
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self
            .try_request(method, path, body)
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        if let Some(error) = answer.get("error") {
            panic!("{method} {path}: {error}: {}", answer["message"]);
        }
        answer
    }

    /// One WebDriver request: its `value`, or None if the driver cannot be reached.
    fn try_request(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let mut stream = TcpStream::connect_timeout(&self.addr, EVENT_TIMEOUT).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        // chromedriver keeps the connection open: read by Content-Length.
        let mut answer = Vec::new();
        let mut buf = [0; 65536];
        loop {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })?;
            if body.len() >= length {
                let value: Value = serde_json::from_str(&body[..length]).ok()?;
                return Some(value["value"].clone());
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
