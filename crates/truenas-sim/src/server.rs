//! The WebSocket front end: TLS or plain, the `/api/current` upgrade, message-size and
//! in-flight limits, login and the unauthenticated rate limit, jobs, and dispatch.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::ctx::Ctx;
use crate::data::DataDir;
use crate::faults::Faults;
use crate::methods;
use crate::model::Model;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, opt, req};

const HARD_LIMIT: usize = 20;
const SOFT_LIMIT: usize = 10;
const ANON_MAX: usize = 8192;
const AUTH_MAX: usize = 65536;
/// Methods that work before login (spec §1.3).
const NO_AUTH: &[&str] = &[
    "auth.login_with_api_key",
    "auth.login_ex",
    "auth.mechanism_choices",
    "core.ping",
    "core.set_options",
];
/// Job methods this simulator knows (spec §1.6).
const JOB_METHODS: &[&str] = &[
    "service.control",
    "filesystem.setacl",
    "core.job_wait",
    "replication.run_onetime",
    "pool.dataset.unlock",
];

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) model: Mutex<Model>,
    pub(crate) data: DataDir,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) faults: Faults,
    pub(crate) key_id: u64,
    pub(crate) key_secret: String,
    pub(crate) username: String,
    pub(crate) tls: bool,
    pub(crate) version: String,
    pub(crate) rate: Mutex<HashMap<(String, IpAddr), (Instant, u32)>>,
    pub(crate) jobs: Mutex<Jobs>,
    pub(crate) job_done: Notify,
    /// Open connections, for job events to the ones subscribed to `core.get_jobs`.
    pub(crate) conns: Mutex<Vec<std::sync::Weak<Conn>>>,
}

/// Jobs of this run (ids restart at 1 with every start, as on a real middleware).
#[derive(Default)]
pub(crate) struct Jobs {
    next: u64,
    rows: BTreeMap<u64, Value>,
}

pub(crate) struct Conn {
    peer: IpAddr,
    secure: bool,
    authenticated: AtomicBool,
    legacy_jobs: AtomicBool,
    private_methods: AtomicBool,
    py_exceptions: AtomicBool,
    /// `core.subscribe` ids and the event each one is for.
    subscriptions: Mutex<HashMap<String, String>>,
    in_flight: AtomicUsize,
    running: Semaphore,
    out: mpsc::UnboundedSender<Message>,
    kill: Notify,
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        tcp.set_nodelay(true).ok();
        let shared = shared.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => connection(stream, peer, true, shared, shutdown).await,
                    Err(err) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                },
                None => connection(tcp, peer, false, shared, shutdown).await,
            }
        });
    }
}

#[allow(clippy::result_large_err)] // the shape tungstenite's callback requires
fn check_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    let path = request.uri().path();
    if path == "/api/current" || path.starts_with("/api/v25.10") {
        Ok(response)
    } else {
        let mut refusal = ErrorResponse::new(Some(format!("no API at {path}; use /api/current")));
        *refusal.status_mut() = http::StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let Ok(socket) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config)).await
    else {
        return;
    };
    let mut socket = socket;
    let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
    let loopback = peer.ip().is_loopback() && !shared.faults.peers_insecure();
    let conn = Arc::new(Conn {
        peer: peer.ip(),
        secure: tls || loopback,
        authenticated: AtomicBool::new(false),
        legacy_jobs: AtomicBool::new(true),
        private_methods: AtomicBool::new(false),
        py_exceptions: AtomicBool::new(false),
        subscriptions: Mutex::default(),
        in_flight: AtomicUsize::new(0),
        running: Semaphore::new(SOFT_LIMIT),
        out,
        kill: Notify::new(),
    });
    shared
        .conns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&conn));
    let mut last_heard = Instant::now();
    loop {
        let idle = shared.faults.idle_timeout();
        let idle_deadline =
            tokio::time::Instant::from_std(last_heard + idle.unwrap_or(Duration::from_secs(3600)));
        let message = tokio::select! {
            message = socket.next() => {
                last_heard = Instant::now();
                message
            }
            _ = tokio::time::sleep_until(idle_deadline), if idle.is_some() => {
                tracing::info!(peer = %peer, "closing an idle socket");
                break;
            }
            reply = outgoing.recv() => {
                let Some(reply) = reply else { break };
                if socket.send(reply).await.is_err() {
                    break;
                }
                continue;
            }
            _ = conn.kill.notified() => break,
            _ = shutdown.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                close(
                    &mut socket,
                    CloseCode::Unsupported,
                    "Binary frames are not supported",
                )
                .await;
                break;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue, // pings are answered by tungstenite
        };
        let authenticated = conn.authenticated.load(Ordering::Acquire);
        let length = text.chars().count();
        if !authenticated && length > ANON_MAX {
            close(
                &mut socket,
                CloseCode::Invalid,
                "Anonymous connection max message length is 8 kB",
            )
            .await;
            break;
        }
        if authenticated && length > AUTH_MAX {
            close(&mut socket, CloseCode::Size, "Max message length is 64 kB").await;
            break;
        }
        handle_frame(&shared, &conn, &text);
    }
}

