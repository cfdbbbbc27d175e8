//! The NVMe-oF target (spec §4.10): subsystems, namespaces, ports, hosts and their links.

use crate::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{body, create, decode, delete};
use crate::query::{Filter, Query};
use crate::{Client, Error};

/// Target-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct NvmetGlobal {
    /// Prefix of generated subsystem NQNs.
    pub basenqn: String,
    /// Kernel target in use.
    #[serde(default)]
    pub kernel: bool,
    /// Asymmetric namespace access (HA).
    #[serde(default)]
    pub ana: bool,
    /// RDMA transport enabled.
    #[serde(default)]
    pub rdma: bool,
}

/// A subsystem: what an initiator connects to by NQN.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Subsystem {
    /// Integer id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// The NQN initiators connect to.
    pub subnqn: String,
    /// Serial reported to hosts.
    #[serde(default)]
    pub serial: String,
    /// Whether any host NQN may connect.
    #[serde(default)]
    pub allow_any_host: bool,
    /// Host ids (with `extra.verbose`).
    #[serde(default)]
    pub hosts: Vec<i64>,
    /// Namespace ids (with `extra.verbose`).
    #[serde(default)]
    pub namespaces: Vec<i64>,
    /// Port ids (with `extra.verbose`).
    #[serde(default)]
    pub ports: Vec<i64>,
}

/// A `nvmet.subsys.create` request.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NewSubsystem {
    /// Unique name.
    pub name: String,
    /// NQN; TrueNAS derives `basenqn:name` when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnqn: Option<String>,
    /// Let any host connect.
    pub allow_any_host: bool,
}

/// A namespace: a zvol (or file) exposed inside a subsystem.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Namespace {
    /// Integer id.
    pub id: i64,
    /// Namespace id within the subsystem.
    pub nsid: u32,
    /// The subsystem it belongs to.
    pub subsys: Subsystem,
    /// `ZVOL` or `FILE`.
    pub device_type: String,
    /// `zvol/<pool>/<zvol>` or a file path.
    pub device_path: String,
    /// UUID hosts see.
    #[serde(default)]
    pub device_uuid: Option<String>,
    /// NGUID hosts see.
    #[serde(default)]
    pub device_nguid: Option<String>,
    /// Whether it is exposed.
    #[serde(default)]
    pub enabled: bool,
}

/// A `nvmet.namespace.create` request for a zvol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewNamespace {
    /// Subsystem id.
    pub subsys_id: i64,
    /// `ZVOL`.
    pub device_type: &'static str,
    /// `zvol/<pool>/<zvol>`.
    pub device_path: String,
    /// Namespace id; the lowest free one when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsid: Option<u32>,
}

impl NewNamespace {
    /// Exposes zvol `zvol` (its dataset name) in subsystem `subsys_id`.
    pub fn zvol(subsys_id: i64, zvol: &str) -> Self {
        Self {
            subsys_id,
            device_type: "ZVOL",
            device_path: format!("zvol/{zvol}"),
            nsid: None,
        }
    }
}

/// A listening port of the target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Port {
    /// Integer id.
    pub id: i64,
    /// `TCP`, `RDMA` or `FC`.
    pub addr_trtype: String,
    /// Listen address.
    pub addr_traddr: String,
    /// TCP port (absent for FC).
    #[serde(default)]
    pub addr_trsvcid: Option<Value>,
    /// `IPV4`, `IPV6`, …
    #[serde(default)]
    pub addr_adrfam: Option<String>,
    /// Whether it listens.
    #[serde(default)]
    pub enabled: bool,
}

impl Port {
    /// The TCP port as a number.
    pub fn tcp_port(&self) -> Option<u16> {
        match &self.addr_trsvcid {
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
    }
}

/// A `nvmet.port.create` request for TCP.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewPort {
    /// `TCP`.
    pub addr_trtype: &'static str,
    /// Listen address.
    pub addr_traddr: String,
    /// TCP port (4420 is standard).
    pub addr_trsvcid: u16,
}

/// A subsystem reachable through a port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PortSubsystem {
    /// Integer id.
    pub id: i64,
    /// The port.
    pub port: Port,
    /// The subsystem.
    pub subsys: Subsystem,
}

/// A host NQN that may be allowed into subsystems.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Host {
    /// Integer id.
    pub id: i64,
    /// The initiator's host NQN.
    pub hostnqn: String,
}

/// A host allowed into a subsystem.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct HostSubsystem {
    /// Integer id.
    pub id: i64,
    /// The host.
    pub host: Host,
    /// The subsystem.
    pub subsys: Subsystem,
}

/// `nvmet.*`.
#[derive(Debug, Clone, Copy)]
pub struct Nvmet<'a>(pub(super) &'a Client);

