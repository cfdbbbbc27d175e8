//! Tidy tests: plain `#[test]`s that enforce the architecture and workspace conventions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::root;

type Arrows = BTreeMap<String, BTreeSet<String>>;

/// Parses the arrows block of docs/ARCHITECTURE.md into (normal, dev-only) edges.
fn arrows() -> (Arrows, Arrows) {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md exists");
    let start = doc
        .find("<!-- arrows:start -->")
        .expect("ARCHITECTURE.md has an arrows:start marker");
    let end = doc
        .find("<!-- arrows:end -->")
        .expect("ARCHITECTURE.md has an arrows:end marker");
    let (mut normal, mut dev) = (Arrows::new(), Arrows::new());
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
        match lhs.as_slice() {
            ["dev", name] => dev.entry((*name).to_owned()).or_default().extend(targets),
            [name] => normal
                .entry((*name).to_owned())
                .or_default()
                .extend(targets),
            other => panic!("cannot read arrow line {other:?} in ARCHITECTURE.md"),
        }
    }
    assert!(!normal.is_empty(), "no arrows found between the markers");
    (normal, dev)
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

#[test]
fn dependency_edges_follow_architecture() {
    let (normal, dev) = arrows();
    let meta = cargo_metadata();
    let packages = workspace_packages(&meta);
    let names: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut violations = Vec::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap();
        if !normal.contains_key(name) {
            violations.push(format!(
                "crate `{name}` is not in the arrows table of docs/ARCHITECTURE.md"
            ));
            continue;
        }
        for dep in package["dependencies"].as_array().unwrap() {
            let target = dep["name"].as_str().unwrap();
            if !names.contains(target) {
                continue;
            }
            let allowed_normal = normal.get(name).is_some_and(|t| t.contains(target));
            let allowed = match dep["kind"].as_str() {
                Some("dev") => allowed_normal || dev.get(name).is_some_and(|t| t.contains(target)),
                _ => allowed_normal,
            };
            if !allowed {
                let kind = dep["kind"].as_str().unwrap_or("normal");
                violations.push(format!(
                    "`{name}` -> `{target}` ({kind} dependency) is not an allowed arrow"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependency edges break docs/ARCHITECTURE.md:\n{}",
        violations.join("\n")
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
