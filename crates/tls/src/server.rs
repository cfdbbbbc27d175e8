//! Server configs for our own HTTPS endpoints, from PEM certificate and key files.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::client::{load_certs, pem_reason};
use crate::{Error, crypto_provider};

/// Certificate and key of an endpoint we serve; embedded in binaries' config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Builds a server config; errors name the file at fault.
pub fn server_config(settings: &ServerTlsSettings) -> Result<Arc<ServerConfig>, Error> {
    let certs = load_certs(&settings.cert_file, "certificate")?;
    let key_err = |reason: String| Error::File {
        what: "private key",
        path: settings.key_file.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_file(&settings.key_file)
        .map_err(|err| key_err(pem_reason(&err)))?;
    let config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| {
            key_err(format!(
                "does not match the certificate or is unsupported: {err}"
            ))
        })?;
    Ok(Arc::new(config))
}
