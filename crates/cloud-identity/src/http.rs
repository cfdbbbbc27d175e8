//! The HTTP client identity calls share: timeouts, an extra CA for private endpoints, and one
//! way to turn an error answer into its code and message without echoing the request.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::Error;

/// How identity endpoints are reached.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Limit for each call.
    pub timeout: Duration,
    /// A PEM bundle trusted besides the system roots (private or test endpoints).
    pub ca_file: Option<PathBuf>,
    /// Whether `http://` endpoints are allowed (tests, emulators); IMDS is always http.
    pub allow_http: bool,
}

/// An identity endpoint URL, checked for https unless allowed.
#[derive(Debug, Clone)]
pub struct Endpoint(pub(crate) url::Url);

impl Endpoint {
    /// Parses `text`; `what` names the config key in errors.
    pub fn parse(text: &str, what: &str, settings: &HttpSettings) -> Result<Self, Error> {
        let url = url::Url::parse(text)
            .map_err(|err| Error::Config(format!("{what}: `{text}` is no URL: {err}")))?;
        match url.scheme() {
            "https" => {}
            "http" if settings.allow_http => {}
            "http" => {
                return Err(Error::Config(format!(
                    "{what}: `{text}` is plain http; credentials go only over https (set allow_http for a test endpoint)"
                )));
            }
            other => {
                return Err(Error::Config(format!(
                    "{what}: scheme `{other}` is not http(s)"
                )));
            }
        }
        Ok(Self(url))
    }

    /// An http endpoint that is fine by design (Azure IMDS on the link-local address).
    pub(crate) fn plain(text: &str, what: &str) -> Result<Self, Error> {
        url::Url::parse(text)
            .map(Self)
            .map_err(|err| Error::Config(format!("{what}: `{text}` is no URL: {err}")))
    }

    /// `self` with `path` appended (a `/` between).
    pub(crate) fn join(&self, path: &str) -> url::Url {
        let mut url = self.0.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        url
    }

    /// The URL.
    pub(crate) fn url(&self) -> &url::Url {
        &self.0
    }
}

/// Builds the client.
pub(crate) fn client(settings: &HttpSettings) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .map_err(|err| Error::Config(format!("ca_file {}: {err}", path.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| Error::Config(format!("ca_file {}: {err}", path.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|err| Error::Config(format!("cannot build the identity HTTP client: {err}")))
}

/// Where a request went, for errors: scheme, host and path, never the query (it may carry a
/// token).
pub(crate) fn shown(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path()
}

/// Sends `request`; a success body as text, an error status as [`Error::Refused`] with the
/// body's error code and message (`describe` picks them out of the documented error shape).
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    endpoint: &url::Url,
    describe: fn(&str) -> Option<String>,
) -> Result<String, Error> {
    let shown = shown(endpoint);
    let response = request.send().await.map_err(|source| Error::Transport {
        endpoint: shown.clone(),
        source: source.without_url(),
    })?;
    let status = response.status();
    let body = response.text().await.map_err(|source| Error::Transport {
        endpoint: shown.clone(),
        source: source.without_url(),
    })?;
    if !status.is_success() {
        let detail = describe(&body).unwrap_or_else(|| "no error description".to_owned());
        return Err(Error::Refused {
            endpoint: shown,
            status: status.as_u16(),
            detail,
        });
    }
    Ok(body)
}

/// Parses a JSON success body.
pub(crate) fn json<T: DeserializeOwned>(body: &str, endpoint: &url::Url) -> Result<T, Error> {
    serde_json::from_str(body).map_err(|err| Error::Malformed {
        endpoint: shown(endpoint),
        detail: json_problem(&err),
    })
}

/// What is wrong with a JSON body, without quoting it: "invalid type" messages echo the
/// value, which may be a token.
pub(crate) fn json_problem(err: &serde_json::Error) -> String {
    let text = err.to_string();
    if text.starts_with("missing field") || text.starts_with("duplicate field") {
        text
    } else {
        format!(
            "{:?} JSON error at line {} column {}",
            err.classify(),
            err.line(),
            err.column()
        )
    }
}

/// The OAuth 2.0 error body (`error`, `error_description`), as Entra and GCP STS send it.
pub(crate) fn oauth_error(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OAuth {
        error: serde_json::Value,
        error_description: Option<String>,
    }
    let parsed: OAuth = serde_json::from_str(body).ok()?;
    match parsed.error {
        // Google APIs: {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED"}}
        serde_json::Value::Object(inner) => Some(format!(
            "{}: {}",
            inner
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("error"),
            inner
                .get("message")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
        )),
        serde_json::Value::String(code) => Some(match parsed.error_description {
            Some(text) => format!("{code}: {}", text.lines().next().unwrap_or_default()),
            None => code,
        }),
        _ => None,
    }
}

/// Seconds as JSON sends them: a number, or a string of digits (Azure IMDS).
pub(crate) fn seconds(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
