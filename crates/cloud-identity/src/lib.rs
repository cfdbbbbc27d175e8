//! Keyless credentials for object stores. Each cloud's identity flow (Azure IMDS, Entra
//! client credentials and federated assertions, AWS STS web identity, GCP STS + service-account
//! impersonation, Key Vault secrets) is a [`Fetch`]; a [`Refresher`] runs one task per backend
//! that fetches ahead of expiry, and is the object_store `CredentialProvider` the store client
//! signs with. Token material lives in `secrecy` types or object_store's credential types and
//! never reaches a log, a metric or an error.

pub mod aws;
pub mod azure;
mod error;
pub mod gcp;
mod http;
pub mod metrics;
mod refresh;
pub mod subject;

pub use error::Error;
pub use http::{Endpoint, HttpSettings};
pub use refresh::{Fetch, Issued, RefreshSettings, Refresher};
