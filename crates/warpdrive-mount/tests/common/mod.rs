//! Helpers shared by the binary's integration tests.

#![allow(dead_code)]

use std::io::{Read, Write};

/// The whole HTTP response to `GET /metrics` from the daemon's metrics address.
pub(crate) fn scrape(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The address in the daemon's JSON "serving /metrics" log line, if `line` is that line.
pub(crate) fn metrics_addr(line: &str) -> Option<String> {
    if !line.contains("serving /metrics") {
        return None;
    }
    line.split("\"addr\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_owned)
}

/// A running daemon and its mount point: killed and lazily unmounted when dropped, also when a
/// failing assertion unwinds, so no process or mount outlives its test.
pub(crate) struct Mounted {
    pub(crate) child: std::process::Child,
    pub(crate) mnt: std::path::PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}

/// Writes `dir/warpdrive.yaml` for a test daemon: its mount point `dir/mnt` (created), a
/// 64 MiB cache and the control socket in `dir`, 1 s metadata TTLs, metrics on a free port,
/// and `backends` (YAML list items, each line ending in a newline). Returns the config path
/// and the mount point.
pub(crate) fn write_config(
    dir: &std::path::Path,
    backends: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let config = dir.join("warpdrive.yaml");
    std::fs::write(
        &config,
        format!(
            "mount_point: {mnt}\n\
             cache: {{ path: {cache}, block_size: 1MiB, max_size: 64MiB }}\n\
             control_socket: {sock}\n\
             metadata: {{ attr_ttl: 1s, entry_ttl: 1s, negative_ttl: 1s }}\n\
             backends:\n{backends}\
             metrics: {{ addr: 127.0.0.1:0 }}\n",
            mnt = mnt.display(),
            cache = dir.join("cache").display(),
            sock = dir.join("control.sock").display(),
        ),
    )
    .unwrap();
    (config, mnt)
}