async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
    code: CloseCode,
    reason: &str,
) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = socket.close(Some(frame)).await;
}

fn reply(conn: &Conn, id: &Value, outcome: Outcome) {
    let frame = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(failure) => json!({"jsonrpc": "2.0", "error": failure.to_json(), "id": id}),
    };
    let _ = conn.out.send(Message::text(frame.to_string()));
}

fn plain(code: i64, message: &str) -> Failure {
    Failure::Plain {
        code,
        message: message.to_owned(),
    }
}

fn handle_frame(shared: &Arc<Shared>, conn: &Arc<Conn>, text: &str) {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => return reply(conn, &Value::Null, Err(plain(-32700, &err.to_string()))),
    };
    if value.is_array() {
        return reply(
            conn,
            &Value::Null,
            Err(plain(
                -32700,
                "Batch messages are not supported at this time",
            )),
        );
    }
    let Value::Object(object) = value else {
        return reply(conn, &Value::Null, Err(plain(-32600, "Invalid Request")));
    };
    let id = object.get("id").cloned();
    let reply_id = id.clone().unwrap_or(Value::Null);
    let envelope_error = match object.get("jsonrpc") {
        None => Some("Missing 'jsonrpc' member"),
        Some(Value::String(v)) if v == "2.0" => None,
        Some(_) => Some("'jsonrpc' member must be of type string and must be exactly '2.0'"),
    }
    .or(match object.get("method") {
        Some(Value::String(m)) if !m.is_empty() => None,
        _ => Some("'method' member must be a non-empty string"),
    })
    .or(match object.get("params") {
        None | Some(Value::Array(_)) => None,
        Some(_) => Some("'params' member must be of type array"),
    });
    if let Some(message) = envelope_error {
        if id.is_some() {
            reply(conn, &reply_id, Err(plain(-32600, message)));
        }
        return;
    }
    let method = object["method"].as_str().unwrap_or_default().to_owned();
    let params = object
        .get("params")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let in_flight = conn.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
    if in_flight > HARD_LIMIT {
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        shared.faults.count_refused();
        if id.is_some() {
            reply(
                conn,
                &reply_id,
                Err(plain(
                    -32000,
                    "Maximum number of concurrent calls (20) has exceeded",
                )),
            );
        }
        return;
    }
    shared.faults.saw_in_flight(in_flight);
    shared.faults.count_call(&method);
    let shared = shared.clone();
    let conn = conn.clone();
    tokio::spawn(async move {
        let outcome = {
            let _running = conn.running.acquire().await;
            call(&shared, &conn, &method, params, id.as_ref()).await
        };
        conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        if shared.faults.should_drop() {
            tracing::info!(%method, "fault injection: dropping the socket");
            conn.kill.notify_one();
            return;
        }
        if let (Some(outcome), Some(id)) = (outcome, id) {
            reply(&conn, &id, outcome);
        }
    });
}

