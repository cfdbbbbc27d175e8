//! `warpdrive-mount warm` against a running daemon on a real FUSE mount: it fills the daemon's
//! own cache (reads afterwards fetch nothing), skips what is cached (so a second run resumes),
//! names a wrong backend, and says clearly when no daemon is running. The Slurm prolog and
//! epilog of deploy/slurm run against the same daemon.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn warm(cfg: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("warm")
        .args(args)
        .output()
        .unwrap()
}

fn metric(addr: &str, series: &str) -> f64 {
    common::scrape(addr)
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[test]
fn warm_fills_the_running_daemons_cache_skips_what_is_cached_and_names_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = dir.path().join("srv");
    let mut files = Vec::new();
    for i in 0..4 {
        files.push((format!("sets/a/x{i}.bin"), random(3 << 20, i)));
    }
    for i in 0..2 {
        files.push((format!("sets/b/deeper/y{i}.bin"), random(2 << 20, 10 + i)));
    }
    files.push(("other/z.bin".to_owned(), random(1 << 20, 20)));
    for (key, data) in &files {
        write(&srv, key, data);
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let socket = dir.path().join("run/control.sock");
    let cfg = dir.path().join("warpdrive.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mount_point: {mnt}\n\
             cache: {{ path: {cache}, block_size: 1MiB, max_size: 256MiB }}\n\
             control_socket: {socket}\n\
             backends:\n  - {{ name: scratch, type: local, mount_path: /data, root: {srv} }}\n\
             metrics: {{ addr: 127.0.0.1:0 }}\n\
             log: {{ format: json }}\n",
            mnt = mnt.display(),
            cache = dir.path().join("cache").display(),
            socket = socket.display(),
            srv = srv.display(),
        ),
    )
    .unwrap();

    // No daemon yet: a clear error, not a second process opening the cache.
    let out = warm(&cfg, &["--backend", "scratch"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach a running warpdrive-mount")
            && stderr.contains("control_socket"),
        "{stderr}"
    );

    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let daemon = common::Mounted {
        child,
        mnt: mnt.clone(),
    };
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("warpdrive-mount exited before serving")
            .unwrap();
        if let Some(addr) = common::metrics_addr(&line) {
            break addr;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let socket_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(socket_mode & 0o777, 0o600, "only the daemon's user");

    // One prefix: 4 files, 12 MiB, all fetched.
    let out = warm(
        &cfg,
        &[
            "--backend",
            "scratch",
            "--prefix",
            "sets/a",
            "--workers",
            "2",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("warmed 4 files, 12.0 MiB (12.0 MiB fetched, 0.0 B already cached)"),
        "{stdout}"
    );

    // The parent prefix: what was cached is skipped, so only the rest is fetched (this is
    // also how a warm resumes after an interruption).
    let out = warm(&cfg, &["--backend", "scratch", "--prefix", "/sets/"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warmed 6 files, 16.0 MiB (4.0 MiB fetched, 12.0 MiB already cached)"),
        "{stdout}"
    );

    // Reads through the mount now come from the cache: the backend sends nothing more.
    let before = metric(&addr, "warpdrive_backend_bytes_total{backend=\"scratch\"}");
    assert_eq!(before, (16 << 20) as f64);
    for (key, data) in files.iter().filter(|(k, _)| k.starts_with("sets/")) {
        assert_eq!(
            &std::fs::read(mnt.join("data").join(key)).unwrap(),
            data,
            "{key}"
        );
    }
    assert_eq!(
        metric(&addr, "warpdrive_backend_bytes_total{backend=\"scratch\"}"),
        before
    );
    // Whole warmed files are handed to the kernel (FUSE passthrough): it reads the cache's
    // files itself, so the daemon serves none of those bytes.
    assert_eq!(
        metric(&addr, "warpdrive_fuse_opens_total{served=\"passthrough\"}"),
        6.0
    );
    assert_eq!(metric(&addr, "warpdrive_fuse_passthrough_active"), 1.0);
    assert_eq!(metric(&addr, "warpdrive_cache_bytes_served_total"), 0.0);

    // A wrong backend is named, with the right ones.
    let out = warm(&cfg, &["--backend", "nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no backend is named `nope`; configured backends: scratch"),
        "{stderr}"
    );

    // The Slurm prolog warms what the job's comment asks for, through this daemon; requests
    // it cannot serve (an unknown backend, `..`) are logged and skipped, never a failed job.
    let fake = fake_slurm(
        dir.path(),
        "JobId=42 JobName=train Comment=warpdrive-warm=nope:x,scratch:../etc,scratch:other/ Partition=gpu",
    );
    let before = metric(&addr, "warpdrive_backend_bytes_total{backend=\"scratch\"}");
    let out = slurm_script("prolog.sh", &cfg, &fake);
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("ignoring prefix '../etc'"), "{log}");
    assert!(
        log.contains("warmed backend scratch prefix 'other/'"),
        "{log}"
    );
    assert!(
        log.contains("warming backend nope prefix 'x' did not finish"),
        "{log}"
    );
    assert_eq!(
        metric(&addr, "warpdrive_backend_bytes_total{backend=\"scratch\"}"),
        before + (1 << 20) as f64,
        "the prolog fetched other/z.bin"
    );
    assert_eq!(
        std::fs::read(mnt.join("data/other/z.bin")).unwrap(),
        files.last().unwrap().1
    );
    assert_eq!(
        metric(&addr, "warpdrive_backend_bytes_total{backend=\"scratch\"}"),
        before + (1 << 20) as f64,
        "read from the cache the prolog filled"
    );
    // The epilog leaves a healthy mount alone.
    let out = slurm_script("epilog.sh", &cfg, &fake);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !fake.join("systemctl.calls").exists(),
        "restarted a healthy mount"
    );

    // SIGTERM: unmounted, and the socket is gone.
    Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    let mut daemon = daemon;
    assert!(daemon.child.wait().unwrap().success());
    assert!(!socket.exists(), "socket removed on exit");
    // Now the epilog finds no tree and restarts the service.
    let out = slurm_script("epilog.sh", &cfg, &fake);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(fake.join("systemctl.calls")).unwrap(),
        "restart warpdrive-mount.service\n"
    );
}

/// A directory of stand-ins for Slurm's `scontrol` (printing `job` as the job's record) and
/// for `systemctl` (recording its arguments), first on the scripts' PATH.
fn fake_slurm(dir: &Path, job: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let scripts = [
        ("scontrol", format!("#!/bin/sh\necho '{job}'\n")),
        (
            "systemctl",
            format!(
                "#!/bin/sh\necho \"$*\" >> {}/systemctl.calls\n",
                bin.display()
            ),
        ),
        // Findings go to stderr, where the test reads them.
        ("logger", "#!/bin/sh\nexit 1\n".to_owned()),
    ];
    for (name, text) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs deploy/slurm/`name` the way slurmd would, as job 42.
fn slurm_script(name: &str, cfg: &Path, fake: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/slurm")
        .join(name);
    Command::new("sh")
        .arg(script)
        .env("SLURM_JOB_ID", "42")
        .env("WARPDRIVE_CONFIG", cfg)
        .env("WD_BIN", BIN)
        .env("WD_WARM_TIMEOUT", "60")
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display()),
        )
        .output()
        .unwrap()
}

#[test]
fn warm_help_explains_the_daemon_and_resuming() {
    let out = Command::new(BIN).args(["warm", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "--backend",
        "--prefix",
        "--workers",
        "control_socket",
        "resumes",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
