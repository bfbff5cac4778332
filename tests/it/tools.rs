//! The scripts install what they need, or say exactly what to run, listing
//! every missing tool at once (`scripts/install-tools.sh`, which
//! `scripts/test.sh`, `scripts/fuzz.sh` and `bench/suite.py` call): run here
//! in its dry-run mode with a PATH that has none of the tools.

use std::process::{Command, Output};

use echo_tests::process::{self, workspace_root};

/// What `scripts/test.sh` asks for.
const TEST_SH_NEEDS: [&str; 6] = [
    "python3=manual:Python 3 with venv",
    "node=manual:Node.js 20",
    "npm=manual:npm, with Node.js 20",
    "curl=curl",
    "chromium=chromium",
    "chromedriver=chromium-driver",
];

fn dry_run(path: &str, as_who: &str, needs: &[&str]) -> Output {
    let mut command = Command::new("/bin/bash");
    command
        .arg(workspace_root().join("scripts/install-tools.sh"))
        .args(["--for", "test.sh", "--dry-run", "--as", as_who])
        .args(needs)
        .env_clear()
        .env("PATH", path);
    process::output_within(command, b"", process::COMMAND_TIMEOUT)
}

#[test]
fn without_root_every_missing_tool_is_named_with_the_one_command_to_run() {
    let empty = echo_tests::pki::temp_dir("no-tools");
    let output = dry_run(empty.to_str().unwrap(), "user", &TEST_SH_NEEDS);
    let said = String::from_utf8_lossy(&output.stderr);
    println!("{said}");
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("test.sh: missing curl chromium chromedriver; install them first (as root):"),
        "{said}"
    );
    assert!(
        said.contains(
            "  sudo apt-get update && sudo apt-get install -y -qq --no-install-recommends curl chromium chromium-driver"
        ),
        "{said}"
    );
    for manual in [
        "python3 (Python 3 with venv)",
        "node (Node.js 20)",
        "npm (npm, with Node.js 20)",
    ] {
        assert!(said.contains(manual), "{said}");
    }
}

#[test]
fn as_root_the_missing_packages_are_installed_with_apt_get_in_one_go() {
    let empty = echo_tests::pki::temp_dir("no-tools-root");
    let output = dry_run(empty.to_str().unwrap(), "root", &TEST_SH_NEEDS[3..]);
    let said = String::from_utf8_lossy(&output.stderr);
    println!("{said}");
    assert_eq!(output.status.code(), Some(0), "{said}");
    assert!(
        said.contains(
            "test.sh: installing curl chromium chromium-driver (for curl chromium chromedriver) with apt-get"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "would run: apt-get update -qq && env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl chromium chromium-driver"
        ),
        "{said}"
    );
    // With sudo instead of root, every command goes through `sudo -n`.
    let output = dry_run(empty.to_str().unwrap(), "sudo", &TEST_SH_NEEDS[3..]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("would run: sudo -n apt-get update -qq && sudo -n env"),
        "{said}"
    );
}

#[test]
fn nothing_is_said_or_done_when_every_tool_is_there() {
    // The tools this suite itself runs with are on the PATH it was given.
    let path = std::env::var("PATH").unwrap();
    let output = dry_run(&path, "user", &["sh=dash", "cargo=manual:rustup"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
