//! The commands in README.md and docs/ run as they are shown, and their
//! output is what the page says, so the docs cannot drift from the code.
//!
//! In a page, a ```` ```console ```` block is a terminal session: `$ `
//! starts a command (a line ending in ` \` continues it, and a here-document
//! runs to its `EOF` line); the lines up to the next command are its output
//! (stdout and stderr as a terminal shows them), where `[..]` stands for any
//! text within a line and a line `...` for any lines. A block's commands
//! run in one shell, one after another, in a directory of the page's own,
//! with `echo-server`, `echo-client` and `grpcurl` on the `PATH`.
//!
//! `$ echo-server ARGS &` starts a server in the background, as a person
//! would in another terminal; a later one that listens on the same address
//! replaces it. The addresses the page names (`127.0.0.1:50051`, a
//! `--metrics-addr`, ...) stand for free ports, the same one everywhere on
//! the page, and `echo-client` calls the page's `127.0.0.1:50051` without
//! `--addr` as it would by default.
//!
//! A ```` ```sh ```` block holds what sets up a machine (install, build,
//! test, deploy), which a test cannot run: each of its commands must name
//! packages, binaries and files that exist, and it may not hold an
//! `echo-client`, `echo-server` or `grpcurl` command (those belong in a
//! console block, where they run).

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use echo_tests::process::{self, binary, workspace_root};

/// How long one block's commands may take, all together.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// The commands a setup (`sh`) block may run.
const SETUP_COMMANDS: [&str; 9] = [
    "cargo",
    "kubectl",
    "podman",
    "docker",
    "python3",
    "bash",
    "git",
    "export",
    "./scripts/",
];
/// What a page may never show in a setup block: these run in console blocks.
const RUNNABLE: [&str; 3] = ["echo-client", "echo-server", "grpcurl"];

/// One fenced block of a page.
#[derive(Debug)]
struct Block {
    kind: String,
    /// The line of the page the block starts on (1-based).
    line: usize,
    lines: Vec<String>,
}

/// One command of a console block, and what the page says it prints.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
    /// The page's line of the command.
    line: usize,
    /// Where its output is in the page: the index of its first line, and how many.
    output_at: usize,
    output_lines: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (number, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(kind)) => {
                open = Some(Block {
                    kind: kind.trim().to_owned(),
                    line: number + 1,
                    lines: Vec::new(),
                });
            }
            (Some(_), Some("")) => blocks.push(open.take().expect("open")),
            (Some(block), _) => block.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// A console block's commands and outputs.
fn steps(block: &Block) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut lines = block.lines.iter().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(command) = line.strip_prefix("$ ") else {
            let step = steps.last_mut().unwrap_or_else(|| {
                panic!("line {}: output before any command", block.line + index + 1)
            });
            step.expected.push(line.trim_end().to_owned());
            step.output_lines += 1;
            continue;
        };
        let mut command = command.to_owned();
        let mut last = index;
        while command.ends_with('\\') {
            let (at, next) = lines.next().expect("a continued command goes on");
            command.push('\n');
            command.push_str(next);
            last = at;
        }
        if command.contains("<<'EOF'") || command.contains("<<EOF") {
            for (at, next) in lines.by_ref() {
                command.push('\n');
                command.push_str(next);
                last = at;
                if next == "EOF" {
                    break;
                }
            }
        }
        steps.push(Step {
            command,
            expected: Vec::new(),
            line: block.line + index + 1,
            // The block's first line is the page's line `block.line` (0-based).
            output_at: block.line + last + 1,
            output_lines: 0,
        });
    }
    for step in &mut steps {
        while step.expected.last().is_some_and(String::is_empty) {
            step.expected.pop();
        }
    }
    steps
}

