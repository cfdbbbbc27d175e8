//! iSCSI targets: `iscsi.*` global config, initiator groups, targets, extents and LUNs.

use serde_json::{Value, json};

use crate::ctx::{Ctx, get_row, hex, not_found, zvol_ready};
use crate::nvmet::subsys_entry;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, list, null, opt, req};

/// `iscsi.global.config`.
pub(crate) fn iscsi_global(_ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    schema::args(params, &[])?;
    Ok(
        json!({"id": 1, "basename": "iqn.2005-10.org.freenas.ctl", "isns_servers": [], "listen_port": 3260,
        "pool_avail_threshold": null, "alua": false, "iser": false}),
    )
}

/// `iscsi.initiator.create` / `.update`.
pub(crate) fn initiator_upsert(ctx: &mut Ctx<'_>, params: &[Value], update: bool) -> Outcome {
    let ty = Ty::Obj(vec![
        opt("initiators", list(Ty::Str)),
        opt("comment", Ty::Str),
    ]);
    let (id, data) = if update {
        let args = schema::args(params, &[req("id", Ty::Int), req("data", ty)])?;
        (args[0].as_i64(), args[1].clone())
    } else {
        (None, schema::args(params, &[req("data", ty)])?.remove(0))
    };
    let mut entry = match id {
        Some(id) => ctx
            .m
            .row("iscsi.initiator", id)
            .cloned()
            .ok_or_else(|| not_found("iSCSIHostAuthInitiator", id))?,
        None => json!({"initiators": [], "comment": ""}),
    };
    if let Value::Object(map) = &data {
        for (k, v) in map {
            entry[k] = v.clone();
        }
    }
    let id = match id {
        Some(id) => {
            ctx.m.table("iscsi.initiator").rows.insert(id, entry);
            id
        }
        None => ctx.m.table("iscsi.initiator").insert(entry),
    };
    Ok(get_row(ctx, "iscsi.initiator", id))
}

fn valid_target_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(c))
}

/// `iscsi.target.create`.
pub(crate) fn target_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let group = Ty::Obj(vec![
        req("portal", Ty::Int),
        opt("initiator", null(Ty::Int)),
        opt("authmethod", Ty::Lit(&["NONE", "CHAP", "CHAP_MUTUAL"])),
        opt("auth", null(Ty::Int)),
    ]);
    let ty = Ty::Obj(vec![
        req("name", Ty::Str),
        opt("alias", null(Ty::Str)),
        opt("mode", Ty::Lit(&["ISCSI", "FC", "BOTH"])),
        opt("groups", list(group)),
        opt("auth_networks", list(Ty::Str)),
        opt("iscsi_parameters", Ty::Any),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "iscsi_target_create";
    let name = data["name"].as_str().unwrap_or_default().to_owned();
    // The 25.10 model: a length constraint (pydantic's wording), then the character rule.
    if name.chars().count() > 120 {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "String should have at most 120 characters",
        ));
    }
    if !valid_target_name(&name) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "Only lowercase alphanumeric characters plus dot (.), dash (-), and colon (:) are allowed.",
        ));
    }
    if ctx.m.rows("iscsi.target").iter().any(|r| r["name"] == name) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "Target with this name already exists",
        ));
    }
    let mut groups = Vec::new();
    for (i, g) in data
        .get("groups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let portal = g["portal"].as_i64().unwrap_or(0);
        if ctx.m.row("iscsi.portal", portal).is_none() {
            return Err(Failure::invalid(
                format!("{p}.groups.{i}.portal"),
                format!("{portal} Portal not found in database."),
            ));
        }
        let initiator = schema::get(&g, "initiator").and_then(Value::as_i64);
        if let Some(init) = initiator
            && ctx.m.row("iscsi.initiator", init).is_none()
        {
            return Err(Failure::invalid(
                format!("{p}.groups.{i}.initiator"),
                format!("{init} Initiator not found in database."),
            ));
        }
        groups.push(json!({"portal": portal, "initiator": initiator, "authmethod": schema::str_or(&g, "authmethod", "NONE"), "auth": schema::get(&g, "auth").cloned()}));
    }
    let rel = ctx
        .m
        .rows("iscsi.target")
        .iter()
        .filter_map(|r| r["rel_tgt_id"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let entry = json!({"name": name, "alias": schema::get(data, "alias").cloned(), "mode": schema::str_or(data, "mode", "ISCSI"),
        "groups": groups, "auth_networks": data.get("auth_networks").cloned().unwrap_or(json!([])), "rel_tgt_id": rel, "iscsi_parameters": null});
    let id = ctx.m.table("iscsi.target").insert(entry);
    Ok(get_row(ctx, "iscsi.target", id))
}

/// `iscsi.target.delete [id, force, delete_extents]`.
pub(crate) fn target_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("force", Ty::Bool),
            opt("delete_extents", Ty::Bool),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    if ctx.m.row("iscsi.target", id).is_none() {
        return Err(not_found("iSCSITarget", id));
    }
    let extents: Vec<i64> = ctx
        .m
        .rows("iscsi.targetextent")
        .iter()
        .filter(|r| r["target"] == id)
        .filter_map(|r| r["extent"].as_i64())
        .collect();
    ctx.m
        .table("iscsi.targetextent")
        .rows
        .retain(|_, r| r["target"] != id);
    if args[2].as_bool().unwrap_or(false) {
        ctx.m
            .table("iscsi.extent")
            .rows
            .retain(|eid, _| !extents.contains(eid));
    }
    ctx.m.table("iscsi.target").rows.remove(&id);
    Ok(json!(true))
}

