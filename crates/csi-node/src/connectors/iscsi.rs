//! iSCSI LUNs logged in with iscsiadm.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_api::{Export, Protocol};

use super::{AttachRequest, Attached, Connector, Detach, strings, wait_for, wrong_export};
use crate::NodeError;
use crate::runner::{Runner, check};

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
        let context = r.volume_context()?;
        let Export::Iscsi { port, iqn, lun, .. } = &context.export else {
            return Err(wrong_export(r, &context, Protocol::Iscsi));
        };
        let (server, iqn) = (&context.server, iqn.as_str());
        let portal = format!("{server}:{port}");
        let runner = self.runner.as_ref();
        let mut iface = Vec::new();
        if let Some(initiator) = r.publish.get(csi_api::publish::INITIATOR_IQN) {
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
        let detach = Detach::Iscsi {
            device: None,
            iqn: Some(iqn.to_owned()),
            portal: Some(portal.clone()),
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
        let detach = Detach::Iscsi {
            device: Some(device.clone()),
            iqn: Some(iqn.to_owned()),
            portal: Some(portal),
        };
        Ok((Attached::Device(device), detach))
    }

    async fn detach(&self, detach: &Detach, shared: bool) -> Result<(), NodeError> {
        let Detach::Iscsi {
            iqn: Some(iqn),
            portal: Some(portal),
            ..
        } = detach
        else {
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
    async fn rescan(&self, detach: &Detach, timeout: Duration) -> Result<(), NodeError> {
        let Detach::Iscsi {
            iqn: Some(iqn),
            portal: Some(portal),
            ..
        } = detach
        else {
            return Ok(());
        };
        check(
            self.runner.as_ref(),
            "iscsiadm",
            &strings([
                "-m",
                "node",
                "-T",
                iqn.as_str(),
                "-p",
                portal.as_str(),
                "-R",
            ]),
            timeout,
        )
        .await
        .map(drop)
    }
}
