//! Attacks on a real `echo-server` process, each with a well-behaved client
//! calling alongside. For each: the server stays up, its peak RSS stays
//! bounded, and the well-behaved calls keep succeeding. Each test prints one
//! report line (attack rate, peak RSS, success rate, p99); the tests run one
//! at a time so the figures are the attack's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_client::proto::EchoRequest;
use echo_client::{EchoClient, TlsOptions};
use echo_tests::h2raw::{
    self, CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM,
    SETTINGS,
};
use echo_tests::process::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long each attack runs.
const ATTACK_TIME: Duration = Duration::from_secs(2);
/// The peak RSS an attack may cost the server, over its RSS before, unless
/// the attack states its own bound: the attacks with a shared bound measured
/// 5-30 MiB (gzip bombs the most) on a debug build.
const RSS_BUDGET_KIB: u64 = 48 * 1024;
/// The well-behaved client's p99 under any attack: its calls measured a p99
/// of 3-30 ms on a debug build; a server the attack starves of time misses
/// this long before its calls time out (2 s).
const P99_BOUND: Duration = Duration::from_millis(250);
/// Successful well-behaved calls required during an attack.
const MIN_SUCCESS_RATE: f64 = 0.99;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What an attack did: how many units (frames, connections, requests) of
/// what, and the fewest that count as the attack having happened (set low
/// enough for a loaded 2-core machine: the figures are reported, not gated).
struct Attack {
    units: u64,
    unit: &'static str,
    at_least: u64,
    /// How the server reacted, when the attack watched (frame floods).
    reaction: Option<Flood>,
}

/// Runs `attack` against a fresh server while a well-behaved client calls it,
/// then checks and reports; the server's peak RSS may grow by `rss_bound_kib`.
async fn under_attack(
    name: &str,
    extra_args: &[&str],
    rss_bound_kib: u64,
    attack: impl AsyncFnOnce(&ServerProcess) -> Attack,
) {
    under_attack_over(name, extra_args, rss_bound_kib, None, attack).await;
}

/// [`under_attack`], the well-behaved client over HTTP/3 with `http3`'s TLS
/// (over HTTP/2 without).
async fn under_attack_over(
    name: &str,
    extra_args: &[&str],
    rss_bound_kib: u64,
    http3: Option<TlsOptions>,
    attack: impl AsyncFnOnce(&ServerProcess) -> Attack,
) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let args: Vec<&str> = ["--metrics-addr", "127.0.0.1:0"]
        .into_iter()
        .chain(extra_args.iter().copied())
        .collect();
    let mut server = ServerProcess::start(&args).with_metrics();
    let (rss_before, _) = server.rss_kib();
    let builder = EchoClient::builder(server.addr.to_string()).timeout(Duration::from_secs(2));
    let builder = match http3 {
        Some(tls) => builder.tls(tls).http3(true),
        None => builder,
    };
    let client = builder.connect().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let well_behaved = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut latencies = Vec::new();
            let mut failures = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let request = EchoRequest {
                    message: "well behaved".into(),
                    ..Default::default()
                };
                match client.echo(request).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (latencies, failures)
        }
    });

    let started = Instant::now();
    let attack = tokio::time::timeout(ATTACK_TIME * 5, attack(&server))
        .await
        .unwrap_or_else(|_| panic!("{name}: the attack itself hung"));
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, failures) = well_behaved.await.unwrap();

    assert!(server.is_running(), "{name}: the server died");
    let (rss_after, rss_peak) = server.rss_kib();
    latencies.sort();
    let total = latencies.len() + failures as usize;
    let success = latencies.len() as f64 / total.max(1) as f64;
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "ABUSE {name}: {} {} in {elapsed:.1?} ({:.0}/s); server RSS {} KiB before, {} KiB after, {} KiB peak; \
         well-behaved calls {}/{} ok ({:.2}%), p99 {p99:.1?}{}",
        attack.units,
        attack.unit,
        attack.units as f64 / elapsed.as_secs_f64(),
        rss_before,
        rss_after,
        rss_peak,
        latencies.len(),
        total,
        success * 100.0,
        attack
            .reaction
            .as_ref()
            .map(|flood| format!("; {}", flood.reaction()))
            .unwrap_or_default(),
    );
    assert!(
        attack.units >= attack.at_least,
        "{name}: the attack did not happen: {} {} (at least {} expected)",
        attack.units,
        attack.unit,
        attack.at_least
    );
    assert!(
        total >= 20,
        "{name}: only {total} well-behaved calls were made"
    );
    assert!(
        success >= MIN_SUCCESS_RATE,
        "{name}: success rate {success}"
    );
    assert!(p99 <= P99_BOUND, "{name}: p99 {p99:?}, over {P99_BOUND:?}");
    assert!(
        rss_peak < rss_before + rss_bound_kib,
        "{name}: peak RSS {rss_peak} KiB, over {rss_before} KiB + {rss_bound_kib} KiB"
    );
    assert!(
        server.terminate().success(),
        "{name}: unclean exit after the attack"
    );
}