/// `iscsi.extent.create`.
pub(crate) fn extent_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        req("name", Ty::Str),
        opt("type", Ty::Lit(&["DISK", "FILE"])),
        opt("disk", null(Ty::Str)),
        opt("path", null(Ty::Str)),
        opt("filesize", Ty::Int),
        opt("blocksize", Ty::Int),
        opt("pblocksize", Ty::Bool),
        opt("avail_threshold", null(Ty::Int)),
        opt("comment", Ty::Str),
        opt("insecure_tpc", Ty::Bool),
        opt("xen", Ty::Bool),
        opt("rpm", Ty::Str),
        opt("ro", Ty::Bool),
        opt("enabled", Ty::Bool),
        opt("product_id", null(Ty::Str)),
        opt("serial", null(Ty::Str)),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "iscsi_extent_create";
    let name = data["name"].as_str().unwrap_or_default().to_owned();
    if name.len() > 64 {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "String should have at most 64 characters",
        ));
    }
    if ctx.m.rows("iscsi.extent").iter().any(|r| r["name"] == name) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "Extent name must be unique",
        ));
    }
    let kind = schema::str_or(data, "type", "DISK").to_owned();
    let blocksize = data.get("blocksize").and_then(Value::as_i64).unwrap_or(512);
    let (disk, path, filesize) = if kind == "DISK" {
        let disk = schema::get(data, "disk")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !disk.starts_with("zvol/") {
            return Err(Failure::invalid(
                format!("{p}.disk"),
                "Disk must start with \"zvol/\"",
            ));
        }
        if !zvol_ready(ctx, &disk) {
            return Err(Failure::invalid(
                format!("{p}.disk"),
                format!("Device {disk} for volume does not exist"),
            ));
        }
        if let Some(other) = ctx
            .m
            .rows("iscsi.extent")
            .iter()
            .find(|r| r["disk"] == disk)
        {
            return Err(Failure::invalid(
                format!("{p}.disk"),
                format!(
                    "Disk currently in use by extent {}",
                    other["name"].as_str().unwrap_or("")
                ),
            ));
        }
        if let Some(ns) = ctx
            .m
            .rows("nvmet.namespace")
            .iter()
            .find(|r| r["device_path"] == disk)
        {
            let sub = subsys_entry(ctx, ns["subsys_id"].as_i64().unwrap_or(0), false);
            return Err(Failure::invalid(
                format!("{p}.disk"),
                format!(
                    "Disk currently in use by NVMe-oF subsystem {} NSID {}",
                    sub["name"].as_str().unwrap_or(""),
                    ns["nsid"]
                ),
            ));
        }
        let size: u64 = ctx.m.datasets[disk.trim_start_matches("zvol/")]
            .props
            .get("volsize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (json!(disk), json!(disk), json!(size))
    } else {
        let path = schema::get(data, "path")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let filesize = data.get("filesize").and_then(Value::as_i64).unwrap_or(0);
        if filesize % blocksize != 0 {
            return Err(Failure::invalid(
                format!("{p}.filesize"),
                "File size must be a multiple of block size",
            ));
        }
        (Value::Null, json!(path), json!(filesize))
    };
    let entry = json!({"name": name, "type": kind, "disk": disk, "path": path, "serial": hex(15), "filesize": filesize,
        "blocksize": blocksize, "pblocksize": false, "avail_threshold": null, "comment": schema::str_or(data, "comment", ""),
        "naa": format!("0x6589cfc000000{}", hex(19)), "insecure_tpc": true, "xen": false, "rpm": "SSD",
        "ro": schema::bool_or(data, "ro", false), "enabled": schema::bool_or(data, "enabled", true), "vendor": "TrueNAS",
        "product_id": null, "locked": false});
    let id = ctx.m.table("iscsi.extent").insert(entry);
    Ok(get_row(ctx, "iscsi.extent", id))
}

