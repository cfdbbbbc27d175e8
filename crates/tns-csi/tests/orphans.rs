//! The orphan reconciler end to end: the driver binary against the simulator and a Kubernetes
//! API test double (an HTTP server answering the PersistentVolume and VolumeSnapshotContent
//! lists the way kube-apiserver does, reached through KUBECONFIG). A planted orphan of each
//! kind, foreign objects and a live PV: `tns-csi orphans` reports exactly the orphans, the
//! dry-run loop logs and counts them and deletes nothing, and with deletion on exactly those
//! go, and only after the grace period.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::*;
use tonic::transport::Channel;

use common::{World, free_port, mount_cap, serving};

const BIN: &str = env!("CARGO_BIN_EXE_tns-csi");

/// What the API server double lists: PV volume handles and VolumeSnapshotContent handles.
#[derive(Default)]
struct ClusterState {
    volumes: Vec<String>,
    snapshots: Vec<String>,
}

/// Serves `/api/v1/persistentvolumes` and the VolumeSnapshotContent list from `state`;
/// returns a kubeconfig file pointing at it.
async fn api_server(state: Arc<Mutex<ClusterState>>, dir: &Path) -> std::path::PathBuf {
    let pvs = state.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/persistentvolumes",
            axum::routing::get(move || {
                let state = pvs.clone();
                async move {
                    let items: Vec<_> = state
                        .lock()
                        .unwrap()
                        .volumes
                        .iter()
                        .enumerate()
                        .map(|(i, handle)| {
                            serde_json::json!({
                                "metadata": {"name": format!("pv-{i}")},
                                "spec": {"csi": {"driver": "tns.csi.io", "volumeHandle": handle}}
                            })
                        })
                        .chain([serde_json::json!({
                            // Another driver's PV naming one of our datasets: not ours.
                            "metadata": {"name": "pv-other"},
                            "spec": {"csi": {"driver": "other.csi.io", "volumeHandle": "nfs:tank/csi/lost-nfs"}}
                        })])
                        .collect();
                    let body = serde_json::json!({
                        "apiVersion": "v1", "kind": "PersistentVolumeList",
                        "metadata": {"resourceVersion": "1"}, "items": items
                    });
                    ([("content-type", "application/json")], body.to_string())
                }
            }),
        )
        .route(
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    let items: Vec<_> = state
                        .lock()
                        .unwrap()
                        .snapshots
                        .iter()
                        .enumerate()
                        .map(|(i, handle)| {
                            serde_json::json!({
                                "apiVersion": "snapshot.storage.k8s.io/v1",
                                "kind": "VolumeSnapshotContent",
                                "metadata": {"name": format!("snapcontent-{i}")},
                                "spec": {"driver": "tns.csi.io", "deletionPolicy": "Delete",
                                         "source": {"volumeHandle": "x"}},
                                "status": {"snapshotHandle": handle, "readyToUse": true}
                            })
                        })
                        .collect();
                    let body = serde_json::json!({
                        "apiVersion": "snapshot.storage.k8s.io/v1",
                        "kind": "VolumeSnapshotContentList",
                        "metadata": {"resourceVersion": "1"}, "items": items
                    });
                    ([("content-type", "application/json")], body.to_string())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n"
        ),
    )
    .unwrap();
    kubeconfig
}

/// The config of a driver in `all` mode on the simulator, with `orphans` as given.
fn config(
    dir: &Path,
    sim: &truenas_sim::Simulator,
    key: &Path,
    port: u16,
    orphans: &str,
) -> String {
    format!(
        "truenas: {{ url: '{url}', api_key_file: {key}, allow_insecure_transport: true }}\n\
         metrics: {{ addr: '127.0.0.1:{port}' }}\n\
         log: {{ format: json }}\n\
         orphans: {orphans}\n\
         csi:\n  mode: all\n  host: simulated\n  node_id: node-1\n  sim_data_dir: {data}\n  state_dir: {state}\n  kubelet_dir: {dir}\n  endpoint: unix://{dir}/csi.sock\n  known_nodes: [node-1]\n",
        url = sim.url(),
        key = key.display(),
        data = sim.data_dir().display(),
        state = dir.join("node-state").display(),
        dir = dir.display(),
    )
}