/// Runs one call; `None` means "no reply" (never happens for calls with an id).
async fn call(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    method: &str,
    params: Vec<Value>,
    id: Option<&Value>,
) -> Option<Outcome> {
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let authenticated = conn.authenticated.load(Ordering::Acquire);
    if !authenticated {
        if !NO_AUTH.contains(&method) {
            return Some(Err(Failure::not_authenticated()));
        }
        if method != "core.set_options" && !rate_ok(shared, method, conn.peer) {
            let pause = Duration::from_millis(fastrand::u64(1000..10_000));
            tokio::time::sleep(pause).await;
            return Some(Err(Failure::call(16, "Rate Limit Exceeded")));
        }
    }
    if let Some(failure) = shared.faults.injected(method)
        && !method.starts_with("auth.")
    {
        if JOB_METHODS.contains(&method) {
            return Some(run_job(shared, conn, id, method, Err(failure)).await);
        }
        return Some(Err(failure));
    }
    Some(match method {
        "core.ping" => schema::args(&params, &[]).map(|_| json!("pong")),
        "auth.login_with_api_key" => login_with_api_key(shared, conn, &params).await,
        "auth.login_ex" => login_ex(shared, conn, &params).await,
        "auth.logout" => {
            conn.authenticated.store(false, Ordering::Release);
            Ok(json!(true))
        }
        "auth.me" => Ok(
            json!({"pw_name": shared.username, "pw_uid": 0, "pw_gid": 0, "privilege": {"roles": {"$set": ["FULL_ADMIN"]}}}),
        ),
        "auth.mechanism_choices" => Ok(json!([
            "PASSWORD_PLAIN",
            "API_KEY_PLAIN",
            "TOKEN_PLAIN",
            "OTP_TOKEN"
        ])),
        "core.set_options" => set_options(conn, &params),
        "core.subscribe" => subscribe(conn, &params),
        "core.unsubscribe" => schema::args(&params, &[req("id", Ty::Str)]).map(|args| {
            let id = args[0].as_str().unwrap_or_default();
            conn.subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            Value::Null
        }),
        "core.get_jobs" => {
            let rows = shared
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .rows
                .values()
                .cloned()
                .collect();
            crate::query::QueryArgs::parse(&params).and_then(|q| q.apply(rows))
        }
        "core.job_abort" => job_abort(shared, &params),
        "system.version" => Ok(json!(format!("TrueNAS-{}", shared.version))),
        "system.version_short" => Ok(json!(shared.version)),
        "system.info" => Ok(
            json!({"version": format!("TrueNAS-{}", shared.version), "hostname": "truenas-sim",
            "physmem": 17179869184u64, "model": "Simulator", "cores": 2, "physical_cores": 2, "loadavg": [0.0, 0.0, 0.0],
            "uptime": "1 day", "uptime_seconds": 86400.0, "system_serial": "SIM0001", "system_product": "truenas-sim",
            "system_product_version": shared.version, "license": null, "timezone": "UTC", "system_manufacturer": "truenas-sim",
            "ecc_memory": false}),
        ),
        "service.control" => {
            let body = service_control(&params);
            run_job(shared, conn, id, method, body).await
        }
        // Jobs over the model: the work is done, then reported as the job's outcome.
        "replication.run_onetime" | "pool.dataset.unlock" => {
            let body = model_call(shared, method, params).await;
            run_job(shared, conn, id, method, body).await
        }
        "filesystem.setacl" => {
            let body = schema::args(
                &params,
                &[req(
                    "data",
                    Ty::Obj(vec![
                        req("path", Ty::Str),
                        opt("dacl", Ty::Any),
                        opt("options", Ty::Any),
                        opt("nfs41_flags", Ty::Any),
                        opt("uid", Ty::Any),
                        opt("gid", Ty::Any),
                        opt("acltype", Ty::Any),
                    ]),
                )],
            )
            .map(|_| Value::Null);
            run_job(shared, conn, id, method, body).await
        }
        _ => model_call(shared, method, params).await,
    })
}

fn rate_ok(shared: &Shared, method: &str, peer: IpAddr) -> bool {
    let mut rate = shared.rate.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let entry = rate.entry((method.to_owned(), peer)).or_insert((now, 0));
    if now.duration_since(entry.0) > Duration::from_secs(60) {
        *entry = (now, 0);
    }
    entry.1 += 1;
    entry.1 <= shared.faults.rate_limit()
}

enum KeyCheck {
    Ok,
    UnknownId,
    Wrong,
    Revoked,
}

