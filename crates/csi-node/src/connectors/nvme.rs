//! NVMe-oF/TCP namespaces connected with nvme-cli.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_api::{Export, Protocol};

use super::{
    AttachRequest, Attached, Connector, Detach, rescan_device, strings, wait_for, wrong_export,
};
use crate::NodeError;
use crate::runner::{Runner, check};

/// NVMe-oF/TCP: `nvme connect` with the host NQN the controller allowed, then the namespace's
/// device found through sysfs by subsystem NQN and namespace id (never by guessed names).
pub struct NvmeConnector {
    /// Runs nvme.
    pub runner: Arc<dyn Runner>,
    /// `/sys` (a fake tree in tests).
    pub sysfs: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
    /// How long to wait for the namespace's device.
    pub device_wait: Duration,
    /// Limit per host command.
    pub timeout: Duration,
}

impl NvmeConnector {
    /// The subsystem directories whose NQN is `nqn`.
    fn subsystems(&self, nqn: &str) -> Vec<PathBuf> {
        let root = self.sysfs.join("class/nvme-subsystem");
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|dir| {
                std::fs::read_to_string(dir.join("subsysnqn")).is_ok_and(|n| n.trim() == nqn)
            })
            .collect()
    }

    /// The block device of namespace `nsid` of subsystem `nqn`.
    pub fn find_device(&self, nqn: &str, nsid: &str) -> Option<PathBuf> {
        for subsystem in self.subsystems(nqn) {
            for entry in std::fs::read_dir(&subsystem)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_namespace =
                    name.starts_with("nvme") && name.contains('n') && name[4..].contains('n');
                if is_namespace
                    && std::fs::read_to_string(entry.path().join("nsid"))
                        .is_ok_and(|n| n.trim() == nsid)
                {
                    return Some(self.dev.join(name));
                }
            }
        }
        None
    }
}

#[tonic::async_trait]
impl Connector for NvmeConnector {
    async fn attach(&self, r: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError> {
        let context = r.volume_context()?;
        let Export::Nvmeof {
            port, nqn, nsid, ..
        } = &context.export
        else {
            return Err(wrong_export(r, &context, Protocol::Nvmeof));
        };
        let (server, nqn, nsid) = (context.server.as_str(), nqn.as_str(), nsid.as_str());
        if self.subsystems(nqn).is_empty() {
            let mut argv = strings([
                "connect",
                "-t",
                "tcp",
                "-a",
                server,
                "-s",
                port.as_str(),
                "-n",
                nqn,
            ]);
            if let Some(hostnqn) = r.publish.get(csi_api::publish::HOST_NQN) {
                argv.extend(strings(["--hostnqn", hostnqn.as_str()]));
            }
            check(self.runner.as_ref(), "nvme", &argv, self.timeout).await?;
        }
        let detach = Detach::Nvmeof {
            device: None,
            nqn: Some(nqn.to_owned()),
        };
        let found = wait_for(
            &format!("namespace {nsid} of {nqn}"),
            self.device_wait,
            || self.find_device(nqn, nsid),
        )
        .await;
        let device = match found {
            Ok(device) => device,
            Err(err) => {
                let _ = self.detach(&detach, false).await; // leave no half-made connection
                return Err(err);
            }
        };
        let detach = Detach::Nvmeof {
            device: Some(device.clone()),
            nqn: Some(nqn.to_owned()),
        };
        Ok((Attached::Device(device), detach))
    }

    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError> {
        let Detach::Nvmeof { nqn: Some(nqn), .. } = detach else {
            return Ok(());
        };
        if shared || self.subsystems(nqn).is_empty() {
            return Ok(());
        }
        check(
            self.runner.as_ref(),
            "nvme",
            &strings(["disconnect", "-n", nqn.as_str()]),
            self.timeout,
        )
        .await
        .map(drop)
    }

    async fn rescan(&self, detach: &Detach, timeout: Duration) -> Result<(), NodeError> {
        rescan_device(self.runner.as_ref(), detach, "nvme", "ns-rescan", timeout).await
    }
}
