//! The method table: which handler serves which method, and whether it changes state.

use serde_json::Value;

use crate::ctx::{Ctx, not_found};
use crate::query::QueryArgs;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, opt, req};
use crate::{datasets, iscsi, nvmet, sharing, snapshots};

/// A model method.
pub(crate) type Handler = fn(&mut Ctx<'_>, &[Value]) -> Outcome;

fn simple_query(ctx: &mut Ctx<'_>, params: &[Value], table: &str) -> Outcome {
    QueryArgs::parse(params)?.apply_refs(ctx.m.rows(table))
}

fn simple_delete(
    ctx: &mut Ctx<'_>,
    params: &[Value],
    table: &str,
    verbose: &str,
    extra: Vec<schema::Field>,
) -> Outcome {
    let mut spec = vec![req("id", Ty::Int)];
    spec.extend(extra);
    let args = schema::args(params, &spec)?;
    let id = args[0].as_i64().unwrap_or(0);
    if ctx.m.table(table).rows.remove(&id).is_none() {
        return Err(not_found(verbose, id));
    }
    Ok(Value::Bool(true))
}

/// The handler for `method` and whether it mutates state, or `None` for an unknown method.
pub(crate) fn lookup(method: &str) -> Option<(Handler, bool)> {
    let entry: (Handler, bool) = match method {
        "pool.query" => (datasets::pool_query, false),
        "pool.dataset.query" => (datasets::query, false),
        "pool.dataset.get_instance" => (datasets::get_instance, false),
        "pool.dataset.create" => (datasets::create, true),
        "pool.dataset.update" => (datasets::update, true),
        "pool.dataset.delete" => (datasets::delete, true),
        "pool.dataset.promote" => (datasets::promote, true),
        "pool.dataset.unlock" => (crate::encryption::unlock, true),
        "replication.run_onetime" => (crate::replication::run_onetime, true),
        "pool.snapshot.query" => (snapshots::query, false),
        "pool.snapshot.create" => (snapshots::create, true),
        "pool.snapshot.update" => (snapshots::update, true),
        "pool.snapshot.delete" => (snapshots::delete, true),
        "pool.snapshot.clone" => (snapshots::clone, true),
        "pool.snapshot.rollback" => (snapshots::rollback, true),
        "sharing.nfs.query" => (sharing::nfs_query, false),
        "sharing.nfs.create" => (sharing::nfs_create, true),
        "sharing.nfs.update" => (sharing::nfs_update, true),
        "sharing.nfs.delete" => (
            |c, p| simple_delete(c, p, "sharing.nfs", "SharingNFS", vec![]),
            true,
        ),
        "sharing.smb.query" => (sharing::smb_query, false),
        "sharing.smb.create" => (sharing::smb_create, true),
        "sharing.smb.update" => (sharing::smb_update, true),
        "sharing.smb.delete" => (
            |c, p| simple_delete(c, p, "sharing.smb", "SharingSMB", vec![]),
            true,
        ),
        "nvmet.global.config" => (nvmet::nvmet_global, false),
        "nvmet.subsys.query" => (nvmet::subsys_query, false),
        "nvmet.subsys.create" => (nvmet::subsys_create, true),
        "nvmet.subsys.update" => (nvmet::subsys_update, true),
        "nvmet.subsys.delete" => (nvmet::subsys_delete, true),
        "nvmet.namespace.query" => (nvmet::namespace_query, false),
        "nvmet.namespace.create" => (nvmet::namespace_create, true),
        "nvmet.namespace.delete" => (nvmet::namespace_delete, true),
        "nvmet.port.query" => (nvmet::port_query, false),
        "nvmet.port.create" => (nvmet::port_create, true),
        "nvmet.port.delete" => (nvmet::port_delete, true),
        "nvmet.port_subsys.query" => (|c, p| nvmet::link_query(c, p, false), false),
        "nvmet.port_subsys.create" => (|c, p| nvmet::link_create(c, p, false), true),
        "nvmet.port_subsys.delete" => (
            |c, p| simple_delete(c, p, "nvmet.port_subsys", "NVMetPortSubsys", vec![]),
            true,
        ),
        "nvmet.host.query" => (|c, p| simple_query(c, p, "nvmet.host"), false),
        "nvmet.host.create" => (nvmet::host_create, true),
        "nvmet.host.delete" => (nvmet::host_delete, true),
        "nvmet.host_subsys.query" => (|c, p| nvmet::link_query(c, p, true), false),
        "nvmet.host_subsys.create" => (|c, p| nvmet::link_create(c, p, true), true),
        "nvmet.host_subsys.delete" => (
            |c, p| simple_delete(c, p, "nvmet.host_subsys", "NVMetHostSubsys", vec![]),
            true,
        ),
        "iscsi.global.config" => (iscsi::iscsi_global, false),
        "iscsi.portal.query" => (|c, p| simple_query(c, p, "iscsi.portal"), false),
        "iscsi.initiator.query" => (|c, p| simple_query(c, p, "iscsi.initiator"), false),
        "iscsi.initiator.create" => (|c, p| iscsi::initiator_upsert(c, p, false), true),
        "iscsi.initiator.update" => (|c, p| iscsi::initiator_upsert(c, p, true), true),
        "iscsi.initiator.delete" => (
            |c, p| simple_delete(c, p, "iscsi.initiator", "iSCSIHostAuthInitiator", vec![]),
            true,
        ),
        "iscsi.target.query" => (|c, p| simple_query(c, p, "iscsi.target"), false),
        "iscsi.target.create" => (iscsi::target_create, true),
        "iscsi.target.delete" => (iscsi::target_delete, true),
        "iscsi.extent.query" => (|c, p| simple_query(c, p, "iscsi.extent"), false),
        "iscsi.extent.create" => (iscsi::extent_create, true),
        "iscsi.extent.delete" => (iscsi::extent_delete, true),
        "iscsi.targetextent.query" => (|c, p| simple_query(c, p, "iscsi.targetextent"), false),
        "iscsi.targetextent.create" => (iscsi::targetextent_create, true),
        "iscsi.targetextent.delete" => (
            |c, p| {
                simple_delete(
                    c,
                    p,
                    "iscsi.targetextent",
                    "iSCSITargetToExtent",
                    vec![opt("force", Ty::Bool)],
                )
            },
            true,
        ),
        "filesystem.stat" => (filesystem_stat, false),
        "filesystem.statfs" => (filesystem_statfs, false),
        _ => return None,
    };
    Some(entry)
}

/// `filesystem.statfs [path]`: the filesystem a path is on, sized from its dataset's space.
fn filesystem_statfs(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let args = schema::args(params, &[req("path", Ty::Str)])?;
    let path = args[0].as_str().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(Failure::call(22, format!("{path}: path must be absolute")));
    }
    if ctx.data.host_path(path).is_none_or(|host| !host.exists()) {
        return Err(Failure::call(2, format!("Path {path} not found")));
    }
    // The dataset the path is on: the longest dataset name that is a prefix of it.
    let relative = path.trim_start_matches("/mnt/");
    let mut dataset = relative.to_owned();
    while !ctx.m.datasets.contains_key(&dataset) {
        match dataset.rsplit_once('/') {
            Some((parent, _)) => dataset = parent.to_owned(),
            None => return Err(Failure::call(2, format!("Path {path} not found"))),
        }
    }
    let (own, refres, children) = ctx.m.usage(ctx.data, &dataset);
    let avail = ctx.m.available(ctx.data, &dataset);
    let used = own + refres + children;
    let block = 131_072u64;
    Ok(serde_json::json!({
        "flags": ["RW", "XATTR", "NOACL", "CASESENSITIVE"],
        "fsid": [format!("{:016x}", {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            dataset.hash(&mut hasher);
            hasher.finish()
        })],
        "fstype": "zfs",
        "source": dataset,
        "dest": format!("/mnt/{dataset}"),
        "blocksize": block,
        "total_blocks": (used + avail) / block,
        "free_blocks": avail / block,
        "avail_blocks": avail / block,
        "total_blocks_str": ((used + avail) / block).to_string(),
        "free_blocks_str": (avail / block).to_string(),
        "avail_blocks_str": (avail / block).to_string(),
        "files": 0,
        "free_files": 0,
        "name_max": 255,
        "total_bytes": used + avail,
        "free_bytes": avail,
        "avail_bytes": avail,
        "total_bytes_str": (used + avail).to_string(),
        "free_bytes_str": avail.to_string(),
        "avail_bytes_str": avail.to_string(),
    }))
}

