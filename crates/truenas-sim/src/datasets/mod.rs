//! `pool.query` and `pool.dataset.*` with the plugin's rules; [`rendering`] makes the property
//! objects a reply carries and [`schemas`] holds the argument models.

mod rendering;
mod schemas;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::data;
use crate::model::{DatasetRec, Model};
use crate::query::QueryArgs;
use crate::rpc::{Entry, Failure, Outcome};
use crate::schema::{self, Ty, opt, req};

pub(crate) use rendering::*;
use schemas::*;

/// `pool.query`.
pub(crate) fn pool_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let q = QueryArgs::parse(params)?;
    let rows = ctx
        .m
        .pools
        .values()
        .map(|p| {
            let free = ctx.m.pool_free(ctx.data, &p.name);
            let allocated = p.size - free;
            json!({"id": p.id, "name": p.name, "guid": p.guid, "status": "ONLINE", "path": format!("/mnt/{}", p.name),
                "scan": null, "expand": null, "is_upgraded": true, "healthy": true, "warning": false,
                "status_code": "OK", "status_detail": null, "size": p.size, "allocated": allocated, "free": free,
                "freeing": 0, "dedup_table_size": 0, "dedup_table_quota": "auto", "fragmentation": "0",
                "size_str": p.size.to_string(), "allocated_str": allocated.to_string(), "free_str": free.to_string(),
                "freeing_str": "0",
                "autotrim": {"parsed": "off", "rawvalue": "off", "source": "DEFAULT", "value": "off"},
                "topology": {"data": [], "log": [], "cache": [], "spare": [], "special": [], "dedup": []}})
        })
        .collect();
    q.apply(rows)
}

/// The top-level `["user_properties.<key>.value", "=", "<text>"]` filters of a query, as
/// (key, value) pairs (keys TrueNAS renames are left to the full filter).
fn user_property_filters(q: &QueryArgs) -> Vec<(String, String)> {
    q.filters()
        .iter()
        .filter_map(|filter| {
            let [Value::String(path), Value::String(op), Value::String(value)] =
                filter.as_array()?.as_slice()
            else {
                return None;
            };
            let key = path
                .strip_prefix("user_properties.")?
                .strip_suffix(".value")?
                .replace("\\.", ".");
            let renamed = crate::model::RENAMED_USER_PROPS
                .iter()
                .any(|(zfs, api)| *zfs == key || *api == key);
            (op == "=" && !renamed).then(|| (key, value.clone()))
        })
        .collect()
}

/// `pool.dataset.query`.
pub(crate) fn query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let q = QueryArgs::parse(params)?;
    let flat = q.extra("flat").and_then(Value::as_bool).unwrap_or(true);
    let children = q
        .extra("retrieve_children")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let user = q
        .extra("retrieve_user_props")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let shown = |n: &String| visible(n) && (flat || !n.contains('/'));
    // A single `id =` filter opens the dataset directly instead of rendering all of them.
    // So does `id in [...]` (TrueNAS too resolves named datasets without walking the pool).
    let direct = q
        .only_equality("id")
        .or_else(|| q.only_equality("name"))
        .map(|v| vec![v.clone()])
        .or_else(|| {
            q.only_membership("id")
                .or_else(|| q.only_membership("name"))
                .cloned()
        });
    let mut names: Vec<String> = match direct {
        Some(ids) => {
            let mut names: Vec<String> = ids
                .iter()
                .filter_map(Value::as_str)
                .filter(|id| ctx.m.datasets.contains_key(*id))
                .map(str::to_owned)
                .filter(|n| shown(n))
                .collect();
            names.sort();
            names.dedup();
            names
        }
        None => {
            // Filters on user property values are judged on the stored properties before a
            // dataset is rendered (a listing of the driver's volumes renders only those).
            let wanted_props = user_property_filters(&q);
            ctx.m
                .datasets
                .keys()
                .filter(|n| shown(n))
                .filter(|n| {
                    wanted_props.is_empty() || {
                        let props = ctx.m.user_props(n);
                        wanted_props.iter().all(|(key, value)| {
                            props.get(key).map(|(v, _)| v.as_str()) == Some(value)
                        })
                    }
                })
                .cloned()
                .collect()
        }
    };
    // Every filter judged on stored properties and rows in name order: count, or cut the
    // page, before rendering anything (a page of 500 renders 500, whatever the pool holds).
    let all_judged = q.filters().len() == user_property_filters(&q).len();
    let q = if all_judged && q.in_name_order() {
        if q.counting() {
            return Ok(json!(names.len()));
        }
        let (offset, limit) = q.page();
        names = names
            .into_iter()
            .skip(offset)
            .take(if limit == 0 { usize::MAX } else { limit })
            .collect();
        q.without_paging()
    } else {
        q
    };
    let wanted = match q.extra("properties") {
        None | Some(Value::Null) => Wanted::All,
        Some(Value::Array(list)) => Wanted::Only(list),
        Some(_) => {
            return Err(Failure::invalid(
                "query-options.extra.properties",
                "Input should be a valid list",
            ));
        }
    };
    let rows = names
        .iter()
        .map(|n| render(ctx, n, children, user, wanted))
        .collect();
    q.apply(rows)
}

