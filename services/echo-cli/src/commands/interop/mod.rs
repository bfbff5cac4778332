//! `echo-client interop`: the gRPC interop test cases (grpc/grpc
//! `doc/interop-test-descriptions.md`) that need no cloud credentials, run
//! against any server of `grpc.testing.TestService`.

mod cases;
mod compression;
mod context;

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clap::Args;
use echo_client::ClientBuilder;
use futures_util::future::BoxFuture;

use context::{CaseContext, Clients, SoakArgs};

/// Arguments of `echo-client interop`.
#[derive(Debug, Args)]
pub(crate) struct InteropArgs {
    /// Case to run, a comma-separated list, or `all`.
    #[arg(long, default_value = "all")]
    test_case: String,
    #[command(flatten)]
    soak: SoakArgs,
    /// Time limit of each case.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    case_timeout: Duration,
}

/// One interop case.
type Case = for<'a> fn(&'a CaseContext) -> BoxFuture<'a, anyhow::Result<()>>;

/// Every case, in the order `--test-case all` runs them.
const CASES: [(&str, Case); 20] = [
    ("empty_unary", |c| Box::pin(cases::empty_unary(c))),
    ("large_unary", |c| Box::pin(cases::large_unary(c))),
    ("client_compressed_unary", |c| {
        Box::pin(cases::client_compressed_unary(c))
    }),
    ("server_compressed_unary", |c| {
        Box::pin(cases::server_compressed_unary(c))
    }),
    ("client_streaming", |c| Box::pin(cases::client_streaming(c))),
    ("client_compressed_streaming", |c| {
        Box::pin(cases::client_compressed_streaming(c))
    }),
    ("server_streaming", |c| Box::pin(cases::server_streaming(c))),
    ("server_compressed_streaming", |c| {
        Box::pin(cases::server_compressed_streaming(c))
    }),
    ("ping_pong", |c| Box::pin(cases::ping_pong(c))),
    ("empty_stream", |c| Box::pin(cases::empty_stream(c))),
    ("timeout_on_sleeping_server", |c| {
        Box::pin(cases::timeout_on_sleeping_server(c))
    }),
    ("cancel_after_begin", |c| {
        Box::pin(cases::cancel_after_begin(c))
    }),
    ("cancel_after_first_response", |c| {
        Box::pin(cases::cancel_after_first_response(c))
    }),
    ("status_code_and_message", |c| {
        Box::pin(cases::status_code_and_message(c))
    }),
    ("special_status_message", |c| {
        Box::pin(cases::special_status_message(c))
    }),
    ("custom_metadata", |c| Box::pin(cases::custom_metadata(c))),
    ("unimplemented_method", |c| {
        Box::pin(cases::unimplemented_method(c))
    }),
    ("unimplemented_service", |c| {
        Box::pin(cases::unimplemented_service(c))
    }),
    ("rpc_soak", |c| Box::pin(cases::rpc_soak(c))),
    ("channel_soak", |c| Box::pin(cases::channel_soak(c))),
];

/// Runs the selected cases, printing a PASS/FAIL line each and a closing tally;
/// exits 1 unless every case passed.
pub(crate) async fn run(
    builder: &ClientBuilder,
    args: &InteropArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let selected: Vec<(&str, Case)> = if args.test_case == "all" {
        CASES.to_vec()
    } else {
        args.test_case
            .split(',')
            .map(str::trim)
            .map(|name| {
                CASES
                    .iter()
                    .find(|(known, _)| *known == name)
                    .copied()
                    .ok_or_else(|| {
                        let known: Vec<&str> = CASES.iter().map(|(known, _)| *known).collect();
                        anyhow!(
                            "unknown test case {name:?}; known: all, {}",
                            known.join(", ")
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if selected.is_empty() {
        bail!("no test case selected");
    }

    let context = CaseContext {
        clients: Clients::connect(builder).await?,
        builder: builder.clone(),
        soak: args.soak.clone(),
    };
    let (mut passed, mut failed) = (0, 0);
    for (name, case) in selected {
        let started = Instant::now();
        let result = tokio::time::timeout(args.case_timeout, case(&context))
            .await
            .unwrap_or_else(|_| Err(anyhow!("did not finish within {:?}", args.case_timeout)));
        let elapsed_ms = started.elapsed().as_millis();
        match result {
            Ok(()) => {
                passed += 1;
                out!("PASS {name} ({elapsed_ms} ms)");
            }
            Err(err) => {
                failed += 1;
                out!("FAIL {name} ({elapsed_ms} ms): {err:#}");
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