fn filesystem_stat(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    let args = schema::args(params, &[req("path", Ty::Str)])?;
    let path = args[0].as_str().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(Failure::call(22, format!("{path}: path must be absolute")));
    }
    let Some(host) = ctx.data.host_path(path) else {
        return Err(Failure::call(
            18,
            format!("{path}: path is outside of the NAS"),
        ));
    };
    let meta = std::fs::symlink_metadata(&host)
        .map_err(|_| Failure::call(2, format!("Path {path} not found")))?;
    let kind = if meta.is_dir() {
        "DIRECTORY"
    } else if meta.file_type().is_symlink() {
        "SYMLINK"
    } else if meta.is_file() {
        "FILE"
    } else {
        "OTHER"
    };
    let is_mountpoint = ctx
        .m
        .datasets
        .contains_key(path.trim_start_matches("/mnt/"));
    Ok(
        serde_json::json!({"realpath": path, "type": kind, "size": meta.len(), "allocation_size": meta.blocks() * 512,
        "mode": meta.mode(), "mount_id": 0, "uid": meta.uid(), "gid": meta.gid(), "atime": meta.atime() as f64,
        "mtime": meta.mtime() as f64, "ctime": meta.ctime() as f64, "btime": meta.ctime() as f64, "dev": meta.dev(),
        "inode": meta.ino(), "nlink": meta.nlink(), "acl": false, "is_mountpoint": is_mountpoint, "is_ctldir": false,
        "attributes": [], "user": "root", "group": "root"}),
    )
}
