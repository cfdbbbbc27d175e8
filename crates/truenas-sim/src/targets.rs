//! Block targets: `nvmet.*` (spec §4.10) and `iscsi.*` (spec §4.11).

use serde_json::{Value, json};

use crate::methods::{Ctx, get_row, not_found};
use crate::query::QueryArgs;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, list, null, opt, req};

fn hex(n: usize) -> String {
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

fn valid_nqn(nqn: &str) -> bool {
    let len_ok = (11..=223).contains(&nqn.len());
    let uuid = nqn
        .strip_prefix("nqn.2014-08.org.nvmexpress:uuid:")
        .is_some_and(|u| u.len() == 36);
    let dated = nqn.strip_prefix("nqn.").is_some_and(|rest| {
        let b = rest.as_bytes();
        b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'.'
    });
    len_ok && (uuid || dated)
}

fn subsys_entry(ctx: &Ctx<'_>, id: i64, verbose: bool) -> Value {
    let mut entry = ctx
        .m
        .row("nvmet.subsys", id)
        .cloned()
        .unwrap_or(Value::Null);
    if verbose {
        let ids = |table: &str| -> Vec<i64> {
            ctx.m
                .rows(table)
                .iter()
                .filter(|r| r["subsys_id"] == id)
                .filter_map(|r| r["id"].as_i64())
                .collect()
        };
        entry["namespaces"] = json!(ids("nvmet.namespace"));
        let via = |table: &str, key: &str| -> Vec<Value> {
            ctx.m
                .rows(table)
                .iter()
                .filter(|r| r["subsys_id"] == id)
                .map(|r| r[key].clone())
                .collect()
        };
        entry["ports"] = json!(via("nvmet.port_subsys", "port_id"));
        entry["hosts"] = json!(via("nvmet.host_subsys", "host_id"));
    }
    entry
}

/// `nvmet.global.config`.
pub(crate) fn nvmet_global(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    schema::args(params, &[])?;
    Ok(
        json!({"id": 1, "basenqn": ctx.m.basenqn, "kernel": true, "ana": false, "rdma": false, "xport_referral": true}),
    )
}

/// `nvmet.subsys.query`.
pub(crate) fn subsys_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let q = QueryArgs::parse(params)?;
    let verbose = q.extra("verbose").and_then(Value::as_bool).unwrap_or(false);
    let ids: Vec<i64> = ctx
        .m
        .rows("nvmet.subsys")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    q.apply(
        ids.into_iter()
            .map(|id| subsys_entry(ctx, id, verbose))
            .collect(),
    )
}

/// `nvmet.subsys.create`.
pub(crate) fn subsys_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        req("name", Ty::Str),
        opt("subnqn", null(Ty::Str)),
        opt("allow_any_host", Ty::Bool),
        opt("pi_enable", null(Ty::Bool)),
        opt("qid_max", null(Ty::Int)),
        opt("ieee_oui", null(Ty::Str)),
        opt("ana", null(Ty::Bool)),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "nvmet_subsys_create";
    let name = data["name"].as_str().unwrap_or_default().to_owned();
    if ctx.m.rows("nvmet.subsys").iter().any(|r| r["name"] == name) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "Object with this name already exists",
        ));
    }
    let subnqn = match schema::get(data, "subnqn").and_then(Value::as_str) {
        Some(nqn) if !valid_nqn(nqn) => {
            return Err(Failure::invalid(
                format!("{p}.subnqn"),
                format!("Invalid NQN: {nqn}"),
            ));
        }
        Some(nqn) => nqn.to_owned(),
        None => format!("{}:{name}", ctx.m.basenqn)
            .chars()
            .take(223)
            .collect(),
    };
    if ctx
        .m
        .rows("nvmet.subsys")
        .iter()
        .any(|r| r["subnqn"] == subnqn)
    {
        return Err(Failure::call(
            14,
            "UNIQUE constraint failed: services_nvmet_subsys.nvmet_subsys_subnqn",
        ));
    }
    if schema::get(data, "ana").is_some() {
        return Err(Failure::invalid(
            format!("{p}.ana"),
            "This platform does not support ANA",
        ));
    }
    let entry = json!({"name": name, "subnqn": subnqn, "serial": hex(20),
        "allow_any_host": schema::bool_or(data, "allow_any_host", false), "pi_enable": null, "qid_max": null,
        "ieee_oui": null, "ana": null, "hosts": [], "namespaces": [], "ports": []});
    let id = ctx.m.table("nvmet.subsys").insert(entry);
    Ok(subsys_entry(ctx, id, false))
}

