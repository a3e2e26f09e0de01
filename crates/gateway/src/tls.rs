//! TLS in the node, so a standalone gateway serves `wss://` (and optionally gRPC over TLS)
//! without a proxy in front.
//!
//! One certificate and key (PEM files, `HERALD_TLS_CERT` / `HERALD_TLS_KEY`) serve both
//! ports. They are re-read every few seconds and swapped in when their contents change, so
//! cert-manager and Let's Encrypt renewals (and Kubernetes secret mounts, which swap a
//! symlink) apply without a restart; a new pair that does not load is logged and the one in
//! use is kept. Each port has its own [`ServerConfig`] (its own ALPN: `http/1.1` for the
//! HTTP port, as WebSocket needs HTTP/1.1; `h2` for gRPC), both asking one [`CertStore`] for
//! the certificate, so a reload reaches every new handshake on both ports at once.
//!
//! The crypto provider is *ring*, chosen explicitly: the build already has it (fred and
//! async-nats use it), and rustls' default, aws-lc-rs, would be a second one.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

/// How long a client has from its TCP connect to the end of the TLS handshake. A client
/// that connects and never handshakes holds only a task, and only this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid HERALD_TLS_CERT {path:?}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("invalid HERALD_TLS_KEY {path:?}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("HERALD_TLS_KEY {key:?} is not the key of the certificate in HERALD_TLS_CERT {cert:?}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not finished within {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] io::Error),
}

/// The ALPN protocols a port offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// The HTTP port: WebSocket upgrades need HTTP/1.1.
    Http1,
    /// The gRPC port: HTTP/2.
    H2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate in use; every handshake on every TLS port asks it.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The two files' contents, compared on each poll to notice a change whatever its cause
/// (rewrite, rename, symlink swap), with no reliance on timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PemFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PemFiles {
    fn read(settings: &TlsConfig) -> Result<PemFiles, TlsError> {
        let cert = std::fs::read(&settings.cert).map_err(|e| TlsError::Cert {
            path: settings.cert.clone(),
            message: e.to_string(),
        })?;
        let key = std::fs::read(&settings.key).map_err(|e| TlsError::Key {
            path: settings.key.clone(),
            message: e.to_string(),
        })?;
        Ok(PemFiles { cert, key })
    }

    /// Parses the chain and key and checks that the key is the certificate's.
    fn certified_key(
        &self,
        settings: &TlsConfig,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let cert_error = |message: String| TlsError::Cert {
            path: settings.cert.clone(),
            message,
        };
        let key_error = |message: String| TlsError::Key {
            path: settings.key.clone(),
            message,
        };
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_error("no PEM CERTIFICATE in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                key_error("no PEM PRIVATE KEY in it".into())
            }
            e => key_error(e.to_string()),
        })?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
                cert: settings.cert.clone(),
                key: settings.key.clone(),
            }),
            Err(e) => Err(cert_error(e.to_string())),
        }
    }
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not load; the pair in use stays.
    Rejected(TlsError),
}

/// The node's certificate: loaded at startup, reloaded when its files change.
pub struct Tls {
    settings: TlsConfig,
    provider: Arc<CryptoProvider>,
    store: Arc<CertStore>,
    /// The contents in use, or last rejected: a change is a difference from these.
    seen: PemFiles,
}

impl Tls {
    /// Loads the pair; an error names the setting at fault and stops startup.
    pub fn load(settings: &TlsConfig) -> Result<Tls, TlsError> {
        let provider = provider();
        let files = PemFiles::read(settings)?;
        let key = files.certified_key(settings, &provider)?;
        Ok(Tls {
            settings: settings.clone(),
            provider,
            store: Arc::new(CertStore {
                current: RwLock::new(Arc::new(key)),
            }),
            seen: files,
        })
    }

    /// An acceptor for one port, offering `alpn`, serving whatever certificate is current.
    pub fn acceptor(&self, alpn: Alpn) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.store.clone());
        config.alpn_protocols = alpn.protocols();
        TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// Reads the files again and swaps the certificate in when they changed and load.
    pub fn reload(&mut self) -> Reload {
        let files = match PemFiles::read(&self.settings) {
            Ok(files) => files,
            // Unreadable (mid-rotation, or gone): keep serving what is loaded.
            Err(e) => return Reload::Rejected(e),
        };
        if files == self.seen {
            return Reload::Unchanged;
        }
        let result = files.certified_key(&self.settings, &self.provider);
        self.seen = files;
        match result {
            Ok(key) => {
                self.store.set(key);
                Reload::Reloaded
            }
            Err(e) => Reload::Rejected(e),
        }
    }

    /// Polls the files every `settings.reload_interval` until `stop`.
    pub fn spawn_reloader(mut self, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.settings.reload_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            // Logged when it changes, not on every poll.
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match self.reload() {
                    Reload::Unchanged => {}
                    Reload::Reloaded => {
                        last_error = None;
                        tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                    }
                    Reload::Rejected(e) => {
                        let message = e.to_string();
                        if last_error.as_ref() != Some(&message) {
                            tracing::warn!(error = %message, "new TLS certificate not loaded; keeping the one in use");
                            last_error = Some(message);
                        }
                    }
                }
            }
        })
    }
}

