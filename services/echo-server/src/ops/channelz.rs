//! What channelz (`--channelz`, gRFC A14) shows: the server with its calls
//! and listen sockets, each connection (a socket: addresses, TLS, its
//! streams and messages) while it is open and for a while after, and the
//! channels Forward opens to its downstreams. Counted where the calls are
//! (the trace layer, through each connection's `SocketCounts`); read by the
//! `grpc.channelz.v1.Channelz` service.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use grpc_echo::echo::v1::TlsSession;

use crate::context::{CallCounts, PeerInfo, SocketCounts, unix_nanos};

/// Closed sockets kept, at most: their counts stay readable after their
/// peer went, within a bound on memory whatever the churn of connections.
pub(crate) const MAX_CLOSED_SOCKETS: usize = 100;
/// How long a closed socket stays readable.
pub(crate) const CLOSED_SOCKET_TTL: Duration = Duration::from_secs(60);
/// Downstream targets kept as channels, at most (each Forward names one).
pub(crate) const MAX_CHANNELS: usize = 100;

/// The registry channelz reads; one per server.
#[derive(Debug)]
pub(crate) struct Channelz {
    next_id: AtomicI64,
    pub(crate) server_id: i64,
    pub(crate) server: Arc<CallCounts>,
    /// When the server started, in nanoseconds since the Unix epoch.
    pub(crate) started: u64,
    pub(crate) listen_sockets: Mutex<Vec<ListenSocket>>,
    sockets: Mutex<Sockets>,
    channels: Mutex<BTreeMap<String, Arc<ChannelEntry>>>,
}

/// A socket the server listens on.
#[derive(Debug, Clone)]
pub(crate) struct ListenSocket {
    pub(crate) id: i64,
    pub(crate) addr: SocketAddr,
    /// `tcp` or `udp` (QUIC).
    pub(crate) transport: &'static str,
}

/// One connection, open or recently closed.
#[derive(Debug)]
pub(crate) struct SocketEntry {
    pub(crate) id: i64,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: SocketAddr,
    pub(crate) tls: Option<Arc<TlsSession>>,
    /// `HTTP/2 or HTTP/1.1` over TCP, or `HTTP/3` over QUIC.
    pub(crate) transport: &'static str,
    pub(crate) counts: Arc<SocketCounts>,
}

impl SocketEntry {
    /// The name channelz gives it: its transport, its peer, and the server
    /// side of it.
    pub(crate) fn name(&self) -> String {
        match self.local {
            Some(local) => format!("{} {} -> {local}", self.transport, self.remote),
            None => format!("{} {}", self.transport, self.remote),
        }
    }
}

#[derive(Debug, Default)]
struct Sockets {
    open: BTreeMap<i64, Arc<SocketEntry>>,
    closed: VecDeque<(Instant, Arc<SocketEntry>)>,
}

impl Sockets {
    /// Forgets the closed sockets past their time or over the bound.
    fn prune(&mut self) {
        while self.closed.len() > MAX_CLOSED_SOCKETS
            || self
                .closed
                .front()
                .is_some_and(|(closed, _)| closed.elapsed() > CLOSED_SOCKET_TTL)
        {
            self.closed.pop_front();
        }
    }
}

/// A downstream target of Forward: its channel (and its one subchannel,
/// the address it names), with the calls made to it.
#[derive(Debug)]
pub(crate) struct ChannelEntry {
    pub(crate) channel_id: i64,
    pub(crate) subchannel_id: i64,
    pub(crate) target: String,
    pub(crate) calls: CallCounts,
    /// When it was first called, in nanoseconds since the Unix epoch.
    pub(crate) created: u64,
}

/// Keeps a socket in the registry while it is open; dropped, it moves to
/// the closed ones.
#[derive(Debug)]
pub(crate) struct OpenSocket {
    channelz: Arc<Channelz>,
    entry: Arc<SocketEntry>,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        let mut sockets = self.channelz.sockets();
        sockets.open.remove(&self.entry.id);
        sockets
            .closed
            .push_back((Instant::now(), Arc::clone(&self.entry)));
        sockets.prune();
    }
}

