//! `grpc.channelz.v1.Channelz` (`--channelz`): the registry of
//! `ops/channelz.rs` in channelz's messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use grpc_echo::grpc::channelz::v1::channelz_server::Channelz as ChannelzApi;
use grpc_echo::grpc::channelz::v1::{
    Address, Channel, ChannelConnectivityState, ChannelData, ChannelRef, ChannelTrace,
    GetChannelRequest, GetChannelResponse, GetServerRequest, GetServerResponse,
    GetServerSocketsRequest, GetServerSocketsResponse, GetServersRequest, GetServersResponse,
    GetSocketRequest, GetSocketResponse, GetSubchannelRequest, GetSubchannelResponse,
    GetTopChannelsRequest, GetTopChannelsResponse, Security, Server, ServerData, ServerRef, Socket,
    SocketData, SocketRef, Subchannel, SubchannelRef, address, channel_connectivity_state,
    security,
};
use tonic::{Request, Response, Status};

use crate::context::CallCounts;
use crate::ops::channelz::{ChannelEntry, Channelz, SocketEntry};

/// Entries a listing gives when the request asks for no bound.
const DEFAULT_MAX_RESULTS: usize = 100;

/// The channelz service of one server.
#[derive(Debug)]
pub(crate) struct ChannelzService {
    channelz: Arc<Channelz>,
}

impl ChannelzService {
    pub(crate) fn new(channelz: Arc<Channelz>) -> Self {
        Self { channelz }
    }

    fn server(&self) -> Server {
        let channelz = &self.channelz;
        let counts = &channelz.server;
        Server {
            r#ref: Some(ServerRef {
                server_id: channelz.server_id,
                name: "echo-server".to_owned(),
            }),
            data: Some(ServerData {
                trace: Some(ChannelTrace {
                    creation_timestamp: timestamp(channelz.started),
                    ..ChannelTrace::default()
                }),
                calls_started: load(&counts.started),
                calls_succeeded: load(&counts.succeeded),
                calls_failed: load(&counts.failed),
                last_call_started_timestamp: timestamp(counts.last_started.load(Ordering::Relaxed)),
            }),
            listen_socket: channelz
                .listen_sockets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|socket| SocketRef {
                    socket_id: socket.id,
                    name: format!("{} {}", socket.transport, socket.addr),
                })
                .collect(),
        }
    }

    fn check_server(&self, id: i64) -> Result<(), Status> {
        if id == self.channelz.server_id {
            Ok(())
        } else {
            Err(Status::not_found(format!("no server with id {id}")))
        }
    }
}

#[tonic::async_trait]
impl ChannelzApi for ChannelzService {
    async fn get_top_channels(
        &self,
        request: Request<GetTopChannelsRequest>,
    ) -> Result<Response<GetTopChannelsResponse>, Status> {
        let request = request.into_inner();
        let (channels, end) = page(
            self.channelz
                .channels()
                .into_iter()
                .filter(|channel| channel.channel_id >= request.start_channel_id),
            request.max_results,
        );
        Ok(Response::new(GetTopChannelsResponse {
            channel: channels.iter().map(|entry| channel(entry)).collect(),
            end,
        }))
    }

    async fn get_servers(
        &self,
        request: Request<GetServersRequest>,
    ) -> Result<Response<GetServersResponse>, Status> {
        let request = request.into_inner();
        let listed = request.start_server_id <= self.channelz.server_id;
        Ok(Response::new(GetServersResponse {
            server: listed.then(|| self.server()).into_iter().collect(),
            end: true,
        }))
    }

    async fn get_server(
        &self,
        request: Request<GetServerRequest>,
    ) -> Result<Response<GetServerResponse>, Status> {
        self.check_server(request.get_ref().server_id)?;
        Ok(Response::new(GetServerResponse {
            server: Some(self.server()),
        }))
    }

    async fn get_server_sockets(
        &self,
        request: Request<GetServerSocketsRequest>,
    ) -> Result<Response<GetServerSocketsResponse>, Status> {
        let request = request.into_inner();
        self.check_server(request.server_id)?;
        let (sockets, end) = page(
            self.channelz
                .open_sockets_from(request.start_socket_id)
                .into_iter(),
            request.max_results,
        );
        Ok(Response::new(GetServerSocketsResponse {
            socket_ref: sockets
                .iter()
                .map(|socket| SocketRef {
                    socket_id: socket.id,
                    name: socket.name(),
                })
                .collect(),
            end,
        }))
    }

    async fn get_channel(
        &self,
        request: Request<GetChannelRequest>,
    ) -> Result<Response<GetChannelResponse>, Status> {
        let id = request.get_ref().channel_id;
        let entry = self
            .channelz
            .channels()
            .into_iter()
            .find(|channel| channel.channel_id == id)
            .ok_or_else(|| Status::not_found(format!("no channel with id {id}")))?;
        Ok(Response::new(GetChannelResponse {
            channel: Some(channel(&entry)),
        }))
    }

