//! `cargo xtask charts`: the offline chart checks of `xtask/charts.py` (Helm as a library from
//! helm-python-sdk, kubernetes-validate, the binaries' own check-config and --help, kustomize).

use anyhow::{Context, bail};

use crate::{cargo, root};

/// Builds the debug binaries the checks run, then runs them (or rewrites deploy/).
pub(crate) fn run(write: bool) -> anyhow::Result<()> {
    let built = cargo()
        .args(["build", "--quiet", "--locked"])
        .args(["--package", "tns-csi", "--package", "warpdrive-mount"])
        .status()
        .context("cannot run cargo build")?;
    if !built.success() {
        bail!("cargo build failed");
    }
    let bin = |name: &str| root().join("target/debug").join(name);
    let mut check = std::process::Command::new("python3");
    check
        .current_dir(root())
        .arg(root().join("xtask/charts.py"))
        .arg("--tns-csi")
        .arg(bin("tns-csi"))
        .arg("--warpdrive-mount")
        .arg(bin("warpdrive-mount"));
    if write {
        check.arg("--write");
    }
    let status = check.status().context(
        "cannot run python3 xtask/charts.py (run `cargo xtask test` to install what it needs)",
    )?;
    if !status.success() {
        bail!("chart checks failed; reproduce with `cargo xtask charts`");
    }
    Ok(())
}
