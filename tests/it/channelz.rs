//! channelz (`--channelz`, gRFC A14) on a real server: the server's call
//! counts, its listen socket, each connection as a socket with its own
//! counts and addresses (kept a while after it closes), Forward's downstream
//! as a channel, a bearer token when auth is on, and nothing without the flag.

use echo_client::EchoClient;
use echo_client::proto::{EchoRequest, ForwardRequest};
use echo_tests::{TestServer, config};
use grpc_echo::grpc::channelz::v1::channelz_client::ChannelzClient;
use grpc_echo::grpc::channelz::v1::{
    GetServerSocketsRequest, GetServersRequest, GetSocketRequest, GetTopChannelsRequest,
    SocketData, address,
};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

async fn client(server: &TestServer) -> EchoClient {
    EchoClient::builder(server.uri()).connect().await.unwrap()
}

/// An Echo call that fails as its behaviour header asks.
fn failing() -> tonic::Request<EchoRequest> {
    let mut request = tonic::Request::new(EchoRequest::default());
    request.metadata_mut().insert(
        "x-echo-behavior",
        MetadataValue::from_static("error=INTERNAL"),
    );
    request
}

/// The socket whose remote port is `port`: its id and data.
async fn socket_of(channelz: &mut ChannelzClient<Channel>, port: u16) -> Option<(i64, SocketData)> {
    let sockets = channelz
        .get_server_sockets(GetServerSocketsRequest {
            server_id: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(sockets.end);
    for socket_ref in sockets.socket_ref {
        let socket = channelz
            .get_socket(GetSocketRequest {
                socket_id: socket_ref.socket_id,
                summary: false,
            })
            .await
            .unwrap()
            .into_inner()
            .socket
            .unwrap();
        let Some(address::Address::TcpipAddress(remote)) = socket.remote.unwrap().address else {
            panic!("a TCP socket has a TCP/IP address");
        };
        if remote.port == i32::from(port) {
            assert_eq!(socket.r#ref.unwrap().socket_id, socket_ref.socket_id);
            return Some((socket_ref.socket_id, socket.data.unwrap()));
        }
    }
    None
}

fn port_of(peer: &str) -> u16 {
    peer.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn channelz_counts_the_calls_of_the_server_and_of_each_connection() {
    let server = TestServer::with_config(config(|c| c.services.channelz = true)).await;
    let first = client(&server).await;
    let mut first_port = 0;
    for _ in 0..3 {
        let answer = first
            .echo(EchoRequest::default())
            .await
            .unwrap()
            .into_inner();
        first_port = port_of(&answer.peer);
    }
    let status = first.echo(failing()).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    let second = client(&server).await;
    let second_port = port_of(
        &second
            .echo(EchoRequest::default())
            .await
            .unwrap()
            .into_inner()
            .peer,
    );

    let mut channelz = ChannelzClient::new(server.channel().await);
    let servers = channelz
        .get_servers(GetServersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(servers.end);
    let [listed] = servers.server.as_slice() else {
        panic!("one server: {servers:?}");
    };
    let data = listed.data.as_ref().unwrap();
    // Five calls, and this one (started, not finished).
    assert_eq!(
        (data.calls_started, data.calls_succeeded, data.calls_failed),
        (6, 4, 1)
    );
    assert!(data.last_call_started_timestamp.is_some());
    let [listen] = listed.listen_socket.as_slice() else {
        panic!("one listen socket: {listed:?}");
    };
    assert_eq!(listen.name, format!("tcp {}", server.addr));

    // Each connection is a socket with its own counts: unary calls take one
    // message and answer one when they succeed.
    let (first_id, first_data) = socket_of(&mut channelz, first_port).await.unwrap();
    assert_eq!(
        (
            first_data.streams_started,
            first_data.streams_succeeded,
            first_data.streams_failed,
            first_data.messages_received,
            first_data.messages_sent,
        ),
        (4, 3, 1, 4, 3)
    );
    assert!(first_data.last_message_received_timestamp.is_some());
    let (_, second_data) = socket_of(&mut channelz, second_port).await.unwrap();
    assert_eq!(
        (second_data.streams_started, second_data.streams_succeeded),
        (1, 1)
    );

    // A closed connection leaves the listing but stays readable by id.
    drop(first);
    echo_tests::eventually("the first connection closes", || async {
        socket_of(&mut channelz.clone(), first_port).await.is_none()
    })
    .await;
    let closed = channelz
        .get_socket(GetSocketRequest {
            socket_id: first_id,
            summary: true,
        })
        .await
        .unwrap()
        .into_inner()
        .socket
        .unwrap();
    assert_eq!(closed.data.unwrap().streams_started, 4);
    assert!(closed.remote.is_none(), "a summary has no addresses");
    let unknown = channelz
        .get_socket(GetSocketRequest {
            socket_id: 9999,
            summary: false,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn forwards_downstream_is_a_channel() {
    let downstream = TestServer::start().await;
    let server = TestServer::with_config(config(|c| {
        c.services.channelz = true;
        c.forward.forward_allow = vec!["127.0.0.0/8".parse().unwrap()];
    }))
    .await;
    let target = downstream.addr.to_string();
    let answer = client(&server)
        .await
        .forward(ForwardRequest {
            target: target.clone(),
            count: Some(2),
            ..ForwardRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results.len(), 2);

    let mut channelz = ChannelzClient::new(server.channel().await);
    let channels = channelz
        .get_top_channels(GetTopChannelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let [channel] = channels.channel.as_slice() else {
        panic!("one channel: {channels:?}");
    };
    let data = channel.data.as_ref().unwrap();
    assert_eq!(data.target, target);
    assert_eq!(
        (data.calls_started, data.calls_succeeded, data.calls_failed),
        (2, 2, 0)
    );
    assert_eq!(channel.subchannel_ref.len(), 1);
    server.stop().await;
    downstream.stop().await;
}

#[tokio::test]
async fn channelz_needs_the_flag_and_under_auth_a_token() {
    let server = TestServer::start().await;
    let status = ChannelzClient::new(server.channel().await)
        .get_servers(GetServersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    server.stop().await;

    let tokens = echo_tests::pki::write(
        &echo_tests::pki::temp_dir("channelz"),
        "tokens",
        "ops-token\n",
    );
    let server = TestServer::with_config(config(|c| {
        c.services.channelz = true;
        c.auth.auth_token_file = Some(tokens);
    }))
    .await;
    let mut channelz = ChannelzClient::new(server.channel().await);
    let status = channelz
        .get_servers(GetServersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(GetServersRequest::default());
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer ops-token"),
    );
    assert_eq!(
        channelz
            .get_servers(request)
            .await
            .unwrap()
            .into_inner()
            .server
            .len(),
        1
    );
    server.stop().await;
}

/// gRPC's own channelz protos (PyPI `grpcio-channelz`), through Python
/// grpcio, read the calls this test made and the connection they came on.
#[cfg(feature = "external-tools")]
#[tokio::test]
async fn python_grpcio_channelz_reads_the_calls_made() {
    use echo_tests::process::{COMMAND_TIMEOUT, ServerProcess, output_within, python, script};
    use std::process::Command;

    let server = ServerProcess::start(&["--channelz"]);
    let client = EchoClient::builder(server.addr.to_string())
        .connect()
        .await
        .unwrap();
    let mut port = 0;
    for _ in 0..3 {
        port = port_of(
            &client
                .echo(EchoRequest::default())
                .await
                .unwrap()
                .into_inner()
                .peer,
        );
    }
    client.echo(failing()).await.unwrap_err();

    let mut command = Command::new(python());
    command
        .arg(script("read_load.py"))
        .args(["channelz", &server.addr.to_string()]);
    let output = output_within(command, b"", COMMAND_TIMEOUT);
    assert!(output.status.success(), "{output:?}");
    let read: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let data = &read[0]["server"]["data"];
    // Four calls, and GetServers itself (started, not finished).
    assert_eq!(data["calls_started"], "5", "{read}");
    assert_eq!(data["calls_succeeded"], "3", "{read}");
    assert_eq!(data["calls_failed"], "1", "{read}");
    let sockets = read[0]["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 2, "ours and Python's: {read}");
    let ours = sockets
        .iter()
        .find(|socket| socket["remote"]["tcpip_address"]["port"] == i64::from(port))
        .unwrap_or_else(|| panic!("no socket from port {port}: {read}"));
    assert_eq!(ours["data"]["streams_started"], "4", "{read}");
    assert_eq!(ours["data"]["streams_succeeded"], "3", "{read}");
    assert_eq!(ours["data"]["messages_sent"], "3", "{read}");
}