/// `pool.dataset.get_instance [id, options]`: one dataset, or InstanceNotFound.
pub(crate) fn get_instance(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("id", Ty::Str), opt("options", Ty::Any)])?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    if !ctx.m.datasets.contains_key(&id) || !visible(&id) {
        return Err(Failure::instance_not_found(format!(
            "Dataset {id} does not exist"
        )));
    }
    Ok(render(ctx, &id, true, true, Wanted::All))
}

/// libzfs's rule for a filesystem or volume name: at most 255 characters, components of
/// letters, digits and `_-:. ` that are not empty, `.` or `..`, a pool name starting with a
/// letter.
fn valid_name(name: &str) -> bool {
    const MAX: usize = 255;
    !name.is_empty()
        && name.len() <= MAX
        && !name.ends_with(' ')
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-:. ".contains(ch))
        })
}

/// Whether a user property key is one ZFS takes.
pub(crate) fn valid_user_key(key: &str) -> bool {
    key.contains(':')
        && key.len() <= 256
        && !key.starts_with('-')
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ":-._".contains(c))
}

/// Applies one API field to a property map: `"INHERIT"` clears the local value, a string or
/// number sets it (strings through `form`, e.g. to the lowercase ZFS spelling).
fn set_local(
    props: &mut BTreeMap<String, String>,
    zfs: &str,
    value: Option<&Value>,
    form: fn(&str) -> String,
) {
    match value {
        Some(Value::String(s)) if s == "INHERIT" => {
            props.remove(zfs);
        }
        Some(Value::String(s)) => {
            props.insert(zfs.into(), form(s));
        }
        Some(Value::Number(n)) => {
            props.insert(zfs.into(), n.to_string());
        }
        _ => {}
    }
}

/// Sets the simple enum/int fields of create/update as local ZFS props.
fn apply_props(rec: &mut DatasetRec, data: &Value) {
    for (api, zfs) in [
        ("compression", "compression"),
        ("sync", "sync"),
        ("exec", "exec"),
        ("readonly", "readonly"),
        ("deduplication", "dedup"),
        ("checksum", "checksum"),
        ("snapdir", "snapdir"),
        ("snapdev", "snapdev"),
        ("copies", "copies"),
        ("aclmode", "aclmode"),
        ("acltype", "acltype"),
        ("atime", "atime"),
        ("special_small_block_size", "special_small_blocks"),
    ] {
        set_local(&mut rec.props, zfs, data.get(api), str::to_lowercase);
    }
    for key in ["reservation", "refreservation", "quota", "refquota"] {
        match data.get(key) {
            Some(Value::Number(n)) if n.as_u64() == Some(0) => {
                rec.props.remove(key);
            }
            Some(Value::Number(n)) => {
                rec.props.insert(key.into(), n.to_string());
            }
            Some(Value::Null) => {
                rec.props.remove(key);
            }
            _ => {}
        }
    }
    if let Some(Value::String(rs)) = data.get("recordsize")
        && let Some(bytes) = block_bytes(rs)
    {
        rec.props.insert("recordsize".into(), bytes.to_string());
    }
    for (api, zfs) in [
        ("comments", "org.freenas:description"),
        ("managedby", "org.truenas:managedby"),
        ("quota_warning", "org.freenas:quota_warning"),
        ("quota_critical", "org.freenas:quota_critical"),
        ("refquota_warning", "org.freenas:refquota_warning"),
        ("refquota_critical", "org.freenas:refquota_critical"),
    ] {
        set_local(&mut rec.user, zfs, data.get(api), str::to_owned);
    }
}

