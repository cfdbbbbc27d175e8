//! SMB shares mounted with a short-lived credentials file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use csi_api::{Export, Protocol};

use super::{AttachRequest, Attached, Connector, Detach, need, with_default, wrong_export};
use crate::NodeError;
use crate::mounts;
use crate::runner::Runner;

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
        let context = r.volume_context()?;
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let Export::Smb { share_name: share } = &context.export else {
            return Err(wrong_export(r, &context, Protocol::Smb));
        };
        let server = &context.server;
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
        Ok((Attached::Mounted, Detach::Smb {}))
    }

    async fn detach(&self, _detach: &Detach, _shared: bool) -> Result<(), NodeError> {
        Ok(())
    }
}
