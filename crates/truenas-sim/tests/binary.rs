//! The `truenas-sim` binary: generated key file, the URL line, `--pool`, and `--state` across
//! a restart.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_truenas-sim");

struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Sim, String) {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--pool",
            "tank=10GiB",
            "--api-key-file",
        ])
        .arg(dir.join("key"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--state")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Sim(child), line.trim().to_owned())
}

async fn call(url: &str, key: &str, method: &str, params: Value) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for (id, (method, params)) in [("auth.login_with_api_key", json!([key])), (method, params)]
        .into_iter()
        .enumerate()
    {
        ws.send(Message::text(
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
        ))
        .await
        .unwrap();
        loop {
            if let Some(Ok(Message::Text(text))) = ws.next().await {
                let reply: Value = serde_json::from_str(&text).unwrap();
                if id == 1 {
                    return reply;
                }
                assert_eq!(reply["result"], true, "login failed: {reply}");
                break;
            }
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_generates_a_private_key_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, url) = start(dir.path());
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/api/current"),
        "{url}"
    );
    let key = std::fs::read_to_string(dir.path().join("key")).unwrap();
    let (id, secret) = key.split_once('-').unwrap();
    assert!(id.parse::<u64>().is_ok() && secret.len() == 64);
    let mode = std::fs::metadata(dir.path().join("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let pools = call(&url, &key, "pool.query", json!([])).await;
    assert_eq!(pools["result"][0]["size"], 10u64 << 30);
    let created = call(
        &url,
        &key,
        "pool.dataset.create",
        json!([{"name": "tank/kept"}]),
    )
    .await;
    assert_eq!(created["result"]["id"], "tank/kept");
    drop(sim);

    let (_sim, url) = start(dir.path());
    let found = call(
        &url,
        &key,
        "pool.dataset.query",
        json!([[["id", "=", "tank/kept"]]]),
    )
    .await;
    assert_eq!(found["result"].as_array().unwrap().len(), 1, "{found}");
}

#[test]
fn bad_arguments_are_explained() {
    let out = Command::new(BIN)
        .args([
            "--api-key-file",
            "/nonexistent/dir/key",
            "--data-dir",
            "/tmp/x",
            "--pool",
            "tank",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME=SIZE"), "{err}");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--api-key-file",
        "--data-dir",
        "--state",
        "--tls",
        "--pool",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