impl Nvmet<'_> {
    /// Target-wide settings (base NQN).
    pub async fn global(&self) -> Result<NvmetGlobal, Error> {
        let method = "nvmet.global.config";
        decode(method, self.0.call(Method::read(method), vec![]).await?)
    }

    /// Subsystems matching a query.
    pub async fn subsystems(&self, query: &Query) -> Result<Vec<Subsystem>, Error> {
        super::query(self.0, "nvmet.subsys.query", query).await
    }
    /// The subsystem with exactly this name.
    pub async fn subsystem_by_name(&self, name: &str) -> Result<Option<Subsystem>, Error> {
        super::find(self.0, "nvmet.subsys.query", Filter::eq("name", name)).await
    }
    /// Creates a subsystem.
    pub async fn create_subsystem(&self, new: &NewSubsystem) -> Result<Subsystem, Error> {
        create(self.0, "nvmet.subsys.create", vec![body(new)]).await
    }
    /// Opens or closes a subsystem to any host.
    pub async fn set_allow_any_host(&self, id: i64, allow: bool) -> Result<Subsystem, Error> {
        let method = "nvmet.subsys.update";
        let params = vec![json!(id), json!({"allow_any_host": allow})];
        decode(method, self.0.call(Method::change(method), params).await?)
    }
    /// Deletes a subsystem; `force` also drops its namespaces and port links.
    pub async fn delete_subsystem(&self, id: i64, force: bool) -> Result<bool, Error> {
        delete(
            self.0,
            "nvmet.subsys.delete",
            vec![json!(id), json!({"force": force})],
        )
        .await
    }

    /// Namespaces matching a query (e.g. `subsys.id`, `device_path`).
    pub async fn namespaces(&self, query: &Query) -> Result<Vec<Namespace>, Error> {
        super::query(self.0, "nvmet.namespace.query", query).await
    }
    /// Creates a namespace.
    pub async fn create_namespace(&self, new: &NewNamespace) -> Result<Namespace, Error> {
        create(self.0, "nvmet.namespace.create", vec![body(new)]).await
    }
    /// Deletes a namespace.
    pub async fn delete_namespace(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "nvmet.namespace.delete", vec![json!(id)]).await
    }

    /// Ports matching a query.
    pub async fn ports(&self, query: &Query) -> Result<Vec<Port>, Error> {
        super::query(self.0, "nvmet.port.query", query).await
    }
    /// Creates a TCP port.
    pub async fn create_port(&self, new: &NewPort) -> Result<Port, Error> {
        create(self.0, "nvmet.port.create", vec![body(new)]).await
    }

    /// Port–subsystem links matching a query (e.g. `subsys.id`).
    pub async fn port_subsystems(&self, query: &Query) -> Result<Vec<PortSubsystem>, Error> {
        super::query(self.0, "nvmet.port_subsys.query", query).await
    }
    /// Makes a subsystem reachable through a port.
    pub async fn link_port(&self, port_id: i64, subsys_id: i64) -> Result<PortSubsystem, Error> {
        let params = vec![json!({"port_id": port_id, "subsys_id": subsys_id})];
        create(self.0, "nvmet.port_subsys.create", params).await
    }
    /// Removes a port–subsystem link.
    pub async fn unlink_port(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "nvmet.port_subsys.delete", vec![json!(id)]).await
    }

    /// Hosts matching a query (e.g. `hostnqn`).
    pub async fn hosts(&self, query: &Query) -> Result<Vec<Host>, Error> {
        super::query(self.0, "nvmet.host.query", query).await
    }
    /// Registers a host NQN.
    pub async fn create_host(&self, hostnqn: &str) -> Result<Host, Error> {
        create(
            self.0,
            "nvmet.host.create",
            vec![json!({"hostnqn": hostnqn})],
        )
        .await
    }
    /// Removes a host; `force` also drops its subsystem links.
    pub async fn delete_host(&self, id: i64, force: bool) -> Result<bool, Error> {
        delete(
            self.0,
            "nvmet.host.delete",
            vec![json!(id), json!({"force": force})],
        )
        .await
    }

    /// Host–subsystem links matching a query.
    pub async fn host_subsystems(&self, query: &Query) -> Result<Vec<HostSubsystem>, Error> {
        super::query(self.0, "nvmet.host_subsys.query", query).await
    }
    /// Lets a host into a subsystem.
    pub async fn allow_host(&self, host_id: i64, subsys_id: i64) -> Result<HostSubsystem, Error> {
        let params = vec![json!({"host_id": host_id, "subsys_id": subsys_id})];
        create(self.0, "nvmet.host_subsys.create", params).await
    }
    /// Removes a host–subsystem link.
    pub async fn disallow_host(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "nvmet.host_subsys.delete", vec![json!(id)]).await
    }
}
