//! The effective config as users see it in `check-config`: YAML, secrets scrubbed.

use credentials::Redactor;
use serde::Serialize;

/// Renders `config` as YAML and scrubs every secret `redactor` knows.
///
/// Schemas hold only the names of secrets (variables, files, `${VAR}`), so the YAML holds no
/// value by construction; the redactor catches a secret that reached a non-secret field.
pub fn render_redacted<T: Serialize>(
    config: &T,
    redactor: &Redactor,
) -> Result<String, serde_yaml::Error> {
    Ok(redactor.redact(&serde_yaml::to_string(config)?))
}
