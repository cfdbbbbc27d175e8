//! The simulated host: bind mounts and loop devices of the simulator's files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{AttachRequest, Attached, Connector, Detach, need, rescan_device, strings};
use crate::NodeError;
use crate::mounts;
use crate::runner::{Runner, check};
use csi_api::{Protocol, context};

/// The simulated host: a "mount" of a share is a bind mount of the simulator's dataset
/// directory; a "connect" of a zvol attaches its backing file as a loop device.
pub struct SimulatedConnector {
    /// Runs mount and losetup (real commands).
    pub runner: Arc<dyn Runner>,
    /// The simulator's `--data-dir`.
    pub data_dir: PathBuf,
    /// Limit per host command.
    pub timeout: Duration,
}

#[tonic::async_trait]
impl Connector for SimulatedConnector {
    async fn attach(&self, r: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError> {
        // The simulator's files need only the protocol and the dataset.
        let protocol: Protocol = need(r.context, context::keys::PROTOCOL, "volume context")?
            .parse()
            .map_err(|err| NodeError::Invalid(format!("volume context: {err}")))?;
        let dataset = need(r.context, context::keys::DATASET, "volume context")?;
        if dataset
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(NodeError::Invalid(format!(
                "volume context `dataset` {dataset} is not a dataset name"
            )));
        }
        if protocol.is_block() {
            let file = self.data_dir.join("zvol").join(dataset);
            if !file.is_file() {
                return Err(NodeError::NotFound(format!(
                    "volume {}: the simulator has no zvol {dataset}",
                    r.volume_id
                )));
            }
            let out = check(
                self.runner.as_ref(),
                "losetup",
                &strings([
                    "-f".to_owned(),
                    "--show".to_owned(),
                    file.display().to_string(),
                ]),
                self.timeout,
            )
            .await?;
            let device = PathBuf::from(out.stdout.trim());
            let detach = Detach::block(protocol, device.clone());
            Ok((Attached::Device(device), detach))
        } else {
            let dir = self.data_dir.join("mnt").join(dataset);
            if !dir.is_dir() {
                return Err(NodeError::NotFound(format!(
                    "volume {}: the simulator has no dataset {dataset}",
                    r.volume_id
                )));
            }
            mounts::bind(self.runner.as_ref(), self.timeout, &dir, r.staging, false).await?;
            Ok((Attached::Mounted, Detach::mounted(protocol)))
        }
    }

    async fn detach(&self, detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        if let Some(device) = detach.device() {
            let out = self
                .runner
                .run(
                    "losetup",
                    &strings(["-d".to_owned(), device.display().to_string()]),
                    self.timeout,
                )
                .await?;
            if out.status != 0 && !out.stderr.contains("No such device") {
                return Err(NodeError::Command {
                    command: format!("losetup -d {}", device.display()),
                    status: out.status,
                    stderr: out.stderr.trim().to_owned(),
                });
            }
        }
        Ok(())
    }

    async fn rescan(&self, detach: &Detach, timeout: Duration) -> Result<(), NodeError> {
        rescan_device(self.runner.as_ref(), detach, "losetup", "-c", timeout).await
    }
}
