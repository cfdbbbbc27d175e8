//! Names on TrueNAS from CSI names: any name the CSI spec allows (128 characters, any
//! characters) becomes a valid dataset component, and each export object gets a name within
//! its own limit. A name that is already valid and short enough is used as it is, so existing
//! volumes keep their objects; anything else is cleaned and shortened with a hash of the exact
//! original, so the mapping stays deterministic and two names never share an object.

use sha2::{Digest, Sha256};

/// The longest dataset name libzfs takes.
pub(crate) const MAX_DATASET: usize = 255;
/// SMB share names (TrueNAS).
const MAX_SMB_SHARE: usize = 80;
/// iSCSI target names (the 25.10 model's limit).
const MAX_ISCSI_TARGET: usize = 120;
/// iSCSI extent names.
const MAX_ISCSI_EXTENT: usize = 64;
/// NVMe-oF subsystem names: the subsystem NQN is `<base NQN>:<name>`, at most 223 bytes, and
/// TrueNAS's base NQN takes 65.
const MAX_NVME_SUBSYSTEM: usize = 150;
/// What a hash suffix takes: `-` and 16 hex digits.
const HASH_SUFFIX: usize = 17;

/// 16 hex digits of SHA-256 of `text`.
pub(crate) fn hash16(text: &str) -> String {
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name` if it fits in `max` bytes, else its first bytes and a hash of all of it. `name` is
/// ASCII (every name here is cleaned first).
pub(crate) fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let keep = max.saturating_sub(HASH_SUFFIX);
    format!("{}-{}", &name[..keep], hash16(name))
}

/// Whether `name` can be a dataset component as it is.
fn plain_component(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// The dataset component for `raw` (the CSI name with the StorageClass's prefix, suffix or
/// template applied), shortened so that `<parent>/<component>` fits libzfs's limit; `None`
/// when the parent leaves no room.
pub(crate) fn dataset_component(raw: &str, parent: &str) -> Option<String> {
    let name = if plain_component(raw) {
        raw.to_owned()
    } else {
        let cleaned: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let cleaned = cleaned.trim_start_matches('.');
        let cleaned = if cleaned.is_empty() { "vol" } else { cleaned };
        let cleaned: String = cleaned.chars().take(100).collect();
        format!("{cleaned}-{}", hash16(raw))
    };
    let room = MAX_DATASET.checked_sub(parent.len() + 1)?;
    (room > HASH_SUFFIX + 8).then(|| shorten(&name, room))
}

/// The SMB share of volume `name`.
pub(crate) fn smb_share(name: &str) -> String {
    shorten(name, MAX_SMB_SHARE)
}

/// The iSCSI target of volume `name`: lowercase letters, digits, `-`, `.` (as the target's
/// IQN suffix). A name that is one already is used as it is (lowercased, as before); anything
/// that had to change also gets a hash, so `A_b` and `a-b` get different targets.
pub(crate) fn iscsi_target(name: &str) -> String {
    let valid = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c))
    };
    if valid(name) {
        return shorten(name, MAX_ISCSI_TARGET);
    }
    let cleaned: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if valid(&c.to_string()) { c } else { '-' })
        .take(MAX_ISCSI_TARGET - HASH_SUFFIX)
        .collect();
    format!("{cleaned}-{}", hash16(name))
}

/// The name iSCSI targets had before [`iscsi_target`] (plain lowercase), for finding the
/// targets of volumes made by earlier versions.
pub(crate) fn legacy_iscsi_target(name: &str) -> String {
    name.to_lowercase()
}

/// The iSCSI extent of volume `name`.
pub(crate) fn iscsi_extent(name: &str) -> String {
    shorten(name, MAX_ISCSI_EXTENT)
}

/// The NVMe-oF subsystem of volume `name`.
pub(crate) fn nvme_subsystem(name: &str) -> String {
    shorten(name, MAX_NVME_SUBSYSTEM)
}

/// What marks an NVMe-oF subsystem NQN as the driver's: subsystems have no free-text field,
/// so the marker is part of the NQN (`<base NQN>:tns-csi:<subsystem>`).
pub(crate) const SUBNQN_MARK: &str = ":tns-csi:";
/// The longest NQN (NVMe base specification).
const MAX_NQN: usize = 223;

/// The NQN of subsystem `name` on a system whose base NQN is `base`: marked as ours, and
/// within the NQN limit (the name part is shortened with a hash when it would not fit).
pub(crate) fn nvme_subnqn(base: &str, name: &str) -> String {
    let room = MAX_NQN.saturating_sub(base.len() + SUBNQN_MARK.len());
    format!(
        "{base}{SUBNQN_MARK}{}",
        shorten(name, room.max(HASH_SUFFIX + 8))
    )
}

/// The comment that marks an iSCSI extent or initiator group as belonging to volume `name`
/// (the objects the orphan reconciler may judge).
pub(crate) fn marker_comment(name: &str) -> String {
    format!("{MARKER_PREFIX}{name}")
}

/// What every comment written by [`marker_comment`] starts with.
pub(crate) const MARKER_PREFIX: &str = "tns-csi:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_stay_and_others_map_within_every_limit() {
        assert_eq!(
            dataset_component("pvc-1234", "tank/csi").as_deref(),
            Some("pvc-1234")
        );
        let odd = dataset_component("a+b c", "tank/csi").unwrap();
        assert!(odd.starts_with("a-b-c-") && odd.len() == 5 + 17, "{odd}");
        assert_ne!(odd, dataset_component("a-b c", "tank/csi").unwrap());
        assert_eq!(
            odd,
            dataset_component("a+b c", "tank/csi").unwrap(),
            "stable"
        );
        let long = "x".repeat(128);
        let parent = format!("tank/{}", "p".repeat(150));
        let fitted = dataset_component(&long, &parent).unwrap();
        assert!(parent.len() + 1 + fitted.len() <= MAX_DATASET);
        assert!(dataset_component("a", &"p".repeat(250)).is_none());
        for name in ["..", ".hidden", "", "\u{e9}t\u{e9}"] {
            let mapped = dataset_component(name, "tank/csi").unwrap();
            assert!(plain_component(&mapped), "{name:?} -> {mapped}");
        }
        let name = "n".repeat(128);
        assert!(smb_share(&name).len() <= 80);
        assert!(iscsi_target(&name).len() <= 120);
        assert!(iscsi_extent(&name).len() <= 64);
        assert!(nvme_subsystem(&name).len() <= 150);
        assert_eq!(iscsi_target("pvc-1"), "pvc-1");
        assert_ne!(iscsi_target("A_b"), iscsi_target("a-b"));
        assert_ne!(smb_share(&name), smb_share(&format!("{name}y")));
        let base = format!("nqn.2011-06.com.truenas:uuid:{}", "0".repeat(36));
        let nqn = nvme_subnqn(&base, &nvme_subsystem(&name));
        assert!(nqn.len() <= 223 && nqn.contains(SUBNQN_MARK), "{nqn}");
        assert_eq!(nvme_subnqn(&base, "pvc-1"), format!("{base}:tns-csi:pvc-1"));
    }
}
