//! Attacks on a real `echo-server` process, each with a well-behaved client
//! calling alongside. For each: the server stays up, its peak RSS stays
//! bounded, and the well-behaved calls keep succeeding. Each test prints one
//! report line (attack rate, peak RSS, success rate, p99); the tests run one
//! at a time so the figures are the attack's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use echo_client::EchoClient;
use echo_client::proto::EchoRequest;
use echo_tests::h2raw::{
    self, CANCEL, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PING, RST_STREAM, SETTINGS,
};
use echo_tests::process::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long each attack runs.
const ATTACK_TIME: Duration = Duration::from_secs(2);
/// The peak RSS an attack may cost the server, over its RSS before.
const RSS_BUDGET_KIB: u64 = 128 * 1024;
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
}

/// Runs `attack` against a fresh server while a well-behaved client calls it,
/// then checks and reports.
async fn under_attack<F, Fut>(name: &str, extra_args: &[&str], attack: F)
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Attack>,
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = ServerProcess::start(extra_args);
    let (rss_before, _) = server.rss_kib();
    let client = EchoClient::builder(server.addr.to_string())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();

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
    let attack = tokio::time::timeout(ATTACK_TIME * 5, attack(server.addr))
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
         well-behaved calls {}/{} ok ({:.2}%), p99 {p99:.1?}",
        attack.units,
        attack.unit,
        attack.units as f64 / elapsed.as_secs_f64(),
        rss_before,
        rss_after,
        rss_peak,
        latencies.len(),
        total,
        success * 100.0,
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
    assert!(
        rss_peak < rss_before + RSS_BUDGET_KIB,
        "{name}: peak RSS {rss_peak} KiB"
    );
    assert!(
        server.terminate().success(),
        "{name}: unclean exit after the attack"
    );
}

