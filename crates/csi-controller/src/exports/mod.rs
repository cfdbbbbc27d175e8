//! Exports: how a volume is shared or targeted, one module per protocol behind [`Exporter`],
//! so changing one protocol means editing one file. Every step finds by exact name or path
//! before it creates, so a retry after any failure carries on where the last one stopped.

mod iscsi;
mod nfs;
mod nvmeof;
mod smb;

use std::collections::HashMap;
use std::time::Duration;

use csi_api::{Export, Protocol, VolumeId};
use truenas::{Client, Error};

use crate::error::{ControllerError, from_truenas};
use crate::volumes::{ManagedVolume, Plan};

/// How long to wait for a new zvol's device node before a namespace or extent can use it.
const ZVOL_DEVICE_WAIT: Duration = Duration::from_secs(15);

/// What a volume's export is: the protocol's part of the volume context, and the TrueNAS ids
/// recorded on the dataset as user properties.
pub(crate) type Exported = (Export, Vec<(String, String)>);

/// The names a volume's exports are found by, derived from its id alone (so a volume whose
/// record is gone can still be cleaned up).
pub(crate) struct Names {
    /// The dataset or zvol.
    pub(crate) dataset: String,
    /// The volume name: the dataset's last component.
    pub(crate) name: String,
    /// The dataset's mount path on TrueNAS.
    pub(crate) path: String,
}

impl Names {
    fn of(id: &VolumeId) -> Self {
        Self {
            dataset: id.dataset.clone(),
            name: id
                .dataset
                .rsplit('/')
                .next()
                .unwrap_or(&id.dataset)
                .to_owned(),
            path: format!("/mnt/{}", id.dataset),
        }
    }
}

/// One protocol's exports. File protocols need no per-node access lists, so publish and
/// unpublish do nothing unless a protocol says otherwise.
pub(crate) trait Exporter {
    /// Shares or targets the volume (idempotent).
    async fn ensure(&self, client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError>;

    /// Removes the share or target (idempotent; found by exact name and path).
    async fn remove(&self, client: &Client, names: &Names) -> Result<(), ControllerError>;

    /// Puts a node on the volume's allow-list; returns the publish context.
    async fn publish(
        &self,
        _client: &Client,
        _volume: &ManagedVolume,
        _node_id: &str,
    ) -> Result<HashMap<String, String>, ControllerError> {
        Ok(HashMap::new())
    }

    /// Takes a node off the volume's allow-list.
    async fn unpublish(
        &self,
        _client: &Client,
        _volume: &ManagedVolume,
        _node_id: &str,
    ) -> Result<(), ControllerError> {
        Ok(())
    }

    /// Why the export is not healthy, or `None`.
    async fn condition(
        &self,
        client: &Client,
        volume: &ManagedVolume,
    ) -> Result<Option<String>, ControllerError>;
}

/// Runs `$call` on the exporter of `$protocol`: the one place protocols are matched.
macro_rules! with_exporter {
    ($protocol:expr, $exporter:ident => $call:expr) => {
        match $protocol {
            Protocol::Nfs => {
                let $exporter = nfs::Nfs;
                $call
            }
            Protocol::Smb => {
                let $exporter = smb::Smb;
                $call
            }
            Protocol::Nvmeof => {
                let $exporter = nvmeof::Nvmeof;
                $call
            }
            Protocol::Iscsi => {
                let $exporter = iscsi::Iscsi;
                $call
            }
        }
    };
}

/// Shares or targets the volume and returns its export.
pub(crate) async fn ensure(client: &Client, plan: &Plan<'_>) -> Result<Exported, ControllerError> {
    with_exporter!(plan.params.protocol, e => e.ensure(client, plan).await)
}

/// Removes the share or target of a volume.
pub(crate) async fn remove(client: &Client, id: &VolumeId) -> Result<(), ControllerError> {
    let names = Names::of(id);
    with_exporter!(id.protocol, e => e.remove(client, &names).await)
}

/// ControllerPublishVolume: puts the node on the allow-list (block protocols).
pub(crate) async fn publish(
    client: &Client,
    volume: &ManagedVolume,
    node_id: &str,
) -> Result<HashMap<String, String>, ControllerError> {
    with_exporter!(volume.id.protocol, e => e.publish(client, volume, node_id).await)
}

/// ControllerUnpublishVolume: takes the node off the allow-list.
pub(crate) async fn unpublish(
    client: &Client,
    volume: &ManagedVolume,
    node_id: &str,
) -> Result<(), ControllerError> {
    if volume.allow_any_host {
        return Ok(());
    }
    with_exporter!(volume.id.protocol, e => e.unpublish(client, volume, node_id).await)
}

/// Why a volume is not healthy, or `None`.
pub(crate) async fn condition(
    client: &Client,
    volume: &ManagedVolume,
) -> Result<Option<String>, ControllerError> {
    let problem = with_exporter!(volume.id.protocol, e => e.condition(client, volume).await)?;
    Ok(match problem {
        None if volume.id.protocol.is_block() && volume.dataset.volsize_bytes().is_none() => {
            Some(format!("zvol {} reports no size", volume.id.dataset))
        }
        other => other,
    })
}

/// What [`find_or_create`] says at each step.
pub(crate) struct Steps<M> {
    /// The lookup, for its error.
    pub(crate) lookup: &'static str,
    /// The create, for its error.
    pub(crate) create: &'static str,
    /// What is missing when neither found nor made.
    pub(crate) missing: M,
}

/// Finds an object, creating it when absent. When the create is refused because the object
/// exists (a concurrent caller made it first, or TrueNAS reports a clash as a validation
/// error), it is looked up again.
pub(crate) async fn find_or_create<T, F, FF, C, CF, M>(
    steps: Steps<M>,
    find: F,
    create: C,
) -> Result<T, ControllerError>
where
    F: Fn() -> FF,
    FF: Future<Output = Result<Option<T>, Error>>,
    C: FnOnce() -> CF,
    CF: Future<Output = Result<T, Error>>,
    M: FnOnce() -> String,
{
    if let Some(found) = find().await.map_err(|e| from_truenas(steps.lookup, e))? {
        return Ok(found);
    }
    create_or_find(steps, find, create).await
}

/// Creates an object that cannot exist yet (its dataset was just made), looking it up only
/// when the create is refused because it does: one call instead of two on the usual path.
pub(crate) async fn create_or_find<T, F, FF, C, CF, M>(
    steps: Steps<M>,
    find: F,
    create: C,
) -> Result<T, ControllerError>
where
    F: Fn() -> FF,
    FF: Future<Output = Result<Option<T>, Error>>,
    C: FnOnce() -> CF,
    CF: Future<Output = Result<T, Error>>,
    M: FnOnce() -> String,
{
    match create().await {
        Ok(made) => Ok(made),
        // Refused: either it exists after all, or the refusal is the answer.
        Err(err @ (Error::AlreadyExists { .. } | Error::Validation { .. })) => {
            match find().await.map_err(|e| from_truenas(steps.lookup, e))? {
                Some(found) => Ok(found),
                None if matches!(err, Error::AlreadyExists { .. }) => {
                    Err(ControllerError::internal((steps.missing)()))
                }
                None => Err(from_truenas(steps.create, err)),
            }
        }
        Err(err) => Err(from_truenas(steps.create, err)),
    }
}

/// Polls while TrueNAS says a new zvol is not a block device yet.
pub(crate) async fn with_zvol_wait<T, F, Fut>(mut attempt: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let deadline = tokio::time::Instant::now() + ZVOL_DEVICE_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(err)
                if (err.to_string().contains("must be a block device")
                    || err.to_string().contains("does not exist"))
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
