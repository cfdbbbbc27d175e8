//! The JWT a federated flow presents: a projected service-account token file (re-read on
//! every use, because kubelet rotates it), or an Entra token obtained on the spot.

use std::path::PathBuf;
use std::sync::Arc;

use credentials::{ExposeSecret, SecretString};

use crate::Error;
use crate::azure::BearerSource;

/// Where a federated flow's subject token comes from.
#[derive(Clone)]
pub enum SubjectToken {
    /// A file holding the JWT (Kubernetes projected token, IRSA, GKE).
    File(PathBuf),
    /// An Entra access token (managed identity or workload identity) for the audience the
    /// other cloud's federation trusts.
    Entra(Arc<dyn BearerSource>),
}

impl std::fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "SubjectToken::File({})", path.display()),
            Self::Entra(_) => f.write_str("SubjectToken::Entra"),
        }
    }
}

impl SubjectToken {
    /// The token now.
    pub async fn read(&self) -> Result<SecretString, Error> {
        match self {
            Self::File(path) => {
                let text = tokio_read(path).await?;
                let token = text.expose_secret().trim();
                if token.is_empty() {
                    return Err(Error::TokenFile {
                        path: path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the file is empty",
                        ),
                    });
                }
                Ok(SecretString::from(token.to_owned()))
            }
            Self::Entra(source) => Ok(source.bearer().await?.0),
        }
    }
}

async fn tokio_read(path: &std::path::Path) -> Result<SecretString, Error> {
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(&owned))
        .await
        .map_err(|err| Error::TokenFile {
            path: path.to_owned(),
            source: std::io::Error::other(err),
        })?;
    read.map(SecretString::from)
        .map_err(|source| Error::TokenFile {
            path: path.to_owned(),
            source,
        })
}
