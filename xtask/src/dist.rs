//! Release binaries, stripped, with a SHA256SUMS file that `sha256sum -c` accepts.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{cargo, root};

/// The binaries we ship.
pub(crate) const BINARIES: &[&str] = &["tns-csi", "warpdrive-mount"];

/// Builds and collects the release binaries into `target/dist/`.
pub(crate) fn run() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "--locked"]);
    for bin in BINARIES {
        build.args(["--package", bin]);
    }
    println!("==> building release binaries (stripped: profile.release.strip = \"symbols\")");
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("release build failed");
    }
    let dist = root().join("target/dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    let mut sums = String::new();
    for bin in BINARIES {
        let from = root().join("target/release").join(bin);
        let to = dist.join(bin);
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        let bytes = std::fs::read(&to)?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(sums, "{hex}  {bin}")?;
        println!(
            "    {bin}: {:.1} MiB, sha256 {hex}",
            bytes.len() as f64 / (1024.0 * 1024.0)
        );
    }
    std::fs::write(dist.join("SHA256SUMS"), &sums)?;
    println!(
        "==> wrote {} (check with `cd target/dist && sha256sum -c SHA256SUMS`)",
        dist.join("SHA256SUMS").display()
    );
    Ok(())
}
