//! The CSI Controller service of tns-csi: CreateVolume and the
//! rest turned into TrueNAS operations through the `truenas` client. It keeps no local state:
//! names, ZFS user properties and exact lookups on TrueNAS are the whole truth, so a
//! controller restarted at any moment carries on. Operations are serialised per volume or
//! snapshot name (a second caller gets `Aborted`); different volumes run in parallel.

mod capabilities;
mod error;
mod exports;
mod modify;
mod names;
mod nodes;
mod orphans;
mod params;
mod props;
mod snapshots;
mod systems;
mod volumes;

use std::sync::Arc;

use crate::error::ControllerError;
use crate::params::VolumeParams;
use crate::volumes::{Plan, Source};
use csi_api::csi::controller_server::Controller;
use csi_api::csi::controller_service_capability::{Rpc, rpc};
use csi_api::csi::volume_capability::AccessType;
use csi_api::csi::*;
use csi_api::{CsiMetrics, NameLocks, SnapshotId, VolumeContext, VolumeId};
use tonic::{Request, Response, Status};

pub use nodes::{NodeDirectory, StaticNodes};
pub use orphans::{
    ClusterRecords, Orphan, OrphanKind, OrphanMetrics, OrphanReport, OrphanSettings, Reconciler,
};
pub use systems::{System, Systems};

/// What the controller needs besides the TrueNAS systems.
#[derive(Clone)]
pub struct ControllerSettings {
    /// The nodes ControllerPublishVolume may give access to.
    pub nodes: Arc<dyn NodeDirectory>,
    /// The per-volume locks, shared with the orphan reconciler so it never deletes what a
    /// CSI call is working on.
    pub locks: NameLocks,
}

/// The Controller service.
#[derive(Clone)]
pub struct ControllerService {
    systems: Arc<Systems>,
    settings: Arc<ControllerSettings>,
    locks: NameLocks,
    metrics: CsiMetrics,
}

