//! Tidy tests: plain `#[test]`s that enforce the architecture and workspace conventions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::root;

type Arrows = BTreeMap<String, BTreeSet<String>>;

/// The arrows block of docs/ARCHITECTURE.md: normal edges, and the extra edges allowed for
/// tests (`dev`) and build scripts (`build`).
#[derive(Default)]
struct Allowed {
    normal: Arrows,
    dev: Arrows,
    build: Arrows,
}

/// Parses the arrows block of docs/ARCHITECTURE.md.
fn arrows() -> Allowed {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    let start = doc
        .find("<!-- arrows:start -->")
        .expect("ARCHITECTURE.md has an arrows:start marker");
    let end = doc
        .find("<!-- arrows:end -->")
        .expect("ARCHITECTURE.md has an arrows:end marker");
    let mut allowed = Allowed::default();
    let block = &doc[start + "<!-- arrows:start -->".len()..end];
    for line in block.lines().map(str::trim) {
        let Some((lhs, rhs)) = line.split_once("->") else {
            continue;
        };
        let targets: BTreeSet<String> = rhs
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let lhs: Vec<&str> = lhs.split_whitespace().collect();
        let (table, name) = match lhs.as_slice() {
            ["dev", name] => (&mut allowed.dev, *name),
            ["build", name] => (&mut allowed.build, *name),
            [name] => (&mut allowed.normal, *name),
            other => panic!("cannot read arrow line {other:?} in ARCHITECTURE.md"),
        };
        table.entry(name.to_owned()).or_default().extend(targets);
    }
    assert!(
        !allowed.normal.is_empty(),
        "no arrows found between the markers"
    );
    allowed
}

fn cargo_metadata() -> Value {
    let mut cmd = crate::cargo();
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--no-deps",
    ]);
    let out = cmd.output().expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn workspace_packages(meta: &Value) -> Vec<&Value> {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .collect()
}

/// The workspace's dependency edges between its own packages, by kind (`normal`, `dev`,
/// `build`).
fn workspace_edges(packages: &[&Value]) -> BTreeSet<(String, String, String)> {
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut edges = BTreeSet::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        for dep in package["dependencies"].as_array().unwrap() {
            let target = dep["name"].as_str().unwrap();
            if names.contains(target) {
                let kind = dep["kind"].as_str().unwrap_or("normal").to_owned();
                edges.insert((name.to_owned(), target.to_owned(), kind));
            }
        }
    }
    edges
}

/// Checks the edges against the arrows both ways: every edge allowed, every arrow real, every
/// name a package. Returns the violations.
fn check_arrows(
    allowed: &Allowed,
    packages: &BTreeSet<String>,
    edges: &BTreeSet<(String, String, String)>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let has =
        |table: &Arrows, from: &str, to: &str| table.get(from).is_some_and(|t| t.contains(to));
    for package in packages {
        if !allowed.normal.contains_key(package) {
            violations.push(format!(
                "crate `{package}` is not in the arrows table of docs/ARCHITECTURE.md"
            ));
        }
    }
    for (from, to, kind) in edges {
        let ok = match kind.as_str() {
            "dev" => has(&allowed.normal, from, to) || has(&allowed.dev, from, to),
            "build" => has(&allowed.build, from, to),
            _ => has(&allowed.normal, from, to),
        };
        if !ok {
            violations.push(format!(
                "`{from}` -> `{to}` ({kind} dependency) is not an allowed arrow"
            ));
        }
    }
    for (kind, table) in [
        ("normal", &allowed.normal),
        ("dev", &allowed.dev),
        ("build", &allowed.build),
    ] {
        for (from, targets) in table {
            for name in std::iter::once(from).chain(targets) {
                if !packages.contains(name) {
                    violations.push(format!(
                        "the arrows name `{name}`, which is no package of the workspace"
                    ));
                }
            }
            for to in targets {
                // A normal dependency also serves tests, so a normal arrow is real if either is.
                let real = edges.iter().any(|(f, t, k)| {
                    f == from
                        && t == to
                        && match kind {
                            "normal" => k == "normal",
                            other => k == other,
                        }
                });
                if !real {
                    violations.push(format!(
                        "the {kind} arrow `{from}` -> `{to}` has no such dependency; remove it"
                    ));
                }
            }
        }
    }
    violations.sort();
    violations.dedup();
    violations
}

