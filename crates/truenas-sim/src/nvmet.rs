//! NVMe-oF targets: `nvmet.*` subsystems, namespaces, ports, hosts and their links.

use serde_json::{Value, json};

use crate::ctx::{Ctx, get_row, hex, not_found, uuid4, zvol_ready};
use crate::query::QueryArgs;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, null, opt, req};

/// Why 25.10's `NQN` type refuses `nqn` (pydantic's length messages, then the validator's
/// own, prefixed "Value error, "), or `None`.
fn nqn_error(nqn: &str) -> Option<String> {
    const UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";
    let length = nqn.chars().count();
    if length < 11 {
        return Some("String should have at least 11 characters".into());
    }
    if length > 223 {
        return Some("String should have at most 223 characters".into());
    }
    let why = if nqn == "nqn.2014-08.org.nvmexpress.discovery" {
        return None;
    } else if let Some(uuid) = nqn.strip_prefix(UUID_PREFIX) {
        let hex_groups = [8, 4, 4, 4, 12];
        let parts: Vec<&str> = uuid.split('-').collect();
        if uuid.len() != 36 {
            format!("{nqn}: uuid is incorrect length")
        } else if parts.len() != 5
            || parts
                .iter()
                .zip(hex_groups)
                .any(|(p, n)| p.len() != n || !p.chars().all(|c| c.is_ascii_hexdigit()))
        {
            "badly formed hexadecimal UUID string".to_owned()
        } else {
            return None;
        }
    } else if nqn.starts_with("nqn.") {
        let b = nqn.as_bytes();
        let dated = b.len() > 12
            && b[4..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'-'
            && b[9..11].iter().all(u8::is_ascii_digit);
        let rest = nqn.get(12..).unwrap_or("");
        if !dated {
            format!("{nqn}: must start with \"nqn.YYYY-MM.<reverse.domain>\"")
        } else if rest.is_empty() || !rest.contains('.') {
            format!("{nqn}: must start with \"nqn.YYYY-MM.<reverse.domain>\" - domain missing")
        } else {
            let reverse = rest.split(':').next().unwrap_or("");
            let mut labels: Vec<&str> = reverse.split('.').collect();
            labels.reverse();
            let label_ok = |l: &&str| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            let tld_ok = labels
                .last()
                .is_some_and(|t| t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic()));
            if labels.len() >= 2 && labels[..labels.len() - 1].iter().all(label_ok) && tld_ok {
                return None;
            }
            format!("{nqn}: domain does not appear to be valid")
        }
    } else {
        format!("{nqn}: must start with \"nqn\"")
    };
    Some(format!("Value error, {why}"))
}

pub(crate) fn subsys_entry(ctx: &Ctx<'_>, id: i64, verbose: bool) -> Value {
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
        .filter(|r| q.may_match(r, &[]))
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
        Some(nqn) if let Some(why) = nqn_error(nqn) => {
            return Err(Failure::invalid(format!("{p}.subnqn"), why));
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
            .cloned()
            .collect()
    };
    let namespaces = of("nvmet.namespace");
    let ports = of("nvmet.port_subsys");
    // The 25.10 wording: nsids (the first three, sorted), and both refusals at once.
    let mut refusals = Vec::new();
    if !force && !namespaces.is_empty() {
        let mut nsids: Vec<i64> = namespaces
            .iter()
            .filter_map(|n| n["nsid"].as_i64())
            .collect();
        nsids.sort_unstable();
        let message = if nsids.len() == 1 {
            format!("Subsystem {name} contains 1 namespace: {}", nsids[0])
        } else {
            let first: Vec<String> = nsids.iter().take(3).map(i64::to_string).collect();
            let more = if nsids.len() > 3 { ",..." } else { "" };
            format!(
                "Subsystem {name} contains {} namespaces: {}{more}",
                nsids.len(),
                first.join(",")
            )
        };
        refusals.push(crate::rpc::Entry::invalid(
            "nvmet_subsys_delete.id",
            message,
        ));
    }
    if !force && !ports.is_empty() {
        let noun = if ports.len() > 1 { "ports" } else { "port" };
        refusals.push(crate::rpc::Entry::invalid(
            "nvmet_subsys_delete.id",
            format!("Subsystem {name} visible on {} {noun}", ports.len()),
        ));
    }
    if !refusals.is_empty() {
        return Err(Failure::Validation(refusals));
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
            .filter(|r| q.may_match(r, &[("subsys.id", "subsys_id")]))
            .map(|r| namespace_entry(ctx, r))
            .collect(),
    )
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
    QueryArgs::parse(params)?.apply_refs(ctx.m.rows("nvmet.port"))
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
            .filter(|r| {
                q.may_match(
                    r,
                    &[
                        ("subsys.id", "subsys_id"),
                        ("host.id", "host_id"),
                        ("port.id", "port_id"),
                    ],
                )
            })
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
    if let Some(why) = nqn_error(&nqn) {
        return Err(Failure::invalid("nvmet_host_create.hostnqn", why));
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
