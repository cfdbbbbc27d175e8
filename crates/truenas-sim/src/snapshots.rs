//! `pool.snapshot.*` (spec §4.7): frozen copies of a dataset's data, clones with an `origin`,
//! deferred destroy, rollback and promote.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::ctx::Ctx;
use crate::data;
use crate::datasets::{self, creation_prop};
use crate::model::{Model, SnapRec};
use crate::query::QueryArgs;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, list, opt, req};

fn render(ctx: &Ctx<'_>, snap: &SnapRec) -> Value {
    let mut props = Map::new();
    let raw = |v: String| json!({"value": v.clone(), "rawvalue": v.clone(), "source": "NONE", "parsed": v});
    props.insert(
        "used".into(),
        json!({"value": "0B", "rawvalue": "0", "source": "NONE", "parsed": 0}),
    );
    props.insert(
        "referenced".into(),
        json!({"value": datasets::human(snap.referenced), "rawvalue": snap.referenced.to_string(), "source": "NONE", "parsed": snap.referenced}),
    );
    props.insert("creation".into(), creation_prop(snap.creation, false));
    props.insert("createtxg".into(), raw(snap.createtxg.to_string()));
    let defer = if snap.defer_destroy { "on" } else { "off" };
    props.insert(
        "defer_destroy".into(),
        json!({"value": defer, "rawvalue": defer, "source": "NONE", "parsed": snap.defer_destroy}),
    );
    let clones = ctx.m.clones_of(&snap.id).join(",");
    props.insert("clones".into(), raw(clones));
    for (key, (value, _)) in ctx.m.user_props(&snap.dataset) {
        props.insert(
            key,
            json!({"value": value, "rawvalue": value, "source": "INHERITED", "parsed": value}),
        );
    }
    for (key, value) in &snap.user {
        props.insert(
            key.clone(),
            json!({"value": value, "rawvalue": value, "source": "LOCAL", "parsed": value}),
        );
    }
    let pool = snap.dataset.split('/').next().unwrap_or_default();
    json!({"id": snap.id, "name": snap.id, "snapshot_name": snap.name, "dataset": snap.dataset, "pool": pool,
        "type": "SNAPSHOT", "createtxg": snap.createtxg.to_string(), "properties": props})
}

/// `pool.snapshot.query`.
pub(crate) fn query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let q = QueryArgs::parse(params)?;
    let direct = q
        .only_equality("id")
        .or_else(|| q.only_equality("name"))
        .cloned();
    let rows = ctx
        .m
        .snapshots
        .values()
        .filter(|s| match &direct {
            Some(Value::String(id)) => &s.id == id,
            _ => true,
        })
        .map(|s| render(ctx, s))
        .map(|mut row| {
            // `extra.properties`: only the listed native and user properties (TrueNAS 25.10
            // asks libzfs for exactly those).
            if let Some(Value::Array(wanted)) = q.extra("properties")
                && let Some(Value::Object(props)) = row.get_mut("properties")
            {
                props.retain(|key, _| wanted.iter().any(|w| w.as_str() == Some(key)));
            }
            row
        })
        .collect();
    q.apply(rows)
}

fn valid_snapshot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c))
}

