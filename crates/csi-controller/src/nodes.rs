//! Which nodes exist: ControllerPublishVolume writes an access entry only for a node the
//! cluster has (CSI: an unknown node is NOT_FOUND). The binary supplies the directory: the
//! CSINode objects in a cluster, a configured list outside one.

use std::collections::BTreeSet;

/// Answers whether a node id is a node of this cluster running our node plugin.
#[tonic::async_trait]
pub trait NodeDirectory: Send + Sync {
    /// Whether `node_id` is known; `Err` says why the directory could not be asked.
    async fn contains(&self, node_id: &str) -> Result<bool, String>;

    /// What to tell the CO about an unknown node (where the directory looks).
    fn describe(&self) -> String;
}

/// A fixed list of node ids (outside a cluster, and in tests).
#[derive(Debug, Clone, Default)]
pub struct StaticNodes(BTreeSet<String>);

impl StaticNodes {
    /// The nodes in `ids`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Self(ids.into_iter().map(Into::into).collect())
    }
}

#[tonic::async_trait]
impl NodeDirectory for StaticNodes {
    async fn contains(&self, node_id: &str) -> Result<bool, String> {
        Ok(self.0.contains(node_id))
    }

    fn describe(&self) -> String {
        if self.0.is_empty() {
            "no nodes are configured (set csi.known_nodes, or run in a cluster)".into()
        } else {
            format!(
                "the configured nodes are {}",
                self.0.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }
}
