//! How a dataset looks in a reply: ZFS property objects (`parsed`, `rawvalue`, `value`,
//! `source`), sizes in TrueNAS's human form, and which datasets a query may show.

use serde_json::{Map, Value, json};

use crate::ctx::Ctx;
use crate::model::RENAMED_USER_PROPS;

pub(crate) const GIB: u64 = 1 << 30;
pub(crate) const INTERNAL: &[&str] = &["/.system", "/ix-applications", "/ix-apps", "/.ix-virt"];
pub(crate) const VOLBLOCKSIZES: &[&str] = &[
    "512", "512B", "1K", "2K", "4K", "8K", "16K", "32K", "64K", "128K",
];

/// `10 GiB`, `1.5 GiB`, `96 KiB`, `0 bytes` (humanfriendly, binary).
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".into()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

pub(crate) fn block_display(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}K", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// Block size text (`16K`, `512B`, `1M`) → bytes.
pub(crate) fn block_bytes(text: &str) -> Option<u64> {
    let upper = text.to_ascii_uppercase();
    let upper = upper.trim_end_matches('B');
    let (num, mult) = match upper.chars().last()? {
        'K' => (&upper[..upper.len() - 1], 1024),
        'M' => (&upper[..upper.len() - 1], 1 << 20),
        _ => (upper, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

pub(crate) fn prop(
    parsed: Value,
    raw: &str,
    value: Value,
    source: &str,
    info: Option<String>,
) -> Value {
    json!({"parsed": parsed, "rawvalue": raw, "value": value, "source": source, "source_info": info})
}

pub(crate) fn size_prop(bytes: u64, source: &str) -> Value {
    prop(
        json!(bytes),
        &bytes.to_string(),
        json!(human(bytes)),
        source,
        None,
    )
}

pub(crate) fn nullable_size(bytes: u64, source: &str) -> Value {
    if bytes == 0 {
        prop(Value::Null, "0", Value::Null, source, None)
    } else {
        prop(
            json!(bytes),
            &bytes.to_string(),
            json!(human(bytes)),
            source,
            None,
        )
    }
}

pub(crate) fn ctime(secs: i64) -> String {
    // "Mon Oct 20 16:03 2025" without a date crate: days since epoch → civil date.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m) = (rem / 3600, (rem % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{} {} {d} {h:02}:{m:02} {year}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

/// The `creation` property object.
pub(crate) fn creation_prop(secs: i64, with_info: bool) -> Value {
    let mut p = json!({"parsed": {"$date": secs * 1000}, "rawvalue": secs.to_string(), "value": ctime(secs), "source": "NONE"});
    if with_info {
        p["source_info"] = Value::Null;
    }
    p
}

pub(crate) fn inherited(
    ctx: &Ctx<'_>,
    name: &str,
    zfs: &str,
) -> (String, &'static str, Option<String>) {
    ctx.m
        .effective(name, zfs)
        .unwrap_or_else(|| (String::new(), "NONE", None))
}

/// Entry keys that are not ZFS properties: always in an entry, whatever `extra.properties`
/// asks for.
const NOT_PROPERTIES: &[&str] = &[
    "id",
    "name",
    "type",
    "pool",
    "encrypted",
    "encryption_root",
    "key_loaded",
    "locked",
    "children",
    "user_properties",
];

/// Entry keys whose ZFS property has another name (`extra.properties` takes either).
const ZFS_NAMES: &[(&str, &str)] = &[
    ("deduplication", "dedup"),
    ("special_small_block_size", "special_small_blocks"),
    ("encryption_algorithm", "encryption"),
    ("key_format", "keyformat"),
];

/// Which ZFS properties an entry carries: all, or those `extra.properties` lists (an empty
/// list: none), as TrueNAS 25.10 does (`dataset_query_utils`).
#[derive(Clone, Copy)]
pub(crate) enum Wanted<'a> {
    /// No `extra.properties`.
    All,
    /// `extra.properties`.
    Only(&'a [Value]),
}

impl Wanted<'_> {
    fn has(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => {
                let zfs = ZFS_NAMES
                    .iter()
                    .find(|(api, _)| *api == key)
                    .map_or(key, |(_, zfs)| zfs);
                list.iter()
                    .any(|v| v.as_str() == Some(key) || v.as_str() == Some(zfs))
            }
        }
    }
}

/// One dataset entry (§6), optionally with its children nested, with the ZFS properties
/// `wanted` (space accounting is computed only when a space property is wanted).
pub(crate) fn render(
    ctx: &Ctx<'_>,
    name: &str,
    children: bool,
    user_props: bool,
    wanted: Wanted<'_>,
) -> Value {
    let mut entry = render_all(ctx, name, children, user_props, wanted);
    if let (Wanted::Only(_), Value::Object(map)) = (wanted, &mut entry) {
        map.retain(|key, _| NOT_PROPERTIES.contains(&key.as_str()) || wanted.has(key));
    }
    entry
}

fn render_all(
    ctx: &Ctx<'_>,
    name: &str,
    children: bool,
    user_props: bool,
    wanted: Wanted<'_>,
) -> Value {
    let m = &*ctx.m;
    let rec = &m.datasets[name];
    let pool = name.split('/').next().unwrap_or(name);
    let space = [
        "available",
        "used",
        "usedbydataset",
        "usedbychildren",
        "usedbyrefreservation",
    ]
    .iter()
    .any(|key| wanted.has(key));
    let (own, refres_used, child_used) = if space {
        m.usage(ctx.data, name)
    } else {
        (0, 0, 0)
    };
    let mut e = Map::new();
    e.insert("id".into(), json!(name));
    e.insert("name".into(), json!(name));
    e.insert(
        "type".into(),
        json!(if rec.volume { "VOLUME" } else { "FILESYSTEM" }),
    );
    e.insert("pool".into(), json!(pool));
    e.insert("encrypted".into(), json!(rec.encrypted));
    e.insert(
        "encryption_root".into(),
        if rec.encrypted {
            json!(name)
        } else {
            Value::Null
        },
    );
    e.insert("key_loaded".into(), json!(rec.encrypted && !rec.locked));
    e.insert("locked".into(), json!(rec.locked));
    e.insert(
        "mountpoint".into(),
        if rec.volume {
            Value::Null
        } else {
            json!(format!("/mnt/{name}"))
        },
    );
    if space {
        e.insert(
            "available".into(),
            size_prop(m.available(ctx.data, name), "NONE"),
        );
    }
    e.insert(
        "used".into(),
        size_prop(own + refres_used + child_used, "NONE"),
    );
    e.insert("usedbydataset".into(), size_prop(own, "NONE"));
    e.insert("usedbychildren".into(), size_prop(child_used, "NONE"));
    e.insert(
        "usedbyrefreservation".into(),
        size_prop(refres_used, "NONE"),
    );
    e.insert("usedbysnapshots".into(), size_prop(0, "NONE"));
    for (api, zfs) in [
        ("reservation", "reservation"),
        ("refreservation", "refreservation"),
    ] {
        let local = rec.props.get(zfs);
        let bytes = local.and_then(|v| v.parse().ok()).unwrap_or(0);
        e.insert(
            api.into(),
            nullable_size(bytes, if local.is_some() { "LOCAL" } else { "DEFAULT" }),
        );
    }
    for (api, zfs) in [
        ("compression", "compression"),
        ("sync", "sync"),
        ("deduplication", "dedup"),
        ("checksum", "checksum"),
        ("readonly", "readonly"),
        ("copies", "copies"),
        ("snapdev", "snapdev"),
    ] {
        let (raw, source, info) = inherited(ctx, name, zfs);
        let parsed = match raw.as_str() {
            "on" if matches!(api, "readonly" | "checksum") => json!(true),
            "off" if matches!(api, "readonly" | "checksum") => json!(false),
            _ if api == "copies" => json!(raw.parse::<u64>().unwrap_or(1)),
            _ => json!(raw),
        };
        e.insert(
            api.into(),
            prop(parsed, &raw, json!(raw.to_uppercase()), source, info),
        );
    }
    e.insert(
        "compressratio".into(),
        prop(json!("1.00"), "1.00", json!("1.00x"), "NONE", None),
    );
    e.insert("creation".into(), creation_prop(rec.creation, true));
    e.insert(
        "origin".into(),
        prop(
            json!(rec.origin),
            &rec.origin,
            json!(rec.origin),
            "NONE",
            None,
        ),
    );
    let algorithm = rec
        .encryption
        .as_ref()
        .map_or(if rec.encrypted { "aes-256-gcm" } else { "off" }, |enc| {
            enc.algorithm.as_str()
        });
    e.insert(
        "encryption_algorithm".into(),
        prop(
            json!(algorithm),
            algorithm,
            if rec.encrypted {
                json!(algorithm.to_uppercase())
            } else {
                Value::Null
            },
            "NONE",
            None,
        ),
    );
    let key_format = rec
        .encryption
        .as_ref()
        .map_or("none", |enc| enc.key_format.as_str());
    e.insert(
        "key_format".into(),
        prop(
            json!(key_format),
            key_format,
            if key_format == "none" {
                Value::Null
            } else {
                json!(key_format.to_uppercase())
            },
            "NONE",
            None,
        ),
    );
    e.insert(
        "pbkdf2iters".into(),
        prop(json!("0"), "0", json!("0"), "DEFAULT", None),
    );
    if rec.volume {
        let volsize: u64 = rec
            .props
            .get("volsize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        e.insert("volsize".into(), size_prop(volsize, "LOCAL"));
        let block: u64 = rec
            .props
            .get("volblocksize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(16384);
        e.insert(
            "volblocksize".into(),
            prop(
                json!(block),
                &block.to_string(),
                json!(block_display(block)),
                "NONE",
                None,
            ),
        );
    } else {
        for (api, zfs) in [("quota", "quota"), ("refquota", "refquota")] {
            let local = rec.props.get(zfs);
            let bytes = local.and_then(|v| v.parse().ok()).unwrap_or(0);
            e.insert(
                api.into(),
                nullable_size(bytes, if local.is_some() { "LOCAL" } else { "DEFAULT" }),
            );
        }
        let (raw, source, info) = inherited(ctx, name, "recordsize");
        let bytes: u64 = raw.parse().unwrap_or(131_072);
        e.insert(
            "recordsize".into(),
            prop(
                json!(bytes),
                &raw,
                json!(block_display(bytes)),
                source,
                info,
            ),
        );
        for (api, zfs) in [
            ("aclmode", "aclmode"),
            ("acltype", "acltype"),
            ("atime", "atime"),
            ("exec", "exec"),
            ("snapdir", "snapdir"),
            ("special_small_block_size", "special_small_blocks"),
        ] {
            let (raw, source, info) = inherited(ctx, name, zfs);
            let parsed = match (api, raw.as_str()) {
                ("atime" | "exec", "on") => json!(true),
                ("atime" | "exec", "off") => json!(false),
                _ => json!(raw),
            };
            e.insert(
                api.into(),
                prop(parsed, &raw, json!(raw.to_uppercase()), source, info),
            );
        }
        let case = rec
            .props
            .get("casesensitivity")
            .cloned()
            .unwrap_or_else(|| "sensitive".into());
        e.insert(
            "casesensitivity".into(),
            prop(json!(case), &case, json!(case.to_uppercase()), "NONE", None),
        );
        e.insert(
            "xattr".into(),
            prop(Value::Null, "sa", json!("SA"), "LOCAL", None),
        );
    }
    if user_props {
        let mut users = Map::new();
        for (key, (value, _local)) in m.user_props(name) {
            if key == "org.truenas:incus_storage_pool" {
                continue;
            }
            let shown = RENAMED_USER_PROPS
                .iter()
                .find(|(zfs, _)| *zfs == key)
                .map_or(key.clone(), |(_, api)| (*api).to_owned());
            users.insert(
                shown,
                json!({"parsed": value, "rawvalue": value, "value": value, "source": "LOCAL", "source_info": null}),
            );
        }
        e.insert("user_properties".into(), Value::Object(users));
    }
    let kids: Vec<Value> = if children {
        m.children(name)
            .iter()
            .filter(|c| visible(c))
            .map(|c| render(ctx, c, true, user_props, wanted))
            .collect()
    } else {
        Vec::new()
    };
    e.insert("children".into(), Value::Array(kids));
    Value::Object(e)
}

pub(crate) fn visible(name: &str) -> bool {
    let pool = name.split('/').next().unwrap_or("");
    pool != "boot-pool" && pool != "freenas-boot" && !INTERNAL.iter().any(|i| name.contains(i))
}