    async fn get_subchannel(
        &self,
        request: Request<GetSubchannelRequest>,
    ) -> Result<Response<GetSubchannelResponse>, Status> {
        let id = request.get_ref().subchannel_id;
        let entry = self
            .channelz
            .channels()
            .into_iter()
            .find(|channel| channel.subchannel_id == id)
            .ok_or_else(|| Status::not_found(format!("no subchannel with id {id}")))?;
        Ok(Response::new(GetSubchannelResponse {
            subchannel: Some(Subchannel {
                r#ref: Some(SubchannelRef {
                    subchannel_id: entry.subchannel_id,
                    name: entry.target.clone(),
                }),
                data: Some(channel_data(&entry)),
                ..Subchannel::default()
            }),
        }))
    }

    async fn get_socket(
        &self,
        request: Request<GetSocketRequest>,
    ) -> Result<Response<GetSocketResponse>, Status> {
        let request = request.into_inner();
        let entry = self
            .channelz
            .socket(request.socket_id)
            .ok_or_else(|| Status::not_found(format!("no socket with id {}", request.socket_id)))?;
        Ok(Response::new(GetSocketResponse {
            socket: Some(socket(&entry, request.summary)),
        }))
    }
}

/// At most `max_results` (0: the default) of `entries`, and whether they are the last.
fn page<T>(entries: impl Iterator<Item = T>, max_results: i64) -> (Vec<T>, bool) {
    let max = usize::try_from(max_results)
        .ok()
        .filter(|max| *max > 0)
        .unwrap_or(DEFAULT_MAX_RESULTS);
    let mut entries = entries.peekable();
    let page: Vec<T> = entries.by_ref().take(max).collect();
    let end = entries.peek().is_none();
    (page, end)
}

fn channel(entry: &ChannelEntry) -> Channel {
    Channel {
        r#ref: Some(ChannelRef {
            channel_id: entry.channel_id,
            name: entry.target.clone(),
        }),
        data: Some(channel_data(entry)),
        subchannel_ref: vec![SubchannelRef {
            subchannel_id: entry.subchannel_id,
            name: entry.target.clone(),
        }],
        ..Channel::default()
    }
}

/// A downstream channel's data: Forward connects for each call, so the
/// channel is IDLE between them.
fn channel_data(entry: &ChannelEntry) -> ChannelData {
    let calls: &CallCounts = &entry.calls;
    ChannelData {
        state: Some(ChannelConnectivityState {
            state: channel_connectivity_state::State::Idle as i32,
        }),
        target: entry.target.clone(),
        trace: Some(ChannelTrace {
            creation_timestamp: timestamp(entry.created),
            ..ChannelTrace::default()
        }),
        calls_started: load(&calls.started),
        calls_succeeded: load(&calls.succeeded),
        calls_failed: load(&calls.failed),
        last_call_started_timestamp: timestamp(calls.last_started.load(Ordering::Relaxed)),
    }
}

fn socket(entry: &SocketEntry, summary: bool) -> Socket {
    let counts = &entry.counts;
    let data = SocketData {
        streams_started: load(&counts.streams.started),
        streams_succeeded: load(&counts.streams.succeeded),
        streams_failed: load(&counts.streams.failed),
        messages_sent: load(&counts.messages_sent),
        messages_received: load(&counts.messages_received),
        last_remote_stream_created_timestamp: timestamp(
            counts.streams.last_started.load(Ordering::Relaxed),
        ),
        last_message_sent_timestamp: timestamp(counts.last_message_sent.load(Ordering::Relaxed)),
        last_message_received_timestamp: timestamp(
            counts.last_message_received.load(Ordering::Relaxed),
        ),
        ..SocketData::default()
    };
    Socket {
        r#ref: Some(SocketRef {
            socket_id: entry.id,
            name: entry.name(),
        }),
        data: Some(data),
        local: (!summary).then_some(entry.local).flatten().map(address),
        remote: (!summary).then(|| address(entry.remote)),
        security: (!summary)
            .then_some(entry.tls.as_ref())
            .flatten()
            .map(|tls| Security {
                model: Some(security::Model::Tls(security::Tls {
                    cipher_suite: Some(security::tls::CipherSuite::StandardName(
                        tls.cipher.clone(),
                    )),
                    ..security::Tls::default()
                })),
            }),
        remote_name: String::new(),
    }
}

fn address(addr: SocketAddr) -> Address {
    let ip_address = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    Address {
        address: Some(address::Address::TcpipAddress(address::TcpIpAddress {
            ip_address: ip_address.into(),
            port: i32::from(addr.port()),
        })),
    }
}

fn load(count: &std::sync::atomic::AtomicU64) -> i64 {
    count.load(Ordering::Relaxed) as i64
}

/// A time in nanoseconds since the Unix epoch (0: never) as a `Timestamp`.
fn timestamp(nanos: u64) -> Option<prost_types::Timestamp> {
    (nanos != 0).then_some(prost_types::Timestamp {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}