fn take(
    ctx: &mut Ctx<'_>,
    dataset: &str,
    name: &str,
    user: BTreeMap<String, String>,
) -> Result<String, Failure> {
    let id = format!("{dataset}@{name}");
    if ctx.m.snapshots.contains_key(&id) {
        return Err(Failure::call(
            17,
            format!("Failed to snapshot {id}: dataset already exists"),
        ));
    }
    let Some(rec) = ctx.m.datasets.get(dataset) else {
        return Err(Failure::call(
            14,
            format!("Failed to snapshot {id}: dataset does not exist"),
        ));
    };
    let source = if rec.volume {
        ctx.data.zvol_file(dataset)
    } else {
        ctx.data.dataset_dir(dataset)
    };
    let m = &*ctx.m;
    let skip = |path: &std::path::Path| {
        path.strip_prefix(&source)
            .ok()
            .and_then(|rel| rel.to_str())
            .is_some_and(|rel| m.datasets.contains_key(&format!("{dataset}/{rel}")))
    };
    data::copy_tree(&source, &ctx.data.snapshot_path(&id), &skip)
        .map_err(|err| Failure::call(14, format!("Failed to snapshot {id}: {err}")))?;
    let referenced = ctx.m.used_by_dataset(ctx.data, dataset);
    let txg = ctx.m.next_txg();
    ctx.m.snapshots.insert(
        id.clone(),
        SnapRec {
            id: id.clone(),
            dataset: dataset.to_owned(),
            name: name.to_owned(),
            creation: datasets::now(),
            createtxg: txg,
            user,
            defer_destroy: false,
            referenced,
        },
    );
    Ok(id)
}

/// `pool.snapshot.create`.
pub(crate) fn create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let schema = Ty::Obj(vec![
        req("dataset", Ty::Str),
        opt("name", Ty::Str),
        opt("naming_schema", Ty::Str),
        opt("recursive", Ty::Bool),
        opt("exclude", list(Ty::Str)),
        opt("suspend_vms", Ty::Bool),
        opt("vmware_sync", Ty::Bool),
        opt("properties", Ty::Dict(Box::new(Ty::Any))),
    ]);
    let args = schema::args(params, &[req("data", schema)])?;
    let data = &args[0];
    let dataset = data["dataset"].as_str().unwrap_or_default().to_owned();
    let name = match (
        schema::get(data, "name"),
        schema::get(data, "naming_schema"),
    ) {
        (Some(_), Some(_)) => {
            return Err(Failure::invalid(
                "snapshot_create.naming_schema",
                "You can't specify name and naming schema at the same time",
            ));
        }
        (Some(Value::String(name)), None) => name.clone(),
        (None, Some(Value::String(schema))) => {
            let secs = datasets::now();
            schema.replace("%Y-%m-%d_%H-%M", &format!("{secs}"))
        }
        _ => {
            return Err(Failure::invalid(
                "snapshot_create.name",
                "Please provide either name or naming schema",
            ));
        }
    };
    if !valid_snapshot_name(&name) {
        return Err(Failure::invalid(
            "snapshot_create.name",
            "Invalid snapshot name",
        ));
    }
    let mut user = BTreeMap::new();
    if let Some(Value::Object(props)) = data.get("properties") {
        for (key, value) in props {
            if key.contains(':') {
                let value = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                user.insert(key.clone(), value);
            }
        }
    }
    let id = take(ctx, &dataset, &name, user.clone())?;
    if schema::bool_or(data, "recursive", false) {
        let excluded: Vec<String> = data
            .get("exclude")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let mut kids = ctx.m.descendants(&dataset);
        kids.reverse();
        for child in kids.into_iter().filter(|c| !excluded.contains(c)) {
            take(ctx, &child, &name, user.clone())?;
        }
    }
    Ok(render(ctx, &ctx.m.snapshots[&id]))
}