/// The models' quota bound (`ge=1 GiB`, or 0/null to clear): a model error, so it is
/// reported under the argument name (`data.refquota`), as pydantic reports it.
fn quota_checks(data: &Value, errors: &mut Vec<Entry>) {
    let prefix = "data";
    for key in ["quota", "refquota"] {
        if let Some(n) = data.get(key).and_then(Value::as_u64)
            && n != 0
            && n < GIB
        {
            errors.push(Entry::invalid(
                format!("{prefix}.{key}"),
                "Input should be greater than or equal to 1073741824",
            ));
        }
    }
}

/// `pool.dataset.create`.
pub(crate) fn create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("data", create_schema())])?;
    let data = &args[0];
    let p = "pool_dataset_create";
    let name = data["name"].as_str().unwrap_or_default().to_owned();
    // The model's union: a body without `type` is a volume when it passed as one (it has
    // `volsize`, which the filesystem branch refuses).
    let volume = data
        .get("type")
        .and_then(Value::as_str)
        .map_or(data.get("volsize").is_some(), |t| t == "VOLUME");
    let mut errors = Vec::new();
    // The model first (libzfs's name rules, 255 characters at most), then the plugin.
    if !valid_name(&name) {
        return Err(Failure::invalid(
            "data.name",
            "Value error, Please provide a valid dataset name according to ZFS standards",
        ));
    }
    if !name.contains('/') {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "You need a full name, e.g. pool/newdataset",
        ));
    }
    if INTERNAL.iter().any(|i| name.contains(i)) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            format!(
                "{name} is using system internal managed dataset. Please specify a different parent."
            ),
        ));
    }
    if let Some(Value::Array(props)) = data.get("user_properties") {
        for (i, item) in props.iter().enumerate() {
            if !item["key"].as_str().unwrap_or("").contains(':') {
                errors.push(Entry::invalid(
                    format!("data.user_properties.{i}.key"),
                    "String should match pattern '.*:.*'",
                ));
            }
        }
    }
    quota_checks(data, &mut errors);
    if !errors.is_empty() {
        return Err(Failure::Validation(errors));
    }
    let pool = name.split('/').next().unwrap_or_default().to_owned();
    if !ctx.m.pools.contains_key(&pool) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            format!("zpool ({pool}) does not exist."),
        ));
    }
    let parent = Model::parent(&name).unwrap_or_default().to_owned();
    if !ctx.m.datasets.contains_key(&parent) {
        if schema::bool_or(data, "create_ancestors", false) {
            let mut missing = Vec::new();
            let mut current = Some(parent.as_str());
            while let Some(ds) = current {
                if ctx.m.datasets.contains_key(ds) {
                    break;
                }
                missing.push(ds.to_owned());
                current = Model::parent(ds);
            }
            for ds in missing.into_iter().rev() {
                if ctx
                    .m
                    .datasets
                    .get(Model::parent(&ds).unwrap_or(""))
                    .is_some_and(|r| r.volume)
                {
                    return Err(Failure::invalid(
                        format!("{p}.name"),
                        format!("{ds}: parent may not be a ZFS volume"),
                    ));
                }
                insert_dataset(ctx, &ds, false, &json!({}), "")?;
            }
        } else {
            return Err(Failure::invalid(
                format!("{p}.name"),
                format!("Parent dataset ({parent}) does not exist."),
            ));
        }
    }
    let parent_rec = &ctx.m.datasets[&parent];
    if parent_rec.volume {
        return Err(Failure::invalid(
            format!("{p}.name"),
            format!("{parent}: parent may not be a ZFS volume"),
        ));
    }
    if ctx
        .m
        .effective(&parent, "readonly")
        .is_some_and(|(v, _, _)| v == "on")
    {
        return Err(Failure::invalid(
            format!("{p}.readonly"),
            format!("Turn off readonly mode on {parent} to create {name}"),
        ));
    }
    if ctx.data.dataset_dir(&name).exists() || ctx.m.datasets.get(&name).is_some_and(|r| !r.volume)
    {
        return Err(Failure::invalid(
            format!("{p}.name"),
            format!("Path /mnt/{name} already exists"),
        ));
    }
    if ctx.m.datasets.contains_key(&name) {
        return Err(Failure::call(
            14,
            "Failed to create dataset: dataset already exists",
        ));
    }
    let acltype = data.get("acltype").and_then(Value::as_str);
    let aclmode = data.get("aclmode").and_then(Value::as_str);
    if matches!(acltype, Some("POSIX" | "OFF")) && aclmode.is_some_and(|m| m != "DISCARD") {
        return Err(Failure::invalid(
            format!("{p}.aclmode"),
            "Must be set to DISCARD when acltype is POSIX or OFF",
        ));
    }
    if acltype == Some("NFSV4") && aclmode == Some("DISCARD") {
        return Err(Failure::invalid(
            format!("{p}.aclmode"),
            "DISCARD aclmode may not be set for NFSv4 acl type",
        ));
    }
    let encryption = schema::bool_or(data, "encryption", false);
    if encryption {
        if schema::bool_or(data, "inherit_encryption", true) {
            return Err(Failure::invalid(
                format!("{p}.inherit_encryption"),
                "Must be disabled when encryption is enabled.",
            ));
        }
        let options = data.get("encryption_options").cloned().unwrap_or(json!({}));
        let sources = [
            schema::bool_or(&options, "generate_key", false),
            schema::get(&options, "key").is_some(),
            schema::get(&options, "passphrase").is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => {
                return Err(Failure::invalid(
                    format!("{p}.encryption_options.key"),
                    "Please provide a key or select generate_key to automatically generate a key when enabling encryption.",
                ));
            }
            1 => {}
            _ => {
                return Err(Failure::invalid(
                    format!("{p}.encryption_options.generate_key"),
                    "Only one of key, generate_key must be provided.",
                ));
            }
        }
    }
    if volume {
        let volsize = data["volsize"].as_u64().unwrap_or(0);
        let block = data
            .get("volblocksize")
            .and_then(Value::as_str)
            .and_then(block_bytes)
            .unwrap_or(16384);
        let available = ctx.m.available(ctx.data, &parent);
        if volsize as f64 > available as f64 * 0.8 && !schema::bool_or(data, "force_size", false) {
            return Err(Failure::invalid(
                format!("{p}.volsize"),
                "It is not recommended to use more than 80% of your available space for VOLUME",
            ));
        }
        if volsize == 0 || volsize % block != 0 {
            return Err(Failure::invalid(
                format!("{p}.volsize"),
                "Volume size should be a multiple of volume block size",
            ));
        }
    }
    if let Some(Value::Array(props)) = data.get("user_properties")
        && let Some(bad) = props
            .iter()
            .filter_map(|i| i["key"].as_str())
            .find(|k| !valid_user_key(k))
    {
        return Err(Failure::call(
            14,
            format!("Failed to create dataset: invalid property '{bad}'"),
        ));
    }
    insert_dataset(ctx, &name, volume, data, "")?;
    Ok(render(ctx, &name, true, true, Wanted::All))
}

