//! Last-line-of-defence redaction for text that leaves the process.

use secrecy::{ExposeSecret, SecretString};

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Scrubs known secret values from text printed to users, in case one slipped into a
/// non-secret field (for example through `${VAR}` in an endpoint).
#[derive(Default, Clone)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// Remembers `secret` so later [`Redactor::redact`] calls scrub it.
    pub fn add(&mut self, secret: &SecretString) {
        if !secret.expose_secret().is_empty() {
            self.secrets.push(secret.clone());
        }
    }

    /// Returns `text` with every known secret value replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            let value = secret.expose_secret();
            if out.contains(value) {
                out = out.replace(value, REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        let mut redactor = Redactor::default();
        redactor.add(&SecretString::from("abc123"));
        redactor.add(&SecretString::from(""));
        assert_eq!(
            redactor.redact("x abc123 y abc123"),
            "x [REDACTED] y [REDACTED]"
        );
        assert_eq!(format!("{redactor:?}"), "Redactor { secrets: 1 }");
    }
}