impl ControllerService {
    /// A controller working on `systems`.
    pub fn new(systems: Arc<Systems>, settings: ControllerSettings, metrics: CsiMetrics) -> Self {
        Self {
            systems,
            locks: settings.locks.clone(),
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// The system a volume id names, and the id parsed; a malformed id is NOT_FOUND.
    fn route(&self, volume_id: &str) -> Result<(&System, VolumeId), ControllerError> {
        let id: VolumeId = volume_id.parse().map_err(|err| {
            ControllerError::not_found(format!("volume {volume_id} does not exist: {err}"))
        })?;
        Ok((self.systems.for_id(&id)?, id))
    }

    /// Loads a live volume by id from the system the id names; its id stays as given.
    async fn require(
        &self,
        volume_id: &str,
    ) -> Result<(&System, volumes::ManagedVolume), ControllerError> {
        let (system, id) = self.route(volume_id)?;
        let mut volume = volumes::require(&system.client, &id).await?;
        volume.id.system = id.system;
        Ok((system, volume))
    }

    async fn create_volume_inner(
        &self,
        req: CreateVolumeRequest,
    ) -> Result<CreateVolumeResponse, ControllerError> {
        if req.name.is_empty() {
            return Err(ControllerError::invalid_argument("name: required"));
        }
        let params = VolumeParams::parse(&req.parameters)?;
        capabilities::check_capabilities(params.protocol, &req.volume_capabilities)?;
        if params.detached && params.encryption {
            return Err(ControllerError::invalid_argument(
                "StorageClass parameters `detached` and `encryption`: a detached copy is made by a local replication, which would not carry the encryption; use one of them",
            ));
        }
        let volume_name = params.volume_name(&req.name)?;
        params.check_comment(&volume_name)?;
        modify::check(
            params.protocol,
            &params.parent_dataset(),
            &req.mutable_parameters,
        )?;
        let dataset = format!("{}/{volume_name}", params.parent_dataset());
        let _held = self.locks.try_lock(&dataset)?;
        let capacity = volumes::capacity_for(&params, req.capacity_range.as_ref())?;
        let source = Source::parse(req.volume_content_source.as_ref())?;
        let system = self.place(&params, source.as_ref(), &req, &dataset).await?;
        let mut plan = Plan {
            csi_name: &req.name,
            params: &params,
            dataset: dataset.clone(),
            volume_name,
            capacity,
            source,
            server: params
                .server
                .clone()
                .unwrap_or_else(|| system.default_server.clone()),
            secrets: &req.secrets,
            fresh: false,
        };
        let client = &system.client;
        let found = volumes::lookup(client, &dataset, &params.parent_dataset()).await?;
        let adopted = match found.volume {
            None => false,
            Some(None) => {
                return Err(ControllerError::already_exists(format!(
                    "dataset {dataset} exists but is not managed by tns-csi; choose another name or parentDataset"
                )));
            }
            Some(Some(volume)) => {
                let adopting = volume.retained && volume.adoptable && params.adopt_existing;
                if volume.csi_name != req.name && !adopting {
                    return Err(ControllerError::already_exists(format!(
                        "dataset {dataset} belongs to CSI volume {}",
                        volume.csi_name
                    )));
                }
                if volume.deleted && !adopting {
                    return Err(ControllerError::already_exists(format!(
                        "volume {} is being deleted (it waits for its snapshots); use another name",
                        volume.id
                    )));
                }
                if volume.id.protocol != params.protocol || volume.digest != params.digest {
                    return Err(ControllerError::already_exists(format!(
                        "volume {} exists with different StorageClass parameters",
                        volume.id
                    )));
                }
                let range = req.capacity_range.unwrap_or_default();
                let too_small = (volume.capacity as i64) < range.required_bytes;
                let too_big = range.limit_bytes > 0 && volume.capacity as i64 > range.limit_bytes;
                if too_small || too_big {
                    return Err(ControllerError::already_exists(format!(
                        "volume {} exists with {} bytes, outside the requested range",
                        volume.id, volume.capacity
                    )));
                }
                let wanted_source = plan.source.as_ref().map(|s| match s {
                    Source::Snapshot(id) => id.to_string(),
                    Source::Volume(id) => id.to_string(),
                });
                let has_source = volume
                    .dataset
                    .user_property(props::CONTENT_SOURCE_ID)
                    .map(str::to_owned);
                if wanted_source.is_some() && wanted_source != has_source {
                    return Err(ControllerError::already_exists(format!(
                        "volume {} exists with a different content source",
                        volume.id
                    )));
                }
                true
            }
        };
        if !adopted {
            volumes::ensure_parent_of(client, &params, found.parent.as_ref()).await?;
            if let Err(err) = volumes::create_dataset(client, &plan, found.parent.as_ref()).await {
                roll_back(client, &plan).await;
                return Err(err);
            }
            plan.fresh = true;
        }
        let (export, ids) = match exports::ensure(client, &plan).await {
            Ok(done) => done,
            Err(err) => {
                if !adopted {
                    roll_back(client, &plan).await;
                }
                return Err(err);
            }
        };
        let context = VolumeContext {
            server: plan.server.clone(),
            dataset: dataset.clone(),
            export,
        };
        let mut record = ids;
        record.push((
            props::VOLUME_CONTEXT.to_owned(),
            serde_json::to_string(&context.to_map()).unwrap_or_default(),
        ));
        if let Some(name) = self.systems.id_name(system) {
            record.push((props::SYSTEM.to_owned(), name));
        }
        if adopted {
            record.push((props::CSI_VOLUME_NAME.to_owned(), req.name.clone()));
            record.push((props::DELETED.to_owned(), "false".into()));
            record.push((props::RETAINED.to_owned(), "false".into()));
        }
        // The update answers with the dataset: the volume is read from that, not looked up.
        let entry = volumes::record(client, &dataset, record).await?;
        let Some(mut volume) = volumes::from_entry(entry) else {
            return Err(ControllerError::unavailable(format!(
                "volume {dataset} lost its metadata while it was being created; retry"
            )));
        };
        volume.id.system = self.systems.id_name(system);
        // VolumeAttributesClass parameters given at creation (checked above).
        if !req.mutable_parameters.is_empty() {
            modify::modify(client, &volume, &req.mutable_parameters).await?;
        }
        Ok(CreateVolumeResponse {
            volume: Some(to_csi(system, &volume)),
        })
    }

    /// The system a CreateVolume makes its volume on: the content source's (a clone lives
    /// beside its origin), else the best candidate by StorageClass `system` and topology that
    /// already holds the volume (a retry) or, failing that, the first one connected.
    async fn place(
        &self,
        params: &VolumeParams,
        source: Option<&Source>,
        req: &CreateVolumeRequest,
        dataset: &str,
    ) -> Result<&System, ControllerError> {
        let requirements = req.accessibility_requirements.as_ref();
        if let Some(source) = source {
            let origin = match source {
                Source::Snapshot(id) => &id.volume,
                Source::Volume(id) => id,
            };
            let system = self.systems.for_id(origin)?;
            if params.system.as_deref().is_some_and(|p| p != system.name)
                && self.systems.has_topology()
            {
                return Err(ControllerError::invalid_argument(format!(
                    "StorageClass parameter `system`: the content source is on system `{}`, and a clone is made on its origin's system",
                    system.name
                )));
            }
            self.systems.candidates(Some(&system.name), requirements)?;
            return Ok(system);
        }
        let candidates = self
            .systems
            .candidates(params.system.as_deref(), requirements)?;
        if let [only] = candidates.as_slice() {
            return Ok(only);
        }
        let mut connected = None;
        let mut problems = Vec::new();
        for system in candidates {
            if let Some(problem) = system.client.connection_problem() {
                problems.push(format!("{}: {problem}", system.name));
                continue;
            }
            if volumes::load(&system.client, dataset).await?.is_some() {
                return Ok(system);
            }
            connected.get_or_insert(system);
        }
        connected.ok_or_else(|| {
            ControllerError::unavailable(format!(
                "no TrueNAS system that may hold this volume is connected ({})",
                problems.join("; ")
            ))
        })
    }

    /// Counts the live volumes on TrueNAS by protocol into `tns_csi_volumes` (a count query
    /// per protocol, never a listing).
    pub async fn count_volumes(&self) -> Result<(), Status> {
        let mut counts: Vec<(csi_api::Protocol, u64)> = Vec::new();
        for system in self.systems.all() {
            // A system that is down keeps its last count out rather than failing the others.
            match volumes::count_by_protocol(&system.client).await {
                Ok(some) => counts.extend(some),
                Err(err) => tracing::debug!(system = %system.name, %err, "could not count volumes"),
            }
        }
        self.metrics.set_volumes(&counts);
        Ok(())
    }

    /// GetCapacity with no parameters: the free space of every pool together, and the largest
    /// volume any one of them can hold.
    async fn capacity_of_all_pools(
        &self,
        system: &System,
    ) -> Result<GetCapacityResponse, ControllerError> {
        let pools = system
            .client
            .pools()
            .list()
            .await
            .map_err(error::tn("listing the pools"))?;
        let (mut total, mut largest) = (0u64, 0u64);
        for pool in pools {
            if let Some(root) = system
                .client
                .datasets()
                .get_properties(&pool.name, &["available"])
                .await
                .map_err(error::tn("reading a pool's root dataset"))?
            {
                let available = root.available_bytes().unwrap_or(0);
                total = total.saturating_add(available);
                largest = largest.max(available);
            }
        }
        Ok(GetCapacityResponse {
            available_capacity: total as i64,
            maximum_volume_size: Some(largest as i64),
            minimum_volume_size: None,
        })
    }

    /// GetCapacity with parameters, on one system: the parent dataset's room (or the pool's).
    async fn capacity_on(
        &self,
        system: &System,
        params: &VolumeParams,
    ) -> Result<GetCapacityResponse, ControllerError> {
        let datasets = system.client.datasets();
        let parent = params.parent_dataset();
        let found = match datasets
            .get_properties(&parent, &["available"])
            .await
            .map_err(error::tn("reading the parent dataset"))?
        {
            Some(dataset) => Some(dataset),
            None => datasets
                .get_properties(&params.pool, &["available"])
                .await
                .map_err(error::tn("reading the pool's root dataset"))?,
        };
        let dataset = found.ok_or_else(|| {
            ControllerError::invalid_argument(format!(
                "StorageClass parameter `pool`: pool {} does not exist on system {}",
                params.pool, system.name
            ))
        })?;
        let available = dataset.available_bytes().unwrap_or(0) as i64;
        Ok(GetCapacityResponse {
            available_capacity: available,
            maximum_volume_size: Some(available),
            minimum_volume_size: Some(if params.protocol.is_block() {
                params.volblocksize.bytes() as i64
            } else {
                1 << 30
            }),
        })
    }

    /// Volumes of every system, in system then id order, from a paging position on.
    async fn list_page(
        &self,
        start: ListPosition,
        max: usize,
    ) -> Result<
        (
            Vec<csi_api::csi::list_volumes_response::Entry>,
            Option<ListPosition>,
        ),
        ControllerError,
    > {
        let mut entries = Vec::new();
        let systems = self.systems.all();
        if start.system >= systems.len() && !(start.system == 0 && start.offset == 0) {
            return Err(ControllerError::Aborted(format!(
                "starting_token {} is past the end",
                start.token(self.systems.has_topology())
            )));
        }
        let mut at = start;
        while at.system < systems.len() {
            let system = &systems[at.system];
            let want = if max == 0 { 0 } else { max - entries.len() + 1 };
            let page = volumes::list(&system.client, at.offset as u32, want as u32)
                .await
                .map_err(|err| with_system(self.systems.has_topology(), system, err))?;
            if at.offset > 0 && page.is_empty() {
                let total = volumes::list(&system.client, 0, 0).await?.len();
                if at.offset > total {
                    return Err(ControllerError::Aborted(format!(
                        "starting_token {} is past the end ({total} volumes)",
                        at.token(self.systems.has_topology())
                    )));
                }
            }
            for mut volume in page {
                if max > 0 && entries.len() == max {
                    return Ok((entries, Some(at)));
                }
                volume.id.system = self.systems.listed_name(system, &volume.dataset);
                entries.push(list_volumes_response::Entry {
                    volume: Some(to_csi(system, &volume)),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: volume.published_nodes(),
                        volume_condition: None,
                    }),
                });
                at.offset += 1;
            }
            at = ListPosition {
                system: at.system + 1,
                offset: 0,
            };
        }
        Ok((entries, None))
    }
}