/// Adds a dataset to the model and makes its directory or zvol file.
pub(crate) fn insert_dataset(
    ctx: &mut Ctx<'_>,
    name: &str,
    volume: bool,
    data: &Value,
    origin: &str,
) -> Result<(), Failure> {
    let txg = ctx.m.next_txg();
    let mut rec = DatasetRec {
        name: name.to_owned(),
        volume,
        props: BTreeMap::new(),
        user: BTreeMap::new(),
        origin: origin.to_owned(),
        creation: now(),
        createtxg: txg,
        encrypted: schema::bool_or(data, "encryption", false),
        encryption: None,
        locked: false,
    };
    if rec.encrypted {
        let options = data.get("encryption_options").cloned().unwrap_or(json!({}));
        rec.encryption = Some(crate::encryption::from_options(
            &options,
            "pool_dataset_create",
        )?);
    }
    apply_props(&mut rec, data);
    if let Some(Value::Array(props)) = data.get("user_properties") {
        for item in props {
            if let (Some(k), Some(v)) = (item["key"].as_str(), item["value"].as_str()) {
                rec.user.insert(k.into(), v.into());
            }
        }
    }
    match data.get("share_type").and_then(Value::as_str) {
        Some("SMB") => {
            rec.props
                .insert("casesensitivity".into(), "insensitive".into());
            rec.props.insert("acltype".into(), "nfsv4".into());
            rec.props.insert("aclmode".into(), "restricted".into());
        }
        Some("NFS" | "MULTIPROTOCOL" | "APPS") => {
            rec.props.insert("atime".into(), "off".into());
            rec.props.insert("acltype".into(), "nfsv4".into());
            rec.props.insert("aclmode".into(), "passthrough".into());
        }
        _ => {}
    }
    if let Some(case) = data.get("casesensitivity").and_then(Value::as_str)
        && case != "INHERIT"
    {
        rec.props
            .insert("casesensitivity".into(), case.to_lowercase());
    }
    let io = |err: std::io::Error| Failure::call(14, format!("Failed to create dataset: {err}"));
    if volume {
        let volsize = data["volsize"].as_u64().unwrap_or(0);
        let block = data
            .get("volblocksize")
            .and_then(Value::as_str)
            .and_then(block_bytes)
            .unwrap_or(16384);
        rec.props.insert("volsize".into(), volsize.to_string());
        rec.props.insert("volblocksize".into(), block.to_string());
        if !schema::bool_or(data, "sparse", false) {
            rec.props
                .insert("refreservation".into(), volsize.to_string());
        }
        if origin.is_empty() {
            data::size_zvol(&ctx.data.zvol_file(name), volsize).map_err(io)?;
        }
    } else if origin.is_empty() {
        std::fs::create_dir_all(ctx.data.dataset_dir(name)).map_err(io)?;
    }
    ctx.m.datasets.insert(name.to_owned(), rec);
    Ok(())
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `pool.dataset.update`.
pub(crate) fn update(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("id", Ty::Str), req("data", update_schema())])?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let data = &args[1];
    let p = "pool_dataset_update";
    let Some(rec) = ctx.m.datasets.get(&id).cloned() else {
        return Err(Failure::Validation(vec![Entry {
            attribute: Some("id".into()),
            message: format!("{id} does not exist"),
            errno: 2,
        }]));
    };
    let mut errors = Vec::new();
    let fs_only = [
        "aclmode",
        "acltype",
        "atime",
        "quota",
        "refquota",
        "recordsize",
    ];
    for key in data.as_object().into_iter().flat_map(|o| o.keys()) {
        if rec.volume && fs_only.contains(&key.as_str()) {
            errors.push(Entry::invalid(
                format!("{p}.{key}"),
                "This field is not valid for VOLUME",
            ));
        }
        if !rec.volume && key == "volsize" {
            errors.push(Entry::invalid(
                format!("{p}.{key}"),
                "This field is not valid for FILESYSTEM",
            ));
        }
    }
    quota_checks(data, &mut errors);
    if data.get("user_properties").is_some() && data.get("user_properties_update").is_some() {
        errors.push(Entry::invalid(
            format!("{p}.user_properties_update"),
            "Should not be specified when \"user_properties\" are explicitly specified",
        ));
    }
    let updates: Vec<Value> = data
        .get("user_properties_update")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, item) in updates.iter().enumerate() {
        let key = item["key"].as_str().unwrap_or("");
        if !key.contains(':') {
            errors.push(Entry::invalid(
                format!("data.user_properties_update.{i}.key"),
                "String should match pattern '.*:.*'",
            ));
        }
        let has_value = schema::get(item, "value").is_some();
        let remove = schema::bool_or(item, "remove", false);
        if has_value && remove {
            errors.push(Entry::invalid(
                format!("{p}.user_properties_update.{i}.remove"),
                "When \"value\" is specified, this cannot be set",
            ));
        } else if !has_value && !remove {
            errors.push(Entry::invalid(
                format!("{p}.user_properties_update.{i}.value"),
                "Either \"value\" or \"remove\" must be specified",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(Failure::Validation(errors));
    }
    let effective = ctx.m.user_props(&id);
    for item in &updates {
        let key = item["key"].as_str().unwrap_or("");
        if schema::bool_or(item, "remove", false) && !effective.contains_key(key) {
            return Err(Failure::invalid(
                format!("properties.{key}"),
                "Property does not exist and cannot be inherited",
            ));
        }
        if !valid_user_key(key) {
            return Err(Failure::call(
                14,
                format!("Failed to update properties: invalid property '{key}'"),
            ));
        }
    }
    if let Some(volsize) = data.get("volsize").and_then(Value::as_u64) {
        let current: u64 = rec
            .props
            .get("volsize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let block: u64 = rec
            .props
            .get("volblocksize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16384);
        if volsize < current {
            return Err(Failure::invalid(
                format!("{p}.volsize"),
                "You cannot shrink a zvol from GUI, this may lead to data loss.",
            ));
        }
        let parent = Model::parent(&id).unwrap_or_default();
        let room = ctx.m.available(ctx.data, parent)
            + ctx.m.used_by_dataset(ctx.data, &id)
            + ctx.m.refreservation(&id);
        if volsize > current
            && volsize as f64 > room as f64 * 0.8
            && !schema::bool_or(data, "force_size", false)
        {
            return Err(Failure::invalid(
                format!("{p}.volsize"),
                "It is not recommended to use more than 80% of your available space for VOLUME",
            ));
        }
        if volsize % block != 0 {
            return Err(Failure::invalid(
                format!("{p}.volsize"),
                "Volume size should be a multiple of volume block size",
            ));
        }
    }
    let mut rec = rec;
    apply_props(&mut rec, data);
    if let Some(volsize) = data.get("volsize").and_then(Value::as_u64) {
        if rec.props.contains_key("refreservation") {
            rec.props
                .insert("refreservation".into(), volsize.to_string());
        }
        rec.props.insert("volsize".into(), volsize.to_string());
        data::size_zvol(&ctx.data.zvol_file(&id), volsize)
            .map_err(|err| Failure::call(14, format!("Failed to update dataset: {err}")))?;
    }
    if let Some(Value::Array(props)) = data.get("user_properties") {
        rec.user
            .retain(|k, _| !k.starts_with("org.freenas:") && !k.starts_with("org.truenas:"));
        for item in props {
            if let (Some(k), Some(v)) = (item["key"].as_str(), item["value"].as_str()) {
                rec.user.insert(k.into(), v.into());
            }
        }
    }
    for item in &updates {
        let key = item["key"].as_str().unwrap_or("").to_owned();
        match item.get("value").and_then(Value::as_str) {
            Some(value) => {
                rec.user.insert(key, value.to_owned());
            }
            None => {
                rec.user.remove(&key);
            }
        }
    }
    ctx.m.datasets.insert(id.clone(), rec);
    Ok(render(ctx, &id, true, true, Wanted::All))
}

/// Removes attachments inside `/mnt/<id>` or on the zvol (spec §4.5 step 3).
fn delete_attachments(ctx: &mut Ctx<'_>, id: &str) {
    // The prefixes are made once: this runs over every share, namespace and extent.
    let mount = format!("/mnt/{id}");
    let mount_below = format!("{mount}/");
    let inside = |path: &str| path == mount || path.starts_with(&mount_below);
    let zvol = format!("zvol/{id}");
    let zvol_below = format!("{zvol}/");
    let on_zvol = |path: &str| path == zvol || path.starts_with(&zvol_below);
    for table in ["sharing.nfs", "sharing.smb"] {
        ctx.m
            .table(table)
            .rows
            .retain(|_, row| !inside(row["path"].as_str().unwrap_or("")));
    }
    ctx.m.table("nvmet.namespace").rows.retain(|_, row| {
        let path = row["device_path"].as_str().unwrap_or("");
        !(on_zvol(path) || inside(path))
    });
    let gone: Vec<i64> = ctx
        .m
        .rows("iscsi.extent")
        .iter()
        .filter(|row| {
            on_zvol(row["disk"].as_str().unwrap_or(""))
                || inside(row["path"].as_str().unwrap_or(""))
        })
        .filter_map(|row| row["id"].as_i64())
        .collect();
    if gone.is_empty() {
        return;
    }
    ctx.m
        .table("iscsi.extent")
        .rows
        .retain(|id, _| !gone.contains(id));
    let mut touched = Vec::new();
    ctx.m.table("iscsi.targetextent").rows.retain(|_, row| {
        let hit = gone.contains(&row["extent"].as_i64().unwrap_or(0));
        if hit {
            touched.push(row["target"].as_i64().unwrap_or(0));
        }
        !hit
    });
    let still_used: Vec<i64> = ctx
        .m
        .rows("iscsi.targetextent")
        .iter()
        .filter_map(|r| r["target"].as_i64())
        .collect();
    ctx.m
        .table("iscsi.target")
        .rows
        .retain(|id, _| !touched.contains(id) || still_used.contains(id));
}

/// Destroys a dataset's data and record, then any deferred snapshot its origin was waiting on.
pub(crate) fn destroy_dataset(ctx: &mut Ctx<'_>, name: &str) {
    let Some(rec) = ctx.m.datasets.remove(name) else {
        return;
    };
    let path = if rec.volume {
        ctx.data.zvol_file(name)
    } else {
        ctx.data.dataset_dir(name)
    };
    let _ = data::remove(&path);
    if rec.locked {
        let _ = crate::encryption::reveal(ctx.data, name, rec.volume);
        let _ = data::remove(&path);
    }
    if !rec.origin.is_empty() {
        crate::snapshots::reap_deferred(ctx, &rec.origin);
    }
}

/// `pool.dataset.delete`.
pub(crate) fn delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Str),
            opt(
                "options",
                Ty::Obj(vec![opt("recursive", Ty::Bool), opt("force", Ty::Bool)]),
            ),
        ],
    )?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let options = schema::object_or_empty(&args[1]);
    let recursive = schema::bool_or(&options, "recursive", false);
    let children = ctx.m.children(&id);
    if !recursive && !children.is_empty() {
        return Err(Failure::call(
            39,
            format!("Failed to delete dataset: cannot destroy '{id}': filesystem has children"),
        ));
    }
    if !ctx.m.datasets.contains_key(&id) {
        return Err(Failure::instance_not_found(format!(
            "PoolDataset {id} does not exist"
        )));
    }
    ctx.faults.check_busy(&id)?;
    let is_root = !id.contains('/');
    let mut doomed = ctx.m.descendants(&id);
    if !is_root {
        doomed.push(id.clone());
    }
    let snaps: Vec<String> = ctx
        .m
        .snapshots
        .values()
        .filter(|s| doomed.contains(&s.dataset))
        .map(|s| s.id.clone())
        .collect();
    for snap in &snaps {
        let clones: Vec<String> = ctx
            .m
            .clones_of(snap)
            .into_iter()
            .filter(|c| !doomed.contains(c))
            .collect();
        if !clones.is_empty() {
            delete_attachments(ctx, &id);
            return Err(Failure::call(
                14,
                format!(
                    "Failed to delete dataset: cannot destroy '{snap}': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\n{}",
                    clones.join("\n")
                ),
            ));
        }
    }
    delete_attachments(ctx, &id);
    if !recursive && !snaps.is_empty() {
        return Err(Failure::call(
            14,
            format!(
                "Failed to delete dataset: cannot destroy '{id}': filesystem has children\nuse '-r' to destroy the following datasets:\n{}",
                snaps.join("\n")
            ),
        ));
    }
    for snap in snaps {
        crate::snapshots::destroy_snapshot(ctx, &snap);
    }
    for name in doomed {
        destroy_dataset(ctx, &name);
    }
    Ok(json!(true))
}

/// `pool.dataset.promote`.
pub(crate) fn promote(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("id", Ty::Str)])?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let Some(rec) = ctx.m.datasets.get(&id) else {
        return Err(Failure::call(
            2,
            format!("Dataset \"{id}\" does not exist."),
        ));
    };
    if rec.origin.is_empty() {
        return Err(Failure::call(74, "Only cloned datasets can be promoted."));
    }
    crate::snapshots::promote(ctx, &id)?;
    Ok(Value::Null)
}
