//! The node plugin acts only on what is its own: paths inside the kubelet directory, mounts its
//! record says belong to the volume asked about. Each test is named after the rule; they run
//! on real mounts (simulated host, tmpfs for the foreign mounts) and need root, as CI runs.

use std::path::Path;
use std::process::Command;

use csi_api::csi::node_server::Node;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::*;
use tonic::{Code, Request};

mod common;
use common::*;

fn share(n: &Node_, name: &str) {
    std::fs::create_dir_all(n.data.join("mnt/tank/csi").join(name)).unwrap();
}

fn cap(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn mounted(path: &Path) -> bool {
    csi_node::mounts::at(path).unwrap().is_some()
}

fn tmpfs(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    assert!(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "foreign"])
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

async fn unpublish(n: &Node_, volume_id: &str, target: &str) -> Result<(), tonic::Status> {
    n.service
        .node_unpublish_volume(Request::new(NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target.into(),
        }))
        .await
        .map(drop)
}

async fn unstage(n: &Node_, volume_id: &str, staging: &str) -> Result<(), tonic::Status> {
    n.service
        .node_unstage_volume(Request::new(NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging.into(),
        }))
        .await
        .map(drop)
}

async fn stats(n: &Node_, volume_id: &str, path: &str) -> Result<(), tonic::Status> {
    n.service
        .node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: path.into(),
            ..Default::default()
        }))
        .await
        .map(drop)
}

