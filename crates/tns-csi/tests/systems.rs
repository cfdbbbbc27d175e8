//! Several TrueNAS systems behind one driver: two simulators, volumes placed by StorageClass
//! `system` and by topology, ids of a single-system deployment still resolving, and one
//! system stopped while the other keeps serving (named by `/readyz` and the metrics).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::identity_client::IdentityClient;
use csi_api::csi::node_client::NodeClient;
use csi_api::csi::*;
use tonic::transport::Channel;

use common::{World, free_port, serving};

const BIN: &str = env!("CARGO_BIN_EXE_tns-csi");

/// Starts the driver in `all` mode on a config file; returns its clients once it serves.
async fn driver(
    dir: tempfile::TempDir,
    config: &str,
) -> (
    World,
    ControllerClient<Channel>,
    NodeClient<Channel>,
    Channel,
) {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config).unwrap();
    let socket = dir.path().join("csi.sock");
    let _ = std::fs::remove_file(&socket);
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let world = World { child, dir };
    let channel = serving(socket).await;
    (
        world,
        ControllerClient::new(channel.clone()),
        NodeClient::new(channel.clone()),
        channel,
    )
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    common::http_get(&format!("127.0.0.1:{port}"), path)
}

fn csi_section(dir: &Path, sim_data: &Path) -> String {
    format!(
        "csi:\n  mode: all\n  host: simulated\n  node_id: node-1\n  sim_data_dir: {data}\n  state_dir: {state}\n  kubelet_dir: {dir}\n  endpoint: unix://{dir}/csi.sock\n  known_nodes: [node-1]\n",
        data = sim_data.display(),
        state = dir.join("node-state").display(),
        dir = dir.display(),
    )
}

fn request(
    name: &str,
    params: &[(&str, &str)],
    topology: Option<TopologyRequirement>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        accessibility_requirements: topology,
        ..common::volume_request(name, params)
    }
}