#[test]
fn dependency_edges_follow_architecture() {
    let allowed = arrows();
    let meta = cargo_metadata();
    let packages = workspace_packages(&meta);
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let violations = check_arrows(&allowed, &names, &workspace_edges(&packages));
    assert!(
        violations.is_empty(),
        "dependency edges break docs/ARCHITECTURE.md:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_arrow_check_fails_both_ways() {
    let table = |pairs: &[(&str, &[&str])]| -> Arrows {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect()
    };
    let allowed = Allowed {
        normal: table(&[("a", &["b", "c"]), ("b", &[]), ("c", &[])]),
        dev: table(&[("b", &["ghost"])]),
        build: Arrows::new(),
    };
    let packages: BTreeSet<String> = ["a", "b", "c"].map(str::to_owned).into();
    let edge = |f: &str, t: &str, k: &str| (f.to_owned(), t.to_owned(), k.to_owned());
    let edges: BTreeSet<_> = [edge("a", "b", "normal"), edge("c", "a", "build")].into();
    let found = check_arrows(&allowed, &packages, &edges).join("\n");
    assert!(
        found.contains("`c` -> `a` (build dependency) is not an allowed arrow"),
        "{found}"
    );
    assert!(
        found.contains("normal arrow `a` -> `c` has no such dependency"),
        "{found}"
    );
    assert!(found.contains("`ghost`, which is no package"), "{found}");
}

#[test]
fn csi_node_cannot_reach_truenas() {
    // Node pods hold no TrueNAS key: not even a transitive path may lead there.
    let out = crate::cargo()
        .args([
            "tree",
            "--offline",
            "--package",
            "csi-node",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains("csi-api"),
        "cargo tree printed too little:\n{tree}"
    );
    assert!(
        !names.contains("truenas"),
        "csi-node reaches the TrueNAS client:\n{tree}"
    );
}

#[test]
fn every_crate_inherits_workspace_settings() {
    let meta = cargo_metadata();
    let mut problems = Vec::new();
    for package in workspace_packages(&meta) {
        let manifest_path = package["manifest_path"].as_str().unwrap();
        let manifest = std::fs::read_to_string(manifest_path).unwrap();
        for needle in [
            "version.workspace = true",
            "edition.workspace = true",
            "rust-version.workspace = true",
            "license.workspace = true",
            "[lints]\nworkspace = true",
        ] {
            if !manifest.contains(needle) {
                problems.push(format!(
                    "{manifest_path}: missing `{}`",
                    needle.replace('\n', " ")
                ));
            }
        }
        if package["description"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{manifest_path}: missing a one-line `description`"));
        }
        for dep in package["dependencies"].as_array().unwrap() {
            // Versions live in [workspace.dependencies]; a crate only names what it uses.
            let name = dep["name"].as_str().unwrap();
            let own_version = manifest.lines().any(|line| {
                line.starts_with(&format!("{name} = ")) && !line.contains("workspace = true")
            });
            if own_version {
                problems.push(format!(
                    "{manifest_path}: `{}` has its own version; use `.workspace = true`",
                    dep["name"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn openssl_never_enters_the_build() {
    // `cargo tree` resolves for this platform, which is what ships (metadata would need every
    // platform's crates downloaded).
    let out = crate::cargo()
        .args([
            "tree",
            "--workspace",
            "--offline",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.lines().count() > 50,
        "cargo tree printed too little:\n{tree}"
    );
    let banned = ["openssl", "openssl-sys", "native-tls"];
    let found: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| banned.contains(n))
        .collect();
    assert!(
        found.is_empty(),
        "banned TLS stacks in the dependency graph: {found:?} (we use rustls only)"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_ignored_or_placeholder_code() {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        if root().join(dir).is_dir() {
            rust_files(&root().join(dir), &mut files);
        }
    }
    assert!(
        files.len() > 10,
        "found only {} source files; is the walk broken?",
        files.len()
    );
    // Built by concatenation so this file does not match itself.
    let banned = [
        concat!("#[", "ignore"),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut hits = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(pattern) = banned.iter().find(|b| line.contains(*b)) {
                hits.push(format!("{}:{}: `{pattern}`", file.display(), n + 1));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "tests must fail, not be skipped, and code must be real:\n{}",
        hits.join("\n")
    );
}

#[test]
fn every_metric_is_documented() {
    let doc = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let mut missing = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Metric names are string constants `pub const NAME: &str = "..."` in metrics.rs files,
        // or build-info prefixes passed to `register_build_info`.
        let names = text
            .lines()
            .filter(|l| {
                file.ends_with("metrics.rs") && l.contains("pub const") && l.contains(": &str = \"")
            })
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .chain(
                text.match_indices("register_build_info(&mut registry, \"")
                    .filter_map(|(i, m)| {
                        text[i + m.len()..]
                            .split('"')
                            .next()
                            .map(|prefix| format!("{prefix}_build_info"))
                    }),
            );
        for name in names {
            if !doc.contains(&format!("`{name}`")) {
                missing.push(format!("{name} (from {})", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics missing from docs/METRICS.md: {missing:?}"
    );
}

/// The version comes from one place: each chart's `version` and `appVersion` equal the
/// workspace version, so a release stamps binaries, images and charts alike.
#[test]
fn charts_carry_the_workspace_version() {
    let version = crate::workspace_version().unwrap();
    for chart in ["tns-csi", "warpdrive"] {
        let text =
            std::fs::read_to_string(crate::root().join("charts").join(chart).join("Chart.yaml"))
                .unwrap();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .map(|v| v.trim_matches('"').to_owned())
        };
        assert_eq!(
            field("version"),
            Some(version.clone()),
            "charts/{chart} version"
        );
        assert_eq!(
            field("appVersion"),
            Some(version.clone()),
            "charts/{chart} appVersion"
        );
    }
}