/// Stages and publishes NFS volume `name` at `<root>/staging/<name>` and `<root>/pods/<name>`.
async fn staged_and_published(n: &Node_, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = n.guard.dir.path();
    share(n, name);
    let staging = root.join("staging").join(name);
    let target = root.join("pods").join(name);
    n.service
        .node_stage_volume(Request::new(stage(
            name,
            "nfs",
            &staging,
            cap(Mode::SingleNodeWriter),
            "",
        )))
        .await
        .unwrap();
    n.service
        .node_publish_volume(Request::new(publish(
            name,
            "nfs",
            &staging,
            &target,
            cap(Mode::SingleNodeWriter),
            false,
        )))
        .await
        .unwrap();
    (staging, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_kubelet_dir_relative_or_not_normal_are_invalid_and_touch_nothing() {
    let n = setup();
    let root = n.guard.dir.path().display().to_string();
    for path in [
        "/".to_owned(),
        "/proc".to_owned(),
        "relative/target".to_owned(),
        format!("{root}/../etc"),
        format!("{root}//pods/x"),
        format!("{root}/pods/x/"),
        root.clone(),
    ] {
        for (what, result) in [
            ("unpublish", unpublish(&n, "nfs:tank/csi/x", &path).await),
            ("unstage", unstage(&n, "nfs:tank/csi/x", &path).await),
            ("stats", stats(&n, "nfs:tank/csi/x", &path).await),
        ] {
            let err = result.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{what} {path}: {err:?}");
        }
    }
    assert!(mounted(Path::new("/proc")), "nothing was unmounted");
    // Publish to /etc: refused, and nothing is created there.
    share(&n, "a");
    let staging = n.guard.dir.path().join("staging/a");
    n.service
        .node_stage_volume(Request::new(stage(
            "a",
            "nfs",
            &staging,
            cap(Mode::SingleNodeWriter),
            "",
        )))
        .await
        .unwrap();
    let outside = Path::new("/etc").join(format!("tns-csi-test-{}", std::process::id()));
    let err = n
        .service
        .node_publish_volume(Request::new(publish(
            "a",
            "nfs",
            &staging,
            &outside,
            cap(Mode::SingleNodeWriter),
            false,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("target_path"), "{}", err.message());
    assert!(!outside.exists(), "{} was created", outside.display());
    // A link inside the kubelet directory that leads out of it is refused the same way.
    let link = n.guard.dir.path().join("pods-link");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let err = n
        .service
        .node_publish_volume(Request::new(publish(
            "a",
            "nfs",
            &staging,
            &link.join("x"),
            cap(Mode::SingleNodeWriter),
            false,
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        !mounted(Path::new("/etc/x")),
        "nothing mounted through the link"
    );
    unstage(&n, "nfs:tank/csi/a", &staging.display().to_string())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_tns_csi_never_made_is_never_unmounted_or_removed() {
    let n = setup();
    let foreign = n.guard.dir.path().join("pods/foreign");
    tmpfs(&foreign);
    let path = foreign.display().to_string();
    let err = unpublish(&n, "nfs:tank/csi/made-up", &path)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        mounted(&foreign) && foreign.is_dir(),
        "unpublish touched it"
    );
    let err = unstage(&n, "nfs:tank/csi/made-up", &path)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(mounted(&foreign), "unstage unmounted it");
    let err = stats(&n, "nfs:tank/csi/made-up", &path).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A path that is not mounted at all: unpublish and unstage stay idempotent.
    let empty = n.guard.dir.path().join("pods/empty");
    unpublish(&n, "nfs:tank/csi/made-up", &empty.display().to_string())
        .await
        .unwrap();
    unstage(&n, "nfs:tank/csi/made-up", &empty.display().to_string())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_volume_never_unstages_or_unpublishes_another() {
    let n = setup();
    let (a_staging, a_target) = staged_and_published(&n, "a").await;
    // B is not staged at all.
    let err = unstage(&n, "nfs:tank/csi/b", &a_staging.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = unpublish(&n, "nfs:tank/csi/b", &a_target.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // B staged and published elsewhere still cannot reach A's paths.
    let (b_staging, b_target) = staged_and_published(&n, "b").await;
    let err = unpublish(&n, "nfs:tank/csi/b", &a_target.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = stats(&n, "nfs:tank/csi/b", &a_target.display().to_string())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(mounted(&a_staging) && mounted(&a_target), "A was touched");
    // Each one's own paths work, and twice.
    for _ in 0..2 {
        unpublish(&n, "nfs:tank/csi/b", &b_target.display().to_string())
            .await
            .unwrap();
        unstage(&n, "nfs:tank/csi/b", &b_staging.display().to_string())
            .await
            .unwrap();
        unpublish(&n, "nfs:tank/csi/a", &a_target.display().to_string())
            .await
            .unwrap();
        unstage(&n, "nfs:tank/csi/a", &a_staging.display().to_string())
            .await
            .unwrap();
    }
    assert!(!mounted(&a_target) && !a_target.exists(), "target removed");
    assert!(!mounted(&a_staging) && !mounted(&b_staging));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_writer_volume_is_published_at_one_target_only() {
    let n = setup();
    share(&n, "rwop");
    let root = n.guard.dir.path();
    let staging = root.join("staging/rwop");
    n.service
        .node_stage_volume(Request::new(stage(
            "rwop",
            "nfs",
            &staging,
            cap(Mode::SingleNodeSingleWriter),
            "",
        )))
        .await
        .unwrap();
    let publish_at = |target: &str| {
        publish(
            "rwop",
            "nfs",
            &staging,
            &root.join(target),
            cap(Mode::SingleNodeSingleWriter),
            false,
        )
    };
    for _ in 0..2 {
        n.service
            .node_publish_volume(Request::new(publish_at("pods/one")))
            .await
            .unwrap();
    }
    let err = n
        .service
        .node_publish_volume(Request::new(publish_at("pods/two")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!mounted(&root.join("pods/two")));
    // Once the first target is gone, another pod may have it.
    unpublish(
        &n,
        "nfs:tank/csi/rwop",
        &root.join("pods/one").display().to_string(),
    )
    .await
    .unwrap();
    n.service
        .node_publish_volume(Request::new(publish_at("pods/two")))
        .await
        .unwrap();
    unpublish(
        &n,
        "nfs:tank/csi/rwop",
        &root.join("pods/two").display().to_string(),
    )
    .await
    .unwrap();
    unstage(&n, "nfs:tank/csi/rwop", &staging.display().to_string())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_id_of_141_bytes_stages_and_unstages() {
    let n = setup();
    let name = "v".repeat(128);
    share(&n, &name);
    let id = format!("nfs:tank/csi/{name}");
    assert_eq!(id.len(), 141);
    let staging = n.guard.dir.path().join("staging/long");
    n.service
        .node_stage_volume(Request::new(stage(
            &name,
            "nfs",
            &staging,
            cap(Mode::SingleNodeWriter),
            "",
        )))
        .await
        .unwrap();
    assert!(mounted(&staging));
    unstage(&n, &id, &staging.display().to_string())
        .await
        .unwrap();
    assert!(!mounted(&staging));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_a_volume_that_matches_nothing_is_not_found_and_leaves_nothing() {
    let n = setup();
    let staging = n.guard.dir.path().join("staging/ghost");
    for protocol in ["nfs", "nvmeof"] {
        let err = n
            .service
            .node_stage_volume(Request::new(stage(
                "ghost",
                protocol,
                &staging,
                cap(Mode::SingleNodeWriter),
                "ext4",
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{protocol}: {err:?}");
        assert!(err.message().contains("ghost"), "{}", err.message());
        assert!(!mounted(&staging));
        // No record is left behind: unstage has nothing to do.
        unstage(
            &n,
            &format!("{protocol}:tank/csi/ghost"),
            &staging.display().to_string(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_only_access_mode_is_published_read_only() {
    let n = setup();
    share(&n, "rox");
    let root = n.guard.dir.path();
    let staging = root.join("staging/rox");
    let target = root.join("pods/rox");
    n.service
        .node_stage_volume(Request::new(stage(
            "rox",
            "nfs",
            &staging,
            cap(Mode::MultiNodeReaderOnly),
            "",
        )))
        .await
        .unwrap();
    n.service
        .node_publish_volume(Request::new(publish(
            "rox",
            "nfs",
            &staging,
            &target,
            cap(Mode::MultiNodeReaderOnly),
            false,
        )))
        .await
        .unwrap();
    assert!(csi_node::mounts::at(&target).unwrap().unwrap().read_only());
    assert!(std::fs::write(target.join("x"), b"x").is_err(), "writable");
    unpublish(&n, "nfs:tank/csi/rox", &target.display().to_string())
        .await
        .unwrap();
    unstage(&n, "nfs:tank/csi/rox", &staging.display().to_string())
        .await
        .unwrap();
}
