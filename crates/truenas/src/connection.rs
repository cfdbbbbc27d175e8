//! One WebSocket to TrueNAS: opening it (TCP, optional TLS, upgrade) and the socket task that
//! multiplexes calls by id, answers pings and notices a dead peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use url::Url;

use crate::error::{Error, RpcError};
use crate::wire::{Incoming, Request, parse_frame};

/// Anything a WebSocket can run over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket to TrueNAS.
pub(crate) type Socket = WebSocketStream<Box<dyn Io>>;

/// Replies can be many MB (big dataset queries); the spec's Go client allows 10 MiB.
const MAX_INCOMING: usize = 64 << 20;

/// A call handed to the socket task. The permit rides along so a call counts against the
/// per-socket limit until TrueNAS has answered it, even if the caller gave up earlier.
pub(crate) struct Outgoing {
    pub(crate) id: String,
    pub(crate) frame: String,
    pub(crate) reply: oneshot::Sender<Outcome>,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// How a call handed to the socket task ended.
pub(crate) enum Outcome {
    /// TrueNAS answered.
    Done(Result<Value, RpcError>),
    /// The socket went away; `sent` says whether the frame may have reached TrueNAS.
    Dropped { sent: bool, reason: String },
}

/// Opens TCP, TLS for `wss://`, and the WebSocket upgrade, all within `timeout`.
pub(crate) async fn open(
    url: &Url,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<Socket, Error> {
    let transport = |reason: String| Error::Transport { reason };
    let host = url
        .host_str()
        .ok_or_else(|| transport(format!("{url} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| transport(format!("{url} has no port")))?;
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|err| transport(format!("cannot connect to {host}:{port}: {err}")))?;
        tcp.set_nodelay(true).ok();
        let io: Box<dyn Io> = if url.scheme() == "wss" {
            let config = tls
                .cloned()
                .ok_or_else(|| transport("wss:// needs a TLS client configuration".into()))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|err| transport(format!("`{host}` is not a valid TLS name: {err}")))?;
            let stream = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|err| transport(format!("TLS handshake with {host}:{port}: {err}")))?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(config))
                .await
                .map_err(|err| transport(format!("WebSocket upgrade at {url}: {err}")))?;
        Ok(socket)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| transport(format!("no connection to {url} within {timeout:?}")))?
}

/// Makes one call on a socket no task owns yet (the login), reading until its reply.
pub(crate) async fn call_direct(
    socket: &mut Socket,
    id: u64,
    method: &str,
    params: Vec<Value>,
    timeout: Duration,
) -> Result<Result<Value, RpcError>, Error> {
    let frame = Request::new(id, method, params).to_frame();
    let want = id.to_string();
    let work = async {
        socket
            .send(Message::text(frame))
            .await
            .map_err(|err| Error::Transport {
                reason: format!("sending {method}: {err}"),
            })?;
        while let Some(message) = socket.next().await {
            let message = message.map_err(|err| Error::Transport {
                reason: format!("waiting for the {method} reply: {err}"),
            })?;
            if let Message::Text(text) = message
                && let Ok(Incoming::Reply { id, outcome }) = parse_frame(&text)
                && id == want
            {
                return Ok(outcome);
            }
        }
        Err(Error::Transport {
            reason: format!("TrueNAS closed the connection before answering {method}"),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout {
            method: method.to_owned(),
            after: timeout,
        })?
}

/// Runs the socket until it fails, the peer goes quiet, or `shutdown` turns true. Every call
/// still waiting is answered with [`Outcome::Dropped`]. Returns why the socket ended.
pub(crate) async fn run(
    mut socket: Socket,
    mut calls: mpsc::Receiver<Outgoing>,
    ping_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> String {
    let mut pending: HashMap<String, (oneshot::Sender<Outcome>, Option<OwnedSemaphorePermit>)> =
        HashMap::new();
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // A peer that has not answered two pings in a row is gone even if TCP has not noticed.
    let silence_limit = ping_every * 2 + Duration::from_secs(5);
    let reason = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break "the client was dropped".to_owned() };
                if call.reply.is_closed() {
                    continue; // the caller gave up before the call left
                }
                let sent = socket.send(Message::text(call.frame)).await;
                pending.insert(call.id, (call.reply, call.permit));
                if let Err(err) = sent {
                    break format!("sending to TrueNAS failed: {err}");
                }
            }
            message = socket.next() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => match parse_frame(&text) {
                        Ok(Incoming::Reply { id, outcome }) => {
                            if let Some((reply, _permit)) = pending.remove(&id) {
                                let _ = reply.send(Outcome::Done(outcome));
                            }
                        }
                        Ok(Incoming::Orphan(error)) => {
                            tracing::warn!(code = error.code, reason = %error.text(), "TrueNAS reported an error for no call");
                        }
                        Ok(Incoming::Notification { .. }) => {}
                        Err(err) => tracing::warn!(%err, "ignoring a frame from TrueNAS"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(frame) => format!("TrueNAS closed the connection ({}: {})", u16::from(frame.code), frame.reason),
                            None => "TrueNAS closed the connection".to_owned(),
                        };
                    }
                    Some(Ok(_)) => {} // pings are answered by tungstenite; pongs only prove life
                    Some(Err(err)) => break format!("connection to TrueNAS failed: {err}"),
                    None => break "TrueNAS closed the connection".to_owned(),
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > silence_limit {
                    break format!("TrueNAS sent nothing for {:?}", last_heard.elapsed());
                }
                if let Err(err) = socket.send(Message::Ping(Vec::new().into())).await {
                    break format!("ping failed: {err}");
                }
            }
            _ = shutdown.changed() => {
                let _ = socket.close(None).await;
                break "the client was shut down".to_owned();
            }
        }
    };
    for (_, (reply, _permit)) in pending.drain() {
        let _ = reply.send(Outcome::Dropped {
            sent: true,
            reason: reason.clone(),
        });
    }
    calls.close();
    while let Ok(call) = calls.try_recv() {
        let _ = call.reply.send(Outcome::Dropped {
            sent: false,
            reason: reason.clone(),
        });
    }
    reason
}
