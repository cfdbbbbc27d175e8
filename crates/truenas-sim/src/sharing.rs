//! `sharing.nfs.*` and `sharing.smb.*` (spec §4.8–4.9).

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::ctx::{Ctx, get_row, not_found};
use crate::query::QueryArgs;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, list, null, opt, req};

fn nfs_fields(create: bool) -> Ty {
    let path = if create {
        req("path", Ty::Str)
    } else {
        opt("path", Ty::Str)
    };
    Ty::Obj(vec![
        path,
        opt("aliases", list(Ty::Str)),
        opt("comment", Ty::Str),
        opt("networks", list(Ty::Str)),
        opt("hosts", list(Ty::Str)),
        opt("ro", Ty::Bool),
        opt("maproot_user", null(Ty::Str)),
        opt("maproot_group", null(Ty::Str)),
        opt("mapall_user", null(Ty::Str)),
        opt("mapall_group", null(Ty::Str)),
        opt(
            "security",
            list(Ty::Lit(&["SYS", "KRB5", "KRB5I", "KRB5P"])),
        ),
        opt("enabled", Ty::Bool),
        opt("expose_snapshots", Ty::Bool),
    ])
}

/// A path inside a pool that exists: `Ok(())`, or the TrueNAS error.
fn check_path(ctx: &Ctx<'_>, prefix: &str, path: &str) -> Result<(), Failure> {
    let pool = path
        .strip_prefix("/mnt/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    if pool.is_empty() || !ctx.m.pools.contains_key(pool) {
        return Err(Failure::invalid(
            format!("{prefix}.path"),
            "The path must reside within a pool mount point",
        ));
    }
    let host = ctx.data.host_path(path).filter(|p| p.exists());
    match host {
        None => Err(Failure::call(2, format!("Path {path} not found"))),
        Some(p)
            if p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Err(Failure::invalid(
                format!("{prefix}.path"),
                "Symbolic links are not allowed",
            ))
        }
        Some(_) => Ok(()),
    }
}

fn normalise_network(net: &str) -> Option<String> {
    let (ip, prefix) = match net.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().ok()?)),
        None => (net, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    (prefix <= max).then(|| format!("{ip}/{prefix}"))
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn nfs_validate(
    ctx: &Ctx<'_>,
    prefix: &str,
    entry: &mut Value,
    own_id: Option<i64>,
) -> Result<(), Failure> {
    let path = entry["path"].as_str().unwrap_or_default().to_owned();
    if path.is_empty() {
        return Err(Failure::invalid(
            format!("{prefix}.path"),
            "This field is required",
        ));
    }
    check_path(ctx, prefix, &path)?;
    let mut networks = Vec::new();
    for net in strings(entry, "networks") {
        let Some(normal) = normalise_network(&net) else {
            return Err(Failure::invalid(
                format!("{prefix}.networks"),
                format!("{net} is not a valid network"),
            ));
        };
        if networks.contains(&normal) {
            return Err(Failure::invalid(
                format!("{prefix}.networks"),
                "Entries must be unique",
            ));
        }
        networks.push(normal);
    }
    entry["networks"] = json!(networks);
    let hosts = strings(entry, "hosts");
    if hosts
        .iter()
        .any(|h| h.contains(' ') || h.contains('"') || h.contains('\''))
    {
        return Err(Failure::invalid(
            format!("{prefix}.hosts"),
            "Cannot contain spaces or quotes",
        ));
    }
    if schema::get(entry, "maproot_group").is_some() && schema::get(entry, "maproot_user").is_none()
    {
        return Err(Failure::invalid(
            format!("{prefix}.maproot_user"),
            "This field is required when map group is specified",
        ));
    }
    if schema::get(entry, "maproot_user").is_some() && schema::get(entry, "mapall_user").is_some() {
        return Err(Failure::invalid(
            format!("{prefix}.mapall_user"),
            "maproot_user disqualifies mapall_user",
        ));
    }
    let everyone = networks.is_empty() && hosts.is_empty();
    for other in ctx.m.rows("sharing.nfs") {
        if other["path"] != path || other["id"].as_i64() == own_id {
            continue;
        }
        let other_nets = strings(other, "networks");
        let other_hosts = strings(other, "hosts");
        let other_everyone = other_nets.is_empty() && other_hosts.is_empty();
        if everyone && other_everyone {
            continue;
        }
        if everyone != other_everyone {
            return Err(Failure::invalid(
                format!("{prefix}.path"),
                format!(
                    "ERROR - Export conflict. Another share with the same path exports {path} for everyone"
                ),
            ));
        }
        if let Some(net) = networks.iter().find(|n| other_nets.contains(n)) {
            return Err(Failure::invalid(
                format!("{prefix}.networks"),
                format!("ERROR - Another NFS share already exports {path} for network {net}"),
            ));
        }
        if let Some(host) = hosts.iter().find(|h| other_hosts.contains(h)) {
            return Err(Failure::invalid(
                format!("{prefix}.hosts"),
                format!("ERROR - Another NFS share already exports {path} for host {host}"),
            ));
        }
    }
    Ok(())
}

fn nfs_defaults() -> Value {
    json!({"aliases": [], "comment": "", "networks": [], "hosts": [], "ro": false, "maproot_user": null,
        "maproot_group": null, "mapall_user": null, "mapall_group": null, "security": [], "enabled": true,
        "locked": false, "expose_snapshots": false})
}

fn merge(base: &mut Value, data: &Value) {
    if let (Value::Object(base), Value::Object(data)) = (base, data) {
        for (k, v) in data {
            base.insert(k.clone(), v.clone());
        }
    }
}

/// `sharing.nfs.query`.
pub(crate) fn nfs_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    QueryArgs::parse(params)?.apply_refs(ctx.m.rows("sharing.nfs"))
}

