//! Link settings of the server's binaries.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Relative relocations packed (DT_RELR, which glibc 2.36 and binutils
    // 2.38 brought; Debian bookworm has both): the loader reads a few KiB of
    // them at start instead of 0.55 MB of `.rela.dyn`, which then stayed
    // resident (measured: idle RSS 1.3 MB less, medians of 6 starts;
    // BENCHMARKS.md). Only where glibc links dynamically: the container's
    // static build keeps the usual relocations.
    let target = std::env::var("TARGET").unwrap_or_default();
    let static_crt = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|feature| feature == "crt-static"));
    if target.ends_with("-linux-gnu") && !static_crt {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