fn check_key(shared: &Shared, conn: &Conn, key: &str) -> KeyCheck {
    shared.faults.count_login();
    let Some((id, secret)) = key.split_once('-') else {
        return KeyCheck::UnknownId;
    };
    let Ok(id) = id.parse::<u64>() else {
        return KeyCheck::UnknownId;
    };
    if id != shared.key_id {
        return KeyCheck::UnknownId;
    }
    if shared.faults.logins_refused() || secret != shared.key_secret {
        return KeyCheck::Wrong;
    }
    let mut model = shared.model.lock().unwrap_or_else(|e| e.into_inner());
    if model.revoked_keys.contains(&id) {
        return KeyCheck::Revoked;
    }
    if !conn.secure {
        tracing::warn!(peer = %conn.peer, "API key received over insecure transport; revoking it");
        model.revoked_keys.insert(id);
        if let Some(path) = &shared.state_file {
            let _ = model.save(path);
        }
        return KeyCheck::Revoked;
    }
    KeyCheck::Ok
}

async fn login_with_api_key(shared: &Shared, conn: &Conn, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("api_key", Ty::Str)])?;
    let check = check_key(shared, conn, args[0].as_str().unwrap_or_default());
    if matches!(check, KeyCheck::UnknownId) {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..2000))).await;
    }
    let ok = matches!(check, KeyCheck::Ok);
    conn.authenticated.store(ok, Ordering::Release);
    Ok(json!(ok))
}

async fn login_ex(shared: &Shared, conn: &Conn, params: &[Value]) -> Outcome {
    let api_key = Ty::Obj(vec![
        req("mechanism", Ty::Lit(&["API_KEY_PLAIN"])),
        req("username", Ty::Str),
        req("api_key", Ty::Str),
        opt("login_options", Ty::Obj(vec![opt("user_info", Ty::Bool)])),
    ]);
    let password = Ty::Obj(vec![
        req("mechanism", Ty::Lit(&["PASSWORD_PLAIN"])),
        req("username", Ty::Str),
        req("password", Ty::Str),
        opt("login_options", Ty::Obj(vec![opt("user_info", Ty::Bool)])),
    ]);
    let data = Ty::Union(vec![
        ("AuthApiKeyPlain", api_key),
        ("AuthPasswordPlain", password),
    ]);
    let args = schema::args(params, &[req("login_data", data)])?;
    let data = &args[0];
    if data["mechanism"] != "API_KEY_PLAIN" {
        return Ok(json!({"response_type": "AUTH_ERR"}));
    }
    let check = check_key(shared, conn, data["api_key"].as_str().unwrap_or_default());
    let response = match check {
        KeyCheck::Ok if data["username"] == shared.username.as_str() => {
            conn.authenticated.store(true, Ordering::Release);
            let with_info = data
                .get("login_options")
                .and_then(|o| o.get("user_info"))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let info = if with_info {
                json!({"pw_name": shared.username})
            } else {
                Value::Null
            };
            json!({"response_type": "SUCCESS", "user_info": info, "authenticator": "LEVEL_1"})
        }
        KeyCheck::Revoked => json!({"response_type": "EXPIRED"}),
        _ => json!({"response_type": "AUTH_ERR"}),
    };
    Ok(response)
}

fn set_options(conn: &Conn, params: &[Value]) -> Outcome {
    let options = params.first().cloned().unwrap_or(json!({}));
    if !options.is_object() {
        return Err(Failure::invalid(
            "options",
            "Input should be a valid dictionary",
        ));
    }
    for (key, flag) in [
        ("legacy_jobs", &conn.legacy_jobs),
        ("private_methods", &conn.private_methods),
        ("py_exceptions", &conn.py_exceptions),
    ] {
        if let Some(value) = options.get(key).and_then(Value::as_bool) {
            flag.store(value, Ordering::Release);
        }
    }
    Ok(json!({
        "legacy_jobs": conn.legacy_jobs.load(Ordering::Acquire),
        "private_methods": conn.private_methods.load(Ordering::Acquire),
        "py_exceptions": conn.py_exceptions.load(Ordering::Acquire),
    }))
}

/// Events a client may subscribe to here (job progress is the one TrueNAS's own client needs).
const EVENTS: &[&str] = &["core.get_jobs"];

