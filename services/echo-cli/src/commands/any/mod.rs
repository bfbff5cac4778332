//! `list`, `describe` and `call`: any gRPC service, its descriptors from the
//! server's reflection or from files (`source`), printed as proto source
//! (`proto_text`), called with JSON (`call`).

mod any_types;
pub(crate) mod call;
pub(crate) mod proto_text;
pub(crate) mod source;

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use echo_client::ClientBuilder;
use prost_reflect::{DescriptorPool, MethodDescriptor, SerializeOptions, ServiceDescriptor};
use serde_json::json;
use tonic::client::Grpc;

use crate::output::Output;
use call::RequestData;
use source::{Reflection, SourceArgs};

/// Arguments of `echo-client list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// List this service's methods instead of the services.
    service: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Arguments of `echo-client describe`.
#[derive(Debug, Args)]
pub(crate) struct DescribeArgs {
    /// A service, method (`package.Service.Method`), message, enum or field
    /// [default: every service].
    symbol: Option<String>,
    #[command(flatten)]
    source: SourceArgs,
}

/// Arguments of `echo-client call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// The method: `package.Service/Method` (or `package.Service.Method`).
    method: String,
    /// Request data: JSON (several objects, one after another, for a
    /// client-streaming method), `@FILE`, or `@-` for stdin [default: an
    /// empty message, or stdin for client-streaming methods].
    #[arg(short = 'd', long = "data", value_parser = RequestData::parse)]
    data: Option<RequestData>,
    /// Print fields at their default values too.
    #[arg(long)]
    emit_defaults: bool,
    /// Name fields as the .proto file does (`stock_by_site`) instead of
    /// proto3 JSON's lowerCamelCase (`stockBySite`), as grpcurl prints them
    /// when the server's descriptors carry no JSON names (grpcio's).
    #[arg(long)]
    proto_names: bool,
    #[command(flatten)]
    source: SourceArgs,
}

