//! The mount tree: each backend at its mount path, every directory above a mount path
//! synthesised, longest prefix wins.

use std::collections::BTreeMap;

/// Why a set of mount paths cannot form one namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceError(pub String);

/// Splits `/a/b` into `["a", "b"]`, refusing empty, `.` and `..` segments.
pub fn segments(mount_path: &str) -> Result<Vec<String>, NamespaceError> {
    if !mount_path.starts_with('/') {
        return Err(NamespaceError(format!(
            "mount_path `{mount_path}` must start with `/`"
        )));
    }
    let parts: Vec<String> = mount_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if parts.iter().any(|p| p == "." || p == "..") {
        return Err(NamespaceError(format!(
            "mount_path `{mount_path}` may not contain `.` or `..`"
        )));
    }
    Ok(parts)
}

/// A synthetic directory: its children are further synthetic directories or backend roots.
#[derive(Debug, Default, Clone)]
pub struct SyntheticDir {
    /// Child synthetic directories by name.
    pub dirs: BTreeMap<String, SyntheticDir>,
    /// Backends mounted directly below, by name.
    pub backends: BTreeMap<String, usize>,
    /// A backend mounted exactly here (only the root can hold one, for `mount_path: /`).
    pub backend: Option<usize>,
}

/// Builds the tree from `(mount_path, backend index)` pairs.
pub fn build(mounts: &[(String, usize)]) -> Result<SyntheticDir, NamespaceError> {
    let mut root = SyntheticDir::default();
    let mut seen: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (path, index) in mounts {
        let parts = segments(path)?;
        if let Some(other) = seen.insert(parts.clone(), *index) {
            return Err(NamespaceError(format!(
                "backends {other} and {index} share mount_path `{path}`"
            )));
        }
        if parts.is_empty() {
            root.backend = Some(*index);
            continue;
        }
        let mut dir = &mut root;
        for part in &parts[..parts.len() - 1] {
            if dir.backends.contains_key(part) {
                // A deeper mount inside a backend: the backend owns that name; refuse.
                return Err(NamespaceError(format!(
                    "mount_path `{path}` lies inside another backend's mount path; nest mount paths only under synthetic directories"
                )));
            }
            dir = dir.dirs.entry(part.clone()).or_default();
        }
        let last = parts.last().cloned().unwrap_or_default();
        if dir.dirs.contains_key(&last) {
            return Err(NamespaceError(format!(
                "mount_path `{path}` is also a parent of another mount path"
            )));
        }
        dir.backends.insert(last, *index);
    }
    if root.backend.is_some() && (!root.dirs.is_empty() || !root.backends.is_empty()) {
        return Err(NamespaceError(
            "a backend at `/` cannot share the mount with other backends".into(),
        ));
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_mount_paths_get_synthetic_parents() {
        let root = build(&[("/a/b/c".into(), 0), ("/a/d".into(), 1), ("/e".into(), 2)]).unwrap();
        assert_eq!(root.dirs["a"].dirs["b"].backends["c"], 0);
        assert_eq!(root.dirs["a"].backends["d"], 1);
        assert_eq!(root.backends["e"], 2);
        assert!(build(&[("/a".into(), 0), ("/a/b".into(), 1)]).is_err());
        assert!(build(&[("/a/b".into(), 0), ("/a".into(), 1)]).is_err());
        assert!(build(&[("/x".into(), 0), ("/x".into(), 1)]).is_err());
        assert!(build(&[("/x/../y".into(), 0)]).is_err());
        assert!(build(&[("x".into(), 0)]).is_err());
    }
}
