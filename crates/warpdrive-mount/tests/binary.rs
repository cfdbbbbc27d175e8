//! The real `warpdrive-mount` binary: check-config over every credential source, bad keys,
//! and the metrics endpoint, with a secret that must never appear in its output.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");
const SECRET: &str = "wdSECRET-0a1b2c3d4e5f-DO-NOT-LEAK";

fn warpdrive(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear().env("RUST_LOG", "trace");
    cmd.envs(env.iter().copied());
    cmd.output().expect("warpdrive-mount runs")
}

fn config(dir: &Path, auth: &str) -> String {
    let path = dir.join("warpdrive.yaml");
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    std::fs::create_dir_all(dir.join("srv")).unwrap();
    std::fs::write(dir.join("srv/hello.txt"), "hello").unwrap();
    let yaml = format!(
        "mount_point: {mnt}\ncache: {{ path: {cache} }}\ncontrol_socket: {sock}\nbackends:\n  - name: training\n    type: s3\n    bucket: b\n    \
         mount_path: /training/sets\n    endpoint: http://127.0.0.1:9\n    allow_http: true\n    \
         auth: {auth}\n  - {{ name: scratch, type: local, mount_path: /local, root: {srv} }}\n",
        mnt = dir.join("mnt").display(),
        srv = dir.join("srv").display(),
        cache = dir.join("cache").display(),
        sock = dir.join("control.sock").display(),
    );
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[test]
fn check_config_refuses_what_start_would_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "{ method: none }");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mnt = dir.path().join("mnt").display().to_string();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let cache = dir.path().join("cache").display().to_string();
    for (what, from, to, key) in [
        (
            "missing mount point",
            mnt.clone(),
            format!("{mnt}-gone"),
            "mount_point",
        ),
        (
            "a file as mount point",
            mnt.clone(),
            file.display().to_string(),
            "mount_point",
        ),
        (
            "/etc as cache",
            cache.clone(),
            "/etc".to_owned(),
            "cache.path",
        ),
    ] {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, text.replace(&from, &to)).unwrap();
        for args in [
            vec!["check-config", "--config", &*path.to_string_lossy()],
            vec![
                "--config",
                &*path.to_string_lossy(),
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        ] {
            let out = warpdrive(&args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{what}: {args:?} succeeded");
            assert!(
                stderr.contains(key),
                "{what}: {args:?} does not name `{key}`:\n{stderr}"
            );
        }
    }
    let etc = std::fs::metadata("/etc").unwrap();
    assert!(etc.is_dir(), "/etc is untouched");
}

#[test]
fn check_config_reads_credentials_and_prints_no_value() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secret");
    std::fs::write(&key_file, format!("{SECRET}\n")).unwrap();
    let sources = [
        "{ method: static, access_key_id_env: AKID, secret_access_key_env: SAK }".to_owned(),
        format!(
            "{{ method: static, access_key_id_env: AKID, secret_access_key_file: {} }}",
            key_file.display()
        ),
    ];
    for auth in sources {
        let cfg = config(dir.path(), &auth);
        let out = warpdrive(
            &["check-config", "--config", &cfg],
            &[("AKID", "AKIDEXAMPLE"), ("SAK", SECRET)],
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stdout.contains("# backends.0.auth.secret_access_key: read from "),
            "{stdout}"
        );
        assert!(
            stdout.contains("max_size:") && stdout.contains("mount_path: /training/sets"),
            "{stdout}"
        );
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "secret leaked:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn missing_credential_and_unknown_key_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "{ method: static, access_key_id_env: AKID, secret_access_key_env: SAK }",
    );
    let out = warpdrive(&["check-config", "--config", &cfg], &[("AKID", "x")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "config key `backends.0.auth.secret_access_key`: environment variable `SAK` is not set"
        ),
        "{stderr}"
    );

    let out = warpdrive(
        &["check-config", "--config", &cfg],
        &[("WARPDRIVE_CACHE__MAX_SIZ", "1GiB")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("config key `cache.max_siz` (from environment variable WARPDRIVE_CACHE__MAX_SIZ): unknown key"), "{stderr}");
}

/// Kills the child when a failing assertion unwinds, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The daemon on `cfg`, metrics on a free port, JSON logs, and nothing from our environment.
fn daemon(cfg: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "--config",
            cfg,
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env_clear();
    command
}

