//! SMB: one share per volume, named after it, refused if that name serves another path.

use csi_api::Export;
use truenas::Client;
use truenas::api::NewSmbShare;

use crate::error::{ControllerError, tn};
use crate::exports::{Exported, Exporter, Names};
use crate::volumes::{ManagedVolume, Plan};
use crate::{names, props};

/// SMB shares.
pub(crate) struct Smb;

impl Exporter for Smb {
    async fn ensure(&self, client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError> {
        let (params, dataset) = (plan.params, &plan.dataset);
        let name = &names::smb_share(&plan.volume_name);
        let path = format!("/mnt/{dataset}");
        let share = match client
            .smb()
            .by_name(name)
            .await
            .map_err(tn("looking up the SMB share"))?
        {
            Some(share) if share.path == path => share,
            Some(share) => {
                return Err(ControllerError::already_exists(format!(
                    "an SMB share named {name} already serves {}, not this volume",
                    share.path
                )));
            }
            None => client
                .smb()
                .create(&NewSmbShare {
                    name: name.clone(),
                    path,
                    comment: params.comment(&plan.volume_name),
                    readonly: false,
                    browsable: params.smb_browsable,
                })
                .await
                .map_err(tn("creating the SMB share"))?,
        };
        let ids = vec![
            (props::SMB_SHARE_ID.to_owned(), share.id.to_string()),
            (props::EXPORT_NAME.to_owned(), share.name.clone()),
        ];
        Ok((
            Export::Smb {
                share_name: share.name,
            },
            ids,
        ))
    }

    async fn remove(&self, client: &Client, names: &Names) -> Result<(), ControllerError> {
        let (name, path) = (&names::smb_share(&names.name), &names.path);
        if let Some(share) = client
            .smb()
            .by_name(name)
            .await
            .map_err(tn("looking up the SMB share"))?
            && &share.path == path
        {
            client
                .smb()
                .delete(share.id)
                .await
                .map_err(tn("removing the SMB share"))?;
        }
        Ok(())
    }

    async fn condition(
        &self,
        client: &Client,
        volume: &ManagedVolume,
    ) -> Result<Option<String>, ControllerError> {
        let name = names::smb_share(volume.name());
        let problem = match client
            .smb()
            .by_name(&name)
            .await
            .map_err(tn("checking the SMB share"))?
        {
            None => Some(format!("SMB share {name} is missing")),
            Some(share) if !share.enabled => Some(format!("SMB share {name} is disabled")),
            Some(_) => None,
        };
        Ok(problem)
    }
}
