//! `replication.run_onetime` with `transport: LOCAL`: zfs send | zfs recv inside the pool,
//! which is how a volume or snapshot gets a copy that depends on nothing (no origin). The
//! target is created holding the matched snapshots (their data copied, sparse for zvols) and
//! the latest one's data; a retry that finds the target already holding the latest snapshot
//! succeeds without copying again, and a target holding other data is refused, as zfs recv
//! refuses to overwrite.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::ctx::Ctx;
use crate::data;
use crate::datasets;
use crate::model::{Model, SnapRec};
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, opt, req};

fn spec() -> Ty {
    Ty::Obj(vec![
        req("direction", Ty::Lit(&["PUSH", "PULL"])),
        req("transport", Ty::Lit(&["SSH", "SSH+NETCAT", "LOCAL"])),
        opt("ssh_credentials", schema::null(Ty::Int)),
        req("source_datasets", schema::list(Ty::Str)),
        req("target_dataset", Ty::Str),
        req("recursive", Ty::Bool),
        opt("exclude", schema::list(Ty::Str)),
        opt("properties", Ty::Bool),
        opt("properties_exclude", schema::list(Ty::Str)),
        opt("properties_override", Ty::Dict(Box::new(Ty::Any))),
        opt("replicate", Ty::Bool),
        opt("encryption", Ty::Any),
        opt("periodic_snapshot_tasks", schema::list(Ty::Int)),
        opt("naming_schema", schema::list(Ty::Str)),
        opt("also_include_naming_schema", schema::list(Ty::Str)),
        opt("name_regex", schema::null(Ty::Str)),
        req("retention_policy", Ty::Lit(&["SOURCE", "CUSTOM", "NONE"])),
        opt("readonly", Ty::Lit(&["SET", "REQUIRE", "IGNORE"])),
        opt("allow_from_scratch", Ty::Bool),
        opt("mount", Ty::Bool),
        opt("only_from_scratch", Ty::Bool),
        opt("compression", schema::null(Ty::Any)),
        opt("speed_limit", schema::null(Ty::Int)),
        opt("large_block", Ty::Bool),
        opt("embed", Ty::Bool),
        opt("compressed", Ty::Bool),
        opt("retries", Ty::Int),
        opt("logging_level", schema::null(Ty::Any)),
        opt("exclude_mountpoint_property", Ty::Bool),
    ])
}

/// `replication.run_onetime` (a job).
pub(crate) fn run_onetime(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("data", spec())])?;
    let data = &args[0];
    let p = "replication_run_onetime";
    let transport = data["transport"].as_str().unwrap_or_default();
    if transport != "LOCAL" {
        if schema::get(data, "ssh_credentials").is_none() {
            return Err(Failure::invalid(
                format!("{p}.ssh_credentials"),
                "SSH Credentials are required for non-local replications",
            ));
        }
        return Err(Failure::call(
            22,
            "the simulator replicates only with transport LOCAL",
        ));
    }
    let sources: Vec<String> = data["source_datasets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if sources.is_empty() {
        return Err(Failure::invalid(
            format!("{p}.source_datasets"),
            "At least one source dataset is required",
        ));
    }
    let has_schema = |key: &str| {
        schema::get(data, key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    let regex = schema::get(data, "name_regex").and_then(Value::as_str);
    if regex.is_none() && !has_schema("naming_schema") && !has_schema("also_include_naming_schema")
    {
        return Err(Failure::invalid(
            format!("{p}.naming_schema"),
            "You must at least either provide naming schema or name regex",
        ));
    }
    let Some(regex) = regex else {
        return Err(Failure::call(
            22,
            "the simulator selects snapshots only by name_regex",
        ));
    };
    // Python's re.fullmatch.
    let matcher = regex::Regex::new(&format!("^(?:{regex})$")).map_err(|err| {
        Failure::invalid(format!("{p}.name_regex"), format!("Invalid regex: {err}"))
    })?;
    if sources.len() != 1 || schema::bool_or(data, "recursive", false) {
        return Err(Failure::call(
            22,
            "the simulator replicates one dataset, not recursively",
        ));
    }
    let source = &sources[0];
    let target = data["target_dataset"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fail = |message: String| Err(Failure::call(14, message));
    let Some(source_rec) = ctx.m.datasets.get(source).cloned() else {
        return fail(format!("Source dataset {source:?} does not exist"));
    };
    if source_rec.locked {
        return fail(format!("Source dataset {source:?} is locked"));
    }
    let mut snaps: Vec<SnapRec> = ctx
        .m
        .snapshots
        .values()
        .filter(|s| &s.dataset == source && matcher.is_match(&s.name))
        .cloned()
        .collect();
    snaps.sort_by_key(|s| s.createtxg);
    let Some(latest) = snaps.last().cloned() else {
        return fail(format!(
            "Dataset {source:?} does not have any matching snapshots to replicate"
        ));
    };
    if ctx.m.datasets.contains_key(&target) {
        let held = ctx
            .m
            .snapshots
            .contains_key(&format!("{target}@{}", latest.name));
        if held {
            return Ok(Value::Null); // a retry: everything is there
        }
        return fail(format!(
            "Target dataset {target:?} does not have matching snapshots but has data, refusing to overwrite existing data"
        ));
    }
    let parent = Model::parent(&target).unwrap_or_default();
    if !ctx.m.datasets.contains_key(parent) {
        return fail(format!(
            "Target dataset {target:?} cannot be created: its parent does not exist"
        ));
    }
    // zfs recv: a new dataset with no origin, the size of the source for a zvol.
    let props = crate::snapshots::copy_props(&source_rec);
    // The data arrives by the copy below, so the dataset is made as a clone would be (no
    // fresh zvol file or directory), then its origin cleared.
    datasets::insert_dataset(ctx, &target, source_rec.volume, &props, &latest.id)?;
    if let Some(rec) = ctx.m.datasets.get_mut(&target) {
        rec.origin = String::new();
        if source_rec.volume {
            for key in ["volblocksize"] {
                if let Some(v) = source_rec.props.get(key) {
                    rec.props.insert(key.into(), v.clone());
                }
            }
        }
        if schema::bool_or(data, "properties", true) {
            for (key, value) in &source_rec.user {
                rec.user.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        // zfs recv -o: user properties (with a `:`) and native ones, raw values.
        if let Some(Value::Object(overrides)) = data.get("properties_override") {
            crate::snapshots::set_properties(rec, overrides);
        }
    }
    let dest = if source_rec.volume {
        ctx.data.zvol_file(&target)
    } else {
        ctx.data.dataset_dir(&target)
    };
    let io =
        |err: std::io::Error| Failure::call(14, format!("zfs recv into {target:?} failed: {err}"));
    data::copy_tree(&ctx.data.snapshot_path(&latest.id), &dest, &|_| false).map_err(io)?;
    for snap in snaps {
        let id = format!("{target}@{}", snap.name);
        data::copy_tree(
            &ctx.data.snapshot_path(&snap.id),
            &ctx.data.snapshot_path(&id),
            &|_| false,
        )
        .map_err(io)?;
        let txg = ctx.m.next_txg();
        ctx.m.snapshots.insert(
            id.clone(),
            SnapRec {
                id,
                dataset: target.clone(),
                name: snap.name.clone(),
                creation: snap.creation,
                createtxg: txg,
                user: if schema::bool_or(data, "properties", true) {
                    snap.user.clone()
                } else {
                    BTreeMap::new()
                },
                defer_destroy: false,
                referenced: snap.referenced,
            },
        );
    }
    Ok(Value::Null)
}
