//! NFS exports and SMB shares (spec §4.8–4.9).

use crate::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{body, create, decode, delete};
use crate::query::{Filter, Query};
use crate::{Client, Error};

/// One NFS export.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct NfsShare {
    /// Integer id, never reused.
    pub id: i64,
    /// Exported path under `/mnt`.
    pub path: String,
    /// Free text (we store the volume name).
    #[serde(default)]
    pub comment: String,
    /// Allowed networks (CIDR); empty means any.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Allowed hosts; empty means any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Read-only export.
    #[serde(default)]
    pub ro: bool,
    /// Whether it is exported.
    #[serde(default)]
    pub enabled: bool,
}

/// A `sharing.nfs.create` request.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NewNfsShare {
    /// Path under `/mnt/<pool>`.
    pub path: String,
    /// Free text.
    pub comment: String,
    /// Allowed networks (CIDR).
    pub networks: Vec<String>,
    /// Allowed hosts.
    pub hosts: Vec<String>,
    /// Read-only export.
    pub ro: bool,
    /// Remote root maps to this user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maproot_user: Option<String>,
    /// Remote root maps to this group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maproot_group: Option<String>,
}

/// `sharing.nfs.*`.
#[derive(Debug, Clone, Copy)]
pub struct NfsShares<'a>(pub(super) &'a Client);

impl NfsShares<'_> {
    /// Any query.
    pub async fn query(&self, query: &Query) -> Result<Vec<NfsShare>, Error> {
        super::query(self.0, "sharing.nfs.query", query).await
    }
    /// Exports of exactly this path.
    pub async fn by_path(&self, path: &str) -> Result<Vec<NfsShare>, Error> {
        self.query(&Query::all().filter(Filter::eq("path", path)))
            .await
    }
    /// Creates an export.
    pub async fn create(&self, new: &NewNfsShare) -> Result<NfsShare, Error> {
        create(self.0, "sharing.nfs.create", vec![body(new)]).await
    }
    /// Changes an export (e.g. its networks).
    pub async fn set_access(
        &self,
        id: i64,
        networks: &[String],
        hosts: &[String],
    ) -> Result<NfsShare, Error> {
        let method = "sharing.nfs.update";
        let params = vec![json!(id), json!({"networks": networks, "hosts": hosts})];
        decode(method, self.0.call(Method::change(method), params).await?)
    }
    /// Removes an export; `Ok(false)` if it was gone.
    pub async fn delete(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "sharing.nfs.delete", vec![json!(id)]).await
    }
}

/// One SMB share.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SmbShare {
    /// Integer id.
    pub id: i64,
    /// Share name clients use.
    pub name: String,
    /// Path under `/mnt`.
    pub path: String,
    /// Free text.
    #[serde(default)]
    pub comment: String,
    /// Read-only share.
    #[serde(default)]
    pub readonly: bool,
    /// Whether it is served.
    #[serde(default)]
    pub enabled: bool,
}

/// A `sharing.smb.create` request.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NewSmbShare {
    /// Share name (≤ 80 chars, unique).
    pub name: String,
    /// Path under `/mnt/<pool>`.
    pub path: String,
    /// Free text.
    pub comment: String,
    /// Read-only share.
    pub readonly: bool,
    /// Listed when clients browse the server.
    pub browsable: bool,
}

/// `sharing.smb.*`.
#[derive(Debug, Clone, Copy)]
pub struct SmbShares<'a>(pub(super) &'a Client);

impl SmbShares<'_> {
    /// Any query.
    pub async fn query(&self, query: &Query) -> Result<Vec<SmbShare>, Error> {
        super::query(self.0, "sharing.smb.query", query).await
    }
    /// The share with exactly this name.
    pub async fn by_name(&self, name: &str) -> Result<Option<SmbShare>, Error> {
        super::find(self.0, "sharing.smb.query", Filter::eq("name", name)).await
    }
    /// Creates a share.
    pub async fn create(&self, new: &NewSmbShare) -> Result<SmbShare, Error> {
        create(self.0, "sharing.smb.create", vec![body(new)]).await
    }
    /// Turns a share read-only or back.
    pub async fn set_readonly(&self, id: i64, readonly: bool) -> Result<SmbShare, Error> {
        let method = "sharing.smb.update";
        let params = vec![json!(id), json!({"readonly": readonly})];
        decode(method, self.0.call(Method::change(method), params).await?)
    }
    /// Removes a share; `Ok(false)` if it was gone.
    pub async fn delete(&self, id: i64) -> Result<bool, Error> {
        delete(self.0, "sharing.smb.delete", vec![json!(id)]).await
    }
}
