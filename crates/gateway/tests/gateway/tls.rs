//! TLS in the node: wss and gRPC over TLS with a self-signed certificate made at test time,
//! certificate renewal without a restart, and clients that do not (or never) handshake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_api::v1::PublishRequest;
use herald_api::v1::herald_client::HeraldClient;
use herald_client::{Client, ConnectOptions};
use herald_gateway::config::{TLS_RELOAD_INTERVAL, TlsConfig};
use herald_gateway::tls::HANDSHAKE_TIMEOUT;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::common::*;

const HTTP1: &[u8] = b"http/1.1";

/// A self-signed certificate for `localhost` and its key, as PEM.
struct SelfSigned {
    cert: String,
    key: String,
}

fn self_signed() -> SelfSigned {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("certificate generated");
    SelfSigned {
        cert: generated.cert.pem(),
        key: generated.signing_key.serialize_pem(),
    }
}

/// A directory laid out as Kubernetes mounts a secret: `tls.crt` and `tls.key` are
/// symlinks into `..data`, itself a symlink to the current version's directory, replaced
/// by a rename on update (so the node sees either the old pair or the new one).
struct SecretMount {
    dir: PathBuf,
    versions: u32,
}

impl SecretMount {
    fn new(cert: &str, key: &str) -> SecretMount {
        let dir = std::env::temp_dir().join(format!(
            "herald-tls-test-{}",
            herald_gateway::random::random_token(10)
        ));
        std::fs::create_dir_all(&dir).expect("secret dir");
        let mut mount = SecretMount { dir, versions: 0 };
        mount.update(cert, key);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.join(name))
                .expect("file symlink");
        }
        mount
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        std::fs::create_dir(self.dir.join(&version)).expect("version dir");
        std::fs::write(self.dir.join(&version).join("tls.crt"), cert).expect("write cert");
        std::fs::write(self.dir.join(&version).join("tls.key"), key).expect("write key");
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).expect("data symlink");
        std::fs::rename(&staged, self.dir.join("..data")).expect("swap data symlink");
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    fn settings(&self, reload_interval: Duration) -> TlsConfig {
        TlsConfig {
            cert: self.cert(),
            key: self.key(),
            reload_interval,
        }
    }
}