/// `core.subscribe [name]`: an id to unsubscribe with; `collection_update` notifications
/// follow on this socket.
fn subscribe(conn: &Conn, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("name", Ty::Str)])?;
    let name = args[0].as_str().unwrap_or_default();
    // `name:arg` subscribes with an argument; the event is the part before it.
    let event = name.split(':').next().unwrap_or(name);
    if !EVENTS.contains(&event) {
        return Err(Failure::call(2, format!("Event {name} does not exist")));
    }
    let id = format!("{:032x}", fastrand::u128(..));
    conn.subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), event.to_owned());
    Ok(json!(id))
}

/// Sends a `core.get_jobs` `collection_update` (`added` or `changed`, the whole job) to every
/// socket subscribed to it, as 25.10 does.
fn job_event(shared: &Shared, msg: &str, job: &Value) {
    let frame = json!({"jsonrpc": "2.0", "method": "collection_update",
        "params": {"msg": msg, "collection": "core.get_jobs", "id": job["id"], "fields": job}});
    let text = frame.to_string();
    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    conns.retain(|c| c.strong_count() > 0);
    for conn in conns.iter().filter_map(std::sync::Weak::upgrade) {
        let subscribed = conn
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|event| event == "core.get_jobs");
        if subscribed {
            let _ = conn.out.send(Message::text(text.clone()));
        }
    }
}

fn service_control(params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("verb", Ty::Lit(&["START", "STOP", "RESTART", "RELOAD"])),
            req("service", Ty::Str),
            opt(
                "options",
                Ty::Obj(vec![
                    opt("ha_propagate", Ty::Bool),
                    opt("silent", Ty::Bool),
                    opt("timeout", Ty::Int),
                ]),
            ),
        ],
    )?;
    const SERVICES: &[&str] = &[
        "nfs",
        "cifs",
        "iscsitarget",
        "nvmet",
        "ssh",
        "smartd",
        "ups",
    ];
    let service = args[1].as_str().unwrap_or_default();
    if !SERVICES.contains(&service) {
        return Err(Failure::call(
            2,
            format!("The service {service} does not exist"),
        ));
    }
    Ok(json!(true))
}

/// Runs a job method: the job record goes through RUNNING to SUCCESS/FAILED. With
/// `legacy_jobs` the reply is the job id at once; without, it waits for the outcome.
async fn run_job(
    shared: &Arc<Shared>,
    conn: &Conn,
    call_id: Option<&Value>,
    method: &str,
    body: Outcome,
) -> Outcome {
    // A validation failure is reported with its own class, not as a bare CallError.
    let original_failure = body.as_ref().err().cloned();
    let id = {
        let mut jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.next += 1;
        let id = jobs.next;
        let started = crate::datasets::now() * 1000;
        let message_ids: Vec<Value> = call_id.into_iter().cloned().collect();
        jobs.rows.insert(id, json!({"id": id, "message_ids": message_ids, "method": method, "arguments": [], "transient": false,
            "description": null, "abortable": false, "logs_path": null, "logs_excerpt": null,
            "progress": {"percent": 0, "description": "Started", "extra": null}, "result": null,
            "result_encoding_error": null, "error": null, "exception": null, "exc_info": null, "state": "RUNNING",
            "time_started": {"$date": started}, "time_finished": null, "credentials": {"type": "API_KEY", "data": {}}}));
        job_event(shared, "added", &jobs.rows[&id]);
        // Keep about 1000 jobs, evicting finished ones first.
        while jobs.rows.len() > 1000 {
            let oldest = jobs
                .rows
                .iter()
                .find(|(_, j)| j["state"] != "RUNNING")
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => jobs.rows.remove(&k),
                None => break,
            };
        }
        id
    };
    let worker = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut jobs = worker.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.rows.get_mut(&id)
            && job["state"] == "RUNNING"
        {
            match &body {
                Ok(result) => {
                    job["state"] = json!("SUCCESS");
                    job["result"] = result.clone();
                    job["progress"] =
                        json!({"percent": 100, "description": "Finished", "extra": null});
                }
                Err(failure) => {
                    let error = failure.to_json();
                    let reason = error["data"]["reason"]
                        .as_str()
                        .unwrap_or("failed")
                        .to_owned();
                    let (kind, errno, extra) = match failure {
                        Failure::Validation(_) => {
                            ("VALIDATION", Value::Null, error["data"]["extra"].clone())
                        }
                        _ => ("CallError", error["data"]["error"].clone(), Value::Null),
                    };
                    job["state"] = json!("FAILED");
                    job["error"] = json!(reason);
                    job["exception"] =
                        json!(format!("Traceback (most recent call last):\n{reason}"));
                    job["exc_info"] =
                        json!({"repr": reason, "type": kind, "errno": errno, "extra": extra});
                }
            }
            job["time_finished"] = json!({"$date": crate::datasets::now() * 1000});
            job_event(&worker, "changed", job);
        }
        drop(jobs);
        worker.job_done.notify_waiters();
    });
    if conn.legacy_jobs.load(Ordering::Acquire) {
        return Ok(json!(id));
    }
    loop {
        let done = shared.job_done.notified();
        {
            let jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
            let job = jobs.rows.get(&id).cloned().unwrap_or(Value::Null);
            match job["state"].as_str() {
                Some("SUCCESS") => return Ok(job["result"].clone()),
                Some("FAILED") => {
                    if let Some(failure @ Failure::Validation(_)) = original_failure {
                        return Err(failure);
                    }
                    let errno = job["exc_info"]["errno"].as_i64().unwrap_or(14);
                    let reason = job["error"].as_str().unwrap_or("").to_owned();
                    return Err(Failure::Bare {
                        errno,
                        reason,
                        class: "CallError",
                    });
                }
                Some("ABORTED") | None => return Ok(Value::Null),
                _ => {}
            }
        }
        done.await;
    }
}

