//! NFS shares mounted at the staging path.

use std::sync::Arc;
use std::time::Duration;

use csi_api::{Export, Protocol};

use super::{AttachRequest, Attached, Connector, Detach, with_default, wrong_export};
use crate::NodeError;
use crate::mounts;
use crate::runner::Runner;

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
        let context = r.volume_context()?;
        let Export::Nfs { share_path: path } = &context.export else {
            return Err(wrong_export(r, &context, Protocol::Nfs));
        };
        let server = &context.server;
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
        Ok((Attached::Mounted, Detach::Nfs {}))
    }

    async fn detach(&self, _detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        Ok(())
    }
}
