//! Keyless credentials through the real binary and a real FUSE mount, against identity
//! endpoints that speak the clouds' documented protocols (local servers here, fakes only for
//! what cannot run on this machine) and stores that check what they are given:
//! - Azure: IMDS, the Entra v2 token endpoint (client secret and federated assertion) and Key
//!   Vault as a local server; Azurite over HTTPS with `--oauth basic`, which refuses a request
//!   without a bearer token of the right audience, issuer and expiry;
//! - AWS: moto's STS `AssumeRoleWithWebIdentity`, behind a recording proxy that checks every
//!   S3 request is signed with the access key and session token STS issued;
//! - GCP: Google STS, IAM Credentials and a GCS endpoint that accepts only the impersonated
//!   token, as a local server.
//!
//! Tokens live 6 s, so refreshes, expiry and recovery happen within the test, and nothing an
//! endpoint issued may appear in the daemon's TRACE log or its metrics.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;

mod common;
#[path = "../../warpdrive-fs/tests/common/emulators.rs"]
mod emulators;

use emulators::{AZURITE_ACCOUNT, AZURITE_KEY, Azurite, Moto, python};

const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT_ID: &str = "b4a1c2d3-0000-4000-8000-000000000042";
const SP_SECRET: &str = "sp-secret-Zx81-never-logged";
const LIFETIME: u64 = 6;

/// What the identity endpoints issued and saw.
#[derive(Default)]
struct Idp {
    failing: AtomicBool,
    issued: Mutex<Vec<String>>,
    imds: AtomicU32,
    entra: AtomicU32,
    vault: AtomicU32,
    vault_secret: Mutex<String>,
    assertion_file: Mutex<PathBuf>,
    assertions: Mutex<Vec<String>>,
    google_subject: Mutex<String>,
    gcs_token: Mutex<Option<String>>,
    gcs_objects: Mutex<HashMap<String, Vec<u8>>>,
    gcs_refused: AtomicU32,
}

