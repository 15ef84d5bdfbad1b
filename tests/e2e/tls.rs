//! AMQP over TLS (issue 17, `RABBITMQ_TLS` and `RABBITMQ_CA_FILE`): the bus reaches the broker
//! through TLS and trusts exactly the CA it is given; a certificate it refuses is said in words;
//! a CA file that cannot be used stops the process at start.
//!
//! The broker here speaks plain AMQP, so each test puts a TLS terminator in front of it: an
//! in-process rustls server with a certificate made for the test (by a CA made for the test)
//! that forwards every connection to 127.0.0.1:5672, the way a TLS listener of RabbitMQ's own
//! would take them on 5671.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use switchboard::{Bus, Config, Shutdown};
use switchboard_tests::{Bin, Driver, Running, TestEnv, eventually};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

const JWT_SECRET: &str = "tls-test-secret-tls-test-secret!";

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        Ca { issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate") }
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    fn server_certificate(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = CertificateParams::new(names).expect("server parameters");
        let key = KeyPair::generate().expect("a server key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a server certificate");
        (certificate.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into())
    }

    /// Writes the CA's certificate as PEM into `dir`, for `RABBITMQ_CA_FILE`.
    fn pem_file(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).expect("write the CA file");
        path
    }
}

/// A TLS listener on a free port of 127.0.0.1 that forwards each connection to the broker's
/// plain AMQP port. Stops when dropped.
struct Terminator {
    port: u16,
    /// Handshakes completed so far: proof that a connection really went through TLS.
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Terminator {
    async fn start(certificate: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> Terminator {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![certificate], key)
                .expect("a server configuration");
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the terminator");
        let port = listener.local_addr().expect("its address").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to forward.
                    let Ok(tls) = acceptor.accept(client.compat()).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls.compat(), &mut broker).await;
                });
            }
        });
        Terminator { port, handshakes, task }
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The settings that send a process to the broker over TLS through `port`.
fn over_tls<'a>(port: &'a str, ca_file: &'a Path) -> [(&'a str, &'a str); 4] {
    [
        ("RABBITMQ_TLS", "true"),
        ("RABBITMQ_HOST", "127.0.0.1"),
        ("RABBITMQ_PORT", port),
        ("RABBITMQ_CA_FILE", ca_file.to_str().expect("a UTF-8 path")),
    ]
}

fn jwt(user: &str) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let claims = json!({ "sub": user, "exp": chrono::Utc::now().timestamp() + 600 });
    encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).expect("sign")
}

#[tokio::test]
async fn an_edge_over_tls_becomes_ready_and_delivers_what_it_publishes() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a directory");
    let ca = Ca::new("switchboard test CA");
    let (certificate, key) = ca.server_certificate(&["127.0.0.1", "localhost"]);
    let terminator = Terminator::start(certificate, key).await;
    let ca_file = ca.pem_file(dir.path(), "ca.pem");
    let port = terminator.port.to_string();
    let mut extra = vec![("AUTH_MODE", "jwt"), ("AUTH_JWT_SECRET", JWT_SECRET)];
    extra.extend(over_tls(&port, &ca_file));
    // Ready means connected, the exchanges declared and the edge's delivery queue consumed, all
    // through the terminator: the broker's plain port is not where it was sent.
    let edge = env.spawn_ready(Bin::Edge, &extra).await;
    assert!(terminator.handshakes() > 0, "the edge's connection went through TLS");

    // A round trip through the bus: the ingress answers 202 once the broker confirmed the
    // publish, and the edge's consumer delivers it to the user's socket.
    let mut driver = Driver::start().await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": jwt("alice") } });
    driver.connect("alice", &edge.url(), options).await.expect("alice connects");
    let (status, body) = edge
        .post("/api/v1/emit", json!({ "userId": "alice", "event": "ping", "data": { "over": "tls" } }))
        .await;
    assert_eq!((status, body), (202, json!({})));
    assert_eq!(driver.event("alice", "ping").await, json!({ "over": "tls" }));
}

