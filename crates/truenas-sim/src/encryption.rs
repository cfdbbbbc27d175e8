//! ZFS native encryption as TrueNAS shows it: the algorithm and key format of each encryption
//! root, keys kept only as digests (the simulator never stores a passphrase or key), and
//! locking. A generated key lives in TrueNAS's own database, so its dataset is unlocked at
//! boot; a passphrase or a key the caller supplied is not, so after a restart with `--state`
//! those datasets come back **locked**, as after a NAS reboot: a locked filesystem's data is
//! out of sight (its mountpoint is an empty directory) and a locked zvol has no device file,
//! until `pool.dataset.unlock` is given the right secret.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ctx::Ctx;
use crate::data::DataDir;
use crate::model::Model;
use crate::rpc::{Failure, Outcome};
use crate::schema::{self, Ty, opt, req};

/// How an encryption root is keyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EncryptionRec {
    /// Raw ZFS value, `aes-256-gcm`.
    pub(crate) algorithm: String,
    /// `passphrase` or `hex`.
    pub(crate) key_format: String,
    /// SHA-256 of the passphrase or key, to check an unlock.
    pub(crate) key_digest: String,
    /// Whether TrueNAS keeps the key itself (generated keys), unlocking at boot.
    pub(crate) key_stored: bool,
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The encryption of a new dataset from its `encryption_options`, or the validation error
/// TrueNAS gives (`prefix` is the argument name, `pool_dataset_create`).
pub(crate) fn from_options(options: &Value, prefix: &str) -> Result<EncryptionRec, Failure> {
    let algorithm = schema::str_or(options, "algorithm", "AES-256-GCM").to_lowercase();
    if let Some(passphrase) = schema::get(options, "passphrase").and_then(Value::as_str) {
        if passphrase.chars().count() < 8 {
            return Err(Failure::invalid(
                format!("{prefix}.encryption_options.passphrase"),
                "Passphrase must be at least 8 characters.",
            ));
        }
        return Ok(EncryptionRec {
            algorithm,
            key_format: "passphrase".into(),
            key_digest: digest(passphrase),
            key_stored: false,
        });
    }
    if let Some(key) = schema::get(options, "key").and_then(Value::as_str) {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Failure::invalid(
                format!("{prefix}.encryption_options.key"),
                "Key must be 64 hexadecimal characters.",
            ));
        }
        return Ok(EncryptionRec {
            algorithm,
            key_format: "hex".into(),
            key_digest: digest(&key.to_lowercase()),
            key_stored: false,
        });
    }
    // generate_key: a random key TrueNAS keeps.
    let key: String = (0..64)
        .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
        .collect();
    Ok(EncryptionRec {
        algorithm,
        key_format: "hex".into(),
        key_digest: digest(&key),
        key_stored: true,
    })
}

/// Hides a dataset's data as a locked dataset's is: the directory's contents (or the zvol
/// file) move to a private place, leaving an empty mountpoint.
pub(crate) fn hide(data: &DataDir, name: &str, volume: bool) -> std::io::Result<()> {
    let (live, hidden) = paths(data, name, volume);
    if !live.exists() || hidden.exists() {
        return Ok(());
    }
    if let Some(parent) = hidden.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&live, &hidden)?;
    if !volume {
        std::fs::create_dir_all(&live)?;
    }
    Ok(())
}

/// Puts hidden data back (the dataset was unlocked).
pub(crate) fn reveal(data: &DataDir, name: &str, volume: bool) -> std::io::Result<()> {
    let (live, hidden) = paths(data, name, volume);
    if !hidden.exists() {
        return Ok(());
    }
    if !volume && live.is_dir() {
        std::fs::remove_dir(&live)?; // the empty mountpoint
    }
    std::fs::rename(&hidden, &live)
}

fn paths(data: &DataDir, name: &str, volume: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    let live = if volume {
        data.zvol_file(name)
    } else {
        data.dataset_dir(name)
    };
    let hidden = data
        .root()
        .join(".locked")
        .join(if volume { "zvol" } else { "fs" })
        .join(name);
    (live, hidden)
}

/// At start from saved state: every encryption root whose key TrueNAS does not keep is locked,
/// with its data out of sight.
pub(crate) fn lock_after_boot(model: &mut Model, data: &DataDir) {
    for rec in model.datasets.values_mut() {
        if let Some(enc) = &rec.encryption
            && !enc.key_stored
            && !rec.locked
        {
            rec.locked = true;
            if let Err(err) = hide(data, &rec.name, rec.volume) {
                tracing::warn!(dataset = %rec.name, %err, "cannot hide a locked dataset's data");
            }
        }
    }
}

/// `pool.dataset.unlock` (a job): `[id, {datasets: [{name, passphrase|key}], recursive,
/// force, key_file, toggle_attachments}]`. A wrong secret is not an error of the call: the
/// dataset is listed under `failed` with "Invalid Key", as TrueNAS does.
pub(crate) fn unlock(ctx: &mut Ctx<'_>, params: &[Value]) -> Outcome {
    let options = Ty::Obj(vec![
        opt("key_file", Ty::Bool),
        opt("recursive", Ty::Bool),
        opt("force", Ty::Bool),
        opt("toggle_attachments", Ty::Bool),
        opt(
            "datasets",
            schema::list(Ty::Obj(vec![
                req("name", Ty::Str),
                opt("key", schema::null(Ty::Str)),
                opt("passphrase", schema::null(Ty::Str)),
                opt("recursive", Ty::Bool),
                opt("force", Ty::Bool),
            ])),
        ),
    ]);
    let args = schema::args(
        params,
        &[req("id", Ty::Str), opt("unlock_options", options)],
    )?;
    let id = args[0].as_str().unwrap_or_default().to_owned();
    let Some(rec) = ctx.m.datasets.get(&id) else {
        return Err(Failure::call(2, format!("{id} not found")));
    };
    if rec.encryption.is_none() {
        return Err(Failure::invalid("id", format!("{id} is not encrypted")));
    }
    if !rec.locked {
        return Err(Failure::invalid(
            "id",
            format!("{id} dataset is not locked"),
        ));
    }
    let mut unlocked = Vec::new();
    let mut failed = serde_json::Map::new();
    let entries = args
        .get(1)
        .and_then(|o| o.get("datasets"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in entries {
        let name = entry["name"].as_str().unwrap_or_default().to_owned();
        let secret = schema::get(&entry, "passphrase")
            .or_else(|| schema::get(&entry, "key"))
            .and_then(Value::as_str);
        let Some(rec) = ctx.m.datasets.get_mut(&name) else {
            failed.insert(name, json!({"error": "Dataset not found", "skipped": []}));
            continue;
        };
        let Some(enc) = &rec.encryption else {
            failed.insert(
                name,
                json!({"error": "Dataset is not encrypted", "skipped": []}),
            );
            continue;
        };
        let given = secret.map(|s| {
            if enc.key_format == "hex" {
                digest(&s.to_lowercase())
            } else {
                digest(s)
            }
        });
        if given.as_deref() != Some(enc.key_digest.as_str()) {
            failed.insert(name, json!({"error": "Invalid Key", "skipped": []}));
            continue;
        }
        rec.locked = false;
        let volume = rec.volume;
        reveal(ctx.data, &name, volume)
            .map_err(|err| Failure::call(14, format!("Failed to mount {name}: {err}")))?;
        unlocked.push(name);
    }
    Ok(json!({"unlocked": unlocked, "failed": failed}))
}