type Shared = Arc<Idp>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An Entra-style access token: a JWT with audience, issuer and expiry (Azurite checks those,
/// not the signature).
fn jwt(idp: &Idp, aud: &str) -> String {
    let n = idp.issued.lock().unwrap().len();
    let header = b64(br#"{"typ":"JWT","alg":"RS256","kid":"test"}"#);
    let claims = serde_json::json!({
        "aud": aud, "iss": format!("https://sts.windows.net/{TENANT}/"), "tid": TENANT,
        "iat": now(), "nbf": now() - 60, "exp": now() + LIFETIME, "oid": "11111111-2222-3333-4444-555555555555",
        "appid": CLIENT_ID, "n": n,
    });
    let token = format!(
        "{header}.{}.{}",
        b64(claims.to_string().as_bytes()),
        b64(format!("signature-{n}").as_bytes())
    );
    idp.issued.lock().unwrap().push(token.clone());
    token
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn oauth_error(status: StatusCode, code: &str, text: &str) -> Response {
    (
        status,
        Json(
            serde_json::json!({"error": code, "error_description": text, "error_codes": [7000215]}),
        ),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// Azure IMDS: `GET /metadata/identity/oauth2/token?api-version&resource[&client_id]` with
/// `Metadata: true`; `expires_on` and `expires_in` are strings.
async fn imds(
    State(idp): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    idp.imds.fetch_add(1, Ordering::SeqCst);
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    if idp.failing.load(Ordering::SeqCst) {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown_error",
            "Failed to retrieve token from the Active directory.",
        );
    }
    let (Some(resource), Some("2018-02-01")) =
        (q.get("resource"), q.get("api-version").map(String::as_str))
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let token = jwt(&idp, resource);
    Json(serde_json::json!({
        "access_token": token, "client_id": CLIENT_ID, "expires_in": LIFETIME.to_string(),
        "expires_on": (now() + LIFETIME).to_string(), "ext_expires_in": LIFETIME.to_string(),
        "not_before": now().to_string(), "resource": resource, "token_type": "Bearer",
    }))
    .into_response()
}

/// The same IMDS, but issuing tokens for another audience: Azurite must refuse them.
async fn imds_wrong_audience(State(idp): State<Shared>) -> Response {
    let token = jwt(&idp, "https://management.azure.com");
    Json(serde_json::json!({"access_token": token, "expires_on": (now() + LIFETIME).to_string(), "token_type": "Bearer"})).into_response()
}

/// Entra ID v2: `POST /{tenant}/oauth2/v2.0/token`, client credentials with a secret or a
/// federated assertion (the projected token file's current content).
async fn entra(
    State(idp): State<Shared>,
    UrlPath(tenant): UrlPath<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    idp.entra.fetch_add(1, Ordering::SeqCst);
    if tenant != TENANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            "AADSTS90002: Tenant not found.",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found.",
        );
    }
    let proof_ok = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => secret == SP_SECRET,
        (None, Some(assertion)) => {
            let file = idp.assertion_file.lock().unwrap().clone();
            idp.assertions.lock().unwrap().push(assertion.clone());
            form.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && std::fs::read_to_string(file).is_ok_and(|t| t.trim() == assertion)
        }
        _ => false,
    };
    if !proof_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let Some(resource) = form.get("scope").and_then(|s| s.strip_suffix("/.default")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    };
    let token = jwt(&idp, resource);
    Json(serde_json::json!({"token_type": "Bearer", "expires_in": LIFETIME, "ext_expires_in": LIFETIME, "access_token": token})).into_response()
}

/// Key Vault: `GET /secrets/{name}?api-version=7.4` with a bearer for the vault.
async fn vault(
    State(idp): State<Shared>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    idp.vault.fetch_add(1, Ordering::SeqCst);
    let ok = bearer(&headers).is_some_and(|t| claims(&t)["aud"] == "https://vault.azure.net");
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})),
        )
            .into_response();
    }
    if name != "azurite-key" {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": {"code": "SecretNotFound", "message": format!("A secret with (name/id) {name} was not found in this key vault.")}})),
        )
            .into_response();
    }
    let value = idp.vault_secret.lock().unwrap().clone();
    Json(serde_json::json!({"value": value, "id": format!("https://v.vault.azure.net/secrets/{name}/0123"), "attributes": {"enabled": true}})).into_response()
}

/// Google STS: `POST /v1/token`, token exchange of the workload's JWT.
async fn google_sts(State(idp): State<Shared>, Json(body): Json<serde_json::Value>) -> Response {
    let expected = idp.google_subject.lock().unwrap().clone();
    if body["grantType"] != "urn:ietf:params:oauth:grant-type:token-exchange"
        || body["subjectTokenType"] != "urn:ietf:params:oauth:token-type:jwt"
        || !body["audience"]
            .as_str()
            .is_some_and(|a| a.contains("/workloadIdentityPools/"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for \"grant_type\".",
        );
    }
    if body["subjectToken"] != expected.as_str() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The audience in ID Token does not match the expected audience.",
        );
    }
    let token = format!("ya29.federated-{}", idp.issued.lock().unwrap().len());
    idp.issued.lock().unwrap().push(token.clone());
    Json(serde_json::json!({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600})).into_response()
}

