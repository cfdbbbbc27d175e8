//! One operation at a time per volume or snapshot name, for the controller and the node
//! alike: a second caller gets `Aborted` (the CO retries), and different names never wait
//! for each other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// Names with an operation in progress.
#[derive(Debug, Default, Clone)]
pub struct NameLocks(Arc<Mutex<HashSet<String>>>);

/// Held while an operation runs; releases the name when dropped.
#[derive(Debug)]
#[must_use = "the name is released as soon as this is dropped"]
pub struct NameHeld {
    locks: NameLocks,
    key: String,
}

/// Another operation on the same name is running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an operation on {0} is already in progress; retry later")]
pub struct NameBusy(pub String);

impl From<NameBusy> for Status {
    fn from(busy: NameBusy) -> Self {
        Status::aborted(busy.to_string())
    }
}

impl NameLocks {
    /// Takes `key`, or says an operation on it is already running.
    pub fn try_lock(&self, key: &str) -> Result<NameHeld, NameBusy> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.to_owned()) {
            return Err(NameBusy(key.to_owned()));
        }
        Ok(NameHeld {
            locks: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for NameHeld {
    fn drop(&mut self) {
        let mut held = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_caller_is_aborted_until_release() {
        let locks = NameLocks::default();
        let held = locks.try_lock("tank/csi/a").unwrap();
        assert_eq!(
            Status::from(locks.try_lock("tank/csi/a").unwrap_err()).code(),
            tonic::Code::Aborted
        );
        let _other = locks.try_lock("tank/csi/b").unwrap();
        drop(held);
        let _again = locks.try_lock("tank/csi/a").unwrap();
    }
}