impl Default for Channelz {
    fn default() -> Self {
        Self {
            // Ids start at 1: 0 means "from the start" in a listing request.
            next_id: AtomicI64::new(2),
            server_id: 1,
            server: Arc::default(),
            started: unix_nanos(),
            listen_sockets: Mutex::default(),
            sockets: Mutex::default(),
            channels: Mutex::default(),
        }
    }
}

impl Channelz {
    fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Sockets> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server listens on `addr`.
    pub(crate) fn listening(&self, addr: SocketAddr, transport: &'static str) {
        let id = self.next_id();
        self.listen_sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ListenSocket {
                id,
                addr,
                transport,
            });
    }

    /// A connection to `peer` opened (over `transport`, at `local`): its
    /// calls count into the socket `peer` now names, which stays listed as
    /// open until the returned guard is dropped.
    pub(crate) fn open_socket(
        self: &Arc<Self>,
        local: Option<SocketAddr>,
        peer: &mut PeerInfo,
        transport: &'static str,
    ) -> OpenSocket {
        let counts = Arc::new(SocketCounts::new(Arc::clone(&self.server)));
        peer.channelz = Some(Arc::clone(&counts));
        let entry = Arc::new(SocketEntry {
            id: self.next_id(),
            local,
            remote: peer.addr,
            tls: peer.tls.clone(),
            transport,
            counts,
        });
        let mut sockets = self.sockets();
        sockets.open.insert(entry.id, Arc::clone(&entry));
        sockets.prune();
        OpenSocket {
            channelz: Arc::clone(self),
            entry,
        }
    }

    /// The open sockets with ids from `start`, in id order.
    pub(crate) fn open_sockets_from(&self, start: i64) -> Vec<Arc<SocketEntry>> {
        self.sockets()
            .open
            .range(start..)
            .map(|(_, entry)| Arc::clone(entry))
            .collect()
    }

    /// The socket `id`, open or recently closed.
    pub(crate) fn socket(&self, id: i64) -> Option<Arc<SocketEntry>> {
        let mut sockets = self.sockets();
        sockets.prune();
        sockets.open.get(&id).cloned().or_else(|| {
            sockets
                .closed
                .iter()
                .find(|(_, entry)| entry.id == id)
                .map(|(_, entry)| Arc::clone(entry))
        })
    }

    /// The channel of the downstream `target`, made on its first call
    /// (`None` once [`MAX_CHANNELS`] targets are known).
    pub(crate) fn channel(&self, target: &str) -> Option<Arc<ChannelEntry>> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(target) {
            return Some(Arc::clone(channel));
        }
        if channels.len() >= MAX_CHANNELS {
            return None;
        }
        let channel = Arc::new(ChannelEntry {
            channel_id: self.next_id(),
            subchannel_id: self.next_id(),
            target: target.to_owned(),
            calls: CallCounts::default(),
            created: unix_nanos(),
        });
        channels.insert(target.to_owned(), Arc::clone(&channel));
        Some(channel)
    }

    /// Every downstream channel, in id order.
    pub(crate) fn channels(&self) -> Vec<Arc<ChannelEntry>> {
        let mut channels: Vec<_> = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        channels.sort_by_key(|channel| channel.channel_id);
        channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_sockets_are_kept_within_the_bound() {
        let channelz = Arc::new(Channelz::default());
        let mut peer = PeerInfo::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        let first = channelz.open_socket(None, &mut peer, "TCP").entry.id;
        for _ in 0..MAX_CLOSED_SOCKETS + 10 {
            drop(channelz.open_socket(None, &mut peer, "TCP"));
        }
        let open = channelz.open_socket(None, &mut peer, "TCP");
        assert_eq!(channelz.sockets().closed.len(), MAX_CLOSED_SOCKETS);
        assert!(
            channelz.socket(first).is_none(),
            "the oldest closed one is gone"
        );
        assert_eq!(channelz.open_sockets_from(0).len(), 1);
        assert!(channelz.socket(open.entry.id).is_some());
    }
}