/// `sharing.nfs.create`.
pub(crate) fn nfs_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("data", nfs_fields(true))])?;
    let mut entry = nfs_defaults();
    merge(&mut entry, &args[0]);
    entry["aliases"] = json!([]);
    nfs_validate(ctx, "sharingnfs_create", &mut entry, None)?;
    let id = ctx.m.table("sharing.nfs").insert(entry);
    Ok(get_row(ctx, "sharing.nfs", id))
}

/// `sharing.nfs.update`.
pub(crate) fn nfs_update(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[req("id", Ty::Int), req("data", nfs_fields(false))],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    let Some(mut entry) = ctx.m.row("sharing.nfs", id).cloned() else {
        return Err(not_found("SharingNFS", id));
    };
    merge(&mut entry, &args[1]);
    nfs_validate(ctx, "sharingnfs_update", &mut entry, Some(id))?;
    ctx.m.table("sharing.nfs").rows.insert(id, entry);
    Ok(get_row(ctx, "sharing.nfs", id))
}

fn smb_fields(create: bool) -> Ty {
    let (name, path) = if create {
        (req("name", Ty::Str), req("path", Ty::Str))
    } else {
        (opt("name", Ty::Str), opt("path", Ty::Str))
    };
    Ty::Obj(vec![
        opt(
            "purpose",
            Ty::Lit(&[
                "DEFAULT_SHARE",
                "LEGACY_SHARE",
                "TIMEMACHINE_SHARE",
                "MULTIPROTOCOL_SHARE",
                "TIME_LOCKED_SHARE",
                "PRIVATE_DATASETS_SHARE",
                "EXTERNAL_SHARE",
                "VEEAM_REPOSITORY_SHARE",
            ]),
        ),
        name,
        path,
        opt("enabled", Ty::Bool),
        opt("comment", Ty::Str),
        opt("readonly", Ty::Bool),
        opt("browsable", Ty::Bool),
        opt("access_based_share_enumeration", Ty::Bool),
        opt("audit", Ty::Any),
        opt("options", Ty::Any),
    ])
}

fn smb_validate(
    ctx: &Ctx<'_>,
    prefix: &str,
    entry: &Value,
    own_id: Option<i64>,
) -> Result<(), Failure> {
    let name = entry["name"].as_str().unwrap_or_default();
    let bad_char = name.chars().any(|c| "\\/[]:|<>+=;,*?\"".contains(c));
    if name.is_empty()
        || name.chars().count() > 80
        || bad_char
        || ["global", "printers", "homes"].contains(&name.to_lowercase().as_str())
    {
        return Err(Failure::invalid(
            format!("{prefix}.name"),
            format!("{name}: invalid share name"),
        ));
    }
    if ctx.m.rows("sharing.smb").iter().any(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && r["id"].as_i64() != own_id
    }) {
        return Err(Failure::invalid(
            format!("{prefix}.name"),
            "Share with this name already exists.",
        ));
    }
    check_path(ctx, prefix, entry["path"].as_str().unwrap_or_default())
}

/// `sharing.smb.query`.
pub(crate) fn smb_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    QueryArgs::parse(params)?.apply_refs(ctx.m.rows("sharing.smb"))
}

/// `sharing.smb.create`.
pub(crate) fn smb_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("data", smb_fields(true))])?;
    let mut entry = json!({"purpose": "DEFAULT_SHARE", "enabled": true, "comment": "", "readonly": false,
        "browsable": true, "access_based_share_enumeration": false, "locked": false,
        "audit": {"enable": false, "watch_list": [], "ignore_list": []}, "options": null});
    merge(&mut entry, &args[0]);
    smb_validate(ctx, "sharingsmb_create", &entry, None)?;
    let id = ctx.m.table("sharing.smb").insert(entry);
    Ok(get_row(ctx, "sharing.smb", id))
}

/// `sharing.smb.update`.
pub(crate) fn smb_update(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[req("id", Ty::Int), req("data", smb_fields(false))],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    let Some(mut entry) = ctx.m.row("sharing.smb", id).cloned() else {
        return Err(not_found("SharingSMB", id));
    };
    merge(&mut entry, &args[1]);
    smb_validate(ctx, "sharingsmb_update", &entry, Some(id))?;
    ctx.m.table("sharing.smb").rows.insert(id, entry);
    Ok(get_row(ctx, "sharing.smb", id))
}
