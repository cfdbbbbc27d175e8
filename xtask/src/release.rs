//! `cargo xtask release`: what a release ships, stamped with the workspace version, in
//! `target/dist/<version>/`: the two binaries, the two images (checked inside), the two charts
//! packaged, an SPDX 2.3 SBOM of every crate the binaries are built from, and one SHA256SUMS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{cargo, root, workspace_version};

/// Builds everything into `target/dist/<version>/`.
pub(crate) fn run() -> anyhow::Result<()> {
    let version = workspace_version()?;
    let out = root().join("target/dist").join(&version);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    println!("==> release {version} into {}", out.display());
    let mut files = crate::dist::binaries(&out)?;
    for archive in crate::image::build(crate::image::ImageOptions {
        debug: false,
        check: true,
    })? {
        let to = out.join(archive.file_name().context("archive name")?);
        std::fs::rename(&archive, &to).or_else(|_| std::fs::copy(&archive, &to).map(drop))?;
        files.push(to);
    }
    files.extend(package_charts(&version, &out)?);
    let sbom = out.join(format!("tns-csi-warpdrive-{version}.spdx.json"));
    std::fs::write(&sbom, serde_json::to_string_pretty(&spdx(&version)?)?)?;
    println!("==> SBOM: {}", sbom.display());
    files.push(sbom);
    crate::dist::write_sums(&out, &files)?;
    println!(
        "==> release {version} ready; verify with `cd {} && sha256sum -c SHA256SUMS`",
        out.display()
    );
    Ok(())
}

/// `helm package` of both charts (Helm as a library), stamped with `version`.
fn package_charts(version: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for chart in ["tns-csi", "warpdrive"] {
        let script = "import helm_python, sys\n\
             print(helm_python.package(sys.argv[1], destination=sys.argv[2], version=sys.argv[3], app_version=sys.argv[3]))\n";
        let result = Command::new("python3")
            .args(["-c", script])
            .arg(root().join("charts").join(chart))
            .arg(out)
            .arg(version)
            .output()
            .context("cannot run python3 (helm-python-sdk packages the charts)")?;
        if !result.status.success() {
            bail!(
                "packaging charts/{chart} failed: {}",
                String::from_utf8_lossy(&result.stderr)
            );
        }
        let path = PathBuf::from(String::from_utf8_lossy(&result.stdout).trim());
        println!("==> chart: {}", path.display());
        files.push(path);
    }
    Ok(files)
}

/// An SPDX 2.3 document: the two binaries and every crate their build links (normal and build
/// dependencies, not dev ones), from `cargo metadata`.
fn spdx(version: &str) -> anyhow::Result<Value> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed");
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)?;
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("metadata packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("metadata resolve")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let roots: Vec<&str> = packages
        .iter()
        .filter(|(_, p)| crate::dist::BINARIES.contains(&p["name"].as_str().unwrap_or_default()))
        .map(|(id, _)| *id)
        .collect();
    let shipped = |kinds: &Value| {
        kinds
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["kind"].as_str() != Some("dev")))
    };
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut edges: Vec<(&str, &str)> = Vec::new();
    let mut todo = roots.clone();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let Some(to) = dep["pkg"].as_str() else {
                continue;
            };
            if shipped(&dep["dep_kinds"]) {
                edges.push((id, to));
                todo.push(to);
            }
        }
    }
    let spdx_id = |id: &str| {
        let p = packages[id];
        let raw = format!(
            "SPDXRef-Package-{}-{}",
            p["name"].as_str().unwrap_or_default(),
            p["version"].as_str().unwrap_or_default()
        );
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    };
    let spdx_packages: Vec<Value> = seen
        .iter()
        .map(|id| {
            let p = packages[id];
            let name = p["name"].as_str().unwrap_or_default();
            let ver = p["version"].as_str().unwrap_or_default();
            let from_registry = p["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("registry+"));
            json!({
                "SPDXID": spdx_id(id),
                "name": name,
                "versionInfo": ver,
                "downloadLocation": if from_registry {
                    format!("https://crates.io/api/v1/crates/{name}/{ver}/download")
                } else {
                    "NOASSERTION".to_owned()
                },
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": p["license"].as_str().unwrap_or("NOASSERTION"),
                "copyrightText": "NOASSERTION",
                "filesAnalyzed": false,
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!("pkg:cargo/{name}@{ver}"),
                }],
            })
        })
        .collect();
    let mut relationships: Vec<Value> = roots
        .iter()
        .map(|id| {
            json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": spdx_id(id)})
        })
        .collect();
    relationships.extend(edges.iter().map(|(from, to)| {
        json!({"spdxElementId": spdx_id(from), "relationshipType": "DEPENDS_ON", "relatedSpdxElement": spdx_id(to)})
    }));
    let created = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("tns-csi-warpdrive-{version}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/tns-csi-warpdrive-{version}"),
        "creationInfo": {"created": created, "creators": ["Tool: cargo-xtask-release"]},
        "packages": spdx_packages,
        "relationships": relationships,
    }))
}
