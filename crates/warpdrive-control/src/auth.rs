//! The bearer token: read once from its file into a secret, compared in constant time, and
//! never echoed. A request without the header learns that the header is missing; one with a
//! wrong token learns only that it was not accepted.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::api::ErrorBody;

/// The shortest token accepted: anything shorter can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("config key `control_plane.token_file`: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short (its length is given, never its value).
    #[error(
        "config key `control_plane.token_file`: the token in {path} has {len} characters; use at least {MIN_TOKEN_LEN} (for example `openssl rand -hex 32`)"
    )]
    TooShort {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
}

/// The token every request must carry.
#[derive(Clone)]
pub struct Token(SecretString);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// Reads the token from `path` (surrounding whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(SecretString::from(text), &path.display().to_string())
    }

    /// The token in `secret` (read from `from`, named in errors), whitespace trimmed.
    pub fn new(secret: SecretString, from: &str) -> Result<Self, TokenError> {
        let trimmed = secret.expose_secret().trim();
        if trimmed.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort {
                path: from.to_owned(),
                len: trimmed.len(),
            });
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    /// The secret, for a client's `Authorization` header.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    fn matches(&self, offered: &[u8]) -> bool {
        self.0.expose_secret().as_bytes().ct_eq(offered).into()
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"warpdrive\"")],
        axum::Json(ErrorBody {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

/// Middleware: lets a request through only with `Authorization: Bearer <token>`.
pub async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return unauthorized(
            "missing `Authorization: Bearer <token>` header (the token is in the file named by control_plane.token_file)",
        );
    };
    let Some(offered) = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
    else {
        return unauthorized("the Authorization header is not of the form `Bearer <token>`");
    };
    if !token.matches(offered) {
        tracing::warn!(path = %request.uri().path(), "control plane: a request with a wrong bearer token was refused");
        return unauthorized("the bearer token was not accepted");
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_are_refused_without_showing_them_and_whitespace_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "hunter2\n").unwrap();
        let err = Token::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("has 7 characters"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        let token = Token::from_file(&path).unwrap();
        assert!(token.matches(b"0123456789abcdef0123"));
        assert!(!token.matches(b"0123456789abcdef012"));
        assert!(!format!("{token:?}").contains("0123"));
    }
}