/// Whether `actual` reads as `expected` does, `[..]` and `...` standing for anything.
fn matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(line, others)| line_matches(first, line) && matches(rest, others)),
    }
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (index, part) in parts.iter().enumerate() {
        if index == parts.len() - 1 {
            return rest.ends_with(part) && rest.len() >= part.len();
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// A server a page started, and where its addresses really are.
struct PageServer {
    child: Child,
    log: PathBuf,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A page's run: its directory, its servers, and the ports its addresses stand for.
struct Page {
    name: String,
    /// With `DOCS_BLESS=1`: the outputs to write into the page instead of
    /// checking them (page line, lines replaced, new lines), for writing docs.
    blessed: Option<Vec<(usize, usize, Vec<String>)>>,
    dir: PathBuf,
    bin: PathBuf,
    ports: BTreeMap<String, String>,
    servers: BTreeMap<String, PageServer>,
}

impl Page {
    fn new(name: &str) -> Self {
        let dir = echo_tests::pki::temp_dir(&format!("docs-{}", name.replace('/', "-")));
        let bin = dir.join(".bin");
        fs::create_dir_all(&bin).unwrap();
        for (link, target) in [
            ("echo-server", binary("echo-server")),
            ("echo-client", binary("echo-client")),
            ("grpcurl", process::grpcurl()),
        ] {
            std::os::unix::fs::symlink(target, bin.join(link)).unwrap();
        }
        Self {
            name: name.to_owned(),
            blessed: std::env::var_os("DOCS_BLESS").map(|_| Vec::new()),
            dir,
            bin,
            ports: BTreeMap::new(),
            servers: BTreeMap::new(),
        }
    }

    /// `text` with every address of the page at its real port.
    fn localize(&mut self, text: &str) -> String {
        let mut text = text.to_owned();
        let mut at = 0;
        while let Some(found) = text[at..].find("127.0.0.1:") {
            let start = at + found + "127.0.0.1:".len();
            let digits: String = text[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.len() >= 4 {
                let real = self
                    .ports
                    .entry(digits.clone())
                    .or_insert_with(free_port)
                    .clone();
                text.replace_range(start..start + digits.len(), &real);
                at = start + real.len();
            } else {
                at = start;
            }
        }
        text
    }

    /// `line` with the page's real ports back at the addresses the page
    /// names, and any other loopback port (a client's) masked: for blessing.
    fn delocalize(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for (shown, real) in &self.ports {
            line = line.replace(&format!("127.0.0.1:{real}"), &format!("127.0.0.1:@{shown}"));
        }
        let mut out = String::new();
        let mut rest = line.as_str();
        while let Some(at) = rest.find("127.0.0.1:") {
            let (before, after) = rest.split_at(at + "127.0.0.1:".len());
            out.push_str(before);
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            if digits >= 4 {
                out.push_str("[..]");
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out.replace("127.0.0.1:@", "127.0.0.1:")
    }

    fn env(&mut self, command: &mut Command) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let default_addr = self.localize("http://127.0.0.1:50051");
        command
            .current_dir(&self.dir)
            .env("PATH", path)
            .env("ECHO_ADDR", default_addr)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("ECHO_TOKEN");
    }

    /// Starts `$ echo-server ARGS &` (a page's server), waiting until it listens.
    fn start_server(&mut self, step: &Step) {
        let args = step
            .command
            .strip_suffix('&')
            .unwrap_or_else(|| {
                panic!(
                    "{}:{}: a server runs in the background (`&`)",
                    self.name, step.line
                )
            })
            .trim();
        let args = self.localize(args);
        let words = split_words(&args);
        let listen = words
            .iter()
            .position(|word| word == "--listen")
            .and_then(|at| words.get(at + 1).cloned())
            .unwrap_or_else(|| self.localize("127.0.0.1:50051"));
        // A server that listens where another did replaces it.
        self.servers.remove(&listen);
        let log = self
            .dir
            .join(format!("server-{}.log", listen.replace(':', "-")));
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("exec {args}"));
        self.env(&mut command);
        if !words.iter().any(|word| word == "--listen") {
            command.env("ECHO_LISTEN", &listen);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = PageServer { child, log };
        let addr: SocketAddr = listen.parse().expect("a server listens on an address");
        let deadline = Instant::now() + process::EVENT_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{}:{}: `echo-server {args}` exited ({status}):\n{}",
                    self.name,
                    step.line,
                    fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}:{}: the server does not listen",
                self.name,
                step.line
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.servers.insert(listen, server);
    }

    /// Runs `steps` in one shell and checks each one's output.
    fn run(&mut self, steps: &[Step]) {
        if steps.is_empty() {
            return;
        }
        let mut script = String::from("exec 2>&1\n");
        for (index, step) in steps.iter().enumerate() {
            script.push_str(&format!(
                "__status=$?; printf '\\n%s\\n' '@@@{index}@@@'; (exit $__status)\n{}\n",
                self.localize(&step.command)
            ));
        }
        script.push_str("printf '\\n%s\\n' '@@@end@@@'\n");
        let mut command = Command::new("sh");
        command.arg("-c").arg(&script);
        self.env(&mut command);
        let output = process::output_within(command, b"", BLOCK_TIMEOUT);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        for (index, step) in steps.iter().enumerate() {
            let start = format!("@@@{index}@@@\n");
            let end = match index + 1 {
                next if next < steps.len() => format!("\n@@@{next}@@@"),
                _ => "\n@@@end@@@".to_owned(),
            };
            let from = text.find(&start).map(|at| at + start.len());
            let segment = from
                .and_then(|from| Some(&text[from..from + text[from..].find(&end)?]))
                .unwrap_or_else(|| {
                    panic!(
                        "{}:{}: the block did not run to here:\n{text}",
                        self.name, step.line
                    )
                });
            let mut actual: Vec<&str> = segment.lines().map(str::trim_end).collect();
            while actual.last().is_some_and(|line| line.is_empty()) {
                actual.pop();
            }
            let expected: Vec<String> = step
                .expected
                .iter()
                .map(|line| self.localize(line))
                .collect();
            if let Some(blessed) = self.blessed.take() {
                // What still matches keeps its masks; the rest is as printed.
                let lines: Vec<String> = if matches(&expected, &actual) {
                    step.expected.clone()
                } else if expected.len() == actual.len() {
                    (step.expected.iter().zip(&expected).zip(&actual))
                        .map(|((shown, localized), line)| {
                            if line_matches(localized, line) {
                                shown.clone()
                            } else {
                                self.delocalize(line)
                            }
                        })
                        .collect()
                } else {
                    actual.iter().map(|line| self.delocalize(line)).collect()
                };
                let mut blessed = blessed;
                blessed.push((step.output_at, step.output_lines, lines));
                self.blessed = Some(blessed);
                continue;
            }
            assert!(
                matches(&expected, &actual),
                "{}:{}: `{}` printed\n{}\nwhere the page shows\n{}",
                self.name,
                step.line,
                step.command,
                actual.join("\n"),
                expected.join("\n"),
            );
        }
    }

    /// Runs a console block: its commands in turn, servers started between them.
    fn console(&mut self, block: &Block) {
        let steps = steps(block);
        let mut pending = Vec::new();
        for step in steps {
            if step.command.starts_with("echo-server ") || step.command == "echo-server &" {
                self.run(&pending);
                pending.clear();
                self.start_server(&step);
                assert!(
                    step.expected.is_empty(),
                    "{}:{}: a background server prints nothing here",
                    self.name,
                    step.line
                );
            } else {
                pending.push(step);
            }
        }
        self.run(&pending);
    }
}

fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}

/// Shell words, quotes removed (enough for the arguments docs pass).
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Checks a setup block: known commands, and every package, binary and
/// file it names exists.
fn check_setup(page: &str, block: &Block) {
    let root = workspace_root();
    let packages = workspace_packages();
    for (index, line) in block.lines.iter().enumerate() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{page}:{}", block.line + index + 1);
        // Variables set for the command (`NAME=value command ...`) come first.
        let words: Vec<String> = split_words(line)
            .into_iter()
            .skip_while(|word| {
                word.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                })
            })
            .collect();
        assert!(
            !RUNNABLE.contains(&words[0].as_str()),
            "{at}: `{line}` belongs in a console block, where it runs"
        );
        assert!(
            SETUP_COMMANDS
                .iter()
                .any(|known| words[0] == *known || words[0].starts_with(known)),
            "{at}: `{}` is not a setup command ({SETUP_COMMANDS:?})",
            words[0]
        );
        let cargo = words[0] == "cargo";
        for (flag, value) in words.iter().zip(words.iter().skip(1)) {
            match flag.as_str() {
                "-p" | "--package" if cargo => assert!(
                    packages.contains_key(value.as_str()),
                    "{at}: no package {value} (packages: {:?})",
                    packages.keys().collect::<Vec<_>>()
                ),
                "--bin" if cargo => assert!(
                    packages.values().flatten().any(|bin| bin == value),
                    "{at}: no binary {value}"
                ),
                "--path" | "-f" | "--manifest-path" | "--file" => {
                    assert!(root.join(value).exists(), "{at}: {value} does not exist")
                }
                _ => {}
            }
        }
        if words[0].starts_with("./scripts/") || words[0] == "python3" {
            let file = words
                .iter()
                .find(|word| word.contains('/'))
                .expect("a file");
            assert!(root.join(file).exists(), "{at}: {file} does not exist");
        }
        // `cargo run -p PACKAGE` runs the package's only binary.
        if cargo
            && words.get(1).is_some_and(|word| word == "run")
            && let Some(at_p) = words.iter().position(|word| word == "-p")
        {
            let package = &words[at_p + 1];
            assert!(
                packages
                    .get(package.as_str())
                    .is_some_and(|bins| !bins.is_empty()),
                "{at}: package {package} has no binary to run"
            );
        }
    }
}