/// What a frame flood did, counted on the wire: frames the server took
/// (written whole to its socket), connections it closed, and the GOAWAY
/// codes it sent.
#[derive(Debug, Default)]
struct Flood {
    frames: u64,
    closed: u64,
    goaways: Vec<u32>,
}

impl Flood {
    /// Checks that the server defended itself by closing the flooding
    /// connections with GOAWAY ENHANCE_YOUR_CALM, rather than absorbing
    /// the flood (or dropping them without a word).
    fn assert_calmed(&self, name: &str) {
        const ENHANCE_YOUR_CALM: u32 = 0xb;
        assert!(
            self.closed > 0 && !self.goaways.is_empty(),
            "{name}: the server never closed a flooding connection: {}",
            self.reaction()
        );
        assert!(
            self.goaways.iter().all(|&code| code == ENHANCE_YOUR_CALM),
            "{name}: {}",
            self.reaction()
        );
    }

    /// How the server reacted, in words, for the report.
    fn reaction(&self) -> String {
        let mut codes = std::collections::BTreeMap::<u32, usize>::new();
        for code in &self.goaways {
            *codes.entry(*code).or_default() += 1;
        }
        format!(
            "{} connections closed by the server, GOAWAY codes (code: count) {codes:?}",
            self.closed
        )
    }
}

/// Writes frames built by `next` on connection after connection (a server
/// that closes one gets a new one) until the attack time is up, reading
/// what the server sends meanwhile.
async fn frame_flood(
    addr: SocketAddr,
    setup: impl Fn(&mut Vec<u8>),
    mut next: impl FnMut(u32, &mut Vec<u8>),
) -> Flood {
    let deadline = Instant::now() + ATTACK_TIME;
    let mut flood = Flood::default();
    let mut stream_id = 1u32;
    while Instant::now() < deadline {
        let mut socket = h2raw::connect(addr).await;
        let mut setup_frames = Vec::new();
        setup(&mut setup_frames);
        let (mut reader, mut writer) = socket.split();
        let mut goaways = Vec::new();
        let read = async {
            while let Some(frame) = h2raw::read_frame(&mut reader).await {
                if frame.kind == GOAWAY {
                    goaways.push(h2raw::goaway(&frame).1);
                }
            }
        };
        let mut written = 0u64;
        let write = async {
            if writer.write_all(&setup_frames).await.is_err() {
                return;
            }
            let mut batch = Vec::new();
            while Instant::now() < deadline {
                for _ in 0..100 {
                    next(stream_id, &mut batch);
                    stream_id = stream_id.wrapping_add(2) & 0x7fff_ffff;
                }
                if writer.write_all(&batch).await.is_err() {
                    return; // the server closed it: reconnect
                }
                written += 100;
                batch.clear();
            }
        };
        let closed = tokio::select! {
            () = write => false,
            () = read => true,
        };
        flood.frames += written;
        flood.closed += u64::from(closed);
        flood.goaways.extend(goaways);
    }
    flood
}

fn echo_request() -> Vec<u8> {
    h2raw::grpc_request("/echo.v1.EchoService/Echo", &[])
}