impl Drop for SecretMount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Trusts only `cert_pem`; offers `alpn`.
fn client_config(cert_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM"))
        .expect("root added");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` as `localhost`, trusting only `cert_pem`.
async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    tokio_rustls::TlsConnector::from(client_config(cert_pem, alpn))
        .connect(name, tcp)
        .await
}

/// A connected client over wss.
async fn wss_client(addr: SocketAddr, cert_pem: &str, token: &str) -> Client {
    let tls = within("TLS handshake", tls_connect(addr, cert_pem, &[HTTP1]))
        .await
        .expect("TLS handshake succeeds");
    let url = format!("wss://localhost:{}/ws", addr.port());
    let client = within("upgrade", Client::open_over(ConnectOptions::new(url), tls))
        .await
        .expect("wss upgrade");
    within("connect", client.handshake(Some(token)))
        .await
        .expect("connect succeeds");
    client
}

/// A gRPC client over TLS, trusting only `cert_pem`.
async fn grpcs_client(addr: SocketAddr, cert_pem: &str) -> Result<Grpc, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .expect("valid URI")
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(HeraldClient::with_interceptor(
        channel,
        BearerToken::new(API_KEY).unwrap(),
    ))
}

fn publish_request(channel: &str, event: &str) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        event: event.into(),
        data: b"{}".to_vec(),
        idempotency_key: String::new(),
    }
}

/// `GET path` over TLS offering h2 and HTTP/1.1: (negotiated ALPN, status).
async fn https_get(addr: SocketAddr, cert_pem: &str, path: &str) -> (Option<Vec<u8>>, u16) {
    within("HTTPS GET", async {
        let mut tls = tls_connect(addr, cert_pem, &[b"h2", HTTP1])
            .await
            .expect("TLS handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        // Closed without close_notify: the bytes up to there are what matters.
        let _ = tls.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("HTTP status in {response:?}"));
        (alpn, status)
    })
    .await
}

#[tokio::test]
async fn wss_and_grpc_over_tls_with_a_self_signed_certificate() {
    let pair = self_signed();
    let mount = SecretMount::new(&pair.cert, &pair.key);
    let Served {
        mut child,
        http,
        grpc,
        metrics,
        ..
    } = serve(|herald| {
        herald
            .env("HERALD_TLS_CERT", mount.cert())
            .env("HERALD_TLS_KEY", mount.key())
            .env("HERALD_GRPC_TLS", "true");
    })
    .await;

    // A client offering h2 and HTTP/1.1 gets HTTP/1.1: WebSocket upgrades need it.
    assert_eq!(
        https_get(http, &pair.cert, "/healthz").await,
        (Some(HTTP1.to_vec()), 200)
    );
    let auth = herald_gateway::auth::Authenticator::new(&config().jwt).unwrap();
    let token = auth.sign(&claims("alice", &[], &[], 600)).unwrap();
    let alice = wss_client(http, &pair.cert, &token).await;
    within("subscribe", alice.subscribe("public:news"))
        .await
        .expect("subscribe");
    let mut publisher = within("gRPC over TLS", grpcs_client(grpc, &pair.cert))
        .await
        .expect("gRPC over TLS connects");
    within(
        "publish",
        publisher.publish(publish_request("public:news", "first")),
    )
    .await
    .expect("publish over gRPC with TLS");
    assert_eq!(next_publication(&alice).await.event, "first");

    // Clients without TLS fail cleanly, and the node goes on serving.
    let plain = within(
        "plain ws on the TLS port",
        Client::open(ConnectOptions::new(format!("ws://{http}/ws"))),
    )
    .await;
    assert!(plain.is_err(), "a plain upgrade must fail: {plain:?}");
    let plain_grpc = within("plain gRPC on the TLS port", async {
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await?;
        let mut client =
            HeraldClient::with_interceptor(channel, BearerToken::new(API_KEY).unwrap());
        client
            .publish(publish_request("public:news", "plain"))
            .await
            .map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    })
    .await;
    assert!(plain_grpc.is_err(), "a plain gRPC call must fail");
    // The metrics port stays plain HTTP.
    assert_eq!(http_get(metrics, "/metrics").await.0, 200);

    let bob = wss_client(http, &pair.cert, &token).await;
    within("subscribe", bob.subscribe("public:news"))
        .await
        .expect("subscribe");
    within(
        "publish",
        publisher.publish(publish_request("public:news", "second")),
    )
    .await
    .expect("publish over gRPC with TLS");
    assert_eq!(next_publication(&alice).await.event, "second");
    assert_eq!(next_publication(&bob).await.event, "second");
    child.kill().await.expect("herald stops");
}

#[tokio::test]
async fn a_bad_certificate_setting_stops_startup_and_names_it() {
    let pair = self_signed();
    let other = self_signed();
    let mismatched = SecretMount::new(&pair.cert, &other.key);
    let serve = |cert: Option<PathBuf>, key: Option<PathBuf>| {
        let mut command = herald_testkit::herald::serve_command(env!("CARGO_BIN_EXE_herald"));
        if let Some(cert) = cert {
            command.env("HERALD_TLS_CERT", cert);
        }
        if let Some(key) = key {
            command.env("HERALD_TLS_KEY", key);
        }
        async move { within("herald to exit", command.output()).await.unwrap() }
    };
    for (cert, key, named) in [
        (
            Some(mismatched.cert()),
            Some(mismatched.key()),
            "HERALD_TLS_KEY",
        ),
        (Some(mismatched.cert()), None, "HERALD_TLS_KEY"),
        (
            Some(mismatched.dir.join("missing.crt")),
            Some(mismatched.key()),
            "HERALD_TLS_CERT",
        ),
    ] {
        let output = serve(cert, key).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "herald must not start: {stderr}");
        assert!(
            stderr.contains(named),
            "{named} should be named in: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let old = self_signed();
    let mut mount = SecretMount::new(&old.cert, &old.key);
    let interval = Duration::from_millis(100);
    assert!(interval < TLS_RELOAD_INTERVAL);
    let settings = mount.settings(interval);
    let gateway = TestGateway::with(|config| {
        config.tls = Some(settings);
        config.grpc_tls = true;
    })
    .await;
    let token = gateway.token("alice", &[], &[]);
    let alice = wss_client(gateway.http_addr, &old.cert, &token).await;
    within("subscribe", alice.subscribe("public:renewal"))
        .await
        .expect("subscribe");

    let new = self_signed();
    mount.update(&new.cert, &new.key);
    // A client trusting only the new certificate handshakes once the node has reloaded.
    within("the renewed certificate on the HTTP port", async {
        while tls_connect(gateway.http_addr, &new.cert, &[HTTP1])
            .await
            .is_err()
        {
            tokio::time::sleep(interval / 2).await;
        }
    })
    .await;
    assert!(
        tls_connect(gateway.http_addr, &old.cert, &[HTTP1])
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The gRPC port serves the same certificate, reloaded with it.
    let mut publisher = within("gRPC over TLS", grpcs_client(gateway.grpc_addr, &new.cert))
        .await
        .expect("gRPC over TLS with the renewed certificate");
    within(
        "publish",
        publisher.publish(publish_request("public:renewal", "renewed")),
    )
    .await
    .expect("publish");
    // Connections made before the renewal go on.
    assert_eq!(next_publication(&alice).await.event, "renewed");
    let bob = wss_client(gateway.http_addr, &new.cert, &token).await;
    within("ping", bob.ping()).await.expect("ping");
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_dropped_and_holds_up_no_one() {
    let pair = self_signed();
    let mount = SecretMount::new(&pair.cert, &pair.key);
    let settings = mount.settings(TLS_RELOAD_INTERVAL);
    let gateway = TestGateway::with(|config| config.tls = Some(settings)).await;
    let connected = Instant::now();
    let mut silent = TcpStream::connect(gateway.http_addr)
        .await
        .expect("TCP connect");
    // Served meanwhile: handshakes do not wait for one another.
    let token = gateway.token("alice", &[], &[]);
    let alice = wss_client(gateway.http_addr, &pair.cert, &token).await;
    within("ping", alice.ping()).await.expect("ping");
    let mut byte = [0u8; 1];
    let read = within(
        "the node to drop a connection that never handshakes",
        silent.read(&mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
    assert!(
        connected.elapsed() >= HANDSHAKE_TIMEOUT,
        "dropped after {:?}, before the handshake timeout",
        connected.elapsed()
    );
    // The plain gRPC port is untouched by HERALD_TLS_* without HERALD_GRPC_TLS.
    within(
        "plain gRPC",
        gateway.grpc().await.info(herald_api::v1::InfoRequest {}),
    )
    .await
    .expect("plain gRPC still works");
}
