//! The Identity service, shared by controller and node modes: plugin info, capabilities, and a
//! Probe that reports not-ready while a dependency (TrueNAS, for the controller) is unreachable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{self, service, volume_expansion};
use crate::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};

/// Answers whether the plugin can serve now; `Err` carries why not.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The Identity service.
#[derive(Clone)]
pub struct IdentityService {
    version: String,
    controller: bool,
    topology: bool,
    ready: ReadyCheck,
}

impl IdentityService {
    /// `controller` says whether this process serves the Controller service.
    pub fn new(version: impl Into<String>, controller: bool, ready: ReadyCheck) -> Self {
        Self {
            version: version.into(),
            controller,
            topology: false,
            ready,
        }
    }

    /// Advertises VOLUME_ACCESSIBILITY_CONSTRAINTS: volumes are reachable only from nodes of
    /// their system's topology segment (several TrueNAS systems).
    pub fn with_topology(mut self, topology: bool) -> Self {
        self.topology = topology;
        self
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: crate::DRIVER_NAME.to_owned(),
            vendor_version: self.version.clone(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = vec![PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                },
            )),
        }];
        if self.topology {
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: service::Type::VolumeAccessibilityConstraints as i32,
                    },
                )),
            });
        }
        if self.controller {
            capabilities.insert(
                0,
                PluginCapability {
                    r#type: Some(plugin_capability::Type::Service(
                        plugin_capability::Service {
                            r#type: service::Type::ControllerService as i32,
                        },
                    )),
                },
            );
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let ready = match (self.ready)().await {
            Ok(()) => true,
            Err(why) => {
                tracing::info!(%why, "probe: not ready");
                false
            }
        };
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