/// IAM Credentials: `POST /v1/projects/-/serviceAccounts/{sa}:generateAccessToken`.
async fn generate_access_token(
    State(idp): State<Shared>,
    UrlPath(target): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let federated = bearer(&headers).unwrap_or_default();
    let known =
        idp.issued.lock().unwrap().contains(&federated) && federated.starts_with("ya29.federated-");
    if !known || !target.ends_with(":generateAccessToken") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
        )
            .into_response();
    }
    let token = format!("ya29.impersonated-{}", idp.issued.lock().unwrap().len());
    idp.issued.lock().unwrap().push(token.clone());
    *idp.gcs_token.lock().unwrap() = Some(token.clone());
    let expires =
        chrono::DateTime::<chrono::Utc>::from(SystemTime::now() + Duration::from_secs(3600));
    Json(serde_json::json!({"accessToken": token, "expireTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})).into_response()
}

/// GCS (XML API as object_store speaks it): listing and ranged GETs, only with the token IAM
/// Credentials issued last.
async fn gcs(
    State(idp): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let allowed = bearer(&headers)
        .is_some_and(|t| idp.gcs_token.lock().unwrap().as_deref() == Some(t.as_str()));
    if !allowed {
        idp.gcs_refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AuthenticationRequired</Code><Message>Authentication required.</Message></Error>").into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket != "train" {
        return (
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchBucket</Code></Error>",
        )
            .into_response();
    }
    let objects = idp.gcs_objects.lock().unwrap().clone();
    if key.is_empty() {
        let query: HashMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let prefix = query.get("prefix").cloned().unwrap_or_default();
        let mut contents = String::new();
        let mut prefixes = std::collections::BTreeSet::new();
        let mut keys: Vec<_> = objects.keys().filter(|k| k.starts_with(&prefix)).collect();
        keys.sort();
        for k in keys {
            let rest = &k[prefix.len()..];
            if let Some((dir, _)) = rest.split_once('/') {
                prefixes.insert(format!("{prefix}{dir}/"));
            } else {
                contents.push_str(&format!("<Contents><Key>{k}</Key><LastModified>2026-12-01T00:00:00.000Z</LastModified><ETag>\"e-{}\"</ETag><Size>{}</Size></Contents>", objects[k].len(), objects[k].len()));
            }
        }
        let common: String = prefixes
            .iter()
            .map(|p| format!("<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>"))
            .collect();
        let xml = format!(
            "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult xmlns='http://doc.s3.amazonaws.com/2006-03-01'><Name>train</Name><Prefix>{prefix}</Prefix><KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>{contents}{common}</ListBucketResult>"
        );
        return ([("content-type", "application/xml")], xml).into_response();
    }
    let key = percent_decode(key);
    let Some(bytes) = objects.get(&key) else {
        return (
            StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchKey</Code></Error>",
        )
            .into_response();
    };
    let etag = format!("\"e-{}\"", bytes.len());
    let base = [
        ("etag", etag.clone()),
        ("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
    ];
    let range = headers
        .get("range")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="));
    let (status, body, extra) = match range {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: usize = a.parse().unwrap_or(0);
            let end: usize = b
                .parse::<usize>()
                .map(|e| e + 1)
                .unwrap_or(bytes.len())
                .min(bytes.len());
            (
                StatusCode::PARTIAL_CONTENT,
                bytes[start..end].to_vec(),
                Some(format!("bytes {start}-{}/{}", end - 1, bytes.len())),
            )
        }
        None => (StatusCode::OK, bytes.clone(), None),
    };
    let mut response = if method == axum::http::Method::HEAD {
        (status, [("content-length", bytes.len().to_string())]).into_response()
    } else {
        (status, body).into_response()
    };
    for (name, value) in base {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    if let Some(range) = extra {
        response
            .headers_mut()
            .insert("content-range", range.parse().unwrap());
    }
    response
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Serves `router` on 127.0.0.1 (a port of its own) on a thread with its own runtime.
fn serve(router: Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
    });
    port
}

fn idp_router(idp: Shared) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds))
        .route(
            "/bad/metadata/identity/oauth2/token",
            get(imds_wrong_audience),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(entra))
        .route("/secrets/{name}", get(vault))
        .route("/v1/token", post(google_sts))
        .route(
            "/v1/projects/-/serviceAccounts/{target}",
            post(generate_access_token),
        )
        .with_state(idp)
}

/// The daemon (killed and unmounted when dropped) with its collected stderr lines.
struct Daemon {
    _running: common::Mounted,
    mnt: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    metrics: String,
}

