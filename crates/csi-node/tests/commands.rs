//! The real connectors' exact command lines, checked against a recording runner with a fake
//! kernel (sysfs and /dev trees in a temp dir), since NFS, CIFS, NVMe-oF and iSCSI kernel
//! modules are not available here; plus what happens when a command fails or hangs.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi_api::CsiMetrics;
use csi_api::csi::node_server::Node;
use csi_api::csi::volume_capability::access_mode::Mode;
use csi_api::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_api::csi::*;
use csi_node::{
    HostMode, NodeError, NodeService, NodeSettings, Output, RecordingRunner, Runner, Scripted,
};
use tonic::{Code, Request};

/// Plays the kernel's part: `nvme connect` makes the subsystem appear in sysfs, `iscsiadm
/// --login` makes the by-path link appear; records everything; can look at the SMB
/// credentials file while `mount` runs.
#[derive(Clone)]
struct FakeKernel {
    record: RecordingRunner,
    root: PathBuf,
    seen_credentials: Arc<Mutex<Option<(u32, String)>>>,
    no_devices: bool,
}

#[tonic::async_trait]
impl Runner for FakeKernel {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, NodeError> {
        let line = args.join(" ");
        if program == "nvme"
            && args.first().map(String::as_str) == Some("connect")
            && !self.no_devices
        {
            let subsys = self.root.join("sys/class/nvme-subsystem/nvme-subsys0");
            for (ns, nsid) in [("nvme0n1", "1"), ("nvme0n2", "2")] {
                std::fs::create_dir_all(subsys.join(ns)).unwrap();
                std::fs::write(subsys.join(ns).join("nsid"), format!("{nsid}\n")).unwrap();
            }
            let nqn = args[args.iter().position(|a| a == "-n").unwrap() + 1].clone();
            std::fs::write(subsys.join("subsysnqn"), format!("{nqn}\n")).unwrap();
        }
        if program == "nvme" && args.first().map(String::as_str) == Some("disconnect") {
            let _ =
                std::fs::remove_dir_all(self.root.join("sys/class/nvme-subsystem/nvme-subsys0"));
        }
        if program == "iscsiadm" && line.contains("--login") && !self.no_devices {
            let iqn = args[args.iter().position(|a| a == "-T").unwrap() + 1].clone();
            let portal = args[args.iter().position(|a| a == "-p").unwrap() + 1].clone();
            let by_path = self.root.join("dev/disk/by-path");
            std::fs::create_dir_all(&by_path).unwrap();
            std::fs::write(self.root.join("dev/sdb"), b"").unwrap();
            let link = by_path.join(format!("ip-{portal}-iscsi-{iqn}-lun-0"));
            let _ = std::os::unix::fs::symlink("../../sdb", link);
        }
        if program == "mount" && line.contains("credentials=") {
            let path = line
                .split("credentials=")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            *self.seen_credentials.lock().unwrap() =
                Some((mode, std::fs::read_to_string(&path).unwrap()));
        }
        self.record.run(program, args, timeout).await
    }
}

fn blank_device() -> Scripted {
    Scripted::Exit(Output {
        status: 2,
        ..Default::default()
    })
}

struct Setup {
    dir: tempfile::TempDir,
    kernel: FakeKernel,
    node: NodeService,
}

fn setup(no_devices: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kernel = FakeKernel {
        record: RecordingRunner::default(),
        root: dir.path().to_owned(),
        seen_credentials: Arc::default(),
        no_devices,
    };
    let mut settings = NodeSettings::new("node-1", dir.path().join("state"), HostMode::Real);
    settings.sysfs = dir.path().join("sys");
    settings.dev = dir.path().join("dev");
    settings.device_wait = Duration::from_millis(300);
    settings.command_timeout = Duration::from_millis(500);
    settings.kubelet_dir = dir.path().to_owned();
    let node = NodeService::new(settings, Arc::new(kernel.clone()), CsiMetrics::default());
    Setup { dir, kernel, node }
}

fn cap(flags: &[&str]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn stage(
    id: &str,
    staging: &Path,
    context: HashMap<String, String>,
    publish: HashMap<String, String>,
    secrets: HashMap<String, String>,
    flags: &[&str],
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap(flags)),
        volume_context: context,
        publish_context: publish,
        secrets,
    }
}

fn unstage(id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
    }
}

