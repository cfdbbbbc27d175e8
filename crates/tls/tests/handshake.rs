//! Real TLS handshakes on 127.0.0.1 against certificates made by rcgen for each test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tls::{ClientTlsSettings, ServerTlsSettings, TlsMetrics, client_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, a leaf for 127.0.0.1 signed by it, and their PEM files.
struct Pki {
    dir: tempfile::TempDir,
    leaf_der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("leaf.key"), leaf_key.serialize_pem()).unwrap();
        Self {
            leaf_der: leaf.der().to_vec(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn leaf_pin(&self) -> String {
        Sha256::digest(&self.leaf_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Serves TLS on 127.0.0.1:0, answering "pong" to every connection.
    async fn serve(&self) -> SocketAddr {
        let config = server_config(&ServerTlsSettings {
            cert_file: self.path("leaf.pem"),
            key_file: self.path("leaf.key"),
        })
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"pong").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        addr
    }
}

async fn connect(
    addr: SocketAddr,
    name: &str,
    settings: &ClientTlsSettings,
    metrics: &TlsMetrics,
) -> Result<String, String> {
    let config = client_config(settings, "test", metrics).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let pki = Pki::new();
    let addr = pki.serve().await;
    let err = connect(
        addr,
        "127.0.0.1",
        &ClientTlsSettings::default(),
        &TlsMetrics::default(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn given_ca_is_accepted_and_name_is_checked() {
    let pki = Pki::new();
    let addr = pki.serve().await;
    let settings = ClientTlsSettings {
        ca_file: Some(pki.path("ca.pem")),
        ..Default::default()
    };
    assert_eq!(
        connect(addr, "127.0.0.1", &settings, &TlsMetrics::default())
            .await
            .unwrap(),
        "pong"
    );
    let err = connect(addr, "nas.example", &settings, &TlsMetrics::default())
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn pin_mismatch_is_refused_and_match_accepted() {
    let pki = Pki::new();
    let addr = pki.serve().await;
    let wrong = ClientTlsSettings {
        pin_sha256: Some("00".repeat(32)),
        ..Default::default()
    };
    let err = connect(addr, "127.0.0.1", &wrong, &TlsMetrics::default())
        .await
        .unwrap_err();
    assert!(err.contains("does not match the configured pin"), "{err}");
    let right = ClientTlsSettings {
        pin_sha256: Some(pki.leaf_pin()),
        ..Default::default()
    };
    assert_eq!(
        connect(addr, "127.0.0.1", &right, &TlsMetrics::default())
            .await
            .unwrap(),
        "pong"
    );
}

#[tokio::test]
async fn insecure_mode_connects_warns_and_sets_gauge() {
    let pki = Pki::new();
    let addr = pki.serve().await;
    let mut registry = Registry::default();
    let metrics = TlsMetrics::register(&mut registry);
    let settings = ClientTlsSettings {
        insecure_skip_verify: true,
        ..Default::default()
    };

    let logs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let reply = connect(addr, "127.0.0.1", &settings, &metrics).await;
    drop(guard);
    assert_eq!(reply.unwrap(), "pong");

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN") && logs.contains("verification is OFF"),
        "{logs}"
    );
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("tls_insecure_skip_verify{component=\"test\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn verified_mode_reports_gauge_zero() {
    let pki = Pki::new();
    let mut registry = Registry::default();
    let metrics = TlsMetrics::register(&mut registry);
    let settings = ClientTlsSettings {
        ca_file: Some(pki.path("ca.pem")),
        ..Default::default()
    };
    client_config(&settings, "truenas", &metrics).unwrap();
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("tls_insecure_skip_verify{component=\"truenas\"} 0"),
        "{text}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let pki = Pki::new();
    let missing = ClientTlsSettings {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..Default::default()
    };
    let err = missing.validate().unwrap_err().to_string();
    assert!(err.starts_with("CA bundle `/nonexistent/ca.pem`:"), "{err}");
    let not_pem = ClientTlsSettings {
        ca_file: Some(pki.path("leaf.key")),
        ..Default::default()
    };
    let err = not_pem.validate().unwrap_err().to_string();
    assert!(err.contains("no PEM `CERTIFICATE` block"), "{err}");
    let swapped = ServerTlsSettings {
        cert_file: pki.path("ca.pem"),
        key_file: pki.path("leaf.key"),
    };
    let err = server_config(&swapped).unwrap_err().to_string();
    assert!(err.starts_with("private key `"), "{err}");
}

struct Sink(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
