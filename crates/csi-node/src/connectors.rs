//! Protocol connectors behind one small trait: each makes a volume reachable on this node (a
//! share mounted at the staging path, or a block device) and undoes it. The simulated one does
//! the same with bind mounts of the simulator's dataset directories and loop devices of its
//! zvol files, so all node code above it runs unchanged in tests and the demo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi_api::{Protocol, context, publish};
use serde::{Deserialize, Serialize};

use crate::NodeError;
use crate::mounts;
use crate::runner::{Runner, check};

/// What NodeStageVolume asks a connector for.
#[derive(Debug)]
pub struct AttachRequest<'a> {
    /// The CSI volume id.
    pub volume_id: &'a str,
    /// Volume context from CreateVolume.
    pub context: &'a HashMap<String, String>,
    /// Publish context from ControllerPublishVolume.
    pub publish: &'a HashMap<String, String>,
    /// Node-stage secrets (SMB user/password).
    pub secrets: &'a HashMap<String, String>,
    /// Where a share is mounted.
    pub staging: &'a Path,
    /// Mount options from the StorageClass.
    pub mount_flags: &'a [String],
}

/// What attaching produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// The share is mounted at the staging path.
    Mounted,
    /// The volume is this block device.
    Device(PathBuf),
}

/// What the node remembers about a staged volume, to undo it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detach {
    /// The protocol.
    pub protocol: String,
    /// The block device, for block protocols.
    pub device: Option<PathBuf>,
    /// NVMe-oF subsystem NQN.
    pub nqn: Option<String>,
    /// iSCSI target IQN.
    pub iqn: Option<String>,
    /// iSCSI portal `server:port`.
    pub portal: Option<String>,
}

/// One protocol's attach and detach.
#[tonic::async_trait]
pub trait Connector: Send + Sync {
    /// Mounts the share at the staging path, or attaches and returns the block device.
    async fn attach(&self, request: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError>;
    /// Undoes `attach` (the staging mount is already gone). `shared` says another staged
    /// volume still uses the same target, so the connection must stay.
    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError>;
}

fn need<'a>(map: &'a HashMap<String, String>, key: &str, what: &str) -> Result<&'a str, NodeError> {
    map.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            NodeError::Invalid(format!(
                "{what} `{key}` is missing; was the volume created by tns-csi?"
            ))
        })
}

fn strings<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

fn with_default(flags: &[String], default: &str) -> Vec<String> {
    let mut options: Vec<String> = flags.to_vec();
    let key = default.split('=').next().unwrap_or(default);
    if !options
        .iter()
        .any(|o| o.split('=').next() == Some(key) || (key == "vers" && o.starts_with("nfsvers")))
    {
        options.insert(0, default.to_owned());
    }
    options
}

