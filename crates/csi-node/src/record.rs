//! The node-local record of what each staged volume attached and where it was published, so
//! unstage and unpublish undo exactly that and touch nothing else (one JSON file per volume
//! under the state directory, written by temp + rename).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::connectors::Detach;
use crate::mounts::MountEntry;
use crate::{NodeError, NodeService};

/// The longest volume id whose record is named by its hex (ids are 128 bytes at most in
/// practice; longer ones are named by a hash, so the name stays under NAME_MAX).
const HEX_NAMED_ID: usize = 100;

/// Which filesystem subtree a mount shows: what makes a mount at a path ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MountId {
    /// `major:minor` of the filesystem.
    pub(crate) device: String,
    /// The subtree mounted.
    pub(crate) root: String,
}

impl MountId {
    /// The identity of `entry`.
    pub(crate) fn of(entry: &MountEntry) -> Self {
        Self {
            device: entry.device.clone(),
            root: entry.root.clone(),
        }
    }

    /// Whether `entry` shows this subtree.
    pub(crate) fn matches(&self, entry: &MountEntry) -> bool {
        entry.device == self.device && entry.root == self.root
    }
}

/// One target path a staged volume is published at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    /// The pod's target path.
    pub(crate) target: PathBuf,
    /// Published as SINGLE_NODE_SINGLE_WRITER: no other target may exist beside it.
    pub(crate) single_writer: bool,
}

/// What the node remembers about a staged volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Staged {
    pub(crate) volume_id: String,
    pub(crate) staging: PathBuf,
    pub(crate) detach: Detach,
    pub(crate) raw_block: bool,
    pub(crate) fs_type: Option<String>,
    /// The staging mount once it is made (records from before this field have none).
    #[serde(default)]
    pub(crate) mount: Option<MountId>,
    /// Where the volume is published.
    #[serde(default)]
    pub(crate) published: Vec<Published>,
}

impl Staged {
    /// Where the staged filesystem (or, raw block, the device bind) is mounted.
    pub(crate) fn staged_at(&self) -> PathBuf {
        if self.raw_block {
            self.staging.join("block")
        } else {
            self.staging.clone()
        }
    }

    /// Whether `entry` (a mount at `staged_at`, or a bind of it at a target) is this volume's:
    /// the recorded identity when there is one, else the current staging mount's.
    pub(crate) fn owns(&self, entry: &MountEntry) -> Result<bool, NodeError> {
        if let Some(id) = &self.mount {
            return Ok(id.matches(entry));
        }
        Ok(crate::mounts::at(&self.staged_at())?.is_some_and(|staged| staged.same_source(entry)))
    }

    /// Whether `path` is the staging path or a published target of this volume.
    pub(crate) fn has_path(&self, path: &Path) -> bool {
        self.staging == path || self.published.iter().any(|p| p.target == path)
    }
}

impl NodeService {
    pub(crate) fn state_file(&self, volume_id: &str) -> PathBuf {
        let name: String = if volume_id.len() <= HEX_NAMED_ID {
            volume_id.bytes().map(|b| format!("{b:02x}")).collect()
        } else {
            let digest = Sha256::digest(volume_id.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            format!("h-{hex}")
        };
        self.settings
            .state_dir
            .join("staged")
            .join(format!("{name}.json"))
    }

    pub(crate) fn read_state(&self, volume_id: &str) -> Result<Option<Staged>, NodeError> {
        match std::fs::read(self.state_file(volume_id)) {
            Ok(bytes) => Ok(serde_json::from_slice::<Staged>(&bytes)
                .ok()
                .filter(|s| s.volume_id == volume_id)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(NodeError::io("reading the node state")(err)),
        }
    }

    pub(crate) fn write_state(&self, staged: &Staged) -> Result<(), NodeError> {
        let path = self.state_file(&staged.volume_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(NodeError::io("creating the node state directory"))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(staged).unwrap_or_default())
            .map_err(NodeError::io("writing the node state"))?;
        std::fs::rename(tmp, path).map_err(NodeError::io("writing the node state"))
    }

    pub(crate) fn remove_state(&self, volume_id: &str) -> Result<(), NodeError> {
        match std::fs::remove_file(self.state_file(volume_id)) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(NodeError::io("removing the node state")(err)),
        }
    }

    pub(crate) fn all_states(&self) -> Vec<Staged> {
        std::fs::read_dir(self.settings.state_dir.join("staged"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }
}