/// `pool.snapshot.update`.
pub(crate) fn update(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let schema = Ty::Obj(vec![
        opt(
            "user_properties_update",
            list(Ty::Obj(vec![req("key", Ty::Str), req("value", Ty::Str)])),
        ),
        opt("user_properties_remove", list(Ty::Str)),
    ]);
    let args = schema::args(params, &[req("id", Ty::Str), req("data", schema)])?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let Some(mut snap) = ctx.m.snapshots.get(&id).cloned() else {
        return Err(Failure::call(
            14,
            format!("Failed to update snapshot: cannot open '{id}': dataset does not exist"),
        ));
    };
    let updates = args[1]
        .get("user_properties_update")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let removes = args[1]
        .get("user_properties_remove")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in updates.iter().enumerate() {
        if !item["key"].as_str().unwrap_or("").contains(':') {
            return Err(Failure::invalid(
                format!("data.user_properties_update.{i}.key"),
                "String should match pattern '.*:.*'",
            ));
        }
    }
    let inherited = ctx.m.user_props(&snap.dataset);
    for key in removes.iter().filter_map(Value::as_str) {
        if !snap.user.contains_key(key) && !inherited.contains_key(key) {
            return Err(Failure::invalid(
                format!("properties.{key}"),
                "Property does not exist and cannot be inherited",
            ));
        }
        snap.user.remove(key);
    }
    for item in &updates {
        snap.user.insert(
            item["key"].as_str().unwrap_or("").into(),
            item["value"].as_str().unwrap_or("").into(),
        );
    }
    ctx.m.snapshots.insert(id.clone(), snap);
    Ok(render(ctx, &ctx.m.snapshots[&id]))
}

/// Drops a snapshot and its frozen copy.
pub(crate) fn destroy_snapshot(ctx: &mut Ctx<'_>, id: &str) {
    ctx.m.snapshots.remove(id);
    let _ = data::remove(&ctx.data.snapshot_path(id));
}

/// Destroys a deferred snapshot once its last clone is gone.
pub(crate) fn reap_deferred(ctx: &mut Ctx<'_>, id: &str) {
    if ctx.m.snapshots.get(id).is_some_and(|s| s.defer_destroy) && ctx.m.clones_of(id).is_empty() {
        destroy_snapshot(ctx, id);
    }
}

/// `pool.snapshot.delete`.
pub(crate) fn delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Str),
            opt(
                "options",
                Ty::Obj(vec![opt("defer", Ty::Bool), opt("recursive", Ty::Bool)]),
            ),
        ],
    )?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let options = schema::object_or_empty(&args[1]);
    let defer = schema::bool_or(&options, "defer", false);
    let Some(snap) = ctx.m.snapshots.get(&id).cloned() else {
        return Err(Failure::instance_not_found(format!(
            "cannot open '{id}': dataset does not exist"
        )));
    };
    let mut targets = vec![id.clone()];
    if schema::bool_or(&options, "recursive", false) {
        for child in ctx.m.descendants(&snap.dataset) {
            let child_snap = format!("{child}@{}", snap.name);
            if ctx.m.snapshots.contains_key(&child_snap) {
                targets.push(child_snap);
            }
        }
    }
    for target in &targets {
        let clones = ctx.m.clones_of(target);
        if !clones.is_empty() && !defer {
            return Err(Failure::invalid(
                "options.defer",
                format!(
                    "Please set this attribute as '{target}' snapshot has dependent clones: {}",
                    clones.join(", ")
                ),
            ));
        }
    }
    for target in targets {
        if ctx.m.clones_of(&target).is_empty() {
            destroy_snapshot(ctx, &target);
        } else if let Some(snap) = ctx.m.snapshots.get_mut(&target) {
            snap.defer_destroy = true;
        }
    }
    Ok(json!(true))
}

