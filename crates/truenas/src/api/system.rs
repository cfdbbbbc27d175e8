//! Version, liveness and host facts (spec §4.13).

use crate::Method;
use serde::Deserialize;

use crate::{Client, Error};

/// The fields of `system.info` the driver reports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SystemInfo {
    /// e.g. `TrueNAS-25.10.0`.
    pub version: String,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
}

/// What `service.control` does to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceVerb {
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Stop and start it.
    Restart,
    /// Re-read its configuration (after share changes).
    Reload,
}

/// `system.*`, `service.control` and `core.ping`.
#[derive(Debug, Clone, Copy)]
pub struct System<'a>(pub(super) &'a Client);

impl System<'_> {
    /// `TrueNAS-25.10.0`.
    pub async fn version(&self) -> Result<String, Error> {
        super::decode(
            "system.version",
            self.0.call(Method::read("system.version"), vec![]).await?,
        )
    }

    /// `25.10.0`: use it to gate features (NVMe-oF and `pool.snapshot` need 25.10).
    pub async fn version_short(&self) -> Result<String, Error> {
        let method = "system.version_short";
        super::decode(method, self.0.call(Method::read(method), vec![]).await?)
    }

    /// Host facts.
    pub async fn info(&self) -> Result<SystemInfo, Error> {
        super::decode(
            "system.info",
            self.0.call(Method::read("system.info"), vec![]).await?,
        )
    }

    /// Starts, stops, restarts or reloads a service (`nfs`, `cifs`, `iscsitarget`, `nvmet`);
    /// a job, awaited to its end.
    pub async fn control_service(&self, verb: ServiceVerb, service: &str) -> Result<bool, Error> {
        let verb = match verb {
            ServiceVerb::Start => "START",
            ServiceVerb::Stop => "STOP",
            ServiceVerb::Restart => "RESTART",
            ServiceVerb::Reload => "RELOAD",
        };
        let method = "service.control";
        let result = self
            .0
            .call_job(
                Method::change(method),
                vec![serde_json::json!(verb), serde_json::json!(service)],
            )
            .await?;
        super::decode(method, result)
    }

    /// A round trip through the API (`core.ping` → `pong`).
    pub async fn ping(&self) -> Result<(), Error> {
        match self.0.call(Method::read("core.ping"), vec![]).await? {
            serde_json::Value::String(pong) if pong == "pong" => Ok(()),
            other => Err(Error::Protocol {
                reason: format!("core.ping returned {other}"),
            }),
        }
    }
}