/// Where a ListVolumes page starts: a system and an offset into its volumes. The token is the
/// offset alone with one system (as before there were several), `<system index>.<offset>`
/// with several.
#[derive(Debug, Clone, Copy, Default)]
struct ListPosition {
    system: usize,
    offset: usize,
}

impl ListPosition {
    fn parse(token: &str) -> Result<Self, Status> {
        if token.is_empty() {
            return Ok(Self::default());
        }
        let bad = || {
            Status::aborted(format!(
                "starting_token `{token}` is not one this driver issued"
            ))
        };
        match token.split_once('.') {
            None => Ok(Self {
                system: 0,
                offset: token.parse().map_err(|_| bad())?,
            }),
            Some((system, offset)) => Ok(Self {
                system: system.parse().map_err(|_| bad())?,
                offset: offset.parse().map_err(|_| bad())?,
            }),
        }
    }

    fn token(self, several: bool) -> String {
        if several {
            format!("{}.{}", self.system, self.offset)
        } else {
            self.offset.to_string()
        }
    }
}

/// The CSI volume with the topology of the system it lives on.
fn to_csi(system: &System, volume: &volumes::ManagedVolume) -> csi_api::csi::Volume {
    let mut csi = volume.to_csi();
    csi.accessible_topology = system.accessible_topology();
    csi
}