/// `echo-client list [SERVICE]`.
pub(crate) async fn list(
    builder: &ClientBuilder,
    args: ListArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = match &args.service {
        None => service_names(builder, &args.source).await?,
        Some(name) => {
            let pool = pool_for(builder, &args.source, name).await?;
            let service = find_service(&pool, name)?;
            service
                .methods()
                .map(|m| m.full_name().to_owned())
                .collect()
        }
    };
    let mut names = names;
    names.sort_unstable();
    for name in names {
        if out.json {
            out!("{}", json!({ "name": name }));
        } else {
            out!("{name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `echo-client describe [SYMBOL]`.
pub(crate) async fn describe(
    builder: &ClientBuilder,
    args: DescribeArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let symbols: Vec<String> = match &args.symbol {
        Some(symbol) => vec![symbol.clone()],
        None => service_names(builder, &args.source).await?,
    };
    for symbol in &symbols {
        let pool = pool_for(builder, &args.source, symbol).await?;
        let (kind, text) = describe_symbol(&pool, symbol)?;
        if out.json {
            out!(
                "{}",
                json!({ "symbol": symbol, "kind": kind, "proto": text })
            );
        } else {
            out!("{symbol} is {kind}:\n{}", text.trim_end());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `echo-client call SERVICE/METHOD`.
pub(crate) async fn call(
    builder: &ClientBuilder,
    args: CallArgs,
    out: Output,
) -> anyhow::Result<ExitCode> {
    let (service, _) = call::split_method(&args.method)?;
    let pool = pool_for(builder, &args.source, service).await?;
    let method = find_method(&pool, &args.method)?;
    let grpc = Grpc::new(builder.connect_transport().await?);
    let options = SerializeOptions::new()
        .skip_default_fields(!args.emit_defaults)
        .use_proto_field_name(args.proto_names);
    call::run(&grpc, &method, args.data.as_ref(), &options, out).await?;
    Ok(ExitCode::SUCCESS)
}

/// The method `name` names, with an error that lists what there is.
pub(crate) fn find_method(pool: &DescriptorPool, name: &str) -> anyhow::Result<MethodDescriptor> {
    let (service, method) = call::split_method(name)?;
    let service = find_service(pool, service)?;
    service
        .methods()
        .find(|m| m.name() == method)
        .with_context(|| {
            let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
            format!(
                "{} has no method {method} (its methods: {})",
                service.full_name(),
                methods.join(", ")
            )
        })
}

fn find_service(pool: &DescriptorPool, name: &str) -> anyhow::Result<ServiceDescriptor> {
    pool.get_service_by_name(name).with_context(|| {
        let services: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        format!(
            "there is no service {name} (services: {})",
            if services.is_empty() {
                "none".to_owned()
            } else {
                services.join(", ")
            }
        )
    })
}

/// The pool that defines `symbol`: the files given, or the server's reflection.
pub(crate) async fn pool_for(
    builder: &ClientBuilder,
    source: &SourceArgs,
    symbol: &str,
) -> anyhow::Result<DescriptorPool> {
    if let Some(pool) = source.files()? {
        return Ok(pool);
    }
    // A method or field is found through its service or message. Some
    // servers end the stream after a symbol they do not know: one each.
    let candidates = [
        Some(symbol),
        symbol.rsplit_once('.').map(|(parent, _)| parent),
    ];
    let mut first_error = None;
    for candidate in candidates.into_iter().flatten() {
        match reflection(builder)
            .await?
            .pool_for(&[candidate.to_owned()])
            .await
        {
            Ok(pool) => return Ok(pool),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    let services = reflection(builder).await?.services().await?;
    if services
        .iter()
        .any(|service| symbol == service || symbol.starts_with(&format!("{service}.")))
    {
        // The server lists it, and still cannot describe it: say why.
        return Err(first_error.unwrap_or_else(|| anyhow::anyhow!("cannot describe {symbol}")));
    }
    // A misspelling: the closest name among every symbol the services use.
    let mut names = services.clone();
    if let Ok(pool) = reflection(builder).await?.pool_for(&services).await {
        names.extend(symbols(&pool));
    }
    let suggestion = crate::suggest::closest(symbol, names.iter().map(String::as_str))
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default();
    anyhow::bail!(
        "the server knows no {symbol}{suggestion} (its services: {})",
        services.join(", ")
    )
}

/// Every name `describe` takes in `pool`: services, methods, messages, enums.
fn symbols(pool: &DescriptorPool) -> impl Iterator<Item = String> + '_ {
    let services = pool.services().flat_map(|service| {
        let methods: Vec<String> = service
            .methods()
            .map(|method| method.full_name().to_owned())
            .collect();
        std::iter::once(service.full_name().to_owned()).chain(methods)
    });
    services
        .chain(
            pool.all_messages()
                .map(|message| message.full_name().to_owned()),
        )
        .chain(pool.all_enums().map(|e| e.full_name().to_owned()))
}

/// Every service the files given define, or the server lists.
async fn service_names(
    builder: &ClientBuilder,
    source: &SourceArgs,
) -> anyhow::Result<Vec<String>> {
    match source.files()? {
        Some(pool) => Ok(pool.services().map(|s| s.full_name().to_owned()).collect()),
        None => reflection(builder).await?.services().await,
    }
}

async fn reflection(builder: &ClientBuilder) -> anyhow::Result<Reflection> {
    Reflection::open(builder.connect_transport().await?).await
}

/// What `symbol` is in `pool` ("a service", ...) and its proto source.
fn describe_symbol(pool: &DescriptorPool, symbol: &str) -> anyhow::Result<(&'static str, String)> {
    let symbol = symbol.trim_start_matches('.');
    if let Some(service) = pool.get_service_by_name(symbol) {
        return Ok(("a service", proto_text::service(&service)));
    }
    if let Some(message) = pool.get_message_by_name(symbol) {
        return Ok(("a message", proto_text::message(&message)));
    }
    if let Some(enumeration) = pool.get_enum_by_name(symbol) {
        return Ok(("an enum", proto_text::enumeration(&enumeration)));
    }
    if let Some((parent, name)) = symbol.rsplit_once('.') {
        if let Some(method) = pool
            .get_service_by_name(parent)
            .and_then(|service| service.methods().find(|m| m.name() == name))
        {
            return Ok(("a method", proto_text::method(&method)));
        }
        if let Some(field) = pool
            .get_message_by_name(parent)
            .and_then(|message| message.get_field_by_name(name))
        {
            return Ok(("a field", proto_text::field(&field)));
        }
    }
    let names: Vec<String> = symbols(pool).collect();
    let suggestion = crate::suggest::closest(symbol, names.iter().map(String::as_str))
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default();
    anyhow::bail!("there is no symbol {symbol} in the descriptors{suggestion}")
}
