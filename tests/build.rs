//! Says, in one line, which tests plain `cargo test` leaves out.

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_EXTERNAL_TOOLS");
    if std::env::var_os("CARGO_FEATURE_EXTERNAL_TOOLS").is_none() {
        println!(
            "cargo:warning=tests that need grpcurl, Python grpcio, kubernetes-validate, Node, \
             curl or Chromium (browser, deploy, docs, grpcurl, interop_python, metrics, \
             protocols_clients, tracing, universal_client) are not built: scripts/test.sh runs them"
        );
    }
}
