//! The node-local record of what each staged volume attached, so unstage undoes exactly that
//! (one JSON file per volume under the state directory, written by temp + rename).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connectors::Detach;
use crate::{NodeError, NodeService};

/// What the node remembers about a staged volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Staged {
    pub(crate) volume_id: String,
    pub(crate) staging: PathBuf,
    pub(crate) detach: Detach,
    pub(crate) raw_block: bool,
    pub(crate) fs_type: Option<String>,
}

impl NodeService {
    pub(crate) fn state_file(&self, volume_id: &str) -> PathBuf {
        let name: String = volume_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.settings
            .state_dir
            .join("staged")
            .join(format!("{name}.json"))
    }

    pub(crate) fn read_state(&self, volume_id: &str) -> Result<Option<Staged>, NodeError> {
        match std::fs::read(self.state_file(volume_id)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
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

    pub(crate) fn all_states(&self) -> Vec<Staged> {
        std::fs::read_dir(self.settings.state_dir.join("staged"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }
}
