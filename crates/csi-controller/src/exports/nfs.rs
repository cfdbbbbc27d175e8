//! NFS: one share per dataset, found by its exact path.

use csi_api::Export;
use truenas::Client;
use truenas::api::NewNfsShare;

use crate::error::{ControllerError, tn};
use crate::exports::{Exported, Exporter, Names, Steps, create_or_find, find_or_create};
use crate::props;
use crate::volumes::{ManagedVolume, Plan};

/// NFS shares.
pub(crate) struct Nfs;

impl Exporter for Nfs {
    async fn ensure(&self, client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError> {
        let (params, dataset, name) = (plan.params, &plan.dataset, &plan.volume_name);
        let path = format!("/mnt/{dataset}");
        let find = || async { Ok(client.nfs().by_path(&path).await?.into_iter().next()) };
        let new = NewNfsShare {
            path: path.clone(),
            comment: params.comment(name),
            networks: params.nfs_networks.clone(),
            hosts: params.nfs_hosts.clone(),
            ro: false,
            maproot_user: Some(params.nfs_maproot_user.clone()),
            maproot_group: Some(params.nfs_maproot_group.clone()),
        };
        let shares = client.nfs();
        let create = || shares.create(&new);
        let steps = Steps {
            lookup: "looking up the NFS share",
            create: "creating the NFS share",
            missing: || format!("no NFS share of {path} and none could be made"),
        };
        let share = if plan.fresh {
            create_or_find(steps, find, create).await?
        } else {
            find_or_create(steps, find, create).await?
        };
        let ids = vec![(props::NFS_SHARE_ID.to_owned(), share.id.to_string())];
        Ok((Export::Nfs { share_path: path }, ids))
    }

    async fn remove(&self, client: &Client, names: &Names) -> Result<(), ControllerError> {
        let path = &names.path;
        for share in client
            .nfs()
            .by_path(path)
            .await
            .map_err(tn("looking up the NFS share"))?
        {
            client
                .nfs()
                .delete(share.id)
                .await
                .map_err(tn("removing the NFS share"))?;
        }
        Ok(())
    }

    async fn condition(
        &self,
        client: &Client,
        volume: &ManagedVolume,
    ) -> Result<Option<String>, ControllerError> {
        let path = format!("/mnt/{}", volume.id.dataset);
        let problem = match client
            .nfs()
            .by_path(&path)
            .await
            .map_err(tn("checking the NFS share"))?
            .first()
        {
            None => Some(format!("NFS share of {path} is missing")),
            Some(share) if !share.enabled => Some(format!("NFS share of {path} is disabled")),
            Some(_) => None,
        };
        Ok(problem)
    }
}