#[test]
fn serves_metrics_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "{ method: static, access_key_id_env: AKID, secret_access_key_env: SAK }",
    );
    let mut child = KillOnDrop(
        daemon(&cfg)
            .envs([
                ("AKID", "AKIDEXAMPLE"),
                ("SAK", SECRET),
                ("RUST_LOG", "trace"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut logs = String::new();
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("warpdrive-mount exited before serving:\n{logs}");
        }
        logs.push_str(&line);
        if let Some(addr) = common::metrics_addr(&line) {
            break addr;
        }
    };
    let metrics = common::scrape(&addr);
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("warpdrive_build_info{"),
        "{metrics}"
    );
    // The tree is mounted: the local backend's file is readable through it.
    let mnt = dir.path().join("mnt");
    assert_eq!(
        std::fs::read_to_string(mnt.join("local/hello.txt")).unwrap(),
        "hello"
    );
    let mut top: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["local", "training"]);
    assert!(std::fs::metadata(mnt.join("local/missing.txt")).is_err());

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    stderr.read_to_string(&mut logs).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}\n{logs}");
    assert!(logs.contains("warpdrive-mount stopped"), "{logs}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&*dir.path().join("mnt").to_string_lossy()),
        "unmounted on SIGTERM"
    );
    assert!(
        !logs.contains(SECRET) && !metrics.contains(SECRET),
        "secret leaked"
    );
    // What a FUSE request logs carries its op and what it was about.
    assert!(
        logs.lines().any(|l| l.contains("request failed")
            && l.contains(r#""op":"lookup""#)
            && l.contains(r#""name":"missing.txt""#)),
        "no lookup line names the file:\n{logs}"
    );
}

/// The daemon on `cfg` with stderr piped, as a service manager would start it.
fn start_daemon(cfg: &str) -> KillOnDrop {
    KillOnDrop(
        daemon(cfg)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Reads the daemon's log until it says it mounted (then keeps draining it); its log so far.
fn wait_mounted(child: &mut KillOnDrop) -> String {
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut logs = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("exited before mounting:\n{logs}");
        }
        logs.push_str(&line);
        if line.contains("\"mounted\"") {
            // Keep draining: a closed pipe would make the daemon's next log line fail.
            std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = stderr.read_to_string(&mut rest);
            });
            return logs;
        }
    }
}

#[test]
fn nothing_resolves_outside_a_local_backends_root() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "{ method: none }");
    let srv = dir.path().join("srv");
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::fs::create_dir_all(srv.join("sub")).unwrap();
    std::fs::write(srv.join("sub/inner.txt"), "inner").unwrap();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, srv.join(name)).unwrap();
    link("/etc/passwd", "passwd");
    link("/etc", "etc");
    link("..", "up");
    link("../secret.txt", "secret");
    link("sub/../../secret.txt", "chain");
    link("sub/inner.txt", "fine"); // inside the root: served
    let mut daemon = start_daemon(&cfg);
    wait_mounted(&mut daemon);
    let local = dir.path().join("mnt/local");
    let mut names: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["fine", "hello.txt", "sub"],
        "links out of the root are not shown"
    );
    for escape in [
        "passwd",
        "etc",
        "etc/passwd",
        "up",
        "up/secret.txt",
        "secret",
        "chain",
    ] {
        let read = std::fs::read(local.join(escape));
        assert!(
            read.is_err(),
            "{escape} was readable: {:?}",
            read.map(|b| b.len())
        );
        assert!(
            std::fs::read_dir(local.join(escape)).is_err(),
            "{escape} listed"
        );
    }
    assert_eq!(
        std::fs::read_to_string(local.join("fine")).unwrap(),
        "inner"
    );
    assert_eq!(
        std::fs::read_to_string(local.join("sub/inner.txt")).unwrap(),
        "inner"
    );
    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(daemon.0.wait().unwrap().success());
}

#[test]
fn a_second_daemon_never_takes_a_live_mount_or_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "{ method: none }");
    let mnt = dir.path().join("mnt");
    let mut first = start_daemon(&cfg);
    wait_mounted(&mut first);
    // The same mount point: refused, and the first daemon's mount is left alone.
    let out = warpdrive(&["--config", &cfg, "--metrics-addr", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already mounted and answering"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(mnt.join("local/hello.txt")).unwrap(),
        "hello",
        "the first daemon still serves"
    );
    // Another mount point over the same cache directory: refused, naming the holder.
    std::fs::create_dir_all(dir.path().join("mnt2")).unwrap();
    let other = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &*mnt.to_string_lossy(),
            &dir.path().join("mnt2").to_string_lossy(),
        )
        .replace("control.sock", "control2.sock");
    let other_cfg = dir.path().join("other.yaml");
    std::fs::write(&other_cfg, other).unwrap();
    let out = warpdrive(
        &[
            "--config",
            &other_cfg.to_string_lossy(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another warpdrive-mount")
            && stderr.contains(&format!("PID {}", first.0.id())),
        "{stderr}"
    );
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&*dir.path().join("mnt2").to_string_lossy()),
        "the second daemon mounted"
    );
    Command::new("kill")
        .args(["-TERM", &first.0.id().to_string()])
        .status()
        .unwrap();
    assert!(first.0.wait().unwrap().success());
}

#[test]
fn a_stale_mount_from_a_crash_is_cleared_at_start_and_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "{ method: none }");
    let mnt = dir.path().join("mnt");
    let start = || start_daemon(&cfg);
    let mut first = start();
    wait_mounted(&mut first);
    assert_eq!(
        std::fs::read_to_string(mnt.join("local/hello.txt")).unwrap(),
        "hello"
    );
    // A crash: the mount stays behind, dead.
    Command::new("kill")
        .args(["-KILL", &first.0.id().to_string()])
        .status()
        .unwrap();
    let _ = first.0.wait();
    assert!(
        std::fs::read_dir(&mnt).is_err(),
        "the dead mount answers ENOTCONN"
    );
    let mut second = start();
    let logs = wait_mounted(&mut second);
    assert!(logs.contains("clearing a stale FUSE mount"), "{logs}");
    assert_eq!(
        std::fs::read_to_string(mnt.join("local/hello.txt")).unwrap(),
        "hello"
    );
    Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    assert!(second.0.wait().unwrap().success());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&*mnt.to_string_lossy()), "unmounted");

    // A missing mount point is named.
    std::fs::remove_dir(&mnt).unwrap();
    let out = warpdrive(&["--config", &cfg, "--metrics-addr", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not exist or is not a directory; create it first"),
        "{stderr}"
    );
}