#[tokio::test]
async fn nfs_mount_line_with_default_and_storage_class_options() {
    let s = setup(false);
    let staging = s.dir.path().join("staging");
    let ctx = map(&[
        ("protocol", "nfs"),
        ("server", "10.0.0.9"),
        ("sharePath", "/mnt/tank/csi/v1"),
        ("dataset", "tank/csi/v1"),
    ]);
    s.node
        .node_stage_volume(Request::new(stage(
            "nfs:tank/csi/v1",
            &staging,
            ctx.clone(),
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap();
    let staging2 = s.dir.path().join("staging2");
    s.node
        .node_stage_volume(Request::new(stage(
            "nfs:tank/csi/v2",
            &staging2,
            ctx,
            HashMap::new(),
            HashMap::new(),
            &["nfsvers=4.1", "hard"],
        )))
        .await
        .unwrap();
    assert_eq!(
        s.kernel.record.calls(),
        [
            format!(
                "mount -t nfs -o vers=4.2 10.0.0.9:/mnt/tank/csi/v1 {}",
                staging.display()
            ),
            format!(
                "mount -t nfs -o nfsvers=4.1,hard 10.0.0.9:/mnt/tank/csi/v1 {}",
                staging2.display()
            ),
        ]
    );
}

#[tokio::test]
async fn smb_password_only_in_a_private_0600_file_removed_after_the_mount() {
    let s = setup(false);
    let staging = s.dir.path().join("staging");
    let ctx = map(&[
        ("protocol", "smb"),
        ("server", "nas"),
        ("shareName", "pvc-1"),
        ("dataset", "tank/csi/pvc-1"),
    ]);
    let secrets = map(&[("username", "k8s"), ("password", "S3cr3t-pw")]);
    s.node
        .node_stage_volume(Request::new(stage(
            "smb:tank/csi/pvc-1",
            &staging,
            ctx,
            HashMap::new(),
            secrets,
            &[],
        )))
        .await
        .unwrap();
    let calls = s.kernel.record.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].starts_with("mount -t cifs -o credentials="),
        "{}",
        calls[0]
    );
    assert!(
        calls[0].ends_with(&format!(",vers=3.0 //nas/pvc-1 {}", staging.display())),
        "{}",
        calls[0]
    );
    assert!(
        !calls[0].contains("S3cr3t-pw"),
        "the password is never on a command line"
    );
    let (mode, content) = s.kernel.seen_credentials.lock().unwrap().clone().unwrap();
    assert_eq!(mode, 0o600);
    assert_eq!(content, "username=k8s\npassword=S3cr3t-pw\n");
    let file = calls[0]
        .split("credentials=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(!Path::new(file).exists(), "removed right after the mount");
    let private = s.dir.path().join("state/private");
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Missing secret: named.
    let ctx = map(&[
        ("protocol", "smb"),
        ("server", "nas"),
        ("shareName", "pvc-2"),
        ("dataset", "tank/csi/pvc-2"),
    ]);
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "smb:tank/csi/pvc-2",
            &s.dir.path().join("s2"),
            ctx,
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert!(err.message().contains("`username`"), "{}", err.message());
}

#[tokio::test]
async fn nvme_connects_with_the_allowed_host_nqn_finds_the_namespace_by_nsid_and_disconnects() {
    let s = setup(false);
    let staging = s.dir.path().join("staging");
    let nqn = "nqn.2011-06.com.truenas:uuid:abc:pvc-7";
    let ctx = map(&[
        ("protocol", "nvmeof"),
        ("server", "10.0.0.9"),
        ("port", "4420"),
        ("nqn", nqn),
        ("nsid", "2"),
        ("fsType", "ext4"),
        ("dataset", "tank/csi/pvc-7"),
    ]);
    let publish = map(&[("hostNqn", "nqn.2014-08.io.tns-csi:node:node-1")]);
    s.kernel.record.answer("blkid", blank_device());
    s.node
        .node_stage_volume(Request::new(stage(
            "nvmeof:tank/csi/pvc-7",
            &staging,
            ctx,
            publish,
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap();
    let dev = s.dir.path().join("dev/nvme0n2");
    assert_eq!(
        s.kernel.record.calls(),
        [
            format!(
                "nvme connect -t tcp -a 10.0.0.9 -s 4420 -n {nqn} --hostnqn nqn.2014-08.io.tns-csi:node:node-1"
            ),
            format!("blkid -p -s TYPE -o value {}", dev.display()),
            format!("mkfs.ext4 -q -F {}", dev.display()),
            format!(
                "mount -t ext4 -o noatime {} {}",
                dev.display(),
                staging.display()
            ),
        ],
        "namespace 2 is nvme0n2 by its nsid, not a guessed name"
    );
    s.node
        .node_unstage_volume(Request::new(unstage("nvmeof:tank/csi/pvc-7", &staging)))
        .await
        .unwrap();
    assert_eq!(
        s.kernel.record.calls().last().unwrap(),
        &format!("nvme disconnect -n {nqn}")
    );
}

#[tokio::test]
async fn iscsi_logs_in_through_an_interface_with_the_allowed_initiator_and_logs_out() {
    let s = setup(false);
    let staging = s.dir.path().join("staging");
    let iqn = "iqn.2005-10.org.freenas.ctl:pvc-8";
    let ctx = map(&[
        ("protocol", "iscsi"),
        ("server", "10.0.0.9"),
        ("port", "3260"),
        ("iqn", iqn),
        ("lun", "0"),
        ("fsType", "xfs"),
        ("dataset", "tank/csi/pvc-8"),
    ]);
    let publish = map(&[("initiatorIqn", "iqn.2014-08.io.tns-csi:node-1")]);
    s.kernel.record.answer("blkid", blank_device());
    s.node
        .node_stage_volume(Request::new(stage(
            "iscsi:tank/csi/pvc-8",
            &staging,
            ctx,
            publish,
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap();
    let dev = s.dir.path().join("dev/sdb");
    let calls = s.kernel.record.calls();
    assert_eq!(
        calls,
        [
            "iscsiadm -m iface -I tns-csi -o new".to_owned(),
            "iscsiadm -m iface -I tns-csi -o update -n iface.initiatorname -v iqn.2014-08.io.tns-csi:node-1".to_owned(),
            "iscsiadm -m discovery -t sendtargets -p 10.0.0.9:3260 -I tns-csi".to_owned(),
            format!("iscsiadm -m node -T {iqn} -p 10.0.0.9:3260 -I tns-csi --login"),
            format!("blkid -p -s TYPE -o value {}", dev.display()),
            format!("mkfs.xfs -q {}", dev.display()),
            format!("mount -t xfs -o noatime,nouuid {} {}", dev.display(), staging.display()),
            format!("xfs_growfs {}", staging.display()),
        ]
    );
    s.node
        .node_unstage_volume(Request::new(unstage("iscsi:tank/csi/pvc-8", &staging)))
        .await
        .unwrap();
    assert_eq!(
        s.kernel.record.calls().last().unwrap(),
        &format!("iscsiadm -m node -T {iqn} -p 10.0.0.9:3260 --logout")
    );
}

#[tokio::test]
async fn failures_carry_stderr_hangs_time_out_and_nothing_half_attached_stays() {
    // A failing mount: its stderr is in the error.
    let s = setup(false);
    s.kernel.record.answer(
        "mount",
        Scripted::Exit(Output {
            status: 32,
            stderr: "mount.nfs: access denied by server while mounting".into(),
            ..Default::default()
        }),
    );
    let ctx = map(&[
        ("protocol", "nfs"),
        ("server", "10.0.0.9"),
        ("sharePath", "/mnt/tank/csi/v1"),
        ("dataset", "tank/csi/v1"),
    ]);
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "nfs:tank/csi/v1",
            &s.dir.path().join("a"),
            ctx.clone(),
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("access denied by server") && err.message().contains("exit 32"),
        "{}",
        err.message()
    );
    // A hanging mount: DeadlineExceeded within the command timeout.
    s.kernel.record.answer("mount", Scripted::Hang);
    let started = std::time::Instant::now();
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "nfs:tank/csi/v1",
            &s.dir.path().join("b"),
            ctx,
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The namespace never shows up: an error, and the connection is dropped again.
    let s = setup(true);
    let nqn = "nqn.2011-06.com.truenas:uuid:abc:pvc-9";
    let ctx = map(&[
        ("protocol", "nvmeof"),
        ("server", "10.0.0.9"),
        ("port", "4420"),
        ("nqn", nqn),
        ("nsid", "1"),
        ("dataset", "tank/csi/pvc-9"),
    ]);
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "nvmeof:tank/csi/pvc-9",
            &s.dir.path().join("c"),
            ctx,
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("did not appear"),
        "{}",
        err.message()
    );
    assert_eq!(
        s.kernel.record.calls().len(),
        1,
        "connect only; sysfs never showed the subsystem so there is nothing to disconnect"
    );
    let iqn = "iqn.2005-10.org.freenas.ctl:pvc-9";
    let ctx = map(&[
        ("protocol", "iscsi"),
        ("server", "10.0.0.9"),
        ("port", "3260"),
        ("iqn", iqn),
        ("lun", "0"),
        ("dataset", "tank/csi/pvc-9"),
    ]);
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "iscsi:tank/csi/pvc-9",
            &s.dir.path().join("d"),
            ctx,
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        s.kernel.record.calls().last().unwrap(),
        &format!("iscsiadm -m node -T {iqn} -p 10.0.0.9:3260 --logout"),
        "logged out again"
    );
    // A volume context without what the node needs names the key.
    let err = s
        .node
        .node_stage_volume(Request::new(stage(
            "nvmeof:tank/csi/x",
            &s.dir.path().join("e"),
            map(&[("protocol", "nvmeof")]),
            HashMap::new(),
            HashMap::new(),
            &[],
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`server`"), "{}", err.message());
}