/// Turns an accepted TCP connection into a TLS stream, within [`HANDSHAKE_TIMEOUT`].
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

impl TlsAcceptor {
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, HandshakeError> {
        tokio::time::timeout(self.timeout, self.inner.accept(tcp))
            .await
            .map_err(|_| HandshakeError::TimedOut(self.timeout))?
            .map_err(HandshakeError::Failed)
    }
}

/// The TLS connections of one listener, each handshaken in its own task so a slow or
/// silent client never holds up the others; tonic serves it as a stream of connections
/// (the HTTP port handshakes in its own accept loop, in
/// server.rs). Dropping it stops accepting and closes the port.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_loop: JoinHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> TlsIncoming {
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(listener, acceptor, tx));
        TlsIncoming {
            accepted,
            accept_loop,
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: retrying at once would spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Pushes are small and latency-sensitive (see server.rs).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
        });
    }
}

impl futures_util::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted
            .poll_recv(cx)
            .map(|accepted| accepted.map(|(tls, _)| Ok(tls)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
        settings: TlsConfig,
    }

    impl Files {
        fn new(name: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "herald-tls-{name}-{}",
                crate::random::random_token(8)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let settings = TlsConfig {
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
                reload_interval: Duration::from_secs(1),
            };
            Files { dir, settings }
        }

        fn write(&self, cert: &str, key: &str) {
            std::fs::write(&self.settings.cert, cert).unwrap();
            std::fs::write(&self.settings.key, key).unwrap();
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// (certificate PEM, key PEM) for `localhost`.
    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn current_cert(tls: &Tls) -> Vec<u8> {
        tls.store.get().cert[0].to_vec()
    }

    #[test]
    fn a_matching_pair_loads() {
        let files = Files::new("ok");
        let (cert, key) = self_signed();
        files.write(&cert, &key);
        let tls = Tls::load(&files.settings).expect("pair loads");
        let expected = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(current_cert(&tls), expected.to_vec());
    }

    #[test]
    fn a_bad_pair_names_the_setting_at_fault() {
        let files = Files::new("bad");
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cases = [
            ("not a pem", key.as_str(), "HERALD_TLS_CERT"),
            (cert.as_str(), "not a pem", "HERALD_TLS_KEY"),
            (key.as_str(), key.as_str(), "HERALD_TLS_CERT"),
            (cert.as_str(), other_key.as_str(), "is not the key of"),
        ];
        for (cert, key, wanted) in cases {
            files.write(cert, key);
            let error = Tls::load(&files.settings).err().expect("pair is refused");
            assert!(
                error.to_string().contains(wanted),
                "{error} should mention {wanted}"
            );
        }
        std::fs::remove_file(&files.settings.key).unwrap();
        let error = Tls::load(&files.settings)
            .err()
            .expect("missing key is refused");
        assert!(error.to_string().contains("HERALD_TLS_KEY"), "{error}");
    }

    #[test]
    fn reload_swaps_a_changed_pair_and_keeps_the_old_one_over_a_bad_one() {
        let files = Files::new("reload");
        let (cert, key) = self_signed();
        files.write(&cert, &key);
        let mut tls = Tls::load(&files.settings).unwrap();
        let first = current_cert(&tls);
        assert!(matches!(tls.reload(), Reload::Unchanged));

        let (_, other_key) = self_signed();
        files.write(&cert, &other_key);
        assert!(matches!(
            tls.reload(),
            Reload::Rejected(TlsError::Mismatch { .. })
        ));
        assert_eq!(current_cert(&tls), first, "the pair in use stays");
        // The same bad contents are not tried (and reported) again.
        assert!(matches!(tls.reload(), Reload::Unchanged));

        let (new_cert, new_key) = self_signed();
        files.write(&new_cert, &new_key);
        assert!(matches!(tls.reload(), Reload::Reloaded));
        assert_ne!(current_cert(&tls), first);

        std::fs::remove_file(&files.settings.cert).unwrap();
        assert!(matches!(
            tls.reload(),
            Reload::Rejected(TlsError::Cert { .. })
        ));
        assert_ne!(
            current_cert(&tls),
            first,
            "a vanished file keeps the pair in use"
        );
    }
}
