//! What every handler works on, and the helpers handlers of several services share. Handlers
//! import from here and the method table imports the handlers, so nothing imports back.

use serde_json::Value;

use crate::data::DataDir;
use crate::faults::Faults;
use crate::model::Model;
use crate::rpc::Failure;

/// What a handler works on.
pub(crate) struct Ctx<'a> {
    /// The state.
    pub(crate) m: &'a mut Model,
    /// The data directory.
    pub(crate) data: &'a DataDir,
    /// Fault knobs.
    pub(crate) faults: &'a Faults,
}

/// InstanceNotFound for an integer-keyed service.
pub(crate) fn not_found(verbose: &str, id: i64) -> Failure {
    Failure::instance_not_found(format!("{verbose} {id} does not exist"))
}

/// A stored row as the service returns it.
pub(crate) fn get_row(ctx: &Ctx<'_>, table: &str, id: i64) -> Value {
    ctx.m.row(table, id).cloned().unwrap_or(Value::Null)
}

/// `n` random hex digits.
pub(crate) fn hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect()
}

/// A random UUID v4 string.
pub(crate) fn uuid4() -> String {
    let h = hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Whether a zvol is visible as a block device yet (zvol-lag fault, spec §7.12).
pub(crate) fn zvol_ready(ctx: &Ctx<'_>, path: &str) -> bool {
    let name = path.trim_start_matches("zvol/");
    ctx.m.datasets.get(name).is_some_and(|r| r.volume)
        && ctx.faults.zvol_visible(name, ctx.m.datasets[name].creation)
}
