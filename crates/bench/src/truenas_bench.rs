//! Client throughput and latency against the simulator, beside raw WebSocket round trips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use truenas::{ApiKey, Client, ClientMetrics, ClientSettings};
use truenas_sim::{SimConfig, Simulator};

/// The target: calls per second at 256 in flight on a 2-core machine.
const TARGET_CALLS_PER_SEC: f64 = 10_000.0;

struct Figures {
    calls_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn figures(mut latencies: Vec<Duration>, took: Duration) -> Figures {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Figures {
        calls_per_sec: latencies.len() as f64 / took.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// `in_flight` callers each calling `core.ping` in a loop for `seconds`.
async fn through_client(
    client: &Client,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let call = Instant::now();
                client
                    .call(truenas::Method::read("core.ping"), vec![])
                    .await?;
                latencies.push(call.elapsed());
            }
            Ok::<_, truenas::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(figures(all, started.elapsed()))
}

/// The floor: one raw socket, `depth` pings pipelined, no client code at all.
async fn raw(url: &str, key: &str, depth: usize, seconds: u64) -> anyhow::Result<Figures> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("raw connect")?;
    let login =
        json!({"jsonrpc": "2.0", "id": 0, "method": "auth.login_with_api_key", "params": [key]});
    ws.send(Message::text(login.to_string())).await?;
    ws.next().await.context("login reply")??;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut sent_at = std::collections::HashMap::new();
    let mut next_id = 1u64;
    let mut latencies = Vec::new();
    let ping = |id: u64| {
        Message::text(json!({"jsonrpc": "2.0", "id": id, "method": "core.ping"}).to_string())
    };
    for _ in 0..depth {
        ws.send(ping(next_id)).await?;
        sent_at.insert(next_id, Instant::now());
        next_id += 1;
    }
    while !sent_at.is_empty() {
        let Some(message) = ws.next().await else {
            break;
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let reply: serde_json::Value = serde_json::from_str(&text)?;
        let id = reply["id"].as_u64().context("reply id")?;
        if let Some(at) = sent_at.remove(&id) {
            latencies.push(at.elapsed());
        }
        if Instant::now() < until {
            ws.send(ping(next_id)).await?;
            sent_at.insert(next_id, Instant::now());
            next_id += 1;
        }
    }
    Ok(figures(latencies, started.elapsed()))
}

fn row(label: &str, f: &Figures, baseline: Option<&Figures>) {
    let ratio = baseline.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.2}", f.calls_per_sec / b.calls_per_sec),
    );
    println!(
        "| {label:<34} | {:>9.0} | {:>8.3} | {:>8.3} | {ratio:>13} |",
        f.calls_per_sec,
        f.p50.as_secs_f64() * 1000.0,
        f.p99.as_secs_f64() * 1000.0
    );
}

/// Runs the benchmark; `Ok(false)` when the target is missed.
pub(crate) async fn run(seconds: u64) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let config = SimConfig::new(dir.path().join("data"));
    let key = config.api_key.clone();
    let sim = Arc::new(Simulator::start(config).await?);
    let url: url::Url = sim.url().parse()?;
    let client_with = |connections: usize| -> anyhow::Result<Client> {
        let mut settings =
            ClientSettings::new(url.clone(), ApiKey::fixed(SecretString::from(key.clone())));
        settings.allow_insecure_transport = true;
        settings.connections = connections;
        Ok(Client::new(settings, ClientMetrics::default())?)
    };
    println!(
        "TrueNAS client vs simulator on 127.0.0.1 ({} s per row, core.ping, {} CPUs)",
        seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| {:<34} | {:>9} | {:>8} | {:>8} | {:>13} |",
        "case", "calls/s", "p50 ms", "p99 ms", "vs raw socket"
    );
    println!(
        "|{:-<36}|{:->11}|{:->10}|{:->10}|{:->15}|",
        "", "", "", "", ""
    );
    // On a worker thread, like the client's socket task, so both pay the same wake-ups.
    let spawn_raw = |depth: usize| {
        let (url, key) = (sim.url(), key.clone());
        tokio::spawn(async move { raw(&url, &key, depth, seconds).await })
    };
    let raw1 = spawn_raw(1).await??;
    row("raw WebSocket, 1 in flight", &raw1, None);
    let raw16 = spawn_raw(16).await??;
    row("raw WebSocket, 16 pipelined", &raw16, None);
    let client = client_with(2)?;
    client.ready().await?;
    let before = sim.faults().calls_of("core.ping");
    let one = through_client(&client, 1, seconds).await?;
    let served = sim.faults().calls_of("core.ping") - before;
    let made = (one.calls_per_sec * seconds as f64) as u64;
    anyhow::ensure!(
        served + 1000 >= made,
        "the simulator served {served} pings but the client counted about {made}"
    );
    row("client, 1 in flight", &one, Some(&raw1));
    let sixteen = through_client(&client, 16, seconds).await?;
    row("client, 16 in flight", &sixteen, Some(&raw16));
    let many = through_client(&client, 256, seconds).await?;
    row("client, 256 in flight (2 sockets)", &many, Some(&raw16));
    let wide = client_with(8)?;
    wide.ready().await?;
    let many_wide = through_client(&wide, 256, seconds).await?;
    row(
        "client, 256 in flight (8 sockets)",
        &many_wide,
        Some(&raw16),
    );
    let met = many.calls_per_sec >= TARGET_CALLS_PER_SEC;
    println!();
    println!(
        "target: >= {TARGET_CALLS_PER_SEC:.0} calls/s at 256 in flight with default settings: {:.0} calls/s, {}",
        many.calls_per_sec,
        if met { "met" } else { "NOT met" }
    );
    println!(
        "server refused with -32000: {} calls (must be 0)",
        sim.faults().refused_too_many()
    );
    Ok(met && sim.faults().refused_too_many() == 0)
}
