//! NVMe-oF/TCP: a subsystem per volume (named after it), the zvol as its namespace, a shared
//! TCP port linked to it, and per-node hosts on its allow-list.

use std::collections::HashMap;

use csi_api::Export;
use truenas::Client;
use truenas::api::{Host, NewNamespace, NewPort, NewSubsystem};
use truenas::query::{Filter, Query};

use crate::error::{ControllerError, tn};
use crate::exports::{
    Exported, Exporter, Names, Steps, create_or_find, find_or_create, with_zvol_wait,
};
use crate::volumes::{ManagedVolume, Plan};
use crate::{names, props};

/// NVMe-oF subsystems.
pub(crate) struct Nvmeof;

impl Exporter for Nvmeof {
    async fn ensure(&self, client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError> {
        let (params, dataset) = (plan.params, &plan.dataset);
        let name = &names::nvme_subsystem(&plan.volume_name);
        let nvmet = client.nvmet();
        // A fresh zvol has no subsystem, namespace or port link yet: each is created without a
        // lookup first (and looked up only if the create is refused).
        let subsystem_steps = Steps {
            lookup: "looking up the NVMe-oF subsystem",
            create: "creating the NVMe-oF subsystem",
            missing: || format!("no NVMe-oF subsystem {name} and none could be made"),
        };
        let find_subsystem = || nvmet.subsystem_by_name(name);
        let base = client
            .nvmet_base_nqn()
            .await
            .map_err(tn("reading the NVMe-oF base NQN"))?;
        let new_subsystem = NewSubsystem {
            name: name.clone(),
            subnqn: Some(names::nvme_subnqn(&base, name)),
            allow_any_host: params.allow_any_host,
        };
        let create_subsystem = || nvmet.create_subsystem(&new_subsystem);
        let subsys = if plan.fresh {
            create_or_find(subsystem_steps, find_subsystem, create_subsystem).await?
        } else {
            find_or_create(subsystem_steps, find_subsystem, create_subsystem).await?
        };
        let device = format!("zvol/{dataset}");
        let find_namespace = || async {
            Ok(nvmet
                .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await?
                .into_iter()
                .find(|n| n.device_path == device))
        };
        let create_namespace = || {
            with_zvol_wait(|| {
                let new = NewNamespace::zvol(subsys.id, dataset);
                async move { nvmet.create_namespace(&new).await }
            })
        };
        let namespace_steps = Steps {
            lookup: "looking up the NVMe-oF namespace",
            create: "creating the NVMe-oF namespace",
            missing: || format!("no NVMe-oF namespace for {device} and none could be made"),
        };
        let namespace = if plan.fresh {
            create_or_find(namespace_steps, find_namespace, create_namespace).await?
        } else {
            find_or_create(namespace_steps, find_namespace, create_namespace).await?
        };
        let port_number = params.port.unwrap_or(4420);
        let tcp_port = || async {
            let ports = nvmet
                .ports(&Query::all().filter(Filter::eq("addr_trtype", "TCP")))
                .await?;
            Ok(ports
                .into_iter()
                .find(|p| p.tcp_port() == Some(port_number)))
        };
        let port = find_or_create(
            Steps {
                lookup: "looking up NVMe-oF ports",
                create: "creating the NVMe-oF port",
                missing: || format!("no NVMe-oF TCP port {port_number} and none could be made"),
            },
            tcp_port,
            || async {
                let port = NewPort {
                    addr_trtype: "TCP",
                    addr_traddr: "0.0.0.0".into(),
                    addr_trsvcid: port_number,
                };
                nvmet.create_port(&port).await
            },
        )
        .await?;
        let find_link = || async {
            Ok(nvmet
                .port_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await?
                .into_iter()
                .find(|l| l.port.id == port.id)
                .map(|_| ()))
        };
        let create_link = || async { nvmet.link_port(port.id, subsys.id).await.map(|_| ()) };
        let link_steps = Steps {
            lookup: "looking up NVMe-oF port links",
            create: "linking the subsystem to its port",
            missing: || format!("subsystem {name} is not linked to port {port_number}"),
        };
        if plan.fresh {
            create_or_find(link_steps, find_link, create_link).await?;
        } else {
            find_or_create(link_steps, find_link, create_link).await?;
        }
        let export = Export::Nvmeof {
            port: port_number.to_string(),
            nqn: subsys.subnqn.clone(),
            nsid: namespace.nsid.to_string(),
            fs_type: params.fs_type.clone(),
        };
        let ids = vec![
            (props::NVMEOF_SUBSYSTEM_NQN.to_owned(), subsys.subnqn),
            (props::NVMEOF_SUBSYSTEM_ID.to_owned(), subsys.id.to_string()),
            (
                props::NVMEOF_NAMESPACE_ID.to_owned(),
                namespace.id.to_string(),
            ),
        ];
        Ok((export, ids))
    }

    async fn remove(&self, client: &Client, names: &Names) -> Result<(), ControllerError> {
        let name = &names::nvme_subsystem(&names.name);
        let nvmet = client.nvmet();
        if let Some(subsys) = nvmet
            .subsystem_by_name(name)
            .await
            .map_err(tn("looking up the NVMe-oF subsystem"))?
        {
            let namespaces = nvmet
                .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await
                .map_err(tn("looking up the NVMe-oF namespace"))?;
            let device = format!("zvol/{}", names.dataset);
            if namespaces.iter().all(|n| n.device_path == device) {
                let allowed: Vec<Host> = nvmet
                    .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("looking up allowed hosts"))?
                    .into_iter()
                    .map(|link| link.host)
                    .collect();
                // force: its namespace and port links go with it, in dependency order.
                nvmet
                    .delete_subsystem(subsys.id, true)
                    .await
                    .map_err(tn("removing the NVMe-oF subsystem"))?;
                reap_hosts(client, &allowed).await?;
            } else {
                return Err(ControllerError::failed_precondition(format!(
                    "NVMe-oF subsystem {name} also exposes other zvols; not removing it"
                )));
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        client: &Client,
        volume: &ManagedVolume,
        node_id: &str,
    ) -> Result<HashMap<String, String>, ControllerError> {
        let name = &names::nvme_subsystem(volume.name());
        let hostnqn = csi_api::node_host_nqn(node_id)
            .map_err(|e| ControllerError::invalid_argument(e.to_string()))?;
        let ctx = HashMap::from([(csi_api::publish::HOST_NQN.to_owned(), hostnqn.clone())]);
        if volume.allow_any_host {
            return Ok(ctx);
        }
        let nvmet = client.nvmet();
        let subsys = nvmet
            .subsystem_by_name(name)
            .await
            .map_err(tn("looking up the subsystem"))?
            .ok_or_else(|| {
                ControllerError::not_found(format!("volume {} has no NVMe-oF subsystem", volume.id))
            })?;
        let registered = || async {
            let hosts = nvmet
                .hosts(&Query::all().filter(Filter::eq("hostnqn", hostnqn.as_str())))
                .await?;
            Ok(hosts.into_iter().next())
        };
        let host = find_or_create(
            Steps {
                lookup: "looking up the host",
                create: "registering the node's host NQN",
                missing: || format!("host {hostnqn} could not be registered"),
            },
            registered,
            || nvmet.create_host(&hostnqn),
        )
        .await?;
        let links = nvmet
            .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
            .await
            .map_err(tn("looking up allowed hosts"))?;
        if !links.iter().any(|l| l.host.id == host.id) {
            nvmet
                .allow_host(host.id, subsys.id)
                .await
                .map_err(tn("allowing the node's host NQN"))?;
        }
        Ok(ctx)
    }

    async fn unpublish(
        &self,
        client: &Client,
        volume: &ManagedVolume,
        node_id: &str,
    ) -> Result<(), ControllerError> {
        let name = &names::nvme_subsystem(volume.name());
        let hostnqn = csi_api::node_host_nqn(node_id)
            .map_err(|e| ControllerError::invalid_argument(e.to_string()))?;
        let nvmet = client.nvmet();
        if let Some(subsys) = nvmet
            .subsystem_by_name(name)
            .await
            .map_err(tn("looking up the subsystem"))?
        {
            for link in nvmet
                .host_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                .await
                .map_err(tn("looking up allowed hosts"))?
            {
                if link.host.hostnqn == hostnqn {
                    nvmet
                        .disallow_host(link.id)
                        .await
                        .map_err(tn("removing the node's host NQN"))?;
                    reap_hosts(client, std::slice::from_ref(&link.host)).await?;
                }
            }
        }
        Ok(())
    }

    async fn condition(
        &self,
        client: &Client,
        volume: &ManagedVolume,
    ) -> Result<Option<String>, ControllerError> {
        let name = names::nvme_subsystem(volume.name());
        let problem = match client
            .nvmet()
            .subsystem_by_name(&name)
            .await
            .map_err(tn("checking the subsystem"))?
        {
            None => Some(format!("NVMe-oF subsystem {name} is missing")),
            Some(subsys) => {
                let namespaces = client
                    .nvmet()
                    .namespaces(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("checking the namespace"))?;
                let links = client
                    .nvmet()
                    .port_subsystems(&Query::all().filter(Filter::eq("subsys.id", subsys.id)))
                    .await
                    .map_err(tn("checking the port link"))?;
                match namespaces.first() {
                    None => Some(format!("NVMe-oF namespace of {name} is missing")),
                    Some(ns) if !ns.enabled => {
                        Some(format!("NVMe-oF namespace of {name} is disabled"))
                    }
                    Some(_) if links.is_empty() => {
                        Some(format!("NVMe-oF subsystem {name} is on no port"))
                    }
                    Some(_) => None,
                }
            }
        };
        Ok(problem)
    }
}

/// Removes host records of ours that no subsystem allows any more, so a node's NQN does not
/// outlive its last volume on TrueNAS.
async fn reap_hosts(client: &Client, hosts: &[Host]) -> Result<(), ControllerError> {
    let nvmet = client.nvmet();
    for host in hosts
        .iter()
        .filter(|h| h.hostnqn.starts_with(csi_api::HOST_NQN_PREFIX))
    {
        let links = nvmet
            .host_subsystems(&Query::all().filter(Filter::eq("host.id", host.id)))
            .await
            .map_err(tn("looking up what a host is allowed into"))?;
        if links.is_empty() {
            nvmet
                .delete_host(host.id, false)
                .await
                .map_err(tn("removing a host no volume uses"))?;
        }
    }
    Ok(())
}
