//! The Grafana dashboard in `deploy/grafana/`: valid JSON in Grafana's shape,
//! and every series a panel or variable queries, with every label it selects
//! or groups by, is one a real server process exposes.

use std::collections::{BTreeMap, BTreeSet};

use echo_client::EchoClient;
use echo_client::proto::{EchoRequest, ForwardRequest};
use echo_tests::process::{ServerProcess, http_get, workspace_root};
use serde_json::Value;

/// Labels Prometheus adds at scrape time, which no server exposes.
const SCRAPE_LABELS: [&str; 2] = ["job", "instance"];

fn dashboard() -> Value {
    let path = workspace_root().join("deploy/grafana/grpc-echo.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every PromQL query of the dashboard: panel targets and variable queries.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// The metric names of `query` (PromQL: every series here starts `grpc_`),
/// each with the labels the query selects it by or groups it by.
fn series_of(query: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut grouped = BTreeSet::new();
    let chars: Vec<char> = query.chars().collect();
    let mut i = 0;
    let mut last_metric = None;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            // A string: skip it whole.
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with("grpc_") {
                series.entry(word.clone()).or_default();
                last_metric = Some(word);
            } else if word == "by" {
                let open = chars[i..].iter().position(|&c| c == '(').unwrap() + i;
                let close = chars[open..].iter().position(|&c| c == ')').unwrap() + open;
                let names: String = chars[open + 1..close].iter().collect();
                grouped.extend(names.split(',').map(|name| name.trim().to_owned()));
                i = close + 1;
            }
        } else if c == '{' {
            let close = chars[i..].iter().position(|&c| c == '}').unwrap() + i;
            let selector: String = chars[i + 1..close].iter().collect();
            let metric = last_metric.clone().expect("a selector after a metric name");
            for matcher in selector.split(',') {
                let name = matcher
                    .split(['=', '!', '~'])
                    .next()
                    .unwrap()
                    .trim()
                    .to_owned();
                series.get_mut(&metric).unwrap().insert(name);
            }
            i = close + 1;
        } else {
            i += 1;
        }
    }
    // Grouping labels must exist on the series aggregated.
    for labels in series.values_mut() {
        labels.extend(grouped.iter().cloned());
    }
    series
}

/// Every series name the server exposes, with the label names seen on it.
fn exposed(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut exposed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, _value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let names = exposed.entry(name.to_owned()).or_default();
        for pair in labels.trim_end_matches('}').split(',') {
            if let Some((label, _)) = pair.split_once('=') {
                names.insert(label.to_owned());
            }
        }
    }
    exposed
}

#[test]
fn the_dashboard_is_grafana_json_with_unique_panels_in_its_grid() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "grpc-echo");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{panel}");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{panel}");
        }
        assert!(
            panel["gridPos"]["x"].as_u64().unwrap() + panel["gridPos"]["w"].as_u64().unwrap() <= 24
        );
        let mut refs = BTreeSet::new();
        for target in panel["targets"].as_array().unwrap() {
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{panel}");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{panel}");
        }
        assert!(!refs.is_empty(), "{panel}");
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "job", "instance"]);
}

#[tokio::test]
async fn every_series_the_dashboard_queries_is_one_the_server_exposes() {
    // Chaos on (an event far off), so that its series exist too.
    let server = ServerProcess::spawn(ServerProcess::command(
        "127.0.0.1:0",
        "dashboard",
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--chaos",
            "goaway every=1h",
            "--forward-allow",
            "127.0.0.1",
        ],
        "info",
    ))
    .with_metrics();
    // A call, and a Forward to itself, so that their outcomes' series exist.
    let client = EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap();
    client.echo(EchoRequest::default()).await.unwrap();
    client
        .forward(ForwardRequest {
            target: server.addr.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let exposed = exposed(&http_get(server.metrics_addr.unwrap(), "/metrics"));

    let mut checked = BTreeSet::new();
    for query in queries(&dashboard()) {
        let series = series_of(&query);
        assert!(!series.is_empty(), "no series in {query}");
        for (name, labels) in series {
            let seen = exposed
                .get(&name)
                .unwrap_or_else(|| panic!("{query}: the server exposes no {name}"));
            for label in labels {
                let is_bucket = label == "le" && name.ends_with("_bucket");
                assert!(
                    seen.contains(&label) || SCRAPE_LABELS.contains(&label.as_str()) || is_bucket,
                    "{query}: {name} has no label {label} (it has {seen:?})"
                );
            }
            checked.insert(name);
        }
    }
    println!("the dashboard's series, all exposed: {checked:?}");
    for name in [
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
        "grpc_client_handled_total",
    ] {
        assert!(checked.contains(name), "no panel shows {name}");
    }
}

#[test]
fn queries_are_read_for_their_series_and_labels() {
    let series = series_of(
        r#"sum by (le, grpc_method) (rate(grpc_server_handling_seconds_bucket{job=~"$job", grpc_code!="OK"}[5m])) / grpc_server_x"#,
    );
    assert_eq!(
        series["grpc_server_handling_seconds_bucket"],
        ["grpc_code", "grpc_method", "job", "le"]
            .map(str::to_owned)
            .into()
    );
    assert!(series.contains_key("grpc_server_x"));
}
