//! `echo-client health`: check or watch a service's health, or set it on a
//! server run with `--admin`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use echo_client::ClientBuilder;
use echo_client::health_proto::health_check_response::ServingStatus;
use echo_client::proto::HealthStatus;

use crate::output::Output;

/// Arguments of `echo-client health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Service name, e.g. `echo.v1.EchoService`.
    #[arg(default_value = "")]
    service: String,
    /// Keep printing status changes until interrupted.
    #[arg(long)]
    watch: bool,
    #[command(subcommand)]
    set: Option<HealthCommand>,
}

#[derive(Debug, Subcommand)]
enum HealthCommand {
    /// Set the health SERVICE reports ("" for the whole server), on a server run with `--admin`.
    Set {
        /// Service name, or "" for the whole server.
        service: String,
        /// The status to report (any case).
        #[arg(value_enum, ignore_case = true)]
        status: SetStatus,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum SetStatus {
    Serving,
    NotServing,
}

pub(crate) async fn run(
    builder: &ClientBuilder,
    args: HealthArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let client = builder.clone().connect().await?;
    if let Some(HealthCommand::Set { service, status }) = args.set {
        let status = match status {
            SetStatus::Serving => HealthStatus::Serving,
            SetStatus::NotServing => HealthStatus::NotServing,
        };
        client.set_health(&service, status).await?;
        out.health(&service, status);
        return Ok(ExitCode::SUCCESS);
    }
    let exit = |status: ServingStatus| {
        if status == ServingStatus::Serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    if !args.watch {
        let status = client.health_check(&args.service).await?;
        out.health(&args.service, status);
        return Ok(exit(status));
    }
    let mut updates = client.health_watch(&args.service).await?;
    let mut last = None;
    while let Some(update) = updates.message().await? {
        out.health(&args.service, update.status());
        last = Some(update.status());
    }
    match last {
        Some(status) => Ok(exit(status)),
        None => bail!("the health watch ended without a status"),
    }
}