/// Writes frames built by `next` on connection after connection (a server
/// that closes one gets a new one) until the attack time is up.
async fn frame_flood(
    addr: SocketAddr,
    setup: impl Fn(&mut Vec<u8>),
    mut next: impl FnMut(u32, &mut Vec<u8>),
) -> u64 {
    let deadline = Instant::now() + ATTACK_TIME;
    let mut frames = 0u64;
    while Instant::now() < deadline {
        let mut socket = h2raw::connect(addr).await;
        let mut batch = Vec::new();
        setup(&mut batch);
        let (mut reader, mut writer) = socket.split();
        let drain = async {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let write = async {
            let mut stream_id = 1u32;
            while Instant::now() < deadline {
                for _ in 0..100 {
                    next(stream_id, &mut batch);
                    stream_id += 2;
                    frames += 1;
                }
                if writer.write_all(&batch).await.is_err() {
                    return; // the server closed it: reconnect
                }
                batch.clear();
            }
        };
        tokio::select! {
            () = write => {}
            () = drain => {}
        }
    }
    frames
}

fn echo_request() -> Vec<u8> {
    h2raw::grpc_request("/echo.v1.EchoService/Echo", &[])
}

#[tokio::test]
async fn rapid_reset_flood() {
    under_attack("rapid reset (CVE-2023-44487)", &[], |addr| async move {
        let headers = echo_request();
        let units = frame_flood(
            addr,
            |_| {},
            |stream, out| {
                out.extend(h2raw::frame(HEADERS, END_HEADERS, stream, &headers));
                out.extend(h2raw::frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
            },
        )
        .await;
        Attack {
            units,
            unit: "HEADERS+RST_STREAM pairs",
            at_least: 1000,
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_stream_reset_flood() {
    under_attack(
        "reset flood through invalid frames",
        &[],
        |addr| async move {
            let malformed =
                h2raw::grpc_request("/echo.v1.EchoService/Echo", &[("connection", "close")]);
            let units = frame_flood(
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
            Attack {
                units,
                unit: "malformed HEADERS",
                at_least: 1000,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn continuation_flood() {
    under_attack("CONTINUATION flood", &[], |addr| async move {
        let filler = h2raw::header_block(&[("x-filler", &"a".repeat(16_000))]);
        let units = frame_flood(
            addr,
            |out| out.extend(h2raw::frame(HEADERS, 0, 1, &echo_request())),
            |_, out| out.extend(h2raw::frame(CONTINUATION, 0, 1, &filler)),
        )
        .await;
        Attack {
            units,
            unit: "16 KB CONTINUATION frames",
            at_least: 100,
        }
    })
    .await;
}

#[tokio::test]
async fn settings_flood() {
    under_attack("SETTINGS flood", &[], |addr| async move {
        // SETTINGS_ENABLE_PUSH = 0, again and again, never reading the ACKs.
        let settings = h2raw::frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]);
        let units = frame_flood(addr, |_| {}, |_, out| out.extend_from_slice(&settings)).await;
        Attack {
            units,
            unit: "SETTINGS frames",
            at_least: 1000,
        }
    })
    .await;
}

#[tokio::test]
async fn ping_flood() {
    under_attack("PING flood", &[], |addr| async move {
        let ping = h2raw::frame(PING, 0, 0, &[7; 8]);
        let units = frame_flood(addr, |_| {}, |_, out| out.extend_from_slice(&ping)).await;
        Attack {
            units,
            unit: "PING frames",
            at_least: 1000,
        }
    })
    .await;
}

#[tokio::test]
async fn empty_data_frame_flood() {
    under_attack("empty DATA frame flood", &[], |addr| async move {
        let open = h2raw::grpc_request("/echo.v1.EchoService/ClientStream", &[]);
        let units = frame_flood(
            addr,
            |out| out.extend(h2raw::frame(HEADERS, END_HEADERS, 1, &open)),
            |_, out| out.extend(h2raw::frame(DATA, 0, 1, &[])),
        )
        .await;
        Attack {
            units,
            unit: "empty DATA frames",
            at_least: 1000,
        }
    })
    .await;
}

/// Header blocks of 40 KB, well over the 16 KiB limit, each split over
/// HEADERS and CONTINUATION frames as it must be: every one is refused
/// (HTTP 431 and a reset) and the connection goes on.
#[tokio::test]
async fn oversized_header_blocks() {
    under_attack("header blocks over the limit", &[], |addr| async move {
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
        }
    })
    .await;
}

#[tokio::test]
async fn connections_that_never_send_the_preface() {
    under_attack(
        "silent connections",
        &["--handshake-timeout", "1s"],
        |addr| async move {
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
            }
        },
    )
    .await;
}

#[tokio::test]
async fn garbage_instead_of_http2() {
    under_attack("garbage bytes", &[], |addr| async move {
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
        }
    })
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
    under_attack("gzip bombs", &[], |addr| async move {
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
        }
    })
    .await;
}

#[tokio::test]
async fn length_prefixes_that_lie() {
    under_attack(
        "length prefix larger than the body",
        &["--max-call-time", "1s"],
        |addr| async move {
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
    under_attack("messages over the size limit", &[], |addr| async move {
        Attack {
            units: bad_calls(addr, body, "8").await,
            unit: "messages declared 5 MiB",
            at_least: 50,
        }
    })
    .await;
}

#[tokio::test]
async fn malformed_protobuf() {
    // Field 1 (a string) sent as a varint.
    let body = echo_tests::grpc_message(&[0x08, 0x2a]);
    under_attack("malformed protobuf", &[], |addr| async move {
        Attack {
            units: bad_calls(addr, body, "13").await,
            unit: "malformed messages",
            at_least: 50,
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field() {
    let body = echo_tests::grpc_message(&[0x0a, 0x03, b'a', 0xff, 0xfe]);
    under_attack("invalid UTF-8 in a string field", &[], |addr| async move {
        Attack {
            units: bad_calls(addr, body, "13").await,
            unit: "messages with invalid UTF-8",
            at_least: 50,
        }
    })
    .await;
}
