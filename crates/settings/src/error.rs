//! Config errors: each names the key, where its value came from, and what was expected.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file `{}`", path.display())]
    Read {
        /// Path given with `--config`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable with our prefix is not UTF-8.
    #[error("environment variable `{var}` is not valid UTF-8")]
    EnvNotUnicode {
        /// Name of the variable.
        var: String,
    },
    /// One or more keys have bad names, types or values.
    #[error("{}", join(.0))]
    Keys(Vec<KeyError>),
    /// The values parse but break a rule of the schema.
    #[error("{}", join(.0))]
    Invalid(Vec<Invalid>),
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    let lines: Vec<String> = items.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A key whose name, type or value is wrong, with the layer that supplied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Full dotted path, for example `truenas.api_key_env` or `backends.0.bucket`.
    pub key: String,
    /// Where the value came from ("file /etc/tns-csi.yaml", "environment variable X").
    pub origin: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "config")?;
        } else {
            write!(f, "config key `{}`", self.key)?;
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A rule of the schema that the loaded values break.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct Invalid {
    /// Full dotted path of the offending key.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Invalid {
    /// Names `key` and says what is wrong with it.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}