/// `pool.snapshot.clone`.
pub(crate) fn clone(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let schema = Ty::Obj(vec![
        req("snapshot", Ty::Str),
        req("dataset_dst", Ty::Str),
        opt("dataset_properties", Ty::Dict(Box::new(Ty::Any))),
    ]);
    let args = schema::args(params, &[req("data", schema)])?;
    let data = &args[0];
    let snapshot = data["snapshot"].as_str().unwrap_or_default().to_owned();
    let target = data["dataset_dst"].as_str().unwrap_or_default().to_owned();
    let fail = |why: &str| {
        Err(Failure::call(
            14,
            format!("Failed to clone snapshot: {why}"),
        ))
    };
    let Some(snap) = ctx.m.snapshots.get(&snapshot).cloned() else {
        return fail(&format!("cannot open '{snapshot}': dataset does not exist"));
    };
    if ctx.m.datasets.contains_key(&target) {
        return fail(&format!("cannot create '{target}': dataset already exists"));
    }
    let parent = Model::parent(&target).unwrap_or_default();
    if !ctx.m.datasets.contains_key(parent) {
        return fail(&format!("cannot create '{target}': parent does not exist"));
    }
    let source = ctx.m.datasets[&snap.dataset].clone();
    let props = copy_props(&source);
    datasets::insert_dataset(ctx, &target, source.volume, &props, &snapshot)?;
    if let Some(rec) = ctx.m.datasets.get_mut(&target) {
        if source.volume {
            rec.props.insert(
                "volblocksize".into(),
                source
                    .props
                    .get("volblocksize")
                    .cloned()
                    .unwrap_or_else(|| "16384".into()),
            );
        }
        if let Some(Value::Object(extra)) = data.get("dataset_properties") {
            set_properties(rec, extra);
        }
    }
    let dest = if source.volume {
        ctx.data.zvol_file(&target)
    } else {
        ctx.data.dataset_dir(&target)
    };
    data::copy_tree(&ctx.data.snapshot_path(&snapshot), &dest, &|_| false)
        .map_err(|err| Failure::call(14, format!("Failed to clone snapshot: {err}")))?;
    Ok(json!(true))
}

/// Sets properties given at creation (`dataset_properties` of a clone, `properties_override`
/// of a received copy): user properties (with a `:`) as given, native ones lower-cased raw.
pub(crate) fn set_properties(
    rec: &mut crate::model::DatasetRec,
    properties: &serde_json::Map<String, Value>,
) {
    for (key, value) in properties {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        if key.contains(':') {
            rec.user.insert(key.clone(), value);
        } else {
            rec.props.insert(key.clone(), value.to_lowercase());
        }
    }
}

/// The create arguments of a dataset made from `source`'s data (a clone or a received
/// copy): for a zvol its size and block size, sparse (the data is copied, not reserved).
pub(crate) fn copy_props(source: &crate::model::DatasetRec) -> Value {
    let mut props = json!({});
    if source.volume {
        props["volsize"] = json!(
            source
                .props
                .get("volsize")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        );
        props["volblocksize"] = json!(
            source
                .props
                .get("volblocksize")
                .cloned()
                .unwrap_or_else(|| "16384".into())
        );
        props["sparse"] = json!(true);
    }
    props
}

/// `pool.snapshot.rollback`.
pub(crate) fn rollback(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let options = Ty::Obj(vec![
        opt("recursive", Ty::Bool),
        opt("recursive_clones", Ty::Bool),
        opt("force", Ty::Bool),
        opt("recursive_rollback", Ty::Bool),
    ]);
    let args = schema::args(params, &[req("id", Ty::Str), opt("options", options)])?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let options = schema::object_or_empty(&args[1]);
    let Some(snap) = ctx.m.snapshots.get(&id).cloned() else {
        return Err(Failure::call(
            14,
            format!("Failed to rollback snapshot: cannot open '{id}': dataset does not exist"),
        ));
    };
    let newer: Vec<String> = ctx
        .m
        .snapshots_of(&snap.dataset)
        .into_iter()
        .filter(|s| s.createtxg > snap.createtxg)
        .map(|s| s.id.clone())
        .collect();
    if !newer.is_empty() && !schema::bool_or(&options, "recursive", false) {
        return Err(Failure::call(
            14,
            format!(
                "Failed to rollback snapshot: cannot rollback to '{id}': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\n{}",
                newer.join("\n")
            ),
        ));
    }
    let recursive_clones = schema::bool_or(&options, "recursive_clones", false);
    for newer_snap in &newer {
        let clones = ctx.m.clones_of(newer_snap);
        if !clones.is_empty() && !recursive_clones {
            return Err(Failure::call(
                14,
                format!(
                    "Failed to rollback snapshot: cannot destroy '{newer_snap}': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                    clones.join("\n")
                ),
            ));
        }
    }
    for newer_snap in newer {
        for clone in ctx.m.clones_of(&newer_snap) {
            datasets::destroy_dataset(ctx, &clone);
        }
        destroy_snapshot(ctx, &newer_snap);
    }
    let rec = &ctx.m.datasets[&snap.dataset];
    let dest = if rec.volume {
        ctx.data.zvol_file(&snap.dataset)
    } else {
        ctx.data.dataset_dir(&snap.dataset)
    };
    let m = &*ctx.m;
    let dataset = snap.dataset.clone();
    // Child datasets' directories live inside the parent's: keep them across the restore.
    if rec.volume {
        data::copy_tree(&ctx.data.snapshot_path(&id), &dest, &|_| false)
    } else {
        let keep = |path: &std::path::Path| {
            path.strip_prefix(&dest)
                .ok()
                .and_then(|r| r.to_str())
                .is_some_and(|r| m.datasets.contains_key(&format!("{dataset}/{r}")))
        };
        restore_dir(&ctx.data.snapshot_path(&id), &dest, &keep)
    }
    .map_err(|err| Failure::call(14, format!("Failed to rollback snapshot: {err}")))?;
    Ok(Value::Null)
}

