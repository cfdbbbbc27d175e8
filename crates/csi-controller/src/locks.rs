//! One operation at a time per volume or snapshot name; a second caller gets `Aborted` (the CO
//! retries), and different names never wait for each other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tonic::Status;

/// Names with an operation in progress.
#[derive(Debug, Default, Clone)]
pub(crate) struct Locks(Arc<Mutex<HashSet<String>>>);

/// Held while an operation runs; releases the name when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    locks: Locks,
    key: String,
}

impl Locks {
    /// Takes `key`, or says an operation on it is already running.
    pub(crate) fn try_lock(&self, key: &str) -> Result<Held, Status> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(key.to_owned()) {
            return Err(Status::aborted(format!(
                "an operation on {key} is already in progress; retry later"
            )));
        }
        Ok(Held {
            locks: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Held {
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
        let locks = Locks::default();
        let held = locks.try_lock("tank/csi/a").unwrap();
        assert_eq!(
            locks.try_lock("tank/csi/a").unwrap_err().code(),
            tonic::Code::Aborted
        );
        let _other = locks.try_lock("tank/csi/b").unwrap();
        drop(held);
        locks.try_lock("tank/csi/a").unwrap();
    }
}
