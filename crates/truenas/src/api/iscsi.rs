//! The iSCSI target (spec §4.11): portals, initiator groups, targets, extents and LUN links.

use crate::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{body, create, decode, delete};
use crate::query::{Filter, Query};
use crate::{Client, Error};

/// Target-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct IscsiGlobal {
    /// IQN prefix; a target's IQN is `basename:name`.
    pub basename: String,
    /// TCP port.
    #[serde(default)]
    pub listen_port: u16,
}

/// Where the target listens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Portal {
    /// Integer id.
    pub id: i64,
    /// Portal group tag.
    #[serde(default)]
    pub tag: i64,
    /// Addresses.
    #[serde(default)]
    pub listen: Vec<PortalListen>,
}

/// One listen address of a portal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PortalListen {
    /// IP address.
    pub ip: String,
    /// TCP port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// An initiator group: which IQNs may log in (empty = any).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Initiator {
    /// Integer id.
    pub id: i64,
    /// Allowed initiator IQNs.
    #[serde(default)]
    pub initiators: Vec<String>,
    /// Free text.
    #[serde(default)]
    pub comment: String,
}

/// A target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Target {
    /// Integer id.
    pub id: i64,
    /// Name; the IQN is `basename:name`.
    pub name: String,
    /// Portal/initiator groups.
    #[serde(default)]
    pub groups: Vec<TargetGroup>,
}

/// A portal + initiator-group pair on a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// Portal id.
    pub portal: i64,
    /// Initiator group id; `None` = any initiator.
    pub initiator: Option<i64>,
    /// `NONE`, `CHAP` or `CHAP_MUTUAL`.
    pub authmethod: String,
    /// Auth group id.
    pub auth: Option<i64>,
}

/// A `iscsi.target.create` request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewTarget {
    /// Lowercase letters, digits, `.`, `-`, `:`; ≤ 120 chars.
    pub name: String,
    /// `ISCSI`.
    pub mode: &'static str,
    /// Portal/initiator groups.
    pub groups: Vec<TargetGroup>,
}

/// An extent: the zvol behind a LUN.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Extent {
    /// Integer id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `DISK` or `FILE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `zvol/<pool>/<zvol>` for DISK.
    #[serde(default)]
    pub disk: Option<String>,
    /// Serial reported to initiators.
    #[serde(default)]
    pub serial: Option<String>,
    /// NAA identifier (the by-id device name on the initiator).
    #[serde(default)]
    pub naa: Option<String>,
    /// Logical block size.
    #[serde(default)]
    pub blocksize: Option<u32>,
    /// Whether it is exposed.
    #[serde(default)]
    pub enabled: bool,
    /// Free text (the driver marks its extents here).
    #[serde(default)]
    pub comment: String,
}

/// A `iscsi.extent.create` request for a zvol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewExtent {
    /// Unique name (≤ 64 chars).
    pub name: String,
    /// `DISK`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `zvol/<pool>/<zvol>`.
    pub disk: String,
    /// Logical block size (512 or 4096).
    pub blocksize: u32,
    /// Free text (the driver's ownership marker).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

impl NewExtent {
    /// An extent named `name` for zvol `zvol` (its dataset name).
    pub fn zvol(name: impl Into<String>, zvol: &str) -> Self {
        Self {
            name: name.into(),
            kind: "DISK",
            disk: format!("zvol/{zvol}"),
            blocksize: 512,
            comment: String::new(),
        }
    }
}

/// A LUN: an extent mapped into a target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct TargetExtent {
    /// Integer id.
    pub id: i64,
    /// Target id.
    pub target: i64,
    /// Extent id.
    pub extent: i64,
    /// LUN number.
    pub lunid: i64,
}

/// `iscsi.*`.
#[derive(Debug, Clone, Copy)]
pub struct Iscsi<'a>(pub(super) &'a Client);