/// What the bus says when TLS refuses the broker, for each way that happens. In-process: the
/// error of a checkout from the pool is what every caller (and the supervisor's log) gets.
#[tokio::test]
async fn a_certificate_the_bus_refuses_is_said_in_words() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a directory");
    let ca = Ca::new("switchboard test CA");
    let right_ca = ca.pem_file(dir.path(), "ca.pem");
    let other_ca = Ca::new("another CA").pem_file(dir.path(), "other.pem");
    let (certificate, key) = ca.server_certificate(&["127.0.0.1"]);
    let trusted = Terminator::start(certificate, key).await;
    let (certificate, key) = ca.server_certificate(&["broker.example.com"]);
    let misnamed = Terminator::start(certificate, key).await;

    let cases = [
        (trusted.port, Some(&other_ca), "the broker's certificate is not signed by a CA of RABBITMQ_CA_FILE"),
        (
            trusted.port,
            None,
            "the broker's certificate is not signed by a public CA (set RABBITMQ_CA_FILE to the CA that signed it)",
        ),
        (misnamed.port, Some(&right_ca), "the broker's certificate does not name the host connected to"),
        (
            5672,
            Some(&right_ca),
            "the broker does not speak TLS on RABBITMQ_PORT (its TLS port is usually 5671)",
        ),
    ];
    for (port, ca_file, words) in cases {
        let config = Config {
            rabbitmq_tls: true,
            rabbitmq_port: port,
            rabbitmq_ca_file: ca_file.cloned(),
            rabbitmq_vhost: env.vhost.clone(),
            ..Config::default()
        };
        let shutdown = Shutdown::new();
        let bus = Bus::start(&config, "tls-refusal-test", &shutdown);
        let error = bus.channel().await.expect_err("TLS refuses the broker").to_string();
        assert!(error.contains(words), "port {port}, CA {ca_file:?}: {error}");
        assert!(!bus.is_ready());
        shutdown.trigger();
    }

    // The same settings with the right CA connect: the refusals were about the certificate.
    let config = Config {
        rabbitmq_tls: true,
        rabbitmq_port: trusted.port,
        rabbitmq_ca_file: Some(right_ca),
        rabbitmq_vhost: env.vhost.clone(),
        ..Config::default()
    };
    let shutdown = Shutdown::new();
    let bus = Bus::start(&config, "tls-trusted-test", &shutdown);
    assert!(bus.wait_ready().await, "connects with the CA that signed the certificate");
    bus.close().await;
    shutdown.trigger();
}

#[tokio::test]
async fn a_worker_that_does_not_trust_the_broker_stays_unready_and_logs_why() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a directory");
    let ca = Ca::new("switchboard test CA");
    let (certificate, key) = ca.server_certificate(&["127.0.0.1"]);
    let terminator = Terminator::start(certificate, key).await;
    let other_ca = Ca::new("another CA").pem_file(dir.path(), "other.pem");
    let port = terminator.port.to_string();
    let worker = env.spawn(Bin::Presence, &over_tls(&port, &other_ca)).await;
    let line = eventually("an ERROR saying why the broker is refused", Duration::from_secs(15), || {
        let found =
            worker.logs().into_iter().find(|line| line.contains("refused the broker's TLS connection"));
        async move { found }
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(line["level"], "ERROR", "{line}");
    let reason = line["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not signed by a CA of RABBITMQ_CA_FILE"), "{line}");
    let (status, body) = worker.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(terminator.handshakes(), 0, "no handshake completed");
}

#[tokio::test]
async fn a_ca_file_that_cannot_be_used_stops_every_binary_at_start() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().expect("a directory");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let missing = dir.path().join("missing.pem");
    let cases = [
        (Bin::Edge, &missing, "cannot read"),
        (Bin::Messages, &empty, "holds no PEM certificate"),
        (Bin::Presence, &missing, "cannot read"),
        (Bin::Notifier, &empty, "holds no PEM certificate"),
    ];
    for (bin, ca_file, reason) in cases {
        let mut vars = env.base_env();
        vars.extend(over_tls("5671", ca_file).iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let (status, output) = Running::run_to_exit(bin, &vars, Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(64), "{}: {output:?}", bin.name());
        assert_eq!(output.len(), 1, "exactly one line: {output:?}");
        let line = &output[0];
        let prefix = format!("{}: invalid configuration: RABBITMQ_CA_FILE: ", bin.name());
        assert!(line.starts_with(&prefix), "{line}");
        assert!(line.contains(reason) && line.contains(&ca_file.display().to_string()), "{line}");
    }
}