fn topology(pairs: &[(&str, &str)]) -> Topology {
    Topology {
        segments: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

const NFS: &[(&str, &str)] = &[("protocol", "nfs"), ("pool", "tank")];

/// CreateVolume that must succeed; the volume it made.
async fn create(
    controller: &mut ControllerClient<Channel>,
    request: CreateVolumeRequest,
) -> Volume {
    controller
        .create_volume(request)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_systems_by_storage_class_and_topology_and_one_down() {
    let root = tempfile::tempdir().unwrap();
    let sim_config = |name: &str, gib: u64| {
        let mut config = truenas_sim::SimConfig::new(root.path().join(format!("{name}-data")));
        config.pools = vec![("tank".into(), gib << 30)];
        config
    };
    let (config_a, config_b) = (sim_config("a", 50), sim_config("b", 80));
    let sim_a = truenas_sim::Simulator::start(config_a.clone())
        .await
        .unwrap();
    let sim_b = truenas_sim::Simulator::start(config_b.clone())
        .await
        .unwrap();
    let (key_a, key_b) = (root.path().join("key-a"), root.path().join("key-b"));
    std::fs::write(&key_a, &config_a.api_key).unwrap();
    std::fs::write(&key_b, &config_b.api_key).unwrap();

    // A volume made while the driver knew one system: its id names no system.
    let single_dir = tempfile::tempdir().unwrap();
    let single = format!(
        "truenas: {{ url: '{}', api_key_file: {}, allow_insecure_transport: true }}\nmetrics: {{ addr: '127.0.0.1:0' }}\n{}",
        sim_a.url(),
        key_a.display(),
        csi_section(single_dir.path(), sim_a.data_dir()),
    );
    let (world, mut controller, _, _) = driver(single_dir, &single).await;
    let old = create(&mut controller, request("old", NFS, None)).await;
    assert_eq!(old.volume_id, "nfs:tank/csi/old");
    assert!(
        old.accessible_topology.is_empty(),
        "one system: no topology"
    );
    drop(world);

    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let config = format!(
        "systems:\n\
         \x20 - {{ name: nas-a, url: '{a}', api_key_file: {ka}, allow_insecure_transport: true }}\n\
         \x20 - {{ name: nas-b, url: '{b}', api_key_file: {kb}, allow_insecure_transport: true, topology: {{ topology.kubernetes.io/zone: z2 }} }}\n\
         default_system: nas-a\n\
         metrics: {{ addr: '127.0.0.1:{metrics_port}' }}\n{csi}\
         \x20 topology: {{ system.tns.csi.io/nas-a: 'true', topology.kubernetes.io/zone: z2 }}\n",
        a = sim_a.url(),
        b = sim_b.url(),
        ka = key_a.display(),
        kb = key_b.display(),
        csi = csi_section(dir.path(), sim_a.data_dir()),
    );
    let (_world, mut controller, mut node, channel) = driver(dir, &config).await;

    // Topology is advertised, and the node reports the systems it reaches.
    let caps = IdentityClient::new(channel)
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        format!("{caps:?}").contains("VolumeAccessibilityConstraints"),
        "{caps:?}"
    );
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let segments = info.accessible_topology.unwrap().segments;
    assert_eq!(
        segments.get("system.tns.csi.io/nas-a").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        segments
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("z2")
    );
    assert_eq!(
        segments.get("topology.tns.csi.io/node").map(String::as_str),
        Some("node-1")
    );

    // By StorageClass: each volume lands on the system it names, and says so in its id and
    // its topology.
    let on_a = create(
        &mut controller,
        request("pinned-a", &[NFS[0], NFS[1], ("system", "nas-a")], None),
    )
    .await;
    assert_eq!(on_a.volume_id, "nas-a:nfs:tank/csi/pinned-a");
    assert_eq!(
        on_a.accessible_topology,
        vec![topology(&[("system.tns.csi.io/nas-a", "true")])]
    );
    let on_b = create(
        &mut controller,
        request("pinned-b", &[NFS[0], NFS[1], ("system", "nas-b")], None),
    )
    .await;
    assert_eq!(on_b.volume_id, "nas-b:nfs:tank/csi/pinned-b");
    assert!(
        sim_a
            .dataset_names()
            .contains(&"tank/csi/pinned-a".to_owned())
    );
    assert!(
        !sim_a
            .dataset_names()
            .contains(&"tank/csi/pinned-b".to_owned())
    );
    assert!(
        sim_b
            .dataset_names()
            .contains(&"tank/csi/pinned-b".to_owned())
    );
    let err = controller
        .create_volume(request(
            "nowhere",
            &[NFS[0], NFS[1], ("system", "nas-c")],
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("configured: nas-a, nas-b"),
        "{err:?}"
    );

    // By topology: the requisite filters, the preferred orders.
    let zone2 = topology(&[
        ("topology.kubernetes.io/zone", "z2"),
        ("topology.tns.csi.io/node", "node-1"),
    ]);
    let reach_a = topology(&[
        ("system.tns.csi.io/nas-a", "true"),
        ("topology.tns.csi.io/node", "node-1"),
    ]);
    let steered = create(
        &mut controller,
        request(
            "steered-b",
            NFS,
            Some(TopologyRequirement {
                requisite: vec![zone2.clone()],
                preferred: vec![zone2.clone()],
            }),
        ),
    )
    .await;
    assert_eq!(steered.volume_id, "nas-b:nfs:tank/csi/steered-b");
    let both = topology(&[
        ("system.tns.csi.io/nas-a", "true"),
        ("topology.kubernetes.io/zone", "z2"),
    ]);
    let preferred_b = create(
        &mut controller,
        request(
            "preferred-b",
            NFS,
            Some(TopologyRequirement {
                requisite: vec![reach_a.clone(), zone2.clone()],
                preferred: vec![zone2.clone(), both],
            }),
        ),
    )
    .await;
    assert_eq!(preferred_b.volume_id, "nas-b:nfs:tank/csi/preferred-b");
    let steered_a = create(
        &mut controller,
        request(
            "steered-a",
            NFS,
            Some(TopologyRequirement {
                requisite: vec![reach_a.clone()],
                preferred: vec![],
            }),
        ),
    )
    .await;
    assert_eq!(steered_a.volume_id, "nas-a:nfs:tank/csi/steered-a");
    // A retry of the same create finds the volume where it is.
    let again = create(&mut controller, request("steered-b", NFS, None)).await;
    assert_eq!(again.volume_id, steered.volume_id);
    let err = controller
        .create_volume(request(
            "unreachable",
            NFS,
            Some(TopologyRequirement {
                requisite: vec![topology(&[("topology.kubernetes.io/zone", "z9")])],
                preferred: vec![],
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Capacity per segment: each system's own pool.
    let capacity = |segment: Topology| GetCapacityRequest {
        parameters: NFS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        accessible_topology: Some(segment),
        ..Default::default()
    };
    let in_a = controller
        .get_capacity(capacity(reach_a.clone()))
        .await
        .unwrap()
        .into_inner();
    let in_b = controller
        .get_capacity(capacity(zone2.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(
        in_a.available_capacity > 40 << 30 && in_a.available_capacity <= 50 << 30,
        "{in_a:?}"
    );
    assert!(
        in_b.available_capacity > 70 << 30 && in_b.available_capacity <= 80 << 30,
        "{in_b:?}"
    );

    // The id of the single-system deployment still resolves, to the default system.
    let got = controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: old.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, "nfs:tank/csi/old");
    let listed: Vec<String> = controller
        .list_volumes(ListVolumesRequest {
            max_entries: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(listed.len(), 2);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = controller
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(
        all,
        [
            "nfs:tank/csi/old",
            "nas-a:nfs:tank/csi/pinned-a",
            "nas-a:nfs:tank/csi/steered-a",
            "nas-b:nfs:tank/csi/pinned-b",
            "nas-b:nfs:tank/csi/preferred-b",
            "nas-b:nfs:tank/csi/steered-b",
        ]
    );

    // Snapshots of a volume on B live on B, with ids that name it.
    let snapshot = controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: on_b.volume_id.clone(),
            name: "snap-b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(snapshot.snapshot_id, "nas-b:nfs:tank/csi/pinned-b@snap-b");

    // B goes down: A keeps serving, B's calls fail as retryable, /readyz and the metrics
    // name B while the driver stays ready.
    sim_b.stop().await;
    let (status, body) = wait_for_readyz(metrics_port, "degraded truenas/nas-b").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("tns_csi_truenas_connected{system=\"nas-b\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tns_csi_truenas_connected{system=\"nas-a\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        metrics
            .matches("# TYPE tns_csi_truenas_connected gauge")
            .count(),
        1,
        "one family for every system: {metrics}"
    );
    let fresh = create(&mut controller, request("while-b-is-down", NFS, None)).await;
    assert_eq!(fresh.volume_id, "nas-a:nfs:tank/csi/while-b-is-down");
    controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: on_a.volume_id.clone(),
        })
        .await
        .unwrap();
    let err = controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: on_b.volume_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let err = controller
        .create_volume(request(
            "pinned-b-2",
            &[NFS[0], NFS[1], ("system", "nas-b")],
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    for id in [&on_a.volume_id, &old.volume_id, &fresh.volume_id] {
        controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert!(!sim_a.dataset_names().contains(&"tank/csi/old".to_owned()));
}

/// Polls `/readyz` until its body contains `wanted` (the probe result is cached briefly).
async fn wait_for_readyz(port: u16, wanted: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(port, "/readyz");
        if body.contains(wanted) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