fn start(dir: &Path, backends: &str, env: &[(&str, &str)]) -> Daemon {
    let (config, mnt) = common::write_config(dir, backends);
    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "--log-level", "trace"])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"mounted\"") || line.contains("serving /metrics") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let mut metrics = None;
    let mut mounted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(mounted && metrics.is_some()) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("not mounted in time:\n{}", log.lock().unwrap().join("\n")));
        mounted |= line.contains("\"mounted\"");
        if let Some(addr) = common::metrics_addr(&line) {
            metrics = Some(addr);
        }
    }
    Daemon {
        _running: common::Mounted {
            child,
            mnt: mnt.clone(),
        },
        mnt,
        log,
        metrics: metrics.unwrap(),
    }
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    common::scrape(&daemon.metrics)
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn refreshes(daemon: &Daemon, backend: &str, provider: &str, outcome: &str) -> f64 {
    metric(
        daemon,
        &format!(
            "warpdrive_credential_refreshes_total{{backend=\"{backend}\",provider=\"{provider}\",outcome=\"{outcome}\"}}"
        ),
    )
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No token, secret or assertion an endpoint issued or accepted is in the log or the metrics.
fn assert_no_token_text(daemon: &Daemon, idp: &Idp, secrets: &[&str]) {
    let log = daemon.log.lock().unwrap().join("\n");
    let metrics = common::scrape(&daemon.metrics);
    assert!(
        log.contains("credential refreshed"),
        "the audit lines are there"
    );
    let issued = idp.issued.lock().unwrap().clone();
    let assertions = idp.assertions.lock().unwrap().clone();
    for token in issued
        .iter()
        .chain(assertions.iter())
        .map(String::as_str)
        .chain(secrets.iter().copied())
    {
        // The signature part alone is unique to each token.
        let tail = token.rsplit('.').next().unwrap_or(token);
        assert!(!log.contains(tail), "token material in the log: {tail}");
        assert!(
            !metrics.contains(tail),
            "token material in the metrics: {tail}"
        );
    }
}

fn read(daemon: &Daemon, path: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(daemon.mnt.join(path))
}

#[test]
fn azure_tokens_from_imds_entra_and_key_vault_reach_azurite_and_refresh_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let azurite = Azurite::start_oauth(&dir.path().join("azurite"), &cert_pem, &key_pem);
    let endpoint = format!("https://127.0.0.1:{}/{AZURITE_ACCOUNT}", azurite.port);
    python(&format!(
        "from azure.storage.blob import BlobServiceClient\n\
         svc = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=https;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};', connection_verify={cert:?})\n\
         c = svc.create_container('ckpt')\n\
         for i in range(8):\n\
         \x20   c.upload_blob(f'f{{i}}.txt', f'file {{i}}'.encode())\n",
        cert = cert_pem.display().to_string()
    ));

    let idp: Shared = Arc::new(Idp::default());
    // Key Vault first holds a wrong key (valid base64): reads through it fail until rotated.
    *idp.vault_secret.lock().unwrap() = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "projected-sa-token-generation-1").unwrap();
    *idp.assertion_file.lock().unwrap() = token_file.clone();
    let port = serve(idp_router(idp.clone()));
    let idp_url = format!("http://127.0.0.1:{port}");

    let common = format!(
        "type: azure, account: {AZURITE_ACCOUNT}, container: ckpt, endpoint: '{endpoint}', ca_file: {ca}, allow_http: true, request_timeout: 5s, retries: 0",
        ca = cert_pem.display()
    );
    let imds = format!("{idp_url}/metadata/identity/oauth2/token");
    let backends = format!(
        "  - {{ name: mi, mount_path: /mi, {common}, auth: {{ method: managed_identity, client_id_env: AZURE_CLIENT_ID, imds_endpoint: '{imds}' }} }}\n\
         \x20 - {{ name: sp, mount_path: /sp, {common}, auth: {{ method: service_principal, tenant_id: {TENANT}, client_id: {CLIENT_ID}, client_secret_env: SP_SECRET, authority_host: '{idp_url}' }} }}\n\
         \x20 - {{ name: wi, mount_path: /wi, {common}, auth: {{ method: workload_identity, tenant_id_env: AZURE_TENANT_ID, client_id: {CLIENT_ID}, token_file: {token}, authority_host: '{idp_url}' }} }}\n\
         \x20 - {{ name: kv, mount_path: /kv, {common}, auth: {{ method: key_vault, vault_url: '{idp_url}', secret_name: azurite-key, imds_endpoint: '{imds}', refresh_interval: 1s }} }}\n\
         \x20 - {{ name: bad, mount_path: /bad, {common}, auth: {{ method: managed_identity, imds_endpoint: '{idp_url}/bad/metadata/identity/oauth2/token' }} }}\n",
        token = token_file.display(),
    );
    let daemon = start(
        dir.path(),
        &backends,
        &[
            ("SP_SECRET", SP_SECRET),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_TENANT_ID", TENANT),
        ],
    );

    // Each method's token reaches Azurite: the reads succeed only with a right bearer.
    for backend in ["mi", "sp", "wi"] {
        assert_eq!(
            read(&daemon, &format!("{backend}/f0.txt")).unwrap(),
            b"file 0",
            "{backend}"
        );
    }
    // A token for the wrong audience is refused by the store: the bearer is what authorizes.
    let err = read(&daemon, "bad/f0.txt").expect_err("Azurite refuses a wrong-audience token");
    assert_eq!(err.raw_os_error(), Some(13), "EACCES: {err}");

    // Key Vault rotation: the wrong key fails, the right one is picked up at the next refresh.
    // (Azurite answers a wrong shared key with 400 InvalidAuthenticationInfo, where Azure
    // sends 403: EIO here, EACCES there.)
    let err = read(&daemon, "kv/f0.txt").expect_err("the wrong account key is refused");
    assert!(
        matches!(err.raw_os_error(), Some(13) | Some(5)),
        "EACCES or EIO: {err}"
    );
    *idp.vault_secret.lock().unwrap() = AZURITE_KEY.to_owned();
    wait_for(
        "the rotated Key Vault secret",
        Duration::from_secs(15),
        || read(&daemon, "kv/f1.txt").is_ok(),
    );
    assert_eq!(read(&daemon, "kv/f1.txt").unwrap(), b"file 1");

    // Refresh before expiry: tokens live 6 s and are renewed at half-life, so reads well past
    // the first token's expiry keep working, and a kubelet-rotated token file is re-read.
    std::fs::write(&token_file, "projected-sa-token-generation-2").unwrap();
    std::thread::sleep(Duration::from_secs(LIFETIME + 2));
    for backend in ["mi", "sp", "wi"] {
        assert_eq!(
            read(&daemon, &format!("{backend}/f2.txt")).unwrap(),
            b"file 2",
            "{backend}"
        );
        let provider = match backend {
            "mi" => "managed_identity",
            "sp" => "service_principal",
            _ => "workload_identity",
        };
        assert!(
            refreshes(&daemon, backend, provider, "ok") >= 2.0,
            "{backend} refreshed"
        );
    }
    assert!(
        idp.assertions
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.ends_with("generation-2")),
        "the rotated token file was presented"
    );
    let expiry = metric(
        &daemon,
        "warpdrive_credential_expiry_timestamp_seconds{backend=\"mi\",provider=\"managed_identity\"}",
    );
    assert!(
        expiry > now() as f64 && expiry <= (now() + LIFETIME + 1) as f64,
        "{expiry}"
    );

    // IMDS fails: refreshes fail with backoff, the still-valid token keeps serving; once it
    // has expired, reads fail (EACCES) within the request timeout, naming backend and
    // provider in the log; when IMDS recovers, reads work again.
    let before = refreshes(&daemon, "mi", "managed_identity", "ok");
    wait_for("a fresh mi token", Duration::from_secs(10), || {
        refreshes(&daemon, "mi", "managed_identity", "ok") > before
    });
    idp.failing.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(LIFETIME / 2 + 1));
    assert_eq!(
        read(&daemon, "mi/f3.txt").unwrap(),
        b"file 3",
        "served by the still-valid token"
    );
    wait_for("a failed refresh", Duration::from_secs(10), || {
        refreshes(&daemon, "mi", "managed_identity", "error") >= 1.0
    });
    std::thread::sleep(Duration::from_secs(LIFETIME / 2 + 1));
    let started = Instant::now();
    let err = read(&daemon, "mi/f4.txt").expect_err("an expired token and no refresh");
    // EACCES, not the EIO of a call timeout: the reader gives up on the credential before the
    // backend call's own timeout fires.
    assert_eq!(err.raw_os_error(), Some(13), "EACCES: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no hang: {:?}",
        started.elapsed()
    );
    // The daemon logged the line before the read failed, but this test reads its stderr
    // through a pipe and a thread, which may lag behind on a busy machine.
    let named = || {
        daemon.log.lock().unwrap().iter().any(|l| {
            l.contains("no valid credential")
                && l.contains("\"mi\"")
                && l.contains("managed_identity")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !named() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        named(),
        "the log names backend and provider; the mi lines were:\n{}",
        daemon
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"mi\"") && !l.contains("TRACE"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    idp.failing.store(false, Ordering::SeqCst);
    wait_for("recovery", Duration::from_secs(90), || {
        read(&daemon, "mi/f5.txt").is_ok()
    });
    assert_eq!(read(&daemon, "mi/f5.txt").unwrap(), b"file 5");
    // The other backends never stopped working.
    assert_eq!(read(&daemon, "sp/f6.txt").unwrap(), b"file 6");

    assert_no_token_text(
        &daemon,
        &idp,
        &[SP_SECRET, AZURITE_KEY, "projected-sa-token-generation"],
    );
    drop(daemon);
    drop(azurite);
}

/// What the recording proxy in front of moto saw.
#[derive(Default)]
struct Seen {
    /// (AccessKeyId, SessionToken) of every STS answer.
    issued: Mutex<Vec<(String, String)>>,
    /// (access key id from the signature, x-amz-security-token) of every S3 request.
    signed: Mutex<Vec<(String, String)>>,
}

/// Forwards every request to moto and records the keys STS hands out and the keys S3
/// requests are signed with. (moto's own IAM mode cannot check this: it answers the unsigned
/// STS call with HTTP 500 and miscomputes the signature of a listing with a delimiter.)
async fn record(
    State((seen, upstream)): State<(Arc<Seen>, String)>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let client = reqwest::Client::new();
    let url = format!(
        "{upstream}{}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = client.request(method, url).body(body.clone());
    for (name, value) in &headers {
        if name != "host" {
            request = request.header(name, value);
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if name != "transfer-encoding" && name != "content-length" {
            out_headers.insert(name.clone(), value.clone());
        }
    }
    let bytes = response.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let between = |t: &str, a: &str, b: &str| {
        t.split(a)
            .nth(1)
            .and_then(|r| r.split(b).next())
            .map(str::to_owned)
    };
    if String::from_utf8_lossy(&body).contains("Action=AssumeRoleWithWebIdentity") {
        if let (Some(id), Some(token)) = (
            between(&text, "<AccessKeyId>", "</AccessKeyId>"),
            between(&text, "<SessionToken>", "</SessionToken>"),
        ) {
            seen.issued.lock().unwrap().push((id, token));
        }
    } else {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let key = between(auth, "Credential=", "/").unwrap_or_default();
        let token = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        seen.signed.lock().unwrap().push((key, token));
    }
    (status, out_headers, bytes).into_response()
}

#[test]
fn s3_keys_from_sts_web_identity_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    python(&format!(
        "{prelude}s3.create_bucket(Bucket='train')\n\
         s3.put_object(Bucket='train', Key='data/hello.txt', Body=b'hello via sts')\n",
        prelude = moto.boto3(),
    ));
    let seen = Arc::new(Seen::default());
    let proxy = serve(
        Router::new()
            .fallback(record)
            .with_state((seen.clone(), moto.endpoint())),
    );
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6d2FycCJ9.sig-web-identity",
    )
    .unwrap();
    let backends = format!(
        "  - {{ name: sts, mount_path: /sts, type: s3, bucket: train, endpoint: '{proxy_url}', allow_http: true, request_timeout: 5s, retries: 0, auth: {{ method: oidc_federation, role_arn_env: AWS_ROLE_ARN, token_file: {token}, sts_endpoint: '{proxy_url}' }} }}\n",
        token = token_file.display(),
    );
    let daemon = start(
        dir.path(),
        &backends,
        &[("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/reader")],
    );
    assert_eq!(
        read(&daemon, "sts/data/hello.txt").unwrap(),
        b"hello via sts"
    );
    let issued = seen.issued.lock().unwrap().clone();
    let signed = seen.signed.lock().unwrap().clone();
    assert_eq!(issued.len(), 1, "one AssumeRoleWithWebIdentity");
    assert!(!signed.is_empty());
    for (key, token) in &signed {
        assert_eq!(
            key, &issued[0].0,
            "S3 request signed with the STS access key"
        );
        assert_eq!(
            token, &issued[0].1,
            "S3 request carries the STS session token"
        );
    }
    assert!(refreshes(&daemon, "sts", "oidc_federation", "ok") >= 1.0);
    let log = daemon.log.lock().unwrap().join("\n");
    for secret in ["sig-web-identity", issued[0].1.as_str()] {
        assert!(!log.contains(secret), "token material in the log");
    }
    drop(log);
    drop(daemon);
    drop(moto);
}

#[test]
fn gcs_token_from_google_sts_and_impersonation_reaches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let idp: Shared = Arc::new(Idp::default());
    let subject = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnY3AifQ.sig-gcp-subject";
    *idp.google_subject.lock().unwrap() = subject.to_owned();
    idp.gcs_objects
        .lock()
        .unwrap()
        .insert("ds/a.bin".into(), vec![42u8; 3 << 20]);
    idp.gcs_objects
        .lock()
        .unwrap()
        .insert("ds/b.txt".into(), b"from gcs".to_vec());
    let google = serve(idp_router(idp.clone()));
    let gcs_port = serve(Router::new().fallback(gcs).with_state(idp.clone()));
    let token_file = dir.path().join("gcp-token");
    std::fs::write(&token_file, subject).unwrap();
    let backends = format!(
        "  - {{ name: gcs, type: gcs, bucket: train, mount_path: /gcs, endpoint: 'http://127.0.0.1:{gcs_port}', allow_http: true, request_timeout: 5s, retries: 0, auth: {{ method: gcp_wif, token_file: {token}, audience: '//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/gpu/providers/k8s', service_account: reader@proj.iam.gserviceaccount.com, sts_endpoint: 'http://127.0.0.1:{google}/v1/token', iam_endpoint: 'http://127.0.0.1:{google}' }} }}\n",
        token = token_file.display(),
    );
    let daemon = start(dir.path(), &backends, &[]);
    assert_eq!(read(&daemon, "gcs/ds/b.txt").unwrap(), b"from gcs");
    let big = read(&daemon, "gcs/ds/a.bin").unwrap();
    assert!(big.len() == 3 << 20 && big.iter().all(|&b| b == 42));
    assert_eq!(
        idp.gcs_refused.load(Ordering::SeqCst),
        0,
        "every GCS call carried the impersonated token"
    );
    assert!(refreshes(&daemon, "gcs", "gcp_wif", "ok") >= 1.0);
    assert_no_token_text(&daemon, &idp, &[subject]);
}
