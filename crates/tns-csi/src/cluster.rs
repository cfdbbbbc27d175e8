//! The cluster's nodes, for ControllerPublishVolume: the CSINode objects that list our driver
//! (node-driver-registrar writes them), through kube-rs. Answers are cached for a short while
//! so a burst of publishes costs one LIST.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use csi_controller::NodeDirectory;
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::{Api, ListParams};

/// How long a listing of CSINodes is trusted; a node that just registered is looked up again.
const FRESH: Duration = Duration::from_secs(30);

/// Node ids from the CSINode objects that list `tns.csi.io`.
pub(crate) struct KubernetesNodes {
    api: Api<CSINode>,
    cache: Mutex<Option<(Instant, BTreeSet<String>)>>,
}

impl KubernetesNodes {
    /// Asks the API server behind `client` (in a pod: its service account).
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
            cache: Mutex::default(),
        }
    }

    async fn list(&self) -> Result<BTreeSet<String>, String> {
        let nodes = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|err| format!("listing CSINode objects: {err}"))?;
        Ok(nodes
            .items
            .iter()
            .flat_map(|node| node.spec.drivers.iter())
            .filter(|driver| driver.name == csi_api::DRIVER_NAME)
            .map(|driver| driver.node_id.clone())
            .collect())
    }
}

#[tonic::async_trait]
impl NodeDirectory for KubernetesNodes {
    async fn contains(&self, node_id: &str) -> Result<bool, String> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, ids)| ids.contains(node_id));
        if cached == Some(true) {
            return Ok(true);
        }
        // Unknown in the cache (or no cache): ask again, a node may have just registered.
        let ids = self.list().await?;
        let known = ids.contains(node_id);
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ids));
        Ok(known)
    }

    fn describe(&self) -> String {
        format!(
            "no CSINode object lists driver {} with that node id",
            csi_api::DRIVER_NAME
        )
    }
}

/// This node's labels whose key starts with one of `prefixes`: which TrueNAS systems it
/// reaches, for NodeGetInfo's topology.
pub(crate) async fn node_labels(
    client: kube::Client,
    node: &str,
    prefixes: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let found = api
        .get(node)
        .await
        .map_err(|err| anyhow::anyhow!("reading the labels of node {node}: {err}"))?;
    Ok(found
        .metadata
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(key, _)| prefixes.iter().any(|p| key.starts_with(p.as_str())))
        .collect())
}

/// The cluster's PersistentVolumes and VolumeSnapshotContents of our driver, for the orphan
/// reconciler. VolumeSnapshotContent is a CRD (external-snapshotter), read untyped.
pub(crate) struct KubernetesRecords {
    client: kube::Client,
}

impl KubernetesRecords {
    /// Asks the API server behind `client`.
    pub(crate) fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

#[tonic::async_trait]
impl csi_controller::ClusterRecords for KubernetesRecords {
    async fn volume_handles(&self) -> Result<Vec<String>, String> {
        let api: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(self.client.clone());
        let volumes = api
            .list(&ListParams::default())
            .await
            .map_err(|err| format!("listing PersistentVolumes: {err}"))?;
        Ok(volumes
            .items
            .into_iter()
            .filter_map(|pv| pv.spec?.csi)
            .filter(|csi| csi.driver == csi_api::DRIVER_NAME)
            .map(|csi| csi.volume_handle)
            .collect())
    }

    async fn snapshot_handles(&self) -> Result<Option<Vec<String>>, String> {
        let resource = kube::api::ApiResource {
            group: "snapshot.storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "snapshot.storage.k8s.io/v1".into(),
            kind: "VolumeSnapshotContent".into(),
            plural: "volumesnapshotcontents".into(),
        };
        let api: Api<kube::api::DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let contents = match api.list(&ListParams::default()).await {
            Ok(contents) => contents,
            // No snapshot CRDs installed: there are no VolumeSnapshotContents to judge by.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(err) => return Err(format!("listing VolumeSnapshotContents: {err}")),
        };
        let handle = |content: &kube::api::DynamicObject| -> Option<String> {
            let data = &content.data;
            if data["spec"]["driver"].as_str()? != csi_api::DRIVER_NAME {
                return None;
            }
            // Dynamic provisioning records the handle in status; a pre-provisioned content
            // names it in spec.source.
            data["status"]["snapshotHandle"]
                .as_str()
                .or_else(|| data["spec"]["source"]["snapshotHandle"].as_str())
                .map(str::to_owned)
        };
        Ok(Some(contents.items.iter().filter_map(handle).collect()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A Kubernetes API server that answers the CSINode list and a Node get the way
    /// kube-apiserver does.
    async fn api_server(lists: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new()
            .route(
                "/api/v1/nodes/worker-1",
                axum::routing::get(|| async {
                    let body = serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {"name": "worker-1", "labels": {
                            "system.tns.csi.io/nas-a": "true",
                            "system.tns.csi.io/nas-b": "true",
                            "kubernetes.io/hostname": "worker-1",
                            "topology.kubernetes.io/zone": "z1"
                        }}
                    });
                    ([("content-type", "application/json")], body.to_string())
                }),
            )
            .route(
            "/apis/storage.k8s.io/v1/csinodes",
            axum::routing::get(move || {
                let lists = lists.clone();
                async move {
                    lists.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({
                        "apiVersion": "storage.k8s.io/v1",
                        "kind": "CSINodeList",
                        "metadata": {"resourceVersion": "7"},
                        "items": [
                            {"metadata": {"name": "worker-1"}, "spec": {"drivers": [
                                {"name": "tns.csi.io", "nodeID": "worker-1", "topologyKeys": null},
                                {"name": "other.csi.io", "nodeID": "elsewhere"}
                            ]}},
                            {"metadata": {"name": "worker-2"}, "spec": {"drivers": [
                                {"name": "other.csi.io", "nodeID": "worker-2"}
                            ]}}
                        ]
                    });
                    ([("content-type", "application/json")], body.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_nodes_whose_csinode_lists_our_driver_are_known() {
        let lists = Arc::new(AtomicUsize::new(0));
        let url = api_server(lists.clone()).await;
        let config = kube::Config::new(url.parse().unwrap());
        let nodes = KubernetesNodes::new(kube::Client::try_from(config).unwrap());
        assert!(nodes.contains("worker-1").await.unwrap());
        assert!(nodes.contains("worker-1").await.unwrap());
        assert_eq!(lists.load(Ordering::SeqCst), 1, "a known node is cached");
        assert!(!nodes.contains("worker-2").await.unwrap(), "not our driver");
        assert!(!nodes.contains("elsewhere").await.unwrap());
        assert!(
            lists.load(Ordering::SeqCst) >= 2,
            "unknown ids are looked up again"
        );
        // An API server that is not there: a clear error, not a yes.
        let gone = KubernetesNodes::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let err = gone.contains("worker-1").await.unwrap_err();
        assert!(err.starts_with("listing CSINode objects"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_topology_comes_from_labels_under_the_prefixes() {
        let url = api_server(Arc::new(AtomicUsize::new(0))).await;
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let labels = node_labels(
            client.clone(),
            "worker-1",
            &[
                "system.tns.csi.io/".to_owned(),
                "topology.kubernetes.io/zone".to_owned(),
            ],
        )
        .await
        .unwrap();
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "system.tns.csi.io/nas-a",
                "system.tns.csi.io/nas-b",
                "topology.kubernetes.io/zone"
            ]
        );
        let err = node_labels(client, "worker-9", &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("reading the labels of node worker-9"),
            "{err}"
        );
    }
}
