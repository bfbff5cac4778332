//! TLS with rustls: the certificate and key are reloaded without a restart
//! (when their files change, or on request, e.g. SIGHUP), a bad new file is
//! reported and the old certificate stays in use; optional client certificates
//! (mTLS) are verified against a CA and their subject reported as the peer's
//! identity.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use grpc_echo::echo::v1::TlsSession;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// How often the certificate files are checked for changes.
pub(crate) const RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why TLS could not be set up, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, key or configuration.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify anything.
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: PathBuf,
    /// PEM private key.
    pub(crate) key: PathBuf,
    /// PEM CA certificates that client certificates must chain to (mTLS); none: no client certificates.
    pub(crate) client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `config`, when TLS is configured.
    pub(crate) fn of(config: &TlsConfig) -> Option<Self> {
        Some(Self {
            cert: config.tls_cert.clone()?,
            key: config.tls_key.clone()?,
            client_ca: config.tls_client_ca.clone(),
        })
    }
}

/// Asks a running server to reload its certificate and key now, and tells
/// how its reloads went.
#[derive(Debug, Clone, Default)]
pub struct TlsReload(Arc<ReloadState>);

#[derive(Debug, Default)]
struct ReloadState {
    requested: Notify,
    done: AtomicU64,
    failed: AtomicU64,
}

impl TlsReload {
    /// Reloads (and reports a failure in the log) as soon as the server gets to it.
    pub fn reload(&self) {
        self.0.requested.notify_one();
    }

    /// Reloads that took a new certificate, since start.
    pub fn reloads(&self) -> u64 {
        self.0.done.load(Ordering::Acquire)
    }

    /// Reloads refused (a bad file), the old certificate kept, since start.
    pub fn failed_reloads(&self) -> u64 {
        self.0.failed.load(Ordering::Acquire)
    }
}

/// The server side of TLS: a handshake acceptor whose certificate can
/// change, and the same configuration for QUIC (HTTP/3).
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    /// The TCP configuration with ALPN `h3` only: one certificate (reloads
    /// reach both) and one client verifier.
    quic: Arc<ServerConfig>,
    certificate: Arc<ReloadingCertificate>,
}

impl Tls {
    pub(crate) fn new(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadingCertificate::load(files.clone(), &provider)?);
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let builder = match &files.client_ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for certificate in read_certificates(path)? {
                    roots.add(certificate)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        // 0-RTT stays off (rustls's default, `max_early_data_size` 0):
        // replayable early requests would repeat calls with side effects.
        let mut quic = config.clone();
        quic.alpn_protocols = vec![b"h3".to_vec()];
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            quic: Arc::new(quic),
            certificate,
        })
    }

    /// The rustls configuration of QUIC connections (ALPN `h3`).
    pub(crate) fn quic_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.quic)
    }

    /// Completes the handshake; the session says what was agreed, and who
    /// the client is when it showed a verified certificate.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<(TlsStream<TcpStream>, TlsSession)> {
        let stream = self.acceptor.accept(stream).await?;
        let connection = stream.get_ref().1;
        let session = session(
            connection.protocol_version(),
            connection
                .negotiated_cipher_suite()
                .map(|suite| format!("{:?}", suite.suite()))
                .unwrap_or_default(),
            connection.alpn_protocol(),
            connection.server_name(),
            connection.peer_certificates(),
        );
        Ok((stream, session))
    }

    /// Reloads on `reload` and whenever the files change, until dropped.
    pub(crate) async fn keep_reloading(self, reload: TlsReload) {
        let mut seen = self.certificate.modified();
        let mut poll = tokio::time::interval(RELOAD_POLL_INTERVAL);
        loop {
            let requested = tokio::select! {
                () = reload.0.requested.notified() => true,
                _ = poll.tick() => false,
            };
            let modified = self.certificate.modified();
            if requested || modified != seen {
                seen = modified;
                match self.certificate.reload() {
                    Ok(()) => {
                        reload.0.done.fetch_add(1, Ordering::AcqRel);
                        tracing::info!(cert = %self.certificate.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(err) => {
                        reload.0.failed.fetch_add(1, Ordering::AcqRel);
                        tracing::error!(cause = %err, "TLS certificate reload failed: keeping the old one");
                    }
                }
            }
        }
    }
}

/// The current certificate, swapped whole on reload.
#[derive(Debug)]
struct ReloadingCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCertificate {
    fn load(files: TlsFiles, provider: &Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let current = RwLock::new(Arc::new(certified_key(&files, provider)?));
        Ok(Self {
            files,
            provider: Arc::clone(provider),
            current,
        })
    }

    fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.files, &self.provider)?);
        *self.current.write().expect("certificate lock") = fresh;
        Ok(())
    }

    fn modified(&self) -> [Option<SystemTime>; 2] {
        [&self.files.cert, &self.files.key].map(|path| {
            std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .ok()
        })
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().expect("certificate lock")))
    }
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| TlsError::File {
        path: files.key.clone(),
        reason: err.to_string(),
    })?;
    Ok(CertifiedKey::from_der(chain, key, provider)?)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| error(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| error(err.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no certificate in it".to_owned()));
    }
    Ok(certificates)
}

/// What a handshake agreed (over TCP or QUIC), and who the client is when
/// it showed a verified certificate.
pub(crate) fn session(
    version: Option<rustls::ProtocolVersion>,
    cipher: String,
    alpn: Option<&[u8]>,
    sni: Option<&str>,
    peer_certificates: Option<&[CertificateDer<'_>]>,
) -> TlsSession {
    let mut session = TlsSession {
        version: version
            .map(|version| format!("{version:?}"))
            .unwrap_or_default(),
        cipher,
        alpn: String::from_utf8_lossy(alpn.unwrap_or_default()).into_owned(),
        sni: sni.unwrap_or_default().to_owned(),
        ..TlsSession::default()
    };
    let leaf = peer_certificates.and_then(|chain| chain.first());
    if let Some((_, certificate)) =
        leaf.and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
    {
        session.client_subject = certificate.subject().to_string();
        session.spiffe_id = spiffe_id(&certificate).unwrap_or_default();
    }
    session
}

/// The certificate's SPIFFE ID: its first `spiffe://` URI SAN.
fn spiffe_id(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let names = certificate.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some((*uri).to_owned())
            }
            _ => None,
        })
}