#[tokio::test]
async fn rapid_reset_flood() {
    under_attack(
        "rapid reset (CVE-2023-44487)",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let headers = echo_request();
            let flood = frame_flood(
                addr,
                |_| {},
                |stream, out| {
                    out.extend(h2raw::frame(HEADERS, END_HEADERS, stream, &headers));
                    out.extend(h2raw::frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
                },
            )
            .await;
            Attack {
                units: flood.frames,
                unit: "HEADERS+RST_STREAM pairs",
                at_least: 1000,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_stream_reset_flood() {
    under_attack(
        "reset flood through invalid frames",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let malformed =
                h2raw::grpc_request("/echo.v1.EchoService/Echo", &[("connection", "close")]);
            let flood = frame_flood(
                addr,
                |_| {},
                |stream, out| {
                    out.extend(h2raw::frame(
                        HEADERS,
                        END_HEADERS | END_STREAM,
                        stream,
                        &malformed,
                    ));
                },
            )
            .await;
            flood.assert_calmed("malformed HEADERS");
            Attack {
                units: flood.frames,
                unit: "malformed HEADERS",
                at_least: 1000,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn continuation_flood() {
    under_attack(
        "CONTINUATION flood",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let filler = h2raw::header_block(&[("x-filler", &"a".repeat(16_000))]);
            let flood = frame_flood(
                addr,
                |out| out.extend(h2raw::frame(HEADERS, 0, 1, &echo_request())),
                |_, out| out.extend(h2raw::frame(CONTINUATION, 0, 1, &filler)),
            )
            .await;
            flood.assert_calmed("16 KB CONTINUATION frames");
            Attack {
                units: flood.frames,
                unit: "16 KB CONTINUATION frames",
                at_least: 100,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn settings_flood() {
    under_attack(
        "SETTINGS flood",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            // SETTINGS_ENABLE_PUSH = 0, again and again, never reading the ACKs.
            let settings = h2raw::frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]);
            let flood = frame_flood(addr, |_| {}, |_, out| out.extend_from_slice(&settings)).await;
            Attack {
                units: flood.frames,
                unit: "SETTINGS frames",
                at_least: 1000,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn ping_flood() {
    under_attack(
        "PING flood",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let ping = h2raw::frame(PING, 0, 0, &[7; 8]);
            let flood = frame_flood(addr, |_| {}, |_, out| out.extend_from_slice(&ping)).await;
            Attack {
                units: flood.frames,
                unit: "PING frames",
                at_least: 1000,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn empty_data_frame_flood() {
    under_attack(
        "empty DATA frame flood",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let open = h2raw::grpc_request("/echo.v1.EchoService/ClientStream", &[]);
            let flood = frame_flood(
                addr,
                |out| out.extend(h2raw::frame(HEADERS, END_HEADERS, 1, &open)),
                |_, out| out.extend(h2raw::frame(DATA, 0, 1, &[])),
            )
            .await;
            // h2 closes a connection after 100 empty DATA frames on a live
            // stream; frames that arrive after the stream ended are answered
            // with a reset instead, so whether the server closes varies.
            Attack {
                units: flood.frames,
                unit: "empty DATA frames",
                at_least: 1000,
                reaction: Some(flood),
            }
        },
    )
    .await;
}

/// Header blocks of 40 KB, well over the 16 KiB limit, each split over
/// HEADERS and CONTINUATION frames as it must be: every one is refused
/// (HTTP 431 and a reset) and the connection goes on.
#[tokio::test]
async fn oversized_header_blocks() {
    under_attack(
        "header blocks over the limit",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let block = h2raw::grpc_request(
                "/echo.v1.EchoService/Echo",
                &[("x-big", &"b".repeat(40_000))],
            );
            let chunks: Vec<&[u8]> = block.chunks(16_000).collect();
            let deadline = Instant::now() + ATTACK_TIME;
            let (mut sent, mut refused) = (0u64, 0u64);
            while Instant::now() < deadline {
                let mut socket = h2raw::connect(addr).await;
                let mut stream = 1u32;
                while Instant::now() < deadline && stream < 200 {
                    let mut out = Vec::new();
                    for (i, chunk) in chunks.iter().enumerate() {
                        let (kind, flags) = if i == 0 {
                            (HEADERS, END_STREAM)
                        } else {
                            (CONTINUATION, 0)
                        };
                        let last = if i + 1 == chunks.len() {
                            END_HEADERS
                        } else {
                            0
                        };
                        out.extend(h2raw::frame(kind, flags | last, stream, chunk));
                    }
                    if socket.write_all(&out).await.is_err() {
                        break;
                    }
                    sent += 1;
                    // The answer to this stream: 431 (HEADERS ending it) or a reset.
                    let answered = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Some(frame) = h2raw::read_frame(&mut socket).await {
                            if let Some(ack) = h2raw::acknowledgement(&frame) {
                                let _ = socket.write_all(&ack).await;
                            }
                            if frame.stream == stream
                                && (frame.kind == RST_STREAM
                                    || (frame.kind == HEADERS && frame.flags & END_STREAM != 0))
                            {
                                return true;
                            }
                        }
                        false
                    })
                    .await;
                    if answered != Ok(true) {
                        break;
                    }
                    refused += 1;
                    stream += 2;
                }
            }
            assert_eq!(refused, sent, "a 40 KB header block was not refused");
            Attack {
                units: refused,
                unit: "40 KB header blocks refused",
                at_least: 50,
                reaction: None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn connections_that_never_send_the_preface() {
    under_attack(
        "silent connections",
        &["--handshake-timeout", "1s"],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            // Bounded in time too: on a loaded machine the accept queue can
            // fill, and a connect whose SYN was dropped waits a second or more.
            let connecting_until = tokio::time::Instant::now() + ATTACK_TIME;
            let mut silent = Vec::new();
            let mut refused = 0;
            for _ in 0..3_000 {
                match tokio::time::timeout_at(connecting_until, TcpStream::connect(addr)).await {
                    Ok(Ok(socket)) => silent.push(socket),
                    Ok(Err(_)) => refused += 1,
                    Err(_) => break,
                }
            }
            let opened = silent.len() as u64;
            println!("silent connections: {opened} opened, {refused} connects failed");
            // Every one must be closed by the server one handshake timeout
            // after it was accepted; the slack covers a busy accept loop.
            let mut readers = tokio::task::JoinSet::new();
            for mut socket in silent {
                readers.spawn(async move {
                    // The server's SETTINGS may come first; then the end of the stream.
                    let mut buf = Vec::new();
                    tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut buf))
                        .await
                        .is_err()
                });
            }
            let still_open = readers
                .join_all()
                .await
                .into_iter()
                .filter(|open| *open)
                .count();
            assert_eq!(
                still_open, 0,
                "{still_open} of {opened} silent connections outlived the handshake timeout"
            );
            Attack {
                units: opened,
                unit: "silent connections",
                at_least: 200,
                reaction: None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn garbage_instead_of_http2() {
    under_attack(
        "garbage bytes",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let deadline = Instant::now() + ATTACK_TIME;
            let mut connections = 0;
            while Instant::now() < deadline {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                let garbage: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
                let _ = socket.write_all(&garbage).await;
                connections += 1;
            }
            Attack {
                units: connections,
                unit: "connections of 4 KB garbage",
                at_least: 20,
                reaction: None,
            }
        },
    )
    .await;
}

/// Pipelined HTTP/1.1 Connect calls, as fast as the server takes them, on
/// connection after connection.
#[tokio::test]
async fn http1_request_flood() {
    under_attack(
        "HTTP/1.1 request flood",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let deadline = Instant::now() + ATTACK_TIME;
            let body = r#"{"message":"flood"}"#;
            let request = format!(
                "POST /echo.v1.EchoService/Echo HTTP/1.1\r\nhost: flood\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let batch = request.repeat(100);
            let mut requests = 0u64;
            let mut answered = 0u64;
            while Instant::now() < deadline {
                let socket = TcpStream::connect(addr).await.unwrap();
                let (mut reader, mut writer) = socket.into_split();
                let seen = Arc::new(AtomicU64::new(0));
                let count = tokio::spawn({
                    let seen = Arc::clone(&seen);
                    async move {
                        let mut sink = vec![0u8; 64 * 1024];
                        let mut tail = Vec::new();
                        while let Ok(n @ 1..) = reader.read(&mut sink).await {
                            tail.extend_from_slice(&sink[..n]);
                            let answers =
                                tail.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
                            seen.fetch_add(answers as u64, Ordering::Relaxed);
                            let keep = tail.len().saturating_sub(14);
                            tail.drain(..keep);
                        }
                    }
                });
                let mut sent = 0u64;
                for _ in 0..10 {
                    if writer.write_all(batch.as_bytes()).await.is_err() {
                        break;
                    }
                    sent += 100;
                }
                // Every request pipelined on the connection is answered (the
                // write side stays open: hyper closes a connection whose
                // client half-closes, as curl never does).
                let all = tokio::time::timeout(Duration::from_secs(5), async {
                    while seen.load(Ordering::Relaxed) < sent {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await;
                count.abort();
                requests += sent;
                answered += seen.load(Ordering::Relaxed);
                assert!(all.is_ok(), "{} of {sent} pipelined requests answered", seen.load(Ordering::Relaxed));
            }
            println!("HTTP/1.1 flood: {requests} requests sent, {answered} answered 200");
            assert_eq!(answered, requests, "every flood request is answered");
            Attack {
                units: requests,
                unit: "pipelined HTTP/1.1 requests",
                at_least: 1_000,
                reaction: None,
            }
        },
    )
    .await;
}

/// HTTP/1.1 clients that send their headers a byte at a time and never
/// finish: each is cut one handshake timeout after it began.
#[tokio::test]
async fn http1_slow_header_clients() {
    under_attack(
        "HTTP/1.1 slow headers",
        &["--handshake-timeout", "1s"],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let mut clients = tokio::task::JoinSet::new();
            for _ in 0..200 {
                clients.spawn(async move {
                    let Ok(mut socket) = TcpStream::connect(addr).await else {
                        return false;
                    };
                    let started = Instant::now();
                    let headers =
                        b"POST /echo.v1.EchoService/Echo HTTP/1.1\r\nhost: slow\r\nx-slow: ";
                    let mut sent = 0;
                    loop {
                        let byte = headers.get(sent).copied().unwrap_or(b'a');
                        if socket.write_all(&[byte]).await.is_err() {
                            break;
                        }
                        sent += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if started.elapsed() > Duration::from_secs(6) {
                            return false; // never cut
                        }
                    }
                    true
                });
            }
            let outcomes = clients.join_all().await;
            let cut = outcomes.iter().filter(|cut| **cut).count();
            assert_eq!(
                cut,
                outcomes.len(),
                "{} slow clients were never cut",
                outcomes.len() - cut
            );
            Attack {
                units: cut as u64,
                unit: "slow-header connections cut",
                at_least: 100,
                reaction: None,
            }
        },
    )
    .await;
}

/// A gRPC call made with the `h2` crate, which handles flow control, so the
/// body can be anything at all. Returns the grpc-status.
async fn raw_call(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    end: bool,
    encoding: Option<&str>,
) -> Option<String> {
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), false).ok()?;
    send.send_data(body, end).ok()?;
    let response = response.await.ok()?;
    if let Some(status) = response.headers().get("grpc-status") {
        return Some(status.to_str().unwrap().to_owned());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.ok()?.len());
    }
    let trailers = body.trailers().await.ok()??;
    Some(trailers.get("grpc-status")?.to_str().unwrap().to_owned())
}

async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let socket = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

fn gzipped_message(message: &[u8]) -> Bytes {
    echo_wire::framing::encode(&echo_wire::framing::Message {
        compressed: true,
        bytes: echo_wire::framing::gzip(message),
    })
}

#[tokio::test]
async fn gzip_bombs_get_resource_exhausted() {
    // 64 MiB of zeros in a message field, gzipped to about 64 KB.
    let mut message = vec![0x12, 0x80, 0x80, 0x80, 0x20]; // field 2 (payload), length 64 MiB
    message.resize(message.len() + 64 * 1024 * 1024, 0);
    let bomb = gzipped_message(&message);
    drop(message);
    under_attack(
        "gzip bombs",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let mut client = h2_client(addr).await;
            let deadline = Instant::now() + ATTACK_TIME;
            let mut bombs = 0;
            while Instant::now() < deadline {
                let status = raw_call(
                    &mut client,
                    addr,
                    "/echo.v1.EchoService/Echo",
                    bomb.clone(),
                    true,
                    Some("gzip"),
                )
                .await;
                assert_eq!(
                    status.as_deref(),
                    Some("8"),
                    "a gzip bomb was not refused with RESOURCE_EXHAUSTED"
                );
                bombs += 1;
            }
            Attack {
                units: bombs,
                unit: "64 MiB gzip bombs",
                at_least: 5,
                reaction: None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn length_prefixes_that_lie() {
    under_attack(
        "length prefix larger than the body",
        &["--max-call-time", "1s"],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            // Claims 4 MiB, sends 10 bytes, keeps the stream open: the server may
            // wait for the rest, but not past the call's time, and not in RSS.
            let mut lie = vec![0u8, 0, 0x40, 0, 0];
            lie.extend_from_slice(&[0; 10]);
            let lie = Bytes::from(lie);
            let mut calls = Vec::new();
            for _ in 0..4 {
                let client = h2_client(addr).await;
                for _ in 0..150 {
                    let lie = lie.clone();
                    let mut client = client.clone();
                    calls.push(tokio::spawn(async move {
                        raw_call(
                            &mut client,
                            addr,
                            "/echo.v1.EchoService/ClientStream",
                            lie,
                            false,
                            None,
                        )
                        .await
                    }));
                }
            }
            let units = calls.len() as u64;
            for call in calls {
                let status = call.await.unwrap();
                assert_eq!(
                    status.as_deref(),
                    Some("4"),
                    "a lying stream was not ended by the call-time cap"
                );
            }
            Attack {
                units,
                unit: "streams claiming 4 MiB",
                at_least: 600,
                reaction: None,
            }
        },
    )
    .await;
}

/// Sends `body` as one gRPC call after another for the attack time, checking
/// each gets `expected_status`.
async fn bad_calls(addr: SocketAddr, body: Bytes, expected_status: &str) -> u64 {
    let mut client = h2_client(addr).await;
    let deadline = Instant::now() + ATTACK_TIME;
    let mut calls = 0;
    while Instant::now() < deadline {
        let status = raw_call(
            &mut client,
            addr,
            "/echo.v1.EchoService/Echo",
            body.clone(),
            true,
            None,
        )
        .await;
        assert_eq!(status.as_deref(), Some(expected_status));
        calls += 1;
    }
    calls
}

#[tokio::test]
async fn messages_over_the_size_limit() {
    // A message declared as 5 MiB, over the 4 MiB default: refused on its
    // length prefix, before any of it is buffered.
    let mut body = vec![0u8];
    body.extend_from_slice(&(5u32 * 1024 * 1024).to_be_bytes());
    body.resize(body.len() + 1024, 0);
    let body = Bytes::from(body);
    under_attack(
        "messages over the size limit",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            Attack {
                units: bad_calls(addr, body, "8").await,
                unit: "messages declared 5 MiB",
                at_least: 50,
                reaction: None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_protobuf() {
    // Field 1 (a string) sent as a varint.
    let body = echo_tests::grpc_message(&[0x08, 0x2a]);
    under_attack(
        "malformed protobuf",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            Attack {
                units: bad_calls(addr, body, "13").await,
                unit: "malformed messages",
                at_least: 50,
                reaction: None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field() {
    let body = echo_tests::grpc_message(&[0x0a, 0x03, b'a', 0xff, 0xfe]);
    under_attack(
        "invalid UTF-8 in a string field",
        &[],
        RSS_BUDGET_KIB,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            Attack {
                units: bad_calls(addr, body, "13").await,
                unit: "messages with invalid UTF-8",
                at_least: 50,
                reaction: None,
            }
        },
    )
    .await;
}

/// Sends `data` on `stream` as HTTP/2 flow control allows, never buffering
/// more than the peer granted: an attacker that cannot be made to hold
/// memory itself.
async fn send_as_granted(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> bool {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted,
            _ => return false,
        };
        if granted > 0
            && stream
                .send_data(data.split_to(granted.min(data.len())), false)
                .is_err()
        {
            return false;
        }
    }
    true
}

/// Connections of an attacker, open until dropped.
#[derive(Default)]
struct Attacker(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Attacker {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the budgets hold now, from the metrics: `(requests, answers)` in bytes.
fn budgets_in_use(server: &ServerProcess) -> (u64, u64) {
    let held = |budget| {
        server
            .metric("grpc_server_budget_in_use_bytes", &[("budget", budget)])
            .unwrap_or(0.0) as u64
    };
    (held("request"), held("answer"))
}

/// After the attacker leaves, the memory it made the server hold comes back:
/// the budgets empty, and the RSS falls at least halfway back to where it was
/// before the attack (`rss_before`); the figures are reported.
async fn after_the_attacker_leaves(
    server: &ServerProcess,
    rss_before: u64,
    held_rss: u64,
    name: &str,
) {
    echo_tests::eventually("the budgets to empty", || async {
        budgets_in_use(server) == (0, 0)
    })
    .await;
    let halfway = rss_before + held_rss.saturating_sub(rss_before) / 2;
    // The allocator gives pages back in its own time (about a second).
    echo_tests::eventually("the RSS to come back down", || async {
        server.rss_kib().0 <= halfway
    })
    .await;
    let (rss_after, _) = server.rss_kib();
    println!(
        "{name}: RSS {rss_before} KiB before, {held_rss} KiB while held, {rss_after} KiB after the attacker left ({} KiB given back)",
        held_rss - rss_after
    );
}

/// 4 connections x 100 ClientStream calls, each declaring a 4 MiB - 1 message
/// and sending all of it but the last byte, held open: the server held 1.66 GB
/// before the budgets. Now four messages per connection get room (16 MiB), the
/// rest are not read, so flow control stops them within the connection's window.
#[tokio::test]
async fn unfinished_messages_are_held_within_the_request_budget() {
    use echo_server::config::{DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET, DEFAULT_MAX_MESSAGE_SIZE};
    const CONNECTIONS: u64 = 4;
    // Per connection: its request budget, and as much again of data not read
    // (its receive window is the budget); plus 32 MiB for everything else.
    let bound =
        CONNECTIONS * 2 * (DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET as u64 / 1024) + 32 * 1024;
    under_attack(
        "unfinished 4 MiB messages",
        &[],
        bound,
        async move |server: &ServerProcess| {
            let addr = server.addr;
            let length = DEFAULT_MAX_MESSAGE_SIZE - 1;
            let mut message = vec![0u8];
            message.extend_from_slice(&(length as u32).to_be_bytes());
            message.resize(5 + length - 1, b'x');
            let message = Bytes::from(message);
            let mut attacker = Attacker::default();
            for _ in 0..CONNECTIONS {
                let client = h2_client(addr).await;
                for _ in 0..100 {
                    let mut client = client.clone();
                    let message = message.clone();
                    attacker.0.push(tokio::spawn(async move {
                        let request = http::Request::post(format!(
                            "http://{addr}/echo.v1.EchoService/ClientStream"
                        ))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(())
                        .unwrap();
                        let Ok((_response, mut stream)) = client.send_request(request, false)
                        else {
                            return;
                        };
                        send_as_granted(&mut stream, message).await;
                        std::future::pending::<()>().await;
                    }));
                }
            }
            // The budgets fill as far as they may, and no further.
            let room = (DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET / DEFAULT_MAX_MESSAGE_SIZE) as u64;
            let length = DEFAULT_MAX_MESSAGE_SIZE as u64 - 1;
            echo_tests::eventually("each connection's budget to fill with messages", || async {
                budgets_in_use(server).0 == CONNECTIONS * room * length
            })
            .await;
            tokio::time::sleep(ATTACK_TIME).await;
            let (requests, _) = budgets_in_use(server);
            let (held_rss, _) = server.rss_kib();
            println!(
                "unfinished messages: {} MiB reserved of the 96 MiB budget, RSS {held_rss} KiB",
                requests / (1024 * 1024)
            );
            assert!(
                requests <= CONNECTIONS * DEFAULT_CONNECTION_REQUEST_BUFFER_BUDGET as u64,
                "{requests} bytes reserved"
            );
            let streams = attacker.0.len() as u64;
            drop(attacker);
            after_the_attacker_leaves(server, server.rss_at_start, held_rss, "unfinished messages")
                .await;
            Attack {
                units: streams,
                unit: "streams sending 4 MiB - 1 and holding the last byte",
                at_least: 400,
                reaction: None,
            }
        },
    )
    .await;
}

/// 4 connections x 100 ServerStream calls asking for 1000 answers of 1 MiB,
/// with a 1 KiB receive window never reopened: 736 MB of answers before the
/// budgets, from a few kilobytes of requests. Now each connection may hold
/// its answer budget, and HTTP/2 at most as much again.
#[tokio::test]
async fn unread_answers_are_held_within_the_answer_budget() {
    use echo_server::config::DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET;
    const CONNECTIONS: u64 = 4;
    let bound =
        CONNECTIONS * 2 * (DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET as u64 / 1024) + 32 * 1024;
    under_attack("unread 1 MiB answers", &[], bound, async move |server: &ServerProcess| {
        let addr = server.addr;
        let request = EchoRequest {
            response_size: Some(1024 * 1024),
            stream: Some(echo_client::proto::StreamControl {
                count: Some(1000),
                interval: None,
            }),
            ..Default::default()
        };
        let body = echo_tests::grpc_message(&prost::Message::encode_to_vec(&request));
        let mut attacker = Attacker::default();
        for _ in 0..CONNECTIONS {
            let socket = TcpStream::connect(addr).await.unwrap();
            let (client, connection) = h2::client::Builder::new()
                .initial_window_size(1024)
                .initial_connection_window_size(1024)
                .handshake::<_, Bytes>(socket)
                .await
                .unwrap();
            attacker.0.push(tokio::spawn(async move {
                let _ = connection.await;
            }));
            for _ in 0..100 {
                let mut client = client.clone();
                let body = body.clone();
                attacker.0.push(tokio::spawn(async move {
                    let request = http::Request::post(format!(
                        "http://{addr}/echo.v1.EchoService/ServerStream"
                    ))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .unwrap();
                    let Ok(ready) = client.ready().await else { return };
                    client = ready;
                    let Ok((response, mut stream)) = client.send_request(request, false) else {
                        return;
                    };
                    let _ = stream.send_data(body, true);
                    // The answer is never read: its window never reopens.
                    let _response = response.await;
                    std::future::pending::<()>().await;
                }));
            }
        }
        echo_tests::eventually("the answer budgets to fill", || async {
            budgets_in_use(server).1 >= CONNECTIONS * DEFAULT_CONNECTION_ANSWER_BUFFER_BUDGET as u64 / 2
        })
        .await;
        tokio::time::sleep(ATTACK_TIME).await;
        let (_, answers) = budgets_in_use(server);
        let (held_rss, _) = server.rss_kib();
        let waits = server
            .metric("grpc_server_budget_waits_total", &[("budget", "answer")])
            .unwrap_or(0.0);
        println!(
            "unread answers: {} MiB held of the 96 MiB budget, {waits} waits, RSS {held_rss} KiB",
            answers / (1024 * 1024)
        );
        assert!(waits > 0.0, "no stream waited for room");
        let streams = attacker.0.len() as u64 - CONNECTIONS;
        drop(attacker);
        after_the_attacker_leaves(server, server.rss_at_start, held_rss, "unread answers").await;
        Attack {
            units: streams,
            unit: "streams asking for 1000 x 1 MiB and reading none",
            at_least: 400,
            reaction: None,
        }
    })
    .await;
}

/// A peer that reads none of its answers while its budget is used up is cut
/// after --budget-timeout, and the budget it held comes back.
#[tokio::test]
async fn a_connection_reading_nothing_is_cut_after_the_budget_timeout() {
    let server = ServerProcess::start(&["--budget-timeout", "1s", "--metrics-addr", "127.0.0.1:0"])
        .with_metrics();
    let socket = TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, Bytes>(socket)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let body = unread_stream_request();
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone().ready().await.unwrap();
        let post = http::Request::post(format!(
            "http://{}/echo.v1.EchoService/ServerStream",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (response, mut stream) = client.send_request(post, false).unwrap();
        stream.send_data(body.clone(), true).unwrap();
        streams.push(response);
    }
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection was not cut");
    println!("cut after {:?}: {ended:?}", started.elapsed());
    cut_for_reading_nothing(&server, started.elapsed(), Duration::from_secs(3)).await;
    echo_tests::assert_still_serving(server.addr).await;
}

/// A ServerStream request for a thousand answers of 1 MiB each, enveloped:
/// what the reading-nothing tests send on each stream.
fn unread_stream_request() -> Bytes {
    let request = EchoRequest {
        response_size: Some(1024 * 1024),
        stream: Some(echo_client::proto::StreamControl {
            count: Some(1000),
            interval: None,
        }),
        ..Default::default()
    };
    echo_tests::grpc_message(&prost::Message::encode_to_vec(&request))
}

/// Checks that a connection reading none of its answers was cut
/// `cut_after` its streams began, within `--budget-timeout 1s` of no
/// progress once the budget was used up (which the streams' first answers
/// do at once) and the watchdog's round (`by`), as the log says, and that
/// the budget emptied.
async fn cut_for_reading_nothing(server: &ServerProcess, cut_after: Duration, by: Duration) {
    assert!(
        (Duration::from_millis(900)..by).contains(&cut_after),
        "cut after {cut_after:?} with --budget-timeout 1s"
    );
    server.wait_for_log(
        "the peer reads none of its answers while a budget is used up: closing the connection",
    );
    echo_tests::eventually("the budget to empty", || async {
        budgets_in_use(server).1 == 0
    })
    .await;
}

/// A well-behaved client moving 4 MiB messages both ways on 50 streams of one
/// connection at full speed is not stopped by the budgets.
#[tokio::test]
async fn large_messages_on_many_streams_pass() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = ServerProcess::start(&[]);
    let client = EchoClient::builder(server.addr.to_string())
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    // The largest payload that fits a 4 MiB message with its framing.
    let payload = vec![7u8; echo_server::config::DEFAULT_MAX_MESSAGE_SIZE - 64];
    let started = Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            let request = EchoRequest {
                payload: payload.clone().into(),
                ..Default::default()
            };
            tokio::spawn(async move {
                client
                    .echo(request)
                    .await
                    .map(|r| r.into_inner().payload.len())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), payload.len());
    }
    let elapsed = started.elapsed();
    println!(
        "50 echoes of 4 MiB on one connection in {elapsed:.2?} ({:.0} MB/s each way)",
        50.0 * payload.len() as f64 / elapsed.as_secs_f64() / 1e6
    );
}

/// A server's TLS files for `--http3`, and the client side of its CA.
struct QuicServerFiles {
    args: Vec<String>,
    ca: echo_tests::pki::Ca,
}

impl QuicServerFiles {
    fn new(name: &str) -> Self {
        let ca = echo_tests::pki::Ca::new("quic-abuse-ca");
        let leaf = ca.server();
        let dir = echo_tests::pki::temp_dir(name);
        let cert = echo_tests::pki::write(&dir, "server.pem", &leaf.cert);
        let key = echo_tests::pki::write(&dir, "server.key", &leaf.key);
        let args = vec![
            "--http3".to_owned(),
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ];
        Self { args, ca }
    }

    fn tls(&self) -> TlsOptions {
        TlsOptions {
            ca_pem: self.ca.pem().into_bytes(),
            server_name: Some("localhost".into()),
            identity: None,
        }
    }

    /// quinn's client configuration trusting the CA (ALPN `h3`), its
    /// receive window per stream `stream_window`.
    fn quinn_config(&self, stream_window: u32) -> quinn::ClientConfig {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let mut config = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
        ));
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(stream_window.into());
        config.transport_config(Arc::new(transport));
        config
    }
}

/// QUIC handshakes as fast as eight loops make them, each connection
/// abandoned at once (no CONNECTION_CLOSE: the server holds it until its
/// idle timeout): the connection cap bounds what they hold, and the
/// well-behaved client (over HTTP/3, connected before) keeps its calls.
#[tokio::test]
async fn quic_handshake_flood() {
    let files = QuicServerFiles::new("quic-flood");
    let mut args: Vec<&str> = files.args.iter().map(String::as_str).collect();
    args.extend(["--max-connections", "256"]);
    under_attack_over(
        "QUIC handshake flood",
        &args,
        RSS_BUDGET_KIB,
        Some(files.tls()),
        async |server| {
            let config = files.quinn_config(64 * 1024);
            let addr = server.addr;
            let made = Arc::new(AtomicU64::new(0));
            let refused = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + ATTACK_TIME;
            let mut loops = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let (config, made, refused) =
                    (config.clone(), Arc::clone(&made), Arc::clone(&refused));
                loops.spawn(async move {
                    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
                    let mut abandoned = Vec::new();
                    while Instant::now() < deadline {
                        let connecting = endpoint
                            .connect_with(config.clone(), addr, "localhost")
                            .unwrap();
                        match tokio::time::timeout(Duration::from_secs(1), connecting).await {
                            Ok(Ok(connection)) => {
                                made.fetch_add(1, Ordering::Relaxed);
                                abandoned.push(connection);
                            }
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    // Dropped without a close: the endpoint's socket goes with them.
                    std::mem::forget(abandoned);
                    std::mem::forget(endpoint);
                });
            }
            while loops.join_next().await.is_some() {}
            let (made, refused) = (
                made.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed),
            );
            println!(
                "QUIC handshake flood: {made} handshakes completed, {refused} refused or timed out"
            );
            Attack {
                units: made + refused,
                unit: "QUIC handshakes",
                at_least: 100,
                reaction: None,
            }
        },
    )
    .await;
}

/// Twenty server streams of 1 MiB answers on one QUIC connection whose
/// client reads none of them (64 KiB receive window per stream): once the
/// connection's answer budget is used up with no progress for
/// `--budget-timeout`, the server closes the connection, as over HTTP/2.
#[tokio::test]
async fn a_quic_connection_reading_nothing_is_cut_after_the_budget_timeout() {
    let files = QuicServerFiles::new("quic-unread");
    let mut args: Vec<&str> = files.args.iter().map(String::as_str).collect();
    args.extend(["--budget-timeout", "1s", "--metrics-addr", "127.0.0.1:0"]);
    let server = ServerProcess::start(&args).with_metrics();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(files.quinn_config(64 * 1024), server.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let body = unread_stream_request();
    let mut streams = Vec::new();
    for _ in 0..20 {
        let post = http::Request::post(format!(
            "https://localhost:{}/echo.v1.EchoService/ServerStream",
            server.addr.port()
        ))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        let mut stream = sender.send_request(post).await.unwrap();
        stream.send_data(body.clone()).await.unwrap();
        stream.finish().await.unwrap();
        // Kept, never read.
        streams.push(stream);
    }
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the QUIC connection was not cut");
    println!(
        "QUIC connection cut after {:?}: {closed}",
        started.elapsed()
    );
    cut_for_reading_nothing(&server, started.elapsed(), Duration::from_secs(4)).await;
    drop(streams);
}