/// `nvmet.subsys.update`.
pub(crate) fn subsys_update(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        opt("name", Ty::Str),
        opt("allow_any_host", Ty::Bool),
        opt("pi_enable", null(Ty::Bool)),
        opt("qid_max", null(Ty::Int)),
        opt("ieee_oui", null(Ty::Str)),
    ]);
    let args = schema::args(params, &[req("id", Ty::Int), req("data", ty)])?;
    let id = args[0].as_i64().unwrap_or(0);
    let Some(mut entry) = ctx.m.row("nvmet.subsys", id).cloned() else {
        return Err(not_found("NVMetSubsys", id));
    };
    if let Value::Object(data) = &args[1] {
        for (k, v) in data {
            entry[k] = v.clone();
        }
    }
    ctx.m.table("nvmet.subsys").rows.insert(id, entry);
    Ok(subsys_entry(ctx, id, false))
}

/// `nvmet.subsys.delete`.
pub(crate) fn subsys_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("options", Ty::Obj(vec![opt("force", Ty::Bool)])),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    let Some(entry) = ctx.m.row("nvmet.subsys", id).cloned() else {
        return Err(not_found("NVMetSubsys", id));
    };
    let force = schema::bool_or(&schema::object_or_empty(&args[1]), "force", false);
    let name = entry["name"].as_str().unwrap_or_default();
    let of = |table: &str| -> Vec<Value> {
        ctx.m
            .rows(table)
            .into_iter()
            .filter(|r| r["subsys_id"] == id)
            .collect()
    };
    let namespaces = of("nvmet.namespace");
    let ports = of("nvmet.port_subsys");
    if !force && !namespaces.is_empty() {
        let paths: Vec<&str> = namespaces
            .iter()
            .filter_map(|n| n["device_path"].as_str())
            .collect();
        return Err(Failure::invalid(
            "nvmet_subsys_delete.id",
            format!(
                "Subsystem {name} contains {} namespace(s): {}",
                namespaces.len(),
                paths.join(", ")
            ),
        ));
    }
    if !force && !ports.is_empty() {
        return Err(Failure::invalid(
            "nvmet_subsys_delete.id",
            format!("Subsystem {name} visible on {} port(s)", ports.len()),
        ));
    }
    for table in ["nvmet.namespace", "nvmet.port_subsys", "nvmet.host_subsys"] {
        ctx.m.table(table).rows.retain(|_, r| r["subsys_id"] != id);
    }
    ctx.m.table("nvmet.subsys").rows.remove(&id);
    Ok(json!(true))
}

fn namespace_entry(ctx: &Ctx<'_>, row: &Value) -> Value {
    let mut entry = row.clone();
    let subsys = row["subsys_id"].as_i64().unwrap_or(0);
    entry["subsys"] = subsys_entry(ctx, subsys, false);
    if let Value::Object(map) = &mut entry {
        map.remove("subsys_id");
    }
    entry
}

/// `nvmet.namespace.query`.
pub(crate) fn namespace_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let q = QueryArgs::parse(params)?;
    q.apply(
        ctx.m
            .rows("nvmet.namespace")
            .iter()
            .map(|r| namespace_entry(ctx, r))
            .collect(),
    )
}

/// Whether a zvol is visible as a block device yet (zvol-lag fault, spec §7.12).
fn zvol_ready(ctx: &Ctx<'_>, path: &str) -> bool {
    let name = path.trim_start_matches("zvol/");
    ctx.m.datasets.get(name).is_some_and(|r| r.volume)
        && ctx.faults.zvol_visible(name, ctx.m.datasets[name].creation)
}

