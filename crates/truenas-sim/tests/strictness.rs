//! Where the simulator must refuse what TrueNAS 25.10 refuses, with its words, so the driver
//! cannot be fooled by a lenient simulator: dataset names (libzfs: 255 characters, valid
//! components), quota bounds reported under the argument name, the create model's union
//! (an untyped volume, `force_size` only for volumes, the compression literals), iSCSI target
//! names and the nvmet subsystem-in-use wording.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use truenas_sim::{SimConfig, Simulator};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Session {
    ws: Ws,
    next_id: u64,
    _sim: Simulator,
    dir: tempfile::TempDir,
}

impl Session {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = SimConfig::new(dir.path().join("data"));
        let key = config.api_key.clone();
        let sim = Simulator::start(config).await.unwrap();
        let ws = tokio_tungstenite::connect_async(sim.url()).await.unwrap().0;
        let mut session = Self {
            ws,
            next_id: 0,
            _sim: sim,
            dir,
        };
        assert_eq!(
            session.call("auth.login_with_api_key", json!([key])).await["result"],
            json!(true)
        );
        session
    }

    /// The whole reply frame of one call.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .unwrap();
            if let Some(Ok(Message::Text(text))) = message {
                let reply: Value = serde_json::from_str(&text).unwrap();
                if reply["id"] == id {
                    return reply;
                }
            }
        }
    }

    /// The validation entries (`[attribute, message, errno]`) of a refused call.
    async fn refused(&mut self, method: &str, params: Value) -> Vec<(String, String)> {
        let reply = self.call(method, params).await;
        assert_eq!(reply["error"]["code"], -32602, "{reply}");
        reply["error"]["data"]["extra"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e[0].as_str().unwrap_or_default().to_owned(),
                    e[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

const BAD_NAME: &str =
    "Value error, Please provide a valid dataset name according to ZFS standards";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_names_quotas_and_the_create_model() {
    let mut s = Session::start().await;
    // 255 characters is the most libzfs takes.
    let longest = format!("tank/{}", "a".repeat(250));
    assert_eq!(longest.len(), 255);
    let made = s
        .call("pool.dataset.create", json!([{"name": longest}]))
        .await;
    assert_eq!(made["result"]["id"], longest, "{made}");
    let too_long = format!("tank/{}", "b".repeat(251));
    for name in [
        too_long.as_str(),
        "tank/a$b",
        "tank/./x",
        "tank//x",
        "1tank/x",
    ] {
        assert_eq!(
            s.refused("pool.dataset.create", json!([{"name": name}]))
                .await,
            [("data.name".to_owned(), BAD_NAME.to_owned())],
            "{name}"
        );
    }
    // A valid name without a parent is the plugin's refusal, after the model.
    let entries = s
        .refused("pool.dataset.create", json!([{"name": "tank"}]))
        .await;
    assert_eq!(entries[0].0, "pool_dataset_create.name");

    // Quotas under 1 GiB: the model's bound, under the argument name.
    let entries = s
        .refused(
            "pool.dataset.create",
            json!([{"name": "tank/q", "refquota": 1}]),
        )
        .await;
    assert_eq!(
        entries,
        [(
            "data.refquota".to_owned(),
            "Input should be greater than or equal to 1073741824".to_owned()
        )]
    );
    s.call("pool.dataset.create", json!([{"name": "tank/q"}]))
        .await;
    let entries = s
        .refused("pool.dataset.update", json!(["tank/q", {"quota": 1024}]))
        .await;
    assert_eq!(entries[0].0, "data.quota");

    // A volume needs no `type`; `force_size` belongs to volumes only.
    let volume = s
        .call(
            "pool.dataset.create",
            json!([{"name": "tank/v", "volsize": 1 << 30}]),
        )
        .await;
    assert_eq!(volume["result"]["type"], "VOLUME", "{volume}");
    let entries = s
        .refused(
            "pool.dataset.create",
            json!([{"name": "tank/f", "type": "FILESYSTEM", "force_size": true}]),
        )
        .await;
    assert!(
        entries.iter().any(|(attr, message)| attr
            .ends_with("PoolDatasetCreateFilesystem.force_size")
            && message == "Extra inputs are not permitted"),
        "{entries:?}"
    );

    // The compression literals: GZIP has levels 1 and 9 only.
    for ok in [
        "GZIP-9",
        "GZIP-1",
        "ZSTD-19",
        "ZSTD-FAST-30",
        "ZSTD-FAST-1000",
    ] {
        let name = format!("tank/c-{}", ok.to_lowercase());
        let reply = s
            .call(
                "pool.dataset.create",
                json!([{"name": name, "compression": ok}]),
            )
            .await;
        assert!(reply["result"].is_object(), "{ok}: {reply}");
    }
    for bad in ["GZIP-5", "ZSTD-FAST-35", "ZSTD-20", "gzip"] {
        let entries = s
            .refused(
                "pool.dataset.create",
                json!([{"name": "tank/c", "compression": bad}]),
            )
            .await;
        assert!(
            entries
                .iter()
                .any(|(attr, message)| attr.ends_with("compression")
                    && message.starts_with(
                        "Input should be 'ON', 'OFF', 'LZ4', 'GZIP', 'GZIP-1', 'GZIP-9'"
                    )),
            "{bad}: {entries:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iscsi_target_names_and_the_subsystem_in_use_wording() {
    let mut s = Session::start().await;
    let entries = s
        .refused("iscsi.target.create", json!([{"name": "Bad_Name"}]))
        .await;
    assert_eq!(
        entries[0].1,
        "Only lowercase alphanumeric characters plus dot (.), dash (-), and colon (:) are allowed."
    );
    let entries = s
        .refused("iscsi.target.create", json!([{"name": "a".repeat(121)}]))
        .await;
    assert_eq!(entries[0].1, "String should have at most 120 characters");

    // A subsystem with one namespace on one port: both refusals, in 25.10's words.
    let subsys = s
        .call("nvmet.subsys.create", json!([{"name": "busy"}]))
        .await["result"]["id"]
        .clone();
    s.call(
        "pool.dataset.create",
        json!([{"name": "tank/z", "type": "VOLUME", "volsize": 1 << 30}]),
    )
    .await;
    let namespace = s
        .call(
            "nvmet.namespace.create",
            json!([{"subsys_id": subsys, "device_type": "ZVOL", "device_path": "zvol/tank/z"}]),
        )
        .await;
    assert!(namespace["result"].is_object(), "{namespace}");
    let port = s
        .call(
            "nvmet.port.create",
            json!([{"addr_trtype": "TCP", "addr_traddr": "0.0.0.0"}]),
        )
        .await["result"]["id"]
        .clone();
    s.call(
        "nvmet.port_subsys.create",
        json!([{"port_id": port, "subsys_id": subsys}]),
    )
    .await;
    let entries = s.refused("nvmet.subsys.delete", json!([subsys])).await;
    let messages: Vec<&str> = entries.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        messages,
        [
            "Subsystem busy contains 1 namespace: 1",
            "Subsystem busy visible on 1 port"
        ]
    );
    assert!(entries.iter().all(|(a, _)| a == "nvmet_subsys_delete.id"));
    let forced = s
        .call("nvmet.subsys.delete", json!([subsys, {"force": true}]))
        .await;
    assert_eq!(forced["result"], json!(true), "{forced}");
}

/// `available` of `tank` and `used` of a dataset, in bytes.
async fn space(s: &mut Session, dataset: &str) -> (u64, u64) {
    let pool = s
        .call(
            "pool.dataset.query",
            json!([[["id", "=", "tank"]], {"extra": {"properties": ["available"]}}]),
        )
        .await;
    let ds = s
        .call(
            "pool.dataset.query",
            json!([[["id", "=", dataset]], {"extra": {"properties": ["used"]}}]),
        )
        .await;
    (
        pool["result"][0]["available"]["parsed"].as_u64().unwrap(),
        ds["result"][0]["used"]["parsed"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_accounting_follows_creates_deletes_and_writes() {
    let mut s = Session::start().await;
    s.call("pool.dataset.create", json!([{"name": "tank/fs"}]))
        .await;
    let (before, _) = space(&mut s, "tank/fs").await;
    // A non-sparse zvol reserves its size at once.
    let made = s
        .call(
            "pool.dataset.create",
            json!([{"name": "tank/fs/zv", "type": "VOLUME", "volsize": 10u64 << 30}]),
        )
        .await;
    assert!(made["result"].is_object(), "{made}");
    let (after, used) = space(&mut s, "tank/fs").await;
    assert_eq!(before - after, 10 << 30);
    assert!(
        used >= 10 << 30,
        "the parent is charged its child's reservation"
    );
    // Bytes written by a node show up within a second.
    let file = s.dir.path().join("data/mnt/tank/fs/blob");
    std::fs::write(&file, vec![7u8; 4 << 20]).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, written) = space(&mut s, "tank/fs").await;
    assert!(
        written >= used + (4 << 20) - (64 << 10),
        "{written} vs {used}"
    );
    // A recursive delete gives everything back.
    let gone = s
        .call(
            "pool.dataset.delete",
            json!(["tank/fs", {"recursive": true}]),
        )
        .await;
    assert_eq!(gone["result"], json!(true), "{gone}");
    s.call("pool.dataset.create", json!([{"name": "tank/fs"}]))
        .await;
    let (again, _) = space(&mut s, "tank/fs").await;
    assert_eq!(again, before);
}