fn restore_dir(
    from: &std::path::Path,
    to: &std::path::Path,
    keep: &dyn Fn(&std::path::Path) -> bool,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(to)? {
        let path = entry?.path();
        if !keep(&path) {
            data::remove(&path)?;
        }
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        data::copy_tree(&entry.path(), &to.join(entry.file_name()), &|_| false)?;
    }
    Ok(())
}

/// Swaps a clone with its origin (spec §4.6): the clone takes the origin's snapshots up to the
/// one it was cloned from, and the former parent becomes a clone of the promoted dataset.
pub(crate) fn promote(ctx: &mut Ctx<'_>, clone: &str) -> Result<(), Failure> {
    let origin = ctx.m.datasets[clone].origin.clone();
    let Some(origin_snap) = ctx.m.snapshots.get(&origin).cloned() else {
        return Err(Failure::call(
            14,
            format!("Failed to promote: origin {origin} is missing"),
        ));
    };
    let parent = origin_snap.dataset.clone();
    let moving: Vec<SnapRec> = ctx
        .m
        .snapshots_of(&parent)
        .into_iter()
        .filter(|s| s.createtxg <= origin_snap.createtxg)
        .cloned()
        .collect();
    for snap in &moving {
        if ctx
            .m
            .snapshots
            .contains_key(&format!("{clone}@{}", snap.name))
        {
            return Err(Failure::call(
                14,
                format!(
                    "Failed to promote: cannot promote '{clone}': snapshot name '{}' conflicts",
                    snap.name
                ),
            ));
        }
    }
    let parent_origin = ctx.m.datasets[&parent].origin.clone();
    for snap in moving {
        let new_id = format!("{clone}@{}", snap.name);
        let _ = std::fs::rename(
            ctx.data.snapshot_path(&snap.id),
            ctx.data.snapshot_path(&new_id),
        );
        ctx.m.snapshots.remove(&snap.id);
        for rec in ctx.m.datasets.values_mut() {
            if rec.origin == snap.id {
                rec.origin = new_id.clone();
            }
        }
        ctx.m.snapshots.insert(
            new_id.clone(),
            SnapRec {
                id: new_id,
                dataset: clone.to_owned(),
                ..snap
            },
        );
    }
    if let Some(rec) = ctx.m.datasets.get_mut(clone) {
        rec.origin = parent_origin;
    }
    if let Some(rec) = ctx.m.datasets.get_mut(&parent) {
        rec.origin = format!("{clone}@{}", origin_snap.name);
    }
    Ok(())
}