/// Starts the driver on `config` with KUBECONFIG; its stderr (JSON log) goes to `log`.
async fn driver(
    dir: &Path,
    config: &str,
    kubeconfig: &Path,
    log: &Path,
) -> (World, ControllerClient<Channel>) {
    let run = tempfile::tempdir_in(dir).unwrap();
    let path = run.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let socket = dir.join("csi.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap();
    let world = World { child, dir: run };
    let channel = serving(socket).await;
    (world, ControllerClient::new(channel))
}

/// `tns-csi orphans --output json`: the (kind, object) pairs it reports.
fn report(config_path: &Path, kubeconfig: &Path) -> BTreeSet<(String, String)> {
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(config_path)
        .args(["orphans", "--output", "json"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tns-csi orphans failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["errors"], serde_json::json!([]), "{json}");
    json["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["object"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn create(controller: &mut ControllerClient<Channel>, name: &str, protocol: &str) -> Volume {
    controller
        .create_volume(common::volume_request(
            name,
            &[("protocol", protocol), ("pool", "tank")],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
}

async fn snapshot(
    controller: &mut ControllerClient<Channel>,
    volume: &Volume,
    name: &str,
) -> String {
    controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: volume.volume_id.clone(),
            name: name.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
        .snapshot_id
}

fn truenas_client(sim: &truenas_sim::Simulator, key: &str) -> truenas::Client {
    let mut settings = truenas::ClientSettings::new(
        sim.url().parse().unwrap(),
        truenas::ApiKey::fixed(credentials::SecretString::from(key.to_owned())),
    );
    settings.allow_insecure_transport = true;
    truenas::Client::new(settings, truenas::ClientMetrics::default()).unwrap()
}

/// Metric `name{…kind="kind"…}` from a Prometheus text page.
fn gauge(page: &str, kind: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with("tns_csi_orphans{") && l.contains(&format!("kind=\"{kind}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn expected() -> BTreeSet<(String, String)> {
    [
        ("dataset", "tank/csi/lost-nfs"),
        ("dataset", "tank/csi/lost-smb"),
        ("zvol", "tank/csi/lost-nvme"),
        ("zvol", "tank/csi/lost-iscsi"),
        ("snapshot", "tank/csi/live-nfs@snap-lost"),
        ("snapshot", "tank/csi/gone-nfs@snap-d"),
        ("deferred_destroy", "tank/csi/gone-nfs"),
        ("nfs_share", "/mnt/tank/csi/lost-nfs"),
        ("smb_share", "lost-smb"),
        ("nvmeof_subsystem", "lost-nvme"),
        ("nvmeof_subsystem", "leaked"),
        ("nvmeof_namespace", "lost-nvme/1"),
        ("nvmeof_host", "nqn.2014-08.io.tns-csi:node:node-1"),
        ("iscsi_target", "lost-iscsi"),
        ("iscsi_extent", "lost-iscsi"),
        ("iscsi_initiator_group", "tns-csi:lost-iscsi"),
    ]
    .into_iter()
    .map(|(k, o)| (k.to_owned(), o.to_owned()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_exactly_kept_in_a_dry_run_and_deleted_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    let mut sim_config = truenas_sim::SimConfig::new(root.path().join("sim-data"));
    sim_config.pools = vec![("tank".into(), 50 << 30)];
    let sim = truenas_sim::Simulator::start(sim_config.clone())
        .await
        .unwrap();
    let key = root.path().join("key");
    std::fs::write(&key, &sim_config.api_key).unwrap();
    let state = Arc::new(Mutex::new(ClusterState::default()));
    let kubeconfig = api_server(state.clone(), root.path()).await;
    let log = root.path().join("driver.log");
    let port = free_port();
    let dry_run = config(
        root.path(),
        &sim,
        &key,
        port,
        "{ enabled: true, interval: 1s, grace_period: 1s }",
    );
    let config_path = root.path().join("report.yaml");
    std::fs::write(&config_path, &dry_run).unwrap();

    // The live volume's PV exists from the start (the provisioner makes it right after
    // CreateVolume; the grace period covers the moment in between).
    state
        .lock()
        .unwrap()
        .volumes
        .push("nfs:tank/csi/live-nfs".into());
    let (world, mut controller) = driver(root.path(), &dry_run, &kubeconfig, &log).await;
    let live = create(&mut controller, "live-nfs", "nfs").await;
    assert_eq!(live.volume_id, "nfs:tank/csi/live-nfs");
    let kept_snapshot = snapshot(&mut controller, &live, "snap-live").await;
    state.lock().unwrap().snapshots.push(kept_snapshot);
    let lost_snapshot = snapshot(&mut controller, &live, "snap-lost").await;
    assert!(lost_snapshot.ends_with("@snap-lost"), "{lost_snapshot}");
    create(&mut controller, "lost-nfs", "nfs").await;
    create(&mut controller, "lost-smb", "smb").await;
    let nvme = create(&mut controller, "lost-nvme", "nvmeof").await;
    controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: nvme.volume_id.clone(),
            node_id: "node-1".into(),
            volume_capability: Some(mount_cap(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap();
    create(&mut controller, "lost-iscsi", "iscsi").await;
    // A deleted volume kept for a snapshot that no VolumeSnapshotContent names any more.
    let gone = create(&mut controller, "gone-nfs", "nfs").await;
    snapshot(&mut controller, &gone, "snap-d").await;
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: gone.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Planted beside them: a leaked subsystem (marked, no namespace) and foreign objects.
    let client = truenas_client(&sim, &sim_config.api_key);
    let base = client.nvmet().global().await.unwrap().basenqn;
    client
        .nvmet()
        .create_subsystem(&truenas::api::NewSubsystem {
            name: "leaked".into(),
            subnqn: Some(format!("{base}:tns-csi:leaked")),
            allow_any_host: false,
        })
        .await
        .unwrap();
    client
        .nvmet()
        .create_subsystem(&truenas::api::NewSubsystem {
            name: "theirs".into(),
            subnqn: None,
            allow_any_host: false,
        })
        .await
        .unwrap();
    client
        .datasets()
        .create(&truenas::api::NewDataset::filesystem("tank/foreign"))
        .await
        .unwrap();
    client
        .nfs()
        .create(&truenas::api::NewNfsShare {
            path: "/mnt/tank/foreign".into(),
            comment: "the team's share".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .snapshots()
        .create(&truenas::api::NewSnapshot {
            dataset: "tank/foreign".into(),
            name: "nightly".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The report: exactly the orphans.
    assert_eq!(report(&config_path, &kubeconfig), expected());

    // The dry-run loop: each orphan logged, counted by kind, nothing deleted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (_, page) = common::http_get(&format!("127.0.0.1:{port}"), "/metrics");
        if gauge(&page, "iscsi_initiator_group") == Some(1.0)
            && gauge(&page, "nvmeof_subsystem") == Some(2.0)
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the dry run never counted the orphans:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (kind, count) in [
        ("dataset", 2.0),
        ("zvol", 2.0),
        ("snapshot", 2.0),
        ("deferred_destroy", 1.0),
        ("nfs_share", 1.0),
        ("smb_share", 1.0),
        ("nvmeof_namespace", 1.0),
        ("nvmeof_host", 1.0),
        ("iscsi_target", 1.0),
        ("iscsi_extent", 1.0),
    ] {
        assert_eq!(gauge(&page, kind), Some(count), "{kind}:\n{page}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // several passes past the grace period
    let logged = std::fs::read_to_string(&log).unwrap();
    for (kind, object) in expected() {
        assert!(
            logged.lines().any(|l| l.contains("orphan found")
                && l.contains(&format!("\"kind\":\"{kind}\""))
                && l.contains(&format!("\"object\":\"{object}\""))),
            "no log line for {kind} {object}"
        );
    }
    assert!(
        !logged.contains("orphan deleted"),
        "a dry run deleted something"
    );
    assert_eq!(
        report(&config_path, &kubeconfig),
        expected(),
        "a dry run deletes nothing"
    );
    drop(world);

    // Deletion on, with a grace period: nothing goes before it, then exactly the orphans go.
    let grace = Duration::from_secs(6);
    let deleting = config(
        root.path(),
        &sim,
        &key,
        port,
        "{ enabled: true, dry_run: false, interval: 1s, grace_period: 6s }",
    );
    let started = Instant::now();
    let (_world, mut controller) = driver(root.path(), &deleting, &kubeconfig, &log).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if started.elapsed() < grace {
        assert_eq!(
            report(&config_path, &kubeconfig),
            expected(),
            "deleted within the grace period"
        );
    }
    // Watched through the metrics: each `tns-csi orphans` is a login, and TrueNAS allows 20
    // a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, page) = common::http_get(&format!("127.0.0.1:{port}"), "/metrics");
        let deleted: f64 = page
            .lines()
            .filter(|l| l.starts_with("tns_csi_orphans_deleted_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let left: f64 = page
            .lines()
            .filter(|l| l.starts_with("tns_csi_orphans{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if deleted >= expected().len() as f64 && left == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans left after the grace period:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() >= grace,
        "deleted before the grace period"
    );
    assert_eq!(report(&config_path, &kubeconfig), BTreeSet::new());
    // What is live or foreign is untouched.
    let live_now = controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: live.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(live_now.volume.is_some());
    let snapshots: BTreeSet<String> = client
        .snapshots()
        .query(&truenas::query::Query::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        snapshots,
        ["tank/csi/live-nfs@snap-live", "tank/foreign@nightly"]
            .map(str::to_owned)
            .into()
    );
    let datasets: BTreeSet<String> = client
        .datasets()
        .query(&truenas::query::Query::all().extra("retrieve_children", false))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .filter(|id| id.starts_with("tank/"))
        .collect();
    assert_eq!(
        datasets,
        ["tank/csi", "tank/csi/live-nfs", "tank/foreign"]
            .map(str::to_owned)
            .into()
    );
    let shares: Vec<String> = client
        .nfs()
        .query(&truenas::query::Query::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect();
    assert_eq!(shares, ["/mnt/tank/csi/live-nfs", "/mnt/tank/foreign"]);
    let subsystems: Vec<String> = client
        .nvmet()
        .subsystems(&truenas::query::Query::all())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(subsystems, ["theirs"]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged
            .lines()
            .filter(|l| l.contains("orphan deleted"))
            .count(),
        expected().len(),
        "each orphan deleted once:\n{logged}"
    );
}