/// Every package of the workspace, with its binaries.
fn workspace_packages() -> BTreeMap<String, Vec<String>> {
    let mut command = Command::new(env!("CARGO"));
    command
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root());
    let output = process::output_within(command, b"", process::COMMAND_TIMEOUT);
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let bins = package["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|target| target["kind"][0] == "bin")
                .map(|target| target["name"].as_str().unwrap().to_owned())
                .collect();
            (package["name"].as_str().unwrap().to_owned(), bins)
        })
        .collect()
}

/// The pages: README.md and every guide under docs/ (with `DOCS_PAGE=TEXT`,
/// those whose path holds TEXT, to rerun one page while writing it).
fn pages() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut pages = vec![root.join("README.md")];
    let mut guides: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    guides.sort();
    pages.extend(guides);
    if let Ok(only) = std::env::var("DOCS_PAGE") {
        pages.retain(|page| page.to_string_lossy().contains(&only));
    }
    pages
}

fn run_page(path: &Path) {
    let name = path
        .strip_prefix(workspace_root())
        .unwrap()
        .display()
        .to_string();
    let text = fs::read_to_string(path).unwrap();
    let mut page = Page::new(&name);
    let mut console_blocks = 0;
    for block in blocks(&text) {
        match block.kind.as_str() {
            "console" => {
                page.console(&block);
                console_blocks += 1;
            }
            "sh" => check_setup(&name, &block),
            _ => {}
        }
    }
    if let Some(mut blessed) = page.blessed.take() {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        blessed.sort_by_key(|(at, _, _)| std::cmp::Reverse(*at));
        for (at, count, new) in blessed {
            lines.splice(at..at + count, new);
        }
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }
    println!("{name}: {console_blocks} console blocks ran as shown");
}

#[test]
fn every_command_in_the_readme_and_the_guides_runs_as_shown() {
    for page in pages() {
        run_page(&page);
    }
}

#[test]
fn outputs_match_with_masks() {
    let expected = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(matches(&expected(&["a [..] c"]), &["a b c"]));
    assert!(matches(&expected(&["[..]"]), &["anything"]));
    assert!(!matches(&expected(&["a [..] c"]), &["a b d"]));
    assert!(matches(
        &expected(&["first", "...", "last"]),
        &["first", "x", "y", "last"]
    ));
    assert!(matches(
        &expected(&["first", "...", "last"]),
        &["first", "last"]
    ));
    assert!(!matches(&expected(&["first"]), &["first", "more"]));
    assert!(matches(&expected(&["x[..]y[..]z"]), &["x1y2z"]));
    assert!(!matches(&expected(&["x[..]y[..]z"]), &["x1y2"]));
}
