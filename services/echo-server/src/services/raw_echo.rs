//! The Echo Protocol of RFC 862 on plain TCP and UDP: whatever arrives is sent
//! back. The floor beneath gRPC, for comparing the same echo at three levels.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::transport::accept::accept_or_pause;

/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

/// Echoes every TCP connection's bytes back until it closes; at most
/// `max_connections` at once. Runs until dropped, closing the connections.
pub(crate) async fn serve_tcp(listener: TcpListener, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (mut stream, peer) = accept_or_pause(&listener).await;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, max_connections, "TCP echo connection limit reached");
            continue;
        };
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let (mut reader, mut writer) = stream.split();
            if let Err(err) = tokio::io::copy(&mut reader, &mut writer).await {
                tracing::debug!(%peer, cause = %err, "TCP echo connection ended");
            }
        });
    }
}

/// Sends every UDP datagram back to its sender. Runs until dropped.
pub(crate) async fn serve_udp(socket: UdpSocket) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, peer)) => {
                if let Err(err) = socket.send_to(&buffer[..len], peer).await {
                    tracing::debug!(%peer, cause = %err, "UDP echo send failed");
                }
            }
            Err(err) => tracing::debug!(cause = %err, "UDP echo receive failed"),
        }
    }
}
