//! Faults against the simulator: the socket dropped at every step of a create, injected
//! validation errors, a controller restarted half-way. Afterwards nothing is left behind.

mod common;

use common::*;
use csi_api::csi::controller_client::ControllerClient;
use csi_api::csi::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_dropped_at_every_step_of_a_create_then_retry_and_delete_leave_nothing() {
    let mut h = harness().await;
    // Dozens of reconnects in a minute would hit TrueNAS's login rate limit; that limit is not
    // what this test is about (the client's answer to it is tested in the truenas crate).
    h.sim.faults().set_unauthenticated_rate_limit(10_000);
    for protocol in PROTOCOLS {
        // Count the TrueNAS calls one create makes, then drop the socket after each of them.
        let before = h.sim.faults().calls();
        let probe = create_request(&format!("count-{protocol}"), protocol, GIB);
        let vol = h
            .controller
            .create_volume(probe)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let steps = h.sim.faults().calls() - before;
        h.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: vol.volume_id,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(steps >= 4, "{protocol}: {steps} calls");
        for step in 1..=steps {
            let name = format!("drop-{protocol}-{step}");
            h.sim.faults().drop_after_calls(step);
            let first = h
                .controller
                .create_volume(create_request(&name, protocol, GIB))
                .await;
            h.sim.faults().drop_after_calls(0);
            if let Err(status) = &first {
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::AlreadyExists),
                    "{protocol} step {step}: {status:?}"
                );
            }
            // The CO retries until it gets an answer, then deletes.
            let mut volume = None;
            for _ in 0..5 {
                match h
                    .controller
                    .create_volume(create_request(&name, protocol, GIB))
                    .await
                {
                    Ok(ok) => {
                        volume = ok.into_inner().volume;
                        break;
                    }
                    Err(status) => assert_eq!(
                        status.code(),
                        Code::Unavailable,
                        "{protocol} step {step} retry: {status:?}"
                    ),
                }
            }
            let volume =
                volume.unwrap_or_else(|| panic!("{protocol} step {step}: never completed"));
            h.controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id: volume.volume_id,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                leftovers(&h.truenas).await,
                Vec::<String>::new(),
                "{protocol} step {step}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_validation_errors_roll_back_the_half_made_volume() {
    let mut h = harness().await;
    let cases = [
        (
            "nfs",
            "sharing.nfs.create",
            "sharingnfs_create.path",
            "The path must reside within a pool mount point",
        ),
        (
            "smb",
            "sharing.smb.create",
            "sharingsmb_create.name",
            "Share with this name is invalid",
        ),
        (
            "nvmeof",
            "nvmet.port_subsys.create",
            "nvmet_port_subsys_create.port_id",
            "No port with ID 1",
        ),
        (
            "iscsi",
            "iscsi.targetextent.create",
            "iscsi_targetextent_create.lunid",
            "LUN ID is already being used for this target.",
        ),
    ];
    for (protocol, method, attribute, message) in cases {
        h.sim
            .faults()
            .fail_method_validation(method, attribute, message);
        let err = h
            .controller
            .create_volume(create_request(&format!("bad-{protocol}"), protocol, GIB))
            .await
            .unwrap_err();
        h.sim.faults().clear_failure(method);
        assert_eq!(err.code(), Code::InvalidArgument, "{protocol}: {err:?}");
        assert!(
            err.message().contains(attribute),
            "{protocol}: {}",
            err.message()
        );
        assert_eq!(
            leftovers(&h.truenas).await,
            Vec::<String>::new(),
            "{protocol}: rolled back"
        );
    }
    // A failure TrueNAS reports as busy is retryable, never Internal.
    h.sim
        .faults()
        .fail_method("pool.dataset.create", "EBUSY", "pool is busy");
    let err = h
        .controller
        .create_volume(create_request("busy", "nfs", GIB))
        .await
        .unwrap_err();
    h.sim.faults().clear_failure("pool.dataset.create");
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_completes_or_cleans_a_half_made_volume() {
    let mut h = harness().await;
    for protocol in PROTOCOLS {
        let name = format!("half-{protocol}");
        // The export step fails and so does the rollback: the controller "dies" half-way.
        let export = match protocol {
            "nfs" => "sharing.nfs.create",
            "smb" => "sharing.smb.create",
            "nvmeof" => "nvmet.namespace.create",
            _ => "iscsi.extent.create",
        };
        h.sim
            .faults()
            .fail_method(export, "EFAULT", "injected crash");
        h.sim
            .faults()
            .fail_method("pool.dataset.delete", "EFAULT", "injected crash");
        assert!(
            h.controller
                .create_volume(create_request(&name, protocol, GIB))
                .await
                .is_err()
        );
        h.sim.faults().clear_failure(export);
        h.sim.faults().clear_failure("pool.dataset.delete");
        assert!(
            !leftovers(&h.truenas).await.is_empty(),
            "{protocol}: something was left half-made"
        );

        // A new controller process (no shared memory with the first) takes over.
        let client = truenas_client(&h.sim, &h.key);
        client.ready().await.unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let (socket, server) = serve_controller(
            client,
            h.dir.path(),
            &format!("restarted-{protocol}"),
            &mut registry,
        )
        .await;
        let mut restarted = ControllerClient::new(channel(socket).await);
        let volume = restarted
            .create_volume(create_request(&name, protocol, GIB))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert!(!volume.volume_context.is_empty());
        restarted
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            leftovers(&h.truenas).await,
            Vec::<String>::new(),
            "{protocol}"
        );

        // Or the CO gives up on the half-made volume and deletes it: also clean.
        h.sim
            .faults()
            .fail_method(export, "EFAULT", "injected crash");
        h.sim
            .faults()
            .fail_method("pool.dataset.delete", "EFAULT", "injected crash");
        let _ = h
            .controller
            .create_volume(create_request(&name, protocol, GIB))
            .await;
        h.sim.faults().clear_failure(export);
        h.sim.faults().clear_failure("pool.dataset.delete");
        let id = format!("{protocol}:tank/csi/{name}");
        restarted
            .delete_volume(DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            leftovers(&h.truenas).await,
            Vec::<String>::new(),
            "{protocol}: delete of a half-made volume"
        );
        server.abort();
    }
}
