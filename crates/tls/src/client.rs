//! Client configs: system roots plus a CA bundle, or a pin, or explicitly nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

use crate::verify::{TrustOverride, parse_pin};
use crate::{Error, TlsMetrics, crypto_provider};

/// How a client decides to trust a server; embedded in each binary's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    /// PEM bundle of extra CAs, trusted in addition to the system store.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's certificate; when set, exactly that certificate is trusted.
    pub pin_sha256: Option<String>,
    /// Trust any certificate. Logs a WARN at every start; for labs only.
    pub insecure_skip_verify: bool,
}

impl ClientTlsSettings {
    /// Checks the fields without reading the system store, for `check-config`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(pin) = &self.pin_sha256 {
            parse_pin(pin)?;
        }
        if let Some(path) = &self.ca_file {
            load_certs(path, "CA bundle")?;
        }
        Ok(())
    }
}

/// Builds the client config for `component` (a metrics label such as `truenas`).
pub fn client_config(
    settings: &ClientTlsSettings,
    component: &str,
    metrics: &TlsMetrics,
) -> Result<Arc<ClientConfig>, Error> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    metrics.set_insecure(component, settings.insecure_skip_verify);
    let config = if settings.insecure_skip_verify {
        tracing::warn!(
            component,
            "TLS certificate verification is OFF (insecure_skip_verify); anyone on the network path \
             can impersonate the server and read credentials. Use `ca_file` or `pin_sha256` instead."
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustOverride::insecure(provider)))
            .with_no_client_auth()
    } else if let Some(pin) = &settings.pin_sha256 {
        let pin = parse_pin(pin)?;
        tracing::info!(
            component,
            "trusting exactly the server certificate with the configured SHA-256 pin"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustOverride::pinned(pin, provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(settings.ca_file.as_deref())?)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "skipping unreadable system CA certificate");
    }
    let (added, ignored) = store.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded system CA certificates");
    if let Some(path) = ca_file {
        for cert in load_certs(path, "CA bundle")? {
            store.add(cert).map_err(|err| Error::File {
                what: "CA bundle",
                path: path.to_owned(),
                reason: format!("certificate rejected: {err}"),
            })?;
        }
    }
    if store.is_empty() {
        return Err(Error::NoRoots);
    }
    Ok(store)
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub(crate) fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let file_err = |reason: String| Error::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_err(pem_reason(&err)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_err(pem_reason(&err)))?;
    if certs.is_empty() {
        return Err(file_err("no PEM `CERTIFICATE` block found".into()));
    }
    Ok(certs)
}

pub(crate) fn pem_reason(err: &rustls::pki_types::pem::Error) -> String {
    match err {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not valid PEM ({other:?})"),
    }
}
