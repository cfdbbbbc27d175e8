//! Certificate verifiers for the two explicit alternatives to CA trust: a pin, and none.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::Error;

/// Parses a SHA-256 pin: 64 hex digits, optionally `sha256:`-prefixed or colon-separated.
pub fn parse_pin(text: &str) -> Result<[u8; 32], Error> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("sha256/"))
        .unwrap_or(trimmed);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::BadPin {
            reason: format!(
                "expected the SHA-256 of the server certificate as 64 hex digits (got {} characters); \
                 get it with `openssl x509 -noout -fingerprint -sha256 -in cert.pem`",
                hex.len()
            ),
        });
    }
    let mut pin = [0u8; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|err| Error::BadPin {
            reason: err.to_string(),
        })?;
    }
    Ok(pin)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trusts exactly the certificate with the pinned digest, or, without a pin, any certificate.
#[derive(Debug)]
pub(crate) struct TrustOverride {
    pin: Option<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl TrustOverride {
    pub(crate) fn pinned(pin: [u8; 32], provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: Some(pin),
            provider,
        }
    }

    pub(crate) fn insecure(provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: None,
            provider,
        }
    }
}

impl ServerCertVerifier for TrustOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let digest = Sha256::digest(end_entity.as_ref());
        if digest.as_slice() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate sha256 {} does not match the configured pin {}",
                hex(&digest),
                hex(&pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_in_common_spellings() {
        let plain = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for text in [plain.clone(), colons, format!("sha256:{plain}")] {
            assert_eq!(parse_pin(&text).unwrap(), [0xab; 32], "{text}");
        }
        let err = parse_pin("abc").unwrap_err().to_string();
        assert!(
            err.starts_with("`pin_sha256`: expected the SHA-256"),
            "{err}"
        );
        assert!(parse_pin(&"zz".repeat(32)).is_err());
    }
}
