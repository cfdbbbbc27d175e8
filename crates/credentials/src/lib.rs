//! Secrets for both systems, kept as [`secrecy`] types from the moment they are read.
//!
//! A config file never holds a secret value. It names where the value lives: an environment
//! variable (`api_key_env: TRUENAS_API_KEY`), a file such as a mounted Kubernetes Secret
//! (`api_key_file: /etc/tns-csi/api-key`), or a `${VAR}` reference. [`SecretSource`] is that
//! name; [`SecretSource::resolve`] turns it into a [`SecretString`] without the value passing
//! through any plain `String` that could be logged. Errors name the variable or file, never
//! the value. [`expand`] gives non-secret config strings the same `${VAR}` syntax, and
//! [`Redactor`] is the last line of defence for text that leaves the process.

mod error;
mod expand;
mod redact;
mod source;

pub use error::Error;
pub use expand::{EnvLookup, MapEnv, ProcessEnv, expand};
pub use redact::{REDACTED, Redactor};
pub use secrecy::{ExposeSecret, SecretString};
pub use source::{SecretSource, choose_source};