fn job_abort(shared: &Shared, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("id", Ty::Int)])?;
    let id = args[0].as_u64().unwrap_or(0);
    let mut jobs = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(job) = jobs.rows.get_mut(&id) else {
        return Err(Failure::instance_not_found(format!(
            "Job {id} does not exist"
        )));
    };
    if job["state"] == "RUNNING" || job["state"] == "WAITING" {
        job["state"] = json!("ABORTED");
        job["time_finished"] = json!({"$date": crate::datasets::now() * 1000});
        job_event(shared, "changed", job);
    }
    drop(jobs);
    shared.job_done.notify_waiters();
    Ok(Value::Null)
}

/// Measures again every dataset a changing call names (a dataset or snapshot id, a `name`, a
/// clone's `dataset_dst`, a replication's target), at any depth of its params.
fn refresh_named(model: &Model, data: &crate::data::DataDir, params: &[Value]) {
    fn walk(model: &Model, data: &crate::data::DataDir, value: &Value, depth: usize) {
        match value {
            Value::String(text) if depth < 4 => {
                let name = text.split('@').next().unwrap_or(text);
                if !name.is_empty() && !name.starts_with('/') {
                    model.refresh(data, name);
                }
            }
            Value::Array(items) if depth < 4 => {
                items.iter().for_each(|v| walk(model, data, v, depth + 1));
            }
            Value::Object(map) if depth < 4 => {
                map.values().for_each(|v| walk(model, data, v, depth + 1));
            }
            _ => {}
        }
    }
    params.iter().for_each(|p| walk(model, data, p, 0));
}

async fn model_call(shared: &Arc<Shared>, method: &str, params: Vec<Value>) -> Outcome {
    let Some((handler, mutating)) = methods::lookup(method) else {
        return Err(plain(-32601, "Method does not exist"));
    };
    let shared = shared.clone();
    // File copies (snapshots, clones) can take a while: keep them off the async threads.
    tokio::task::spawn_blocking(move || {
        let mut model = shared.model.lock().unwrap_or_else(|e| e.into_inner());
        let mut ctx = Ctx {
            m: &mut model,
            data: &shared.data,
            faults: &shared.faults,
        };
        let outcome = handler(&mut ctx, &params);
        if mutating {
            // What the call named: made, changed or destroyed (a clone's `dataset_dst`, a
            // replication's target, a snapshot's dataset).
            refresh_named(&model, &shared.data, &params);
        }
        if mutating
            && let Some(path) = &shared.state_file
            && let Err(err) = model.save(path)
        {
            tracing::error!(%err, "cannot save the simulator state");
        }
        outcome
    })
    .await
    .unwrap_or_else(|err| {
        Err(Failure::call(
            14,
            format!("internal simulator error: {err}"),
        ))
    })
}