/// With several systems, an error says which one it came from.
fn with_system(several: bool, system: &System, err: ControllerError) -> ControllerError {
    if !several {
        return err;
    }
    match err {
        ControllerError::TrueNas { what, source } => ControllerError::TrueNas {
            what: format!("TrueNAS system {}: {what}", system.name),
            source,
        },
        other => other,
    }
}

/// Undoes a half-made create so nothing is left behind (best effort; a retry also completes).
async fn roll_back(client: &truenas::Client, plan: &Plan<'_>) {
    let id = VolumeId {
        system: None,
        protocol: plan.params.protocol,
        dataset: plan.dataset.clone(),
    };
    if let Ok(Some(Some(_))) = volumes::load(client, &plan.dataset).await
        && let Err(err) = volumes::destroy(client, &id).await
    {
        tracing::warn!(volume = %id, %err, "could not roll back a failed create; a retry will complete or clean it");
    }
}

fn capability(kind: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(Rpc {
            r#type: kind as i32,
        })),
    }
}

fn offset_token(token: &str) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        Status::aborted(format!(
            "starting_token `{token}` is not one this driver issued"
        ))
    })
}

fn max_entries(max: i32) -> Result<usize, Status> {
    usize::try_from(max).map_err(|_| Status::invalid_argument("max_entries must not be negative"))
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        self.metrics
            .observe_volume("CreateVolume", &name, async {
                self.create_volume_inner(req).await.map_err(Status::from)
            })
            .await
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("DeleteVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                let Ok(id) = req.volume_id.parse::<VolumeId>() else {
                    return Ok(DeleteVolumeResponse {}); // never ours: nothing to delete
                };
                let system = self.systems.for_id(&id)?;
                let _held = self.locks.try_lock(&id.dataset)?;
                match volumes::load(&system.client, &id.dataset).await? {
                    None => Ok(DeleteVolumeResponse {}),
                    Some(None) => Err(Status::failed_precondition(format!(
                        "dataset {} is not managed by tns-csi; not deleting it",
                        id.dataset
                    ))),
                    Some(Some(volume)) if volume.deleted => Ok(DeleteVolumeResponse {}),
                    Some(Some(volume)) => {
                        volumes::delete(&system.client, volume).await?;
                        Ok(DeleteVolumeResponse {})
                    }
                }
            })
            .await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ControllerPublishVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                if req.node_id.is_empty() {
                    return Err(Status::invalid_argument("node_id: required"));
                }
                csi_api::node_identity(&req.node_id)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let nodes = &self.settings.nodes;
                let known = nodes.contains(&req.node_id).await.map_err(|err| {
                    Status::unavailable(format!(
                        "cannot tell whether node {} exists: {err}",
                        req.node_id
                    ))
                })?;
                if !known {
                    return Err(Status::not_found(format!(
                        "node {} does not exist: {}",
                        req.node_id,
                        nodes.describe()
                    )));
                }
                let capability = req
                    .volume_capability
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("volume_capability: required"))?;
                let (system, volume) = self.require(&req.volume_id).await?;
                let client = &system.client;
                capabilities::check_capability(volume.id.protocol, capability)
                    .map_err(Status::invalid_argument)?;
                let _held = self.locks.try_lock(&volume.id.dataset)?;
                // After a NAS reboot an encrypted volume is locked: unlock it with the
                // controller-publish secret before the node stages it.
                volumes::unlock(client, &volume, &req.secrets).await?;
                let publish_context = exports::publish(client, &volume, &req.node_id).await?;
                volumes::record_published(client, &volume, &req.node_id, true).await?;
                Ok(ControllerPublishVolumeResponse { publish_context })
            })
            .await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ControllerUnpublishVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                let (system, volume) = match self.require(&req.volume_id).await {
                    Ok(found) => found,
                    Err(ControllerError::NotFound(_)) => {
                        return Ok(ControllerUnpublishVolumeResponse {}); // gone: unpublished everywhere
                    }
                    Err(err) => return Err(err.into()),
                };
                let _held = self.locks.try_lock(&volume.id.dataset)?;
                // No node id: unpublish from every node (CSI), i.e. every recorded one.
                let nodes = if req.node_id.is_empty() {
                    volume.published_nodes()
                } else {
                    vec![req.node_id.clone()]
                };
                for node in &nodes {
                    exports::unpublish(&system.client, &volume, node).await?;
                    volumes::record_published(&system.client, &volume, node, false).await?;
                }
                Ok(ControllerUnpublishVolumeResponse {})
            })
            .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ValidateVolumeCapabilities", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                if req.volume_capabilities.is_empty() {
                    return Err(Status::invalid_argument("volume_capabilities: required"));
                }
                let (_, volume) = self.require(&req.volume_id).await?;
                let problems: Vec<String> = req
                    .volume_capabilities
                    .iter()
                    .filter_map(|c| capabilities::check_capability(volume.id.protocol, c).err())
                    .collect();
                if !problems.is_empty() {
                    return Ok(ValidateVolumeCapabilitiesResponse {
                        confirmed: None,
                        message: problems.join("; "),
                    });
                }
                Ok(ValidateVolumeCapabilitiesResponse {
                    confirmed: Some(validate_volume_capabilities_response::Confirmed {
                        volume_context: req.volume_context,
                        volume_capabilities: req.volume_capabilities,
                        parameters: req.parameters,
                        mutable_parameters: Default::default(),
                    }),
                    message: String::new(),
                })
            })
            .await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe("ListVolumes", async {
                let start = ListPosition::parse(&req.starting_token)?;
                let max = max_entries(req.max_entries)?;
                let (entries, next) = self.list_page(start, max).await?;
                Ok(ListVolumesResponse {
                    entries,
                    next_token: next
                        .map(|at| at.token(self.systems.has_topology()))
                        .unwrap_or_default(),
                })
            })
            .await
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe("GetCapacity", async {
                let pinned = req.parameters.get("system").map(String::as_str);
                let systems = self
                    .systems
                    .for_capacity(pinned, req.accessible_topology.as_ref())?;
                let params = if req.parameters.is_empty() {
                    None
                } else {
                    Some(VolumeParams::parse(&req.parameters)?)
                };
                if let Some(params) = &params
                    && !req.volume_capabilities.is_empty()
                    && capabilities::check_capabilities(params.protocol, &req.volume_capabilities)
                        .is_err()
                {
                    return Ok(GetCapacityResponse {
                        available_capacity: 0,
                        maximum_volume_size: None,
                        minimum_volume_size: None,
                    });
                }
                // Several systems in one segment add up; one that is down is left out (and
                // logged) unless none answers.
                let mut answer: Option<GetCapacityResponse> = None;
                let mut failed = None;
                for system in systems {
                    let one = match &params {
                        None => self.capacity_of_all_pools(system).await,
                        Some(params) => self.capacity_on(system, params).await,
                    };
                    match one {
                        Ok(one) => {
                            answer = Some(match answer {
                                None => one,
                                Some(sum) => GetCapacityResponse {
                                    available_capacity: sum.available_capacity + one.available_capacity,
                                    maximum_volume_size: sum.maximum_volume_size.max(one.maximum_volume_size),
                                    minimum_volume_size: sum.minimum_volume_size,
                                },
                            });
                        }
                        Err(err @ ControllerError::InvalidArgument(_)) => return Err(err.into()),
                        Err(err) => {
                            tracing::warn!(system = %system.name, %err, "no capacity from this TrueNAS system");
                            failed = Some(with_system(self.systems.has_topology(), system, err));
                        }
                    }
                }
                match (answer, failed) {
                    (Some(answer), _) => Ok(answer),
                    (None, Some(err)) => Err(err.into()),
                    (None, None) => Ok(GetCapacityResponse {
                        available_capacity: 0,
                        maximum_volume_size: None,
                        minimum_volume_size: None,
                    }),
                }
            })
            .await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        self.metrics
            .observe("ControllerGetCapabilities", async {
                use rpc::Type::*;
                let capabilities = [
                    CreateDeleteVolume,
                    PublishUnpublishVolume,
                    ListVolumes,
                    GetCapacity,
                    CreateDeleteSnapshot,
                    ListSnapshots,
                    CloneVolume,
                    ExpandVolume,
                    VolumeCondition,
                    GetVolume,
                    SingleNodeMultiWriter,
                    PublishReadonly,
                    ListVolumesPublishedNodes,
                    ModifyVolume,
                    GetSnapshot,
                ]
                .into_iter()
                .map(capability)
                .collect();
                Ok(ControllerGetCapabilitiesResponse { capabilities })
            })
            .await
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("CreateSnapshot", &req.source_volume_id, async {
                if req.name.is_empty() {
                    return Err(Status::invalid_argument("name: required"));
                }
                if req.source_volume_id.is_empty() {
                    return Err(Status::invalid_argument("source_volume_id: required"));
                }
                let params = snapshots::SnapshotParams::parse(&req.parameters)?;
                let _held = self.locks.try_lock(&format!("snapshot:{}", req.name))?;
                let (system, source) = self.require(&req.source_volume_id).await?;
                let _volume = self.locks.try_lock(&source.id.dataset)?;
                let snapshot =
                    snapshots::create(&system.client, &source, &req.name, &params).await?;
                Ok(CreateSnapshotResponse {
                    snapshot: Some(snapshot.to_csi()),
                })
            })
            .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("DeleteSnapshot", &req.snapshot_id, async {
                if req.snapshot_id.is_empty() {
                    return Err(Status::invalid_argument("snapshot_id: required"));
                }
                let Ok(id) = req.snapshot_id.parse::<SnapshotId>() else {
                    return Ok(DeleteSnapshotResponse {});
                };
                let _held = self.locks.try_lock(&format!("snapshot:{}", id.name))?;
                let system = self.systems.for_id(&id.volume)?;
                let _volume = self.locks.try_lock(&id.volume.dataset)?;
                snapshots::delete(&system.client, &id).await?;
                Ok(DeleteSnapshotResponse {})
            })
            .await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe("ListSnapshots", async {
                let offset = offset_token(&req.starting_token)?;
                let max = max_entries(req.max_entries)?;
                if !req.snapshot_id.is_empty() {
                    let entries = match req.snapshot_id.parse::<SnapshotId>() {
                        Ok(id) => snapshots::get(&self.systems.for_id(&id.volume)?.client, &id)
                            .await?
                            .into_iter()
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                    let entries = entries
                        .iter()
                        .filter(|s: &&snapshots::ManagedSnapshot| {
                            req.source_volume_id.is_empty()
                                || s.source.to_string() == req.source_volume_id
                        })
                        .map(|s| list_snapshots_response::Entry {
                            snapshot: Some(s.to_csi()),
                        })
                        .collect();
                    return Ok(ListSnapshotsResponse {
                        entries,
                        next_token: String::new(),
                    });
                }
                let source = if req.source_volume_id.is_empty() {
                    None
                } else {
                    match req.source_volume_id.parse::<VolumeId>() {
                        Ok(id) => Some(id),
                        Err(_) => {
                            return Ok(ListSnapshotsResponse {
                                entries: Vec::new(),
                                next_token: String::new(),
                            });
                        }
                    }
                };
                let several = self.systems.has_topology();
                let (page, more, total) = if !several || source.is_some() {
                    // One system to ask: page on TrueNAS.
                    let client = match &source {
                        Some(id) => &self.systems.for_id(id)?.client,
                        None => &self.systems.all()[0].client,
                    };
                    let (page, more) =
                        snapshots::list(client, source.as_ref(), offset, max).await?;
                    let total = if offset > 0 && page.is_empty() && !more {
                        snapshots::list(client, source.as_ref(), 0, 0)
                            .await?
                            .0
                            .len()
                    } else {
                        usize::MAX
                    };
                    (page, more, total)
                } else {
                    // Every system: their snapshots together, in system order.
                    let mut all = Vec::new();
                    for system in self.systems.all() {
                        let (mut some, _) = snapshots::list(&system.client, None, 0, 0)
                            .await
                            .map_err(|err| with_system(several, system, err))?;
                        all.append(&mut some);
                    }
                    let total = all.len();
                    let more = max > 0 && total > offset + max;
                    let take = if max == 0 { usize::MAX } else { max };
                    (
                        all.into_iter().skip(offset).take(take).collect(),
                        more,
                        total,
                    )
                };
                if offset > total {
                    return Err(Status::aborted(format!(
                        "starting_token {offset} is past the end"
                    )));
                }
                let next_token = if more {
                    (offset + max).to_string()
                } else {
                    String::new()
                };
                let entries = page
                    .iter()
                    .map(|s| list_snapshots_response::Entry {
                        snapshot: Some(s.to_csi()),
                    })
                    .collect();
                Ok(ListSnapshotsResponse {
                    entries,
                    next_token,
                })
            })
            .await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ControllerExpandVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                let range = req
                    .capacity_range
                    .as_ref()
                    .ok_or_else(|| Status::invalid_argument("capacity_range: required"))?;
                let (system, volume) = self.require(&req.volume_id).await?;
                let _held = self.locks.try_lock(&volume.id.dataset)?;
                let required = u64::try_from(range.required_bytes).map_err(|_| {
                    Status::invalid_argument("capacity_range.required_bytes must not be negative")
                })?;
                let block_size = volume.dataset.volblocksize_bytes().unwrap_or(16384);
                let capacity =
                    volumes::expand(&system.client, &volume, block_size, required).await?;
                if range.limit_bytes > 0 && capacity as i64 > range.limit_bytes {
                    return Err(Status::out_of_range(format!(
                        "the volume is {capacity} bytes, over limit_bytes {}",
                        range.limit_bytes
                    )));
                }
                let raw_block = matches!(
                    req.volume_capability
                        .as_ref()
                        .and_then(|c| c.access_type.as_ref()),
                    Some(AccessType::Block(_))
                );
                Ok(ControllerExpandVolumeResponse {
                    capacity_bytes: capacity as i64,
                    node_expansion_required: volume.id.protocol.is_block() && !raw_block,
                })
            })
            .await
    }

    async fn controller_modify_volume(
        &self,
        request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ControllerModifyVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                let (system, volume) = self.require(&req.volume_id).await?;
                let _held = self.locks.try_lock(&volume.id.dataset)?;
                modify::modify(&system.client, &volume, &req.mutable_parameters).await?;
                Ok(ControllerModifyVolumeResponse {})
            })
            .await
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("GetSnapshot", &req.snapshot_id, async {
                if req.snapshot_id.is_empty() {
                    return Err(Status::invalid_argument("snapshot_id: required"));
                }
                let missing =
                    || Status::not_found(format!("snapshot {} does not exist", req.snapshot_id));
                let id: SnapshotId = req.snapshot_id.parse().map_err(|_| missing())?;
                let snapshot = snapshots::get(&self.systems.for_id(&id.volume)?.client, &id)
                    .await?
                    .ok_or_else(missing)?;
                Ok(GetSnapshotResponse {
                    snapshot: Some(snapshot.to_csi()),
                })
            })
            .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        self.metrics
            .observe_volume("ControllerGetVolume", &req.volume_id, async {
                if req.volume_id.is_empty() {
                    return Err(Status::invalid_argument("volume_id: required"));
                }
                let (system, volume) = self.require(&req.volume_id).await?;
                let problem = exports::condition(&system.client, &volume).await?;
                Ok(ControllerGetVolumeResponse {
                    volume: Some(to_csi(system, &volume)),
                    status: Some(controller_get_volume_response::VolumeStatus {
                        published_node_ids: volume.published_nodes(),
                        volume_condition: Some(csi_api::csi::VolumeCondition {
                            abnormal: problem.is_some(),
                            message: problem.unwrap_or_else(|| "healthy".into()),
                        }),
                    }),
                })
            })
            .await
    }
}