impl Iscsi<'_> {
    /// Target-wide settings (base IQN).
    pub async fn global(&self) -> Result<IscsiGlobal, Error> {
        let method = "iscsi.global.config";
        decode(method, self.0.call(Method::read(method), vec![]).await?)
    }
    /// All portals.
    pub async fn portals(&self) -> Result<Vec<Portal>, Error> {
        super::query(self.0, "iscsi.portal.query", &Query::all()).await
    }

    /// Initiator groups matching a query.
    pub async fn initiators(&self, query: &Query) -> Result<Vec<Initiator>, Error> {
        super::query(self.0, "iscsi.initiator.query", query).await
    }
    /// Creates an initiator group (`comment` finds it again).
    pub async fn create_initiator(
        &self,
        initiators: &[String],
        comment: &str,
    ) -> Result<Initiator, Error> {
        let params = vec![json!({"initiators": initiators, "comment": comment})];
        create(self.0, "iscsi.initiator.create", params).await
    }
    /// Replaces the IQNs of an initiator group.
    pub async fn set_initiators(&self, id: i64, initiators: &[String]) -> Result<Initiator, Error> {
        let method = "iscsi.initiator.update";
        let params = vec![json!(id), json!({"initiators": initiators})];
        decode(method, self.0.call(Method::change(method), params).await?)
    }
    /// Deletes an initiator group.
    pub async fn delete_initiator(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "iscsi.initiator.delete", vec![json!(id)]).await
    }

    /// Targets matching a query.
    pub async fn targets(&self, query: &Query) -> Result<Vec<Target>, Error> {
        super::query(self.0, "iscsi.target.query", query).await
    }
    /// The target with exactly this name.
    pub async fn target_by_name(&self, name: &str) -> Result<Option<Target>, Error> {
        super::find(self.0, "iscsi.target.query", Filter::eq("name", name)).await
    }
    /// Creates a target.
    pub async fn create_target(&self, new: &NewTarget) -> Result<Target, Error> {
        create(self.0, "iscsi.target.create", vec![body(new)]).await
    }
    /// Deletes a target (positional `force`, `delete_extents`).
    pub async fn delete_target(
        &self,
        id: i64,
        force: bool,
        delete_extents: bool,
    ) -> Result<bool, Error> {
        let params = vec![json!(id), json!(force), json!(delete_extents)];
        delete(self.0, "iscsi.target.delete", params).await
    }

    /// Extents matching a query (e.g. `disk`).
    pub async fn extents(&self, query: &Query) -> Result<Vec<Extent>, Error> {
        super::query(self.0, "iscsi.extent.query", query).await
    }
    /// Creates an extent.
    pub async fn create_extent(&self, new: &NewExtent) -> Result<Extent, Error> {
        create(self.0, "iscsi.extent.create", vec![body(new)]).await
    }
    /// Deletes an extent (positional `remove`, `force`).
    pub async fn delete_extent(&self, id: i64, force: bool) -> Result<bool, Error> {
        let params = vec![json!(id), json!(false), json!(force)];
        delete(self.0, "iscsi.extent.delete", params).await
    }

    /// Target–extent links matching a query.
    pub async fn target_extents(&self, query: &Query) -> Result<Vec<TargetExtent>, Error> {
        super::query(self.0, "iscsi.targetextent.query", query).await
    }
    /// Maps an extent into a target; `lunid` `None` takes the next free LUN.
    pub async fn map_extent(
        &self,
        target: i64,
        extent: i64,
        lunid: Option<i64>,
    ) -> Result<TargetExtent, Error> {
        let params = vec![json!({"target": target, "extent": extent, "lunid": lunid})];
        create(self.0, "iscsi.targetextent.create", params).await
    }
    /// Removes a target–extent link.
    pub async fn unmap_extent(&self, id: i64, force: bool) -> Result<bool, Error> {
        delete(
            self.0,
            "iscsi.targetextent.delete",
            vec![json!(id), json!(force)],
        )
        .await
    }
}
