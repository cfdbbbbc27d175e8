//! Layered configuration for both binaries, built on [`figment`].
//!
//! Layers, later ones winning: a YAML file, environment variables with the binary's prefix
//! (`TNS_CSI_TRUENAS__URL` sets `truenas.url`; `__` separates levels), then command-line
//! flags. After merging, `${VAR}` references in string values are expanded (except in the
//! schema's secret-reference keys, which [`credentials`] resolves straight into a secret).
//! The schema is a plain serde type with `deny_unknown_fields`; every error names the full key
//! path and where the value came from ("config key `truenas.urll` (from file /etc/x.yaml):
//! unknown key; expected one of …").

mod error;
mod flags;
mod layers;
mod render;

pub use error::{Error, Invalid, KeyError};
pub use figment::value::Value;
pub use flags::ObservabilityFlags;
pub use layers::{Loader, Schema};
pub use render::render_redacted;
