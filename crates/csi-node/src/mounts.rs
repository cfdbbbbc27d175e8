//! Mount state from /proc/self/mountinfo, and the mount/unmount steps through the runner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::NodeError;
use crate::runner::{Runner, check};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem.
    pub device: String,
    /// Path inside that filesystem that is mounted (differs for bind mounts).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `ro`, …).
    pub options: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (`/dev/loop0`, `server:/path`).
    pub source: String,
}

impl MountEntry {
    /// Whether two entries show the same filesystem subtree (a bind mount of the other).
    pub fn same_source(&self, other: &Self) -> bool {
        self.device == other.device && self.root == other.root
    }

    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

fn unescape(field: &str) -> String {
    let mut out: Vec<u8> = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                device: left.get(2)?.to_string(),
                root: unescape(left.get(3)?),
                mount_point: PathBuf::from(unescape(left.get(4)?)),
                options: left.get(5)?.to_string(),
                fs_type: right.first()?.to_string(),
                source: unescape(right.get(1)?),
            })
        })
        .collect()
}

/// The current mounts of this process's namespace.
pub fn mounts() -> Result<Vec<MountEntry>, NodeError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(NodeError::io("reading /proc/self/mountinfo"))?;
    Ok(parse(&text))
}

/// The topmost mount at exactly `path`, if any.
pub fn at(path: &Path) -> Result<Option<MountEntry>, NodeError> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

fn args<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

/// `mount [-t TYPE] [-o OPTS] SOURCE TARGET`.
pub async fn mount(
    runner: &dyn Runner,
    timeout: Duration,
    fs_type: Option<&str>,
    source: &str,
    target: &Path,
    options: &[String],
) -> Result<(), NodeError> {
    let mut argv = Vec::new();
    if let Some(fs_type) = fs_type {
        argv.extend(args(["-t", fs_type]));
    }
    if !options.is_empty() {
        argv.extend(args(["-o".to_owned(), options.join(",")]));
    }
    argv.push(source.to_owned());
    argv.push(target.display().to_string());
    check(runner, "mount", &argv, timeout).await.map(drop)
}

/// `mount --bind SOURCE TARGET`, then a read-only remount when asked.
pub async fn bind(
    runner: &dyn Runner,
    timeout: Duration,
    source: &Path,
    target: &Path,
    read_only: bool,
) -> Result<(), NodeError> {
    check(
        runner,
        "mount",
        &args([
            "--bind".to_owned(),
            source.display().to_string(),
            target.display().to_string(),
        ]),
        timeout,
    )
    .await?;
    if read_only {
        check(
            runner,
            "mount",
            &args([
                "-o".to_owned(),
                "remount,bind,ro".to_owned(),
                target.display().to_string(),
            ]),
            timeout,
        )
        .await?;
    }
    Ok(())
}

/// `umount TARGET`.
pub async fn unmount(
    runner: &dyn Runner,
    timeout: Duration,
    target: &Path,
) -> Result<(), NodeError> {
    check(runner, "umount", &[target.display().to_string()], timeout)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes_and_optional_fields() {
        let text = "35 1 98:0 / /münchen rw - ext4 /dev/sda rw\n\
                    36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext4 /dev/loop0 rw,errors=continue\n\
                    40 36 98:0 /mnt1 /target rw shared:2 - ext4 /dev/loop0 rw\n\
                    41 36 0:50 / /nfs ro - nfs4 10.0.0.1:/mnt/tank/a rw,vers=4.2\n";
        let mut mounts = parse(text);
        assert_eq!(mounts.remove(0).mount_point, PathBuf::from("/münchen"));
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/with space"));
        assert!(mounts[0].same_source(&mounts[1]));
        assert!(!mounts[0].same_source(&mounts[2]));
        assert_eq!(mounts[2].source, "10.0.0.1:/mnt/tank/a");
        assert!(mounts[2].read_only());
    }
}
