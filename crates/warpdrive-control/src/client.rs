//! The control plane's client, for `warpdrive-mount ctl`: the local socket (no token), or the
//! TCP address with the bearer token, over HTTPS verified by the `tls` crate's rules.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::auth::Token;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon cannot be reached.
    #[error("cannot reach the warpdrive-mount control plane at {at}: {source}")]
    Connect {
        /// Where we tried.
        at: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("the daemon answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its reason.
        message: String,
    },
    /// The answer is not what this client understands (a different version?).
    #[error("unexpected answer from the daemon: {0}")]
    Decode(String),
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// A connection to one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    at: String,
    token: Option<Token>,
}

impl Client {
    /// Talks to the daemon over its local socket.
    pub fn socket(path: &Path) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .unix_socket(PathBuf::from(path))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            base: "http://localhost".into(),
            at: path.display().to_string(),
            token: None,
        })
    }

    /// Talks to the daemon at `base` (`http://127.0.0.1:8090` or `https://…`) with `token`.
    pub fn tcp(
        base: &str,
        token: Token,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(config) = tls {
            builder = builder.tls_backend_preconfigured((*config).clone());
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            at: base.to_owned(),
            token: Some(token),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.secret().expose_secret());
        }
        request
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Connect {
                at: self.at.clone(),
                source,
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Status {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }
}
