//! iSCSI: an initiator group, target, zvol extent and LUN per volume; per-node initiator IQNs
//! on the group (or the no-initiator placeholder that admits nobody).

use std::collections::HashMap;

use csi_api::Export;
use truenas::Client;
use truenas::api::{NewExtent, NewTarget, TargetGroup};
use truenas::query::{Filter, Query};

use crate::error::{ControllerError, tn};
use crate::exports::{Exported, Exporter, Names, with_zvol_wait};
use crate::volumes::{ManagedVolume, Plan};
use crate::{names, props};

/// iSCSI targets.
pub(crate) struct Iscsi;

impl Exporter for Iscsi {
    async fn ensure(&self, client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError> {
        let (params, dataset, name) = (plan.params, &plan.dataset, &plan.volume_name);
        let iscsi = client.iscsi();
        let basename = iscsi
            .global()
            .await
            .map_err(tn("reading the iSCSI base name"))?
            .basename;
        let comment = names::marker_comment(name);
        let groups = iscsi
            .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
            .await
            .map_err(tn("looking up the initiator group"))?;
        let group = match groups.into_iter().next() {
            Some(group) => group,
            None => {
                let initial = if params.allow_any_host {
                    vec![]
                } else {
                    vec![props::NO_INITIATOR.to_owned()]
                };
                iscsi
                    .create_initiator(&initial, &comment)
                    .await
                    .map_err(tn("creating the initiator group"))?
            }
        };
        let port_number = params.port.unwrap_or(3260);
        let portals = iscsi.portals().await.map_err(tn("reading iSCSI portals"))?;
        let portal = portals
            .iter()
            .find(|p| {
                p.listen
                    .iter()
                    .any(|l| l.port.unwrap_or(3260) == port_number)
            })
            .or(portals.first())
            .ok_or_else(|| {
                ControllerError::failed_precondition(
                    "TrueNAS has no iSCSI portal; create one (Shares → iSCSI → Portals)",
                )
            })?;
        let target_name = names::iscsi_target(name);
        let target = match iscsi
            .target_by_name(&target_name)
            .await
            .map_err(tn("looking up the iSCSI target"))?
        {
            Some(target) => target,
            None => iscsi
                .create_target(&NewTarget {
                    name: target_name.clone(),
                    mode: "ISCSI",
                    groups: vec![TargetGroup {
                        portal: portal.id,
                        initiator: Some(group.id),
                        authmethod: "NONE".into(),
                        auth: None,
                    }],
                })
                .await
                .map_err(tn("creating the iSCSI target"))?,
        };
        let disk = format!("zvol/{dataset}");
        let extents = iscsi
            .extents(&Query::all().filter(Filter::eq("disk", disk.as_str())))
            .await
            .map_err(tn("looking up the iSCSI extent"))?;
        let extent = match extents.into_iter().next() {
            Some(extent) => extent,
            None => {
                let extent_name = names::iscsi_extent(name);
                with_zvol_wait(|| {
                    let mut new = NewExtent::zvol(extent_name.clone(), dataset);
                    new.comment = names::marker_comment(name);
                    async move { iscsi.create_extent(&new).await }
                })
                .await
                .map_err(tn("creating the iSCSI extent"))?
            }
        };
        let luns = iscsi
            .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
            .await
            .map_err(tn("looking up the LUN"))?;
        let lun = match luns.into_iter().find(|l| l.extent == extent.id) {
            Some(lun) => lun,
            None => iscsi
                .map_extent(target.id, extent.id, Some(0))
                .await
                .map_err(tn("mapping the LUN"))?,
        };
        let iqn = format!("{basename}:{target_name}");
        let export = Export::Iscsi {
            port: port_number.to_string(),
            iqn: iqn.clone(),
            lun: lun.lunid.to_string(),
            fs_type: params.fs_type.clone(),
        };
        let ids = vec![
            (props::ISCSI_IQN.to_owned(), iqn),
            (props::ISCSI_TARGET_ID.to_owned(), target.id.to_string()),
            (props::ISCSI_EXTENT_ID.to_owned(), extent.id.to_string()),
            (props::EXPORT_NAME.to_owned(), target_name),
        ];
        Ok((export, ids))
    }

    async fn remove(&self, client: &Client, names: &Names) -> Result<(), ControllerError> {
        let name = &names.name;
        let iscsi = client.iscsi();
        let disk = format!("zvol/{}", names.dataset);
        let target = match iscsi
            .target_by_name(&names::iscsi_target(name))
            .await
            .map_err(tn("looking up the iSCSI target"))?
        {
            Some(target) => Some(target),
            // Volumes made before target names were derived used the plain lowercase name.
            None if names::legacy_iscsi_target(name) != names::iscsi_target(name) => iscsi
                .target_by_name(&names::legacy_iscsi_target(name))
                .await
                .map_err(tn("looking up the iSCSI target"))?,
            None => None,
        };
        let extents = iscsi
            .extents(&Query::all().filter(Filter::eq("disk", disk.as_str())))
            .await
            .map_err(tn("looking up the iSCSI extent"))?;
        if let Some(target) = &target {
            for lun in iscsi
                .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
                .await
                .map_err(tn("looking up LUNs"))?
            {
                iscsi
                    .unmap_extent(lun.id, true)
                    .await
                    .map_err(tn("unmapping the LUN"))?;
            }
        }
        for extent in extents {
            iscsi
                .delete_extent(extent.id, true)
                .await
                .map_err(tn("removing the iSCSI extent"))?;
        }
        if let Some(target) = target {
            iscsi
                .delete_target(target.id, true, false)
                .await
                .map_err(tn("removing the iSCSI target"))?;
        }
        let comment = names::marker_comment(name);
        for group in iscsi
            .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
            .await
            .map_err(tn("looking up the initiator group"))?
        {
            iscsi
                .delete_initiator(group.id)
                .await
                .map_err(tn("removing the initiator group"))?;
        }
        Ok(())
    }

    async fn publish(
        &self,
        client: &Client,
        volume: &ManagedVolume,
        node_id: &str,
    ) -> Result<HashMap<String, String>, ControllerError> {
        let name = volume.name();
        let iqn = csi_api::node_initiator_iqn(node_id)
            .map_err(|e| ControllerError::invalid_argument(e.to_string()))?;
        let ctx = HashMap::from([(csi_api::publish::INITIATOR_IQN.to_owned(), iqn.clone())]);
        if volume.allow_any_host {
            return Ok(ctx);
        }
        edit_initiators(client, name, |list| {
            list.retain(|i| i != props::NO_INITIATOR);
            if !list.contains(&iqn) {
                list.push(iqn.clone());
            }
        })
        .await?;
        Ok(ctx)
    }

    async fn unpublish(
        &self,
        client: &Client,
        volume: &ManagedVolume,
        node_id: &str,
    ) -> Result<(), ControllerError> {
        let name = volume.name();
        let iqn = csi_api::node_initiator_iqn(node_id)
            .map_err(|e| ControllerError::invalid_argument(e.to_string()))?;
        edit_initiators(client, name, |list| {
            list.retain(|i| *i != iqn);
            if list.is_empty() {
                list.push(props::NO_INITIATOR.to_owned());
            }
        })
        .await?;
        Ok(())
    }

    async fn condition(
        &self,
        client: &Client,
        volume: &ManagedVolume,
    ) -> Result<Option<String>, ControllerError> {
        let name = volume.name().to_owned();
        let problem = match client
            .iscsi()
            .target_by_name(&names::iscsi_target(&name))
            .await
            .map_err(tn("checking the target"))?
        {
            None => Some(format!("iSCSI target {name} is missing")),
            Some(target) => {
                let luns = client
                    .iscsi()
                    .target_extents(&Query::all().filter(Filter::eq("target", target.id)))
                    .await
                    .map_err(tn("checking the LUN"))?;
                if luns.is_empty() {
                    Some(format!("iSCSI target {name} has no LUN"))
                } else {
                    None
                }
            }
        };
        Ok(problem)
    }
}

/// Changes the initiator list of a volume's group (found by its comment), if it has one.
async fn edit_initiators(
    client: &Client,
    name: &str,
    edit: impl FnOnce(&mut Vec<String>),
) -> Result<(), ControllerError> {
    let comment = format!("tns-csi:{name}");
    let Some(group) = client
        .iscsi()
        .initiators(&Query::all().filter(Filter::eq("comment", comment.as_str())))
        .await
        .map_err(tn("looking up the initiator group"))?
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let mut list = group.initiators.clone();
    edit(&mut list);
    if list != group.initiators {
        client
            .iscsi()
            .set_initiators(group.id, &list)
            .await
            .map_err(tn("updating the initiator group"))?;
    }
    Ok(())
}