/// `nvmet.namespace.create`.
pub(crate) fn namespace_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        req("subsys_id", Ty::Int),
        req("device_type", Ty::Lit(&["ZVOL", "FILE"])),
        req("device_path", Ty::Str),
        opt("nsid", null(Ty::Int)),
        opt("filesize", null(Ty::Int)),
        opt("enabled", Ty::Bool),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "nvmet_namespace_create";
    let subsys = data["subsys_id"].as_i64().unwrap_or(0);
    if ctx.m.row("nvmet.subsys", subsys).is_none() {
        return Err(Failure::invalid(
            format!("{p}.subsys_id"),
            format!("No subsystem with ID {subsys}"),
        ));
    }
    let path = data["device_path"].as_str().unwrap_or_default().to_owned();
    if data["device_type"] == "ZVOL" {
        if !path.starts_with("zvol/") {
            return Err(Failure::invalid(
                format!("{p}.device_path"),
                format!("ZVOL device_path must start with \"zvol/\": {path}"),
            ));
        }
        if !zvol_ready(ctx, &path) {
            return Err(Failure::invalid(
                format!("{p}.device_path"),
                format!("ZVOL device_path must be a block device: {path}"),
            ));
        }
    } else if ctx.data.host_path(&path).is_none() {
        return Err(Failure::invalid(
            format!("{p}.device_path"),
            "FILE device_path must be inside /mnt",
        ));
    }
    if let Some(other) = ctx
        .m
        .rows("nvmet.namespace")
        .iter()
        .find(|r| r["device_path"] == path)
    {
        let name =
            subsys_entry(ctx, other["subsys_id"].as_i64().unwrap_or(0), false)["name"].clone();
        return Err(Failure::invalid(
            format!("{p}.device_path"),
            format!(
                "This device_path already used by subsystem: {}",
                name.as_str().unwrap_or("")
            ),
        ));
    }
    if let Some(extent) = ctx
        .m
        .rows("iscsi.extent")
        .iter()
        .find(|r| r["disk"] == path)
    {
        return Err(Failure::invalid(
            format!("{p}.device_path"),
            format!(
                "This device_path already used by iSCSI extent: {}",
                extent["name"].as_str().unwrap_or("")
            ),
        ));
    }
    let used: Vec<i64> = ctx
        .m
        .rows("nvmet.namespace")
        .iter()
        .filter(|r| r["subsys_id"] == subsys)
        .filter_map(|r| r["nsid"].as_i64())
        .collect();
    let nsid = match schema::get(data, "nsid").and_then(Value::as_i64) {
        Some(n) if !(1..=0xFFFF_FFFE).contains(&n) => {
            return Err(Failure::invalid(
                format!("{p}.nsid"),
                "Input should be between 1 and 4294967294",
            ));
        }
        Some(n) if used.contains(&n) => {
            return Err(Failure::invalid(
                format!("{p}.nsid"),
                format!("This record already exists (Subsystem ID: {subsys}/NSID: {n})"),
            ));
        }
        Some(n) => n,
        None => (1..).find(|n| !used.contains(n)).unwrap_or(1),
    };
    let entry = json!({"nsid": nsid, "subsys_id": subsys, "device_type": data["device_type"], "device_path": path,
        "filesize": schema::get(data, "filesize").cloned(), "device_uuid": uuid4(), "device_nguid": uuid4(),
        "enabled": schema::bool_or(data, "enabled", true), "locked": false});
    let id = ctx.m.table("nvmet.namespace").insert(entry);
    let row = ctx
        .m
        .row("nvmet.namespace", id)
        .cloned()
        .unwrap_or_default();
    Ok(namespace_entry(ctx, &row))
}

/// `nvmet.namespace.delete`.
pub(crate) fn namespace_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("options", Ty::Obj(vec![opt("remove", Ty::Bool)])),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    if ctx.m.table("nvmet.namespace").rows.remove(&id).is_none() {
        return Err(not_found("NVMetNamespace", id));
    }
    Ok(json!(true))
}

/// `nvmet.port.query`.
pub(crate) fn port_query(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    QueryArgs::parse(params)?.apply(ctx.m.rows("nvmet.port"))
}

