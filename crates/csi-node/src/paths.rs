//! Paths from requests: the node acts only on absolute, normalised paths inside its kubelet
//! directory, never on `/`, `/etc` or a path relative to wherever the driver runs, and never
//! through a symlink that leads out of that directory.

use std::path::{Component, Path, PathBuf};

use crate::NodeError;

/// `value` of request field `field`, checked to be an absolute, normalised path strictly
/// inside `root` (the kubelet directory); symlinks among its existing ancestors must stay
/// inside `root` too.
pub(crate) fn checked(root: &Path, field: &str, value: &str) -> Result<PathBuf, NodeError> {
    let bad = |why: &str| NodeError::Invalid(format!("{field}: {why}"));
    if value.is_empty() {
        return Err(bad("required"));
    }
    if value.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(bad("must not contain `.` or `..`"));
    }
    let normal: PathBuf = path.components().collect();
    if normal.as_os_str() != path.as_os_str() {
        return Err(bad("must be normalised (no `//`, `/./` or trailing `/`)"));
    }
    if !path.starts_with(root) || path == root {
        return Err(bad(&format!(
            "must be inside the kubelet directory {}",
            root.display()
        )));
    }
    // A symlink on the way may lead elsewhere: the deepest existing ancestor, resolved, must
    // still be inside the (resolved) kubelet directory.
    let real_root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let mut existing = path;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => break,
        }
    }
    // (When the kubelet directory itself does not exist yet, nothing below it can be a link.)
    if existing.starts_with(root)
        && let Ok(real) = existing.canonicalize()
        && !real.starts_with(&real_root)
    {
        return Err(bad(&format!(
            "leads out of the kubelet directory {} (through {})",
            root.display(),
            real.display()
        )));
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normal_paths_inside_the_root() {
        let root = Path::new("/var/lib/kubelet");
        let ok = "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount";
        assert_eq!(checked(root, "target_path", ok).unwrap(), Path::new(ok));
        for (value, why) in [
            ("", "required"),
            ("/", "inside the kubelet directory"),
            ("/etc/x", "inside the kubelet directory"),
            ("/var/lib/kubelet", "inside the kubelet directory"),
            ("/var/lib/kubeletx/a", "inside the kubelet directory"),
            ("pods/x", "absolute"),
            ("/var/lib/kubelet/../../etc", "`..`"),
            ("/var/lib/kubelet/./pods", "normalised"),
            ("/var/lib/kubelet//pods", "normalised"),
            ("/var/lib/kubelet/pods/", "normalised"),
            ("/var/lib/kubelet/a\0b", "NUL"),
        ] {
            let err = checked(root, "target_path", value).unwrap_err().to_string();
            assert!(err.starts_with("target_path: "), "{value:?}: {err}");
            assert!(err.contains(why), "{value:?}: {err}");
        }
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kubelet");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("pods/escape")).unwrap();
        let inside = root.join("pods/fine/mount");
        checked(&root, "target_path", inside.to_str().unwrap()).unwrap();
        let through = root.join("pods/escape/x");
        let err = checked(&root, "target_path", through.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("leads out of the kubelet directory"), "{err}");
    }
}
