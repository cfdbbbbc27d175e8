//! What TrueNAS's own Python client (truenas_api_client) does on a socket, frame by frame:
//! `core.set_options` with `legacy_jobs: false`, `core.subscribe("core.get_jobs")` before
//! every call (refused before login, which it ignores), a job call answered through
//! `collection_update` events that carry the call's id in `message_ids`, and a failed job's
//! ValidationErrors kept as -32602 with `extra`. Plus the methods its sweep uses that the
//! driver does not: `pool.dataset.get_instance` and `filesystem.statfs`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use truenas_sim::{SimConfig, Simulator};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut Ws, id: &str, method: &str, params: Value) {
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(frame.to_string())).await.unwrap();
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no frame within 10 s")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// The reply to call `id`, with the notifications that came before it.
async fn reply(ws: &mut Ws, id: &str) -> (Value, Vec<Value>) {
    let mut events = Vec::new();
    loop {
        let frame = next(ws).await;
        if frame["id"] == id {
            return (frame, events);
        }
        events.push(frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_handshake_subscription_and_job_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig::new(dir.path().join("data"));
    let key = config.api_key.clone();
    let sim = Simulator::start(config).await.unwrap();
    let mut ws = tokio_tungstenite::connect_async(sim.url()).await.unwrap().0;

    send(
        &mut ws,
        "opts",
        "core.set_options",
        json!([{"legacy_jobs": false, "private_methods": true, "py_exceptions": false}]),
    )
    .await;
    let (options, _) = reply(&mut ws, "opts").await;
    assert_eq!(
        options["result"],
        json!({"legacy_jobs": false, "private_methods": true, "py_exceptions": false}),
        "the options are echoed as set"
    );
    // Before login the subscription is refused (the client ignores exactly this error).
    send(&mut ws, "sub0", "core.subscribe", json!(["core.get_jobs"])).await;
    let (refused, _) = reply(&mut ws, "sub0").await;
    assert_eq!(refused["error"]["data"]["errname"], "ENOTAUTHENTICATED");
    send(&mut ws, "login", "auth.login_with_api_key", json!([key])).await;
    assert_eq!(reply(&mut ws, "login").await.0["result"], json!(true));
    send(&mut ws, "sub", "core.subscribe", json!(["core.get_jobs"])).await;
    let (subscribed, _) = reply(&mut ws, "sub").await;
    let subscription = subscribed["result"]
        .as_str()
        .expect("a subscription id")
        .to_owned();
    send(
        &mut ws,
        "nosuch",
        "core.subscribe",
        json!(["no.such.event"]),
    )
    .await;
    assert!(reply(&mut ws, "nosuch").await.0["error"].is_object());

    // A job: `added` with the call's id, then `changed` to SUCCESS with the result, then the
    // call's own reply.
    send(&mut ws, "job-1", "service.control", json!(["START", "nfs"])).await;
    let (done, events) = reply(&mut ws, "job-1").await;
    assert_eq!(done["result"], json!(true));
    assert_eq!(events.len(), 2, "{events:?}");
    let added = &events[0]["params"];
    assert_eq!(events[0]["method"], "collection_update");
    assert_eq!(added["msg"], "added");
    assert_eq!(added["collection"], "core.get_jobs");
    assert_eq!(added["fields"]["message_ids"], json!(["job-1"]));
    let job_id = added["id"].clone();
    assert_eq!(added["fields"]["id"], job_id);
    let changed = &events[1]["params"];
    assert_eq!(changed["msg"], "changed");
    assert_eq!(changed["id"], job_id);
    assert_eq!(changed["fields"]["state"], "SUCCESS");
    assert_eq!(changed["fields"]["result"], json!(true));

    // A job that fails validation: FAILED with exc_info VALIDATION, and the call's error
    // keeps its class (-32602 with `extra`), not a bare CallError.
    send(&mut ws, "job-2", "service.control", json!(["JUMP", "nfs"])).await;
    let (failed, events) = reply(&mut ws, "job-2").await;
    assert_eq!(failed["error"]["code"], -32602, "{failed}");
    let extra = failed["error"]["data"]["extra"].as_array().unwrap();
    assert!(extra[0][0].as_str().unwrap().contains("verb"), "{failed}");
    let last = &events.last().unwrap()["params"]["fields"];
    assert_eq!(last["state"], "FAILED");
    assert_eq!(last["exc_info"]["type"], "VALIDATION");

    // Unsubscribed: jobs run without events.
    send(&mut ws, "unsub", "core.unsubscribe", json!([subscription])).await;
    assert_eq!(reply(&mut ws, "unsub").await.0["result"], Value::Null);
    send(&mut ws, "job-3", "service.control", json!(["START", "nfs"])).await;
    let (_, events) = reply(&mut ws, "job-3").await;
    assert!(events.is_empty(), "{events:?}");

    // The sweep's extra methods.
    send(&mut ws, "gi", "pool.dataset.get_instance", json!(["tank"])).await;
    assert_eq!(reply(&mut ws, "gi").await.0["result"]["id"], "tank");
    send(
        &mut ws,
        "gi2",
        "pool.dataset.get_instance",
        json!(["tank/nope"]),
    )
    .await;
    let (missing, _) = reply(&mut ws, "gi2").await;
    // InstanceNotFound is a ValidationError with errno ENOENT in 25.10.
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    assert_eq!(missing["error"]["data"]["extra"][0][2], 2, "{missing}");
    send(&mut ws, "fs", "filesystem.statfs", json!(["/mnt/tank"])).await;
    let (statfs, _) = reply(&mut ws, "fs").await;
    assert_eq!(statfs["result"]["fstype"], "zfs", "{statfs}");
    assert!(statfs["result"]["avail_bytes"].as_u64().unwrap() > 0);
    send(
        &mut ws,
        "fs2",
        "filesystem.statfs",
        json!(["/mnt/tank/none"]),
    )
    .await;
    assert!(reply(&mut ws, "fs2").await.0["error"].is_object());
}
