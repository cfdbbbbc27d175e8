//! The simulator's wire protocol checked with raw frames (spec §1, §2, §7): envelope errors,
//! login, message-size limits and the 20-in-flight limit per socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use truenas_sim::{SimConfig, Simulator};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> (Simulator, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig::new(dir.path().join("data"));
    let key = config.api_key.clone();
    (Simulator::start(config).await.unwrap(), key, dir)
}

async fn open(sim: &Simulator) -> Ws {
    tokio_tungstenite::connect_async(sim.url()).await.unwrap().0
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Close(frame))) => {
                return json!({"closed": frame.map(|f| u16::from(f.code))});
            }
            Some(Ok(_)) => continue,
            other => return json!({"closed": format!("{other:?}")}),
        }
    }
}

async fn login(ws: &mut Ws, key: &str) {
    send(ws, json!({"jsonrpc": "2.0", "id": "login", "method": "auth.login_with_api_key", "params": [key]})).await;
    assert_eq!(next(ws).await["result"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_errors_and_login() {
    let (sim, key, _dir) = start().await;
    let mut ws = open(&sim).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "pool.query", "params": []}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(reply["error"]["code"], -32001);
    assert_eq!(reply["error"]["data"]["errname"], "ENOTAUTHENTICATED");
    assert_eq!(reply["error"]["data"]["error"], 207);
    assert_eq!(reply["id"], 1, "integer ids come back as integers");

    send(&mut ws, json!({"jsonrpc": "2.0", "id": 2, "method": "auth.login_with_api_key", "params": ["1-wrong"]})).await;
    assert_eq!(
        next(&mut ws).await["result"],
        json!(false),
        "a bad key is false, not an error"
    );
    login(&mut ws, &key).await;

    ws.send(Message::text("{not json")).await.unwrap();
    let reply = next(&mut ws).await;
    assert_eq!(
        (reply["error"]["code"].clone(), reply["id"].clone()),
        (json!(-32700), Value::Null)
    );
    ws.send(Message::text("[]")).await.unwrap();
    assert_eq!(
        next(&mut ws).await["error"]["message"],
        "Batch messages are not supported at this time"
    );
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 3, "method": "core.ping", "params": {}}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await["error"]["message"],
        "'params' member must be of type array"
    );
    send(
        &mut ws,
        json!({"jsonrpc": "1.0", "id": 4, "method": "core.ping"}),
    )
    .await;
    assert_eq!(next(&mut ws).await["error"]["code"], -32600);
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 5, "method": "no.such"}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(
        (reply["error"]["code"].clone(), reply["error"].get("data")),
        (json!(-32601), None)
    );
    // A notification runs but gets no reply; the next reply is for id 6.
    send(&mut ws, json!({"jsonrpc": "2.0", "method": "core.ping"})).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": null, "method": "core.ping"}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(
        (reply["result"].clone(), reply["id"].clone()),
        (json!("pong"), Value::Null)
    );
    // Not found is -32602 with errno 2 in extra (spec §2).
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 7, "method": "pool.dataset.delete", "params": ["tank/none"]})).await;
    let reply = next(&mut ws).await;
    assert_eq!(reply["error"]["code"], -32602);
    assert_eq!(reply["error"]["data"]["extra"][0][2], 2);
    assert_eq!(
        reply["error"]["data"]["reason"],
        "[ENOENT] None: PoolDataset tank/none does not exist\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limits_close_the_socket() {
    let (sim, key, _dir) = start().await;
    let mut ws = open(&sim).await;
    let big = "x".repeat(9000);
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": [big]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["closed"], 1007);

    let mut ws = open(&sim).await;
    login(&mut ws, &key).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": ["x".repeat(9000)]}),
    )
    .await;
    assert!(
        next(&mut ws).await["error"]["message"].is_string(),
        "9 kB is fine after login"
    );
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "core.ping", "params": ["x".repeat(70_000)]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["closed"], 1009);

    let mut ws = open(&sim).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await["closed"], 1003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twenty_first_call_in_flight_is_refused() {
    let (sim, key, _dir) = start().await;
    let mut ws = open(&sim).await;
    login(&mut ws, &key).await;
    sim.faults().set_latency(Duration::from_millis(500));
    for id in 0..25 {
        send(
            &mut ws,
            json!({"jsonrpc": "2.0", "id": id, "method": "core.ping"}),
        )
        .await;
    }
    let mut refused = 0;
    let mut answered = 0;
    for _ in 0..25 {
        let reply = next(&mut ws).await;
        if reply["error"]["code"] == -32000 {
            assert_eq!(
                reply["error"]["message"],
                "Maximum number of concurrent calls (20) has exceeded"
            );
            refused += 1;
        } else {
            assert_eq!(reply["result"], "pong");
            answered += 1;
        }
    }
    assert_eq!((answered, refused), (20, 5));
    assert_eq!(sim.faults().refused_too_many(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_schema_reports_each_union_branch() {
    let (sim, key, _dir) = start().await;
    let mut ws = open(&sim).await;
    login(&mut ws, &key).await;
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 1, "method": "pool.dataset.create",
        "params": [{"name": "tank/x", "type": "VOLUME", "volsize": 10.5, "sparse": "yes", "bogus": 1}]})).await;
    let reply = next(&mut ws).await;
    let attrs: Vec<&str> = reply["error"]["data"]["extra"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e[0].as_str())
        .collect();
    for expected in [
        "data.PoolDatasetCreateFilesystem.type",
        "data.PoolDatasetCreateVolume.volsize",
        "data.PoolDatasetCreateVolume.sparse",
        "data.PoolDatasetCreateVolume.bogus",
    ] {
        assert!(
            attrs.contains(&expected),
            "{expected} missing from {attrs:?}"
        );
    }
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 2, "method": "pool.dataset.create", "params": [{"name": "tank/x", "sync": "standard"}]})).await;
    let reply = next(&mut ws).await;
    assert_eq!(
        reply["error"]["data"]["extra"][0][1],
        "Input should be 'STANDARD', 'ALWAYS', 'DISABLED' or 'INHERIT'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_objects_follow_the_spec_encoding() {
    let (sim, key, _dir) = start().await;
    let mut ws = open(&sim).await;
    login(&mut ws, &key).await;
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 1, "method": "pool.dataset.create",
        "params": [{"name": "tank/v", "type": "VOLUME", "volsize": 10737418240u64, "sparse": true, "force_size": true}]})).await;
    let v = next(&mut ws).await["result"].clone();
    assert_eq!(
        v["volsize"],
        json!({"parsed": 10737418240u64, "rawvalue": "10737418240", "value": "10 GiB", "source": "LOCAL", "source_info": null})
    );
    assert_eq!(v["volblocksize"]["value"], "16K");
    assert_eq!(
        v["refreservation"],
        json!({"parsed": null, "rawvalue": "0", "value": null, "source": "DEFAULT", "source_info": null})
    );
    assert_eq!(v["mountpoint"], Value::Null);
    assert!(
        v.get("quota").is_none(),
        "filesystem-only props are absent on zvols"
    );
    assert_eq!(v["compression"]["source"], "DEFAULT");
    assert_eq!(v["encryption_algorithm"]["value"], Value::Null);
    assert!(v["creation"]["parsed"]["$date"].is_i64());
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "pool.dataset.create",
        "params": [{"name": "tank/f", "refquota": 1610612736u64, "compression": "LZ4"}]}),
    )
    .await;
    let f = next(&mut ws).await["result"].clone();
    assert_eq!(f["refquota"]["value"], "1.5 GiB");
    assert_eq!(f["quota"]["parsed"], Value::Null);
    assert_eq!(f["compression"]["value"], "LZ4");
    assert_eq!(f["recordsize"]["value"], "128K");
    assert!(f.get("volsize").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_calls_are_rate_limited() {
    let (sim, key, _dir) = start().await;
    let (id, _) = key.split_once('-').unwrap();
    let wrong = format!("{id}-{}", "y".repeat(64));
    let mut ws = open(&sim).await;
    for n in 0..20 {
        send(&mut ws, json!({"jsonrpc": "2.0", "id": n, "method": "auth.login_with_api_key", "params": [wrong]})).await;
        assert_eq!(next(&mut ws).await["result"], json!(false));
    }
    let started = std::time::Instant::now();
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 21, "method": "auth.login_with_api_key", "params": [key]}),
    )
    .await;
    let reply = next(&mut ws).await;
    assert_eq!(reply["error"]["data"]["errname"], "EBUSY");
    assert_eq!(
        reply["error"]["data"]["reason"],
        "[EBUSY] Rate Limit Exceeded"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the server slows the caller down"
    );
    // core.set_options is exempt.
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 22, "method": "core.set_options", "params": [{}]}),
    )
    .await;
    assert_eq!(next(&mut ws).await["result"]["legacy_jobs"], true);
}