/// Waits for `check` to find the device, polling.
async fn wait_for<F: Fn() -> Option<PathBuf>>(
    what: &str,
    timeout: Duration,
    find: F,
) -> Result<PathBuf, NodeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = find() {
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(NodeError::NotFound(format!(
                "{what} did not appear within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// NFS: `mount -t nfs -o vers=4.2,… server:/mnt/<dataset> <staging>`.
pub struct NfsConnector {
    /// Runs mount.
    pub runner: Arc<dyn Runner>,
    /// Limit per host command.
    pub timeout: Duration,
}

#[tonic::async_trait]
impl Connector for NfsConnector {
    async fn attach(&self, r: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError> {
        let server = need(r.context, context::SERVER, "volume context")?;
        let path = need(r.context, context::SHARE_PATH, "volume context")?;
        let options = with_default(r.mount_flags, "vers=4.2");
        mounts::mount(
            self.runner.as_ref(),
            self.timeout,
            Some("nfs"),
            &format!("{server}:{path}"),
            r.staging,
            &options,
        )
        .await?;
        Ok((
            Attached::Mounted,
            Detach {
                protocol: "nfs".into(),
                device: None,
                nqn: None,
                iqn: None,
                portal: None,
            },
        ))
    }

    async fn detach(&self, _detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        Ok(())
    }
}

/// SMB: `mount -t cifs //server/share <staging> -o credentials=<0600 file>,vers=3.0,…`; the
/// credentials file lives in a private directory only for the length of the mount call.
pub struct SmbConnector {
    /// Runs mount.
    pub runner: Arc<dyn Runner>,
    /// Private directory for the short-lived credentials file.
    pub private_dir: PathBuf,
    /// Limit per host command.
    pub timeout: Duration,
}

#[tonic::async_trait]
impl Connector for SmbConnector {
    async fn attach(&self, r: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let server = need(r.context, context::SERVER, "volume context")?;
        let share = need(r.context, context::SHARE_NAME, "volume context")?;
        let username = need(r.secrets, "username", "node-stage secret")?;
        let password = need(r.secrets, "password", "node-stage secret")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.private_dir)
            .map_err(NodeError::io("creating the private credentials directory"))?;
        let dir = tempfile::Builder::new()
            .prefix("smb-")
            .tempdir_in(&self.private_dir)
            .map_err(NodeError::io("creating a credentials directory"))?;
        let file = dir.path().join("credentials");
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(NodeError::io("writing the SMB credentials file"))?;
            let mut text = format!("username={username}\npassword={password}\n");
            if let Some(domain) = r.secrets.get("domain") {
                text.push_str(&format!("domain={domain}\n"));
            }
            f.write_all(text.as_bytes())
                .map_err(NodeError::io("writing the SMB credentials file"))?;
        }
        let mut options = vec![format!("credentials={}", file.display())];
        options.extend(with_default(r.mount_flags, "vers=3.0"));
        let result = mounts::mount(
            self.runner.as_ref(),
            self.timeout,
            Some("cifs"),
            &format!("//{server}/{share}"),
            r.staging,
            &options,
        )
        .await;
        drop(dir); // the password file is gone whether the mount worked or not
        result?;
        Ok((
            Attached::Mounted,
            Detach {
                protocol: "smb".into(),
                device: None,
                nqn: None,
                iqn: None,
                portal: None,
            },
        ))
    }

    async fn detach(&self, _detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        Ok(())
    }
}

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
        let server = need(r.context, context::SERVER, "volume context")?;
        let port = need(r.context, context::PORT, "volume context")?;
        let nqn = need(r.context, context::NQN, "volume context")?;
        let nsid = need(r.context, context::NSID, "volume context")?;
        if self.subsystems(nqn).is_empty() {
            let mut argv = strings(["connect", "-t", "tcp", "-a", server, "-s", port, "-n", nqn]);
            if let Some(hostnqn) = r.publish.get(publish::HOST_NQN) {
                argv.extend(strings(["--hostnqn", hostnqn.as_str()]));
            }
            check(self.runner.as_ref(), "nvme", &argv, self.timeout).await?;
        }
        let detach = Detach {
            protocol: "nvmeof".into(),
            device: None,
            nqn: Some(nqn.to_owned()),
            iqn: None,
            portal: None,
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
        let detach = Detach {
            device: Some(device.clone()),
            ..detach
        };
        Ok((Attached::Device(device), detach))
    }

    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError> {
        let Some(nqn) = &detach.nqn else {
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
}

/// iSCSI: discovery and login with iscsiadm through an interface carrying the initiator name
/// the controller allowed; the device from `/dev/disk/by-path`; logout on detach.
pub struct IscsiConnector {
    /// Runs iscsiadm.
    pub runner: Arc<dyn Runner>,
    /// `/dev`.
    pub dev: PathBuf,
    /// How long to wait for the LUN's device.
    pub device_wait: Duration,
    /// Limit per host command.
    pub timeout: Duration,
}

const ISCSI_IFACE: &str = "tns-csi";

#[tonic::async_trait]
impl Connector for IscsiConnector {
    async fn attach(&self, r: &AttachRequest<'_>) -> Result<(Attached, Detach), NodeError> {
        let server = need(r.context, context::SERVER, "volume context")?;
        let port = need(r.context, context::PORT, "volume context")?;
        let iqn = need(r.context, context::IQN, "volume context")?;
        let lun = need(r.context, context::LUN, "volume context")?;
        let portal = format!("{server}:{port}");
        let runner = self.runner.as_ref();
        let mut iface = Vec::new();
        if let Some(initiator) = r.publish.get(publish::INITIATOR_IQN) {
            // An interface that carries the initiator name the target's group allows.
            let _ = runner
                .run(
                    "iscsiadm",
                    &strings(["-m", "iface", "-I", ISCSI_IFACE, "-o", "new"]),
                    self.timeout,
                )
                .await?;
            check(
                runner,
                "iscsiadm",
                &strings([
                    "-m",
                    "iface",
                    "-I",
                    ISCSI_IFACE,
                    "-o",
                    "update",
                    "-n",
                    "iface.initiatorname",
                    "-v",
                    initiator.as_str(),
                ]),
                self.timeout,
            )
            .await?;
            iface = strings(["-I", ISCSI_IFACE]);
        }
        let mut discover = strings([
            "-m",
            "discovery",
            "-t",
            "sendtargets",
            "-p",
            portal.as_str(),
        ]);
        discover.extend(iface.iter().cloned());
        check(runner, "iscsiadm", &discover, self.timeout).await?;
        let mut login = strings(["-m", "node", "-T", iqn, "-p", portal.as_str()]);
        login.extend(iface.iter().cloned());
        login.push("--login".into());
        let out = runner.run("iscsiadm", &login, self.timeout).await?;
        // 15: already logged in (a retry), which is fine.
        if out.status != 0 && out.status != 15 {
            return Err(NodeError::Command {
                command: format!("iscsiadm {}", login.join(" ")),
                status: out.status,
                stderr: out.stderr.trim().to_owned(),
            });
        }
        let by_path = self
            .dev
            .join(format!("disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"));
        let detach = Detach {
            protocol: "iscsi".into(),
            device: None,
            nqn: None,
            iqn: Some(iqn.to_owned()),
            portal: Some(portal),
        };
        let found = wait_for(&format!("LUN {lun} of {iqn}"), self.device_wait, || {
            by_path
                .exists()
                .then(|| by_path.canonicalize().unwrap_or_else(|_| by_path.clone()))
        })
        .await;
        let device = match found {
            Ok(device) => device,
            Err(err) => {
                let _ = self.detach(&detach, false).await; // log out again
                return Err(err);
            }
        };
        let detach = Detach {
            device: Some(device.clone()),
            ..detach
        };
        Ok((Attached::Device(device), detach))
    }

    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError> {
        let (Some(iqn), Some(portal)) = (&detach.iqn, &detach.portal) else {
            return Ok(());
        };
        if shared {
            return Ok(());
        }
        let out = self
            .runner
            .run(
                "iscsiadm",
                &strings([
                    "-m",
                    "node",
                    "-T",
                    iqn.as_str(),
                    "-p",
                    portal.as_str(),
                    "--logout",
                ]),
                self.timeout,
            )
            .await?;
        // 21: no session (already logged out).
        if out.status != 0 && out.status != 21 {
            return Err(NodeError::Command {
                command: format!("iscsiadm -m node -T {iqn} -p {portal} --logout"),
                status: out.status,
                stderr: out.stderr.trim().to_owned(),
            });
        }
        Ok(())
    }
}

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
        let protocol: Protocol = need(r.context, context::PROTOCOL, "volume context")?
            .parse()
            .map_err(|err| NodeError::Invalid(format!("volume context: {err}")))?;
        let dataset = need(r.context, context::DATASET, "volume context")?;
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
            let detach = Detach {
                protocol: protocol.to_string(),
                device: Some(device.clone()),
                nqn: None,
                iqn: None,
                portal: None,
            };
            Ok((Attached::Device(device), detach))
        } else {
            let dir = self.data_dir.join("mnt").join(dataset);
            mounts::bind(self.runner.as_ref(), self.timeout, &dir, r.staging, false).await?;
            Ok((
                Attached::Mounted,
                Detach {
                    protocol: protocol.to_string(),
                    device: None,
                    nqn: None,
                    iqn: None,
                    portal: None,
                },
            ))
        }
    }

    async fn detach(&self, detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        if let Some(device) = &detach.device {
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
}