/// `nvmet.port.create`.
pub(crate) fn port_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let common = |trtype: &'static [&'static str], svcid: bool| {
        let mut fields = vec![
            req("addr_trtype", Ty::Lit(trtype)),
            req("addr_traddr", Ty::Str),
            opt("inline_data_size", null(Ty::Int)),
            opt("max_queue_size", null(Ty::Int)),
            opt("pi_enable", null(Ty::Bool)),
            opt("enabled", Ty::Bool),
        ];
        if svcid {
            fields.push(opt("addr_trsvcid", Ty::Int));
        }
        Ty::Obj(fields)
    };
    let ty = Ty::Union(vec![
        ("NVMetPortCreateTCPRDMA", common(&["TCP", "RDMA"], true)),
        ("NVMetPortCreateFC", common(&["FC"], false)),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let data = &args[0];
    let p = "nvmet_port_create";
    let addr = data["addr_traddr"].as_str().unwrap_or_default().to_owned();
    let trtype = data["addr_trtype"].clone();
    let family = match addr.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_ipv4() => "IPV4",
        Ok(_) => "IPV6",
        Err(_) if trtype == "FC" => "FC",
        Err(_) => {
            return Err(Failure::invalid(
                format!("{p}.addr_traddr"),
                "Not a valid IP address",
            ));
        }
    };
    let port = data
        .get("addr_trsvcid")
        .and_then(Value::as_i64)
        .unwrap_or(4420);
    if trtype != "FC" && !(1024..=65535).contains(&port) {
        return Err(Failure::invalid(
            format!("{p}.addr_trsvcid"),
            "Input should be between 1024 and 65535",
        ));
    }
    if ctx.m.rows("nvmet.port").iter().any(|r| {
        r["addr_trtype"] == trtype
            && r["addr_traddr"] == addr
            && r["addr_trsvcid"].as_i64().unwrap_or(0) == port
    }) {
        return Err(Failure::invalid(
            format!("{p}.addr_traddr"),
            "There already is a port using the same transport and address",
        ));
    }
    let index = ctx
        .m
        .rows("nvmet.port")
        .iter()
        .filter_map(|r| r["index"].as_i64())
        .max()
        .unwrap_or(0)
        + 1;
    let entry = json!({"index": index, "addr_trtype": trtype, "addr_trsvcid": if trtype == "FC" { Value::Null } else { json!(port) },
        "addr_traddr": addr, "addr_adrfam": family, "inline_data_size": null, "max_queue_size": null,
        "pi_enable": null, "enabled": schema::bool_or(data, "enabled", true)});
    let id = ctx.m.table("nvmet.port").insert(entry);
    Ok(get_row(ctx, "nvmet.port", id))
}

/// `nvmet.port.delete`.
pub(crate) fn port_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("options", Ty::Obj(vec![opt("force", Ty::Bool)])),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    let Some(port) = ctx.m.row("nvmet.port", id).cloned() else {
        return Err(not_found("NVMetPort", id));
    };
    let users = ctx
        .m
        .rows("nvmet.port_subsys")
        .iter()
        .filter(|r| r["port_id"] == id)
        .count();
    if users > 0 && !schema::bool_or(&schema::object_or_empty(&args[1]), "force", false) {
        return Err(Failure::invalid(
            "nvmet_port_delete.id",
            format!("Port #{} used by {users} subsystem(s)", port["index"]),
        ));
    }
    ctx.m
        .table("nvmet.port_subsys")
        .rows
        .retain(|_, r| r["port_id"] != id);
    ctx.m.table("nvmet.port").rows.remove(&id);
    Ok(json!(true))
}

fn link_entry(ctx: &Ctx<'_>, row: &Value, table: &str, key: &str, field: &str) -> Value {
    let mut entry = json!({"id": row["id"]});
    let other = row[key].as_i64().unwrap_or(0);
    entry[field] = ctx.m.row(table, other).cloned().unwrap_or(Value::Null);
    entry["subsys"] = subsys_entry(ctx, row["subsys_id"].as_i64().unwrap_or(0), false);
    entry
}

/// `nvmet.port_subsys.query` / `nvmet.host_subsys.query`.
pub(crate) fn link_query(ctx: &mut Ctx<'_>, params: &[Value], host: bool) -> Outcome {
    let q = QueryArgs::parse(params)?;
    let (table, other, key, field) = if host {
        ("nvmet.host_subsys", "nvmet.host", "host_id", "host")
    } else {
        ("nvmet.port_subsys", "nvmet.port", "port_id", "port")
    };
    q.apply(
        ctx.m
            .rows(table)
            .iter()
            .map(|r| link_entry(ctx, r, other, key, field))
            .collect(),
    )
}

