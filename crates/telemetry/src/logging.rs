//! Logging: JSON lines for machines, human text for terminals, level from config or `RUST_LOG`.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (pods, systemd), text when it is.
    #[default]
    Auto,
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines.
    Text,
}

/// The `log:` section of both binaries' config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `auto` (default), `json` or `text`.
    pub format: LogFormat,
    /// A level (`info`) or filter directives (`info,truenas=debug`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The level is not a valid filter.
    #[error(
        "log level `{level}` is not valid ({reason}); use error, warn, info, debug, trace or directives like `info,tns_csi=debug`"
    )]
    BadLevel {
        /// The level text from config or `RUST_LOG`.
        level: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

impl LogSettings {
    /// Checks the level so `check-config` catches it before start.
    pub fn validate(&self) -> Result<(), Error> {
        parse_filter(&self.level).map(|_| ())
    }

    fn filter(&self) -> Result<EnvFilter, Error> {
        match std::env::var("RUST_LOG") {
            Ok(level) if !level.trim().is_empty() => parse_filter(&level),
            _ => parse_filter(&self.level),
        }
    }

    fn use_json(&self) -> bool {
        match self.format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stderr().is_terminal(),
        }
    }
}

fn parse_filter(level: &str) -> Result<EnvFilter, Error> {
    // EnvFilter reads a bare word as a target name ("loud" = everything from target `loud`),
    // which in a config file is always a typo of a level.
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    if let Some(word) = level.split(',').map(str::trim).find(|d| {
        !d.is_empty()
            && !d.contains(['=', '['])
            && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
    }) {
        return Err(Error::BadLevel {
            level: level.into(),
            reason: format!("`{word}` is not a level"),
        });
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|err| Error::BadLevel {
            level: level.into(),
            reason: err.to_string(),
        })
}

/// Builds the subscriber for `settings`, writing to `writer` (tests capture it).
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, Error>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(settings.filter()?)
        .with_writer(writer);
    Ok(if settings.use_json() {
        Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        )
    } else {
        Box::new(builder.with_ansi(std::io::stderr().is_terminal()).finish())
    })
}

/// Installs the process-wide subscriber, writing to stderr (stdout is kept for command output).
pub fn init(settings: &LogSettings) -> Result<(), Error> {
    tracing::subscriber::set_global_default(subscriber(settings, std::io::stderr)?)
        .map_err(|_| Error::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_level_is_named() {
        let settings = LogSettings {
            level: "loud".into(),
            ..LogSettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.starts_with("log level `loud` is not valid"), "{err}");
        assert!(LogSettings::default().validate().is_ok());
        let directives = LogSettings {
            level: "info,tns_csi=debug".into(),
            ..LogSettings::default()
        };
        assert!(directives.validate().is_ok());
    }

    #[test]
    fn json_format_writes_json_lines() {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "trace".into(),
        };
        let subscriber = subscriber(&settings, move || Sink(sink.clone())).unwrap();
        tracing::subscriber::with_default(subscriber, || tracing::info!(volume_id = "v1", "hello"));
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with('{') && text.contains("\"volume_id\":\"v1\""),
            "{text}"
        );
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
