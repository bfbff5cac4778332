//! Link settings of the server's binaries.

use std::process::Command;

/// The functions an idle server has run (start-up and its first call), in
/// the order the linker puts first in the code; written by
/// `bench/link_order.py`.
const LINK_ORDER: &str = "link-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={LINK_ORDER}");
    let target = std::env::var("TARGET").unwrap_or_default();
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|feature| feature == "crt-static"));
    // Relative relocations packed (DT_RELR, which glibc 2.36 and binutils
    // 2.38 brought; Debian bookworm has both): the loader reads a few KiB of
    // them at start instead of 0.55 MB of `.rela.dyn`, which then stayed
    // resident (measured: idle RSS 1.3 MB less, medians of 6 starts;
    // BENCHMARKS.md). Only where glibc links dynamically: the container's
    // static build keeps the usual relocations.
    if target.ends_with("-linux-gnu") && !static_crt {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // What start-up runs, packed together: the kernel maps 64 KiB or more
    // around each page of code it faults in, so code run from across the
    // 11 MB text kept 6 MB of it resident, and 2 MB once packed
    // (BENCHMARKS.md). Release builds
    // only (the symbols are a release build's), and only where rustc links
    // with its own lld, which reads the list: x86_64 Linux since 1.90.
    // Symbols no longer in the binary are skipped without a warning; the
    // suite counts how many are still found.
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join(LINK_ORDER);
    if release && target == "x86_64-unknown-linux-gnu" && order.exists() && links_with_rust_lld() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// True when rustc is 1.90 or newer (x86_64 Linux links with its lld) and no
/// flag chose another linker.
fn links_with_rust_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(output) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&output.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|release| release.split('.').nth(1))
        .and_then(|minor| minor.parse::<u32>().ok());
    minor.is_some_and(|minor| minor >= 90)
}