/// `nvmet.port_subsys.create` / `nvmet.host_subsys.create`.
pub(crate) fn link_create(ctx: &mut Ctx<'_>, params: &[Value], host: bool) -> Outcome {
    let (table, other, key, field, prefix, word) = if host {
        (
            "nvmet.host_subsys",
            "nvmet.host",
            "host_id",
            "host",
            "nvmet_host_subsys_create",
            "host",
        )
    } else {
        (
            "nvmet.port_subsys",
            "nvmet.port",
            "port_id",
            "port",
            "nvmet_port_subsys_create",
            "port",
        )
    };
    let args = schema::args(
        params,
        &[req(
            "data",
            Ty::Obj(vec![req(key, Ty::Int), req("subsys_id", Ty::Int)]),
        )],
    )?;
    let other_id = args[0][key].as_i64().unwrap_or(0);
    let subsys = args[0]["subsys_id"].as_i64().unwrap_or(0);
    if ctx.m.row(other, other_id).is_none() {
        return Err(Failure::invalid(
            format!("{prefix}.{key}"),
            format!("No {word} with ID {other_id}"),
        ));
    }
    if ctx.m.row("nvmet.subsys", subsys).is_none() {
        return Err(Failure::invalid(
            format!("{prefix}.subsys_id"),
            format!("No subsystem with ID {subsys}"),
        ));
    }
    if ctx
        .m
        .rows(table)
        .iter()
        .any(|r| r[key] == other_id && r["subsys_id"] == subsys)
    {
        return Err(Failure::invalid(
            format!("{prefix}.{key}"),
            format!("This record already exists (Host ID: {other_id}/Subsystem ID: {subsys})"),
        ));
    }
    let id = ctx
        .m
        .table(table)
        .insert(json!({key: other_id, "subsys_id": subsys}));
    let row = ctx.m.row(table, id).cloned().unwrap_or_default();
    Ok(link_entry(ctx, &row, other, key, field))
}

/// `nvmet.host.create`.
pub(crate) fn host_create(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let ty = Ty::Obj(vec![
        req("hostnqn", Ty::Str),
        opt("dhchap_key", null(Ty::Str)),
        opt("dhchap_ctrl_key", null(Ty::Str)),
        opt("dhchap_dhgroup", null(Ty::Str)),
        opt("dhchap_hash", Ty::Lit(&["SHA-256", "SHA-384", "SHA-512"])),
    ]);
    let args = schema::args(params, &[req("data", ty)])?;
    let nqn = args[0]["hostnqn"].as_str().unwrap_or_default().to_owned();
    if !valid_nqn(&nqn) {
        return Err(Failure::invalid(
            "nvmet_host_create.hostnqn",
            format!("Invalid NQN: {nqn}"),
        ));
    }
    if ctx.m.rows("nvmet.host").iter().any(|r| r["hostnqn"] == nqn) {
        return Err(Failure::invalid(
            "nvmet_host_create.hostnqn",
            "Object with this hostnqn already exists",
        ));
    }
    let id = ctx.m.table("nvmet.host").insert(json!({"hostnqn": nqn, "dhchap_key": null, "dhchap_ctrl_key": null, "dhchap_dhgroup": null, "dhchap_hash": "SHA-256"}));
    Ok(get_row(ctx, "nvmet.host", id))
}

/// `nvmet.host.delete`.
pub(crate) fn host_delete(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(
        params,
        &[
            req("id", Ty::Int),
            opt("options", Ty::Obj(vec![opt("force", Ty::Bool)])),
        ],
    )?;
    let id = args[0].as_i64().unwrap_or(0);
    if ctx.m.row("nvmet.host", id).is_none() {
        return Err(not_found("NVMetHost", id));
    }
    let users = ctx
        .m
        .rows("nvmet.host_subsys")
        .iter()
        .filter(|r| r["host_id"] == id)
        .count();
    if users > 0 && !schema::bool_or(&schema::object_or_empty(&args[1]), "force", false) {
        return Err(Failure::invalid(
            "nvmet_host_delete.id",
            format!("Host #{id} used by {users} subsystem(s)"),
        ));
    }
    ctx.m
        .table("nvmet.host_subsys")
        .rows
        .retain(|_, r| r["host_id"] != id);
    ctx.m.table("nvmet.host").rows.remove(&id);
    Ok(json!(true))
}

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
        && name.len() <= 120
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
    if !valid_target_name(&name) {
        return Err(Failure::invalid(
            format!("{p}.name"),
            "Lowercase alphanumeric characters plus dot (.), dash (-), and colon (:) are allowed.",
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