/// `iscsi.extent.delete [id, remove, force]`.
pub(crate) fn extent_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("remove", Ty::Bool),
            opt("force", Ty::Bool),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    if ctx.m.table("iscsi.extent").rows.remove(&id).is_none() {
        return Err(not_found("iSCSITargetExtent", id));
    }
    ctx.m
        .table("iscsi.targetextent")
        .rows
        .retain(|_, r| r["extent"] != id);
    Ok(json!(true))
}

/// `iscsi.targetextent.create`.
pub(crate) fn targetextent_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        req("target", Ty::Int),
        req("extent", Ty::Int),
        opt("lunid", null(Ty::Int)),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "iscsi_targetextent_create";
    let target = data["target"].as_i64().unwrap_or(0);
    let extent = data["extent"].as_i64().unwrap_or(0);
    if ctx.m.row("iscsi.target", target).is_none() {
        return Err(Failure::invalid(
            format!("{p}.target"),
            format!("No target with ID {target}"),
        ));
    }
    if ctx.m.row("iscsi.extent", extent).is_none() {
        return Err(Failure::invalid(
            format!("{p}.extent"),
            format!("No extent with ID {extent}"),
        ));
    }
    let rows = ctx.m.rows("iscsi.targetextent");
    if rows.iter().any(|r| r["extent"] == extent) {
        return Err(Failure::invalid(
            format!("{p}.extent"),
            "Extent is already in use.",
        ));
    }
    let used: Vec<i64> = rows
        .iter()
        .filter(|r| r["target"] == target)
        .filter_map(|r| r["lunid"].as_i64())
        .collect();
    let lunid = match schema::get(data, "lunid").and_then(Value::as_i64) {
        Some(l) if used.contains(&l) => {
            return Err(Failure::invalid(
                format!("{p}.lunid"),
                "LUN ID is already being used for this target.",
            ));
        }
        Some(l) => l,
        None => (0..).find(|l| !used.contains(l)).unwrap_or(0),
    };
    let id = ctx
        .m
        .table("iscsi.targetextent")
        .insert(json!({"target": target, "extent": extent, "lunid": lunid}));
    Ok(get_row(ctx, "iscsi.targetextent", id))
}
