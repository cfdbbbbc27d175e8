//! Release binaries, stripped, with a SHA256SUMS file that `sha256sum -c` accepts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{cargo, root};

/// The binaries we ship.
pub(crate) const BINARIES: &[&str] = &["tns-csi", "warpdrive-mount"];

/// Builds and collects the release binaries into `target/dist/`.
pub(crate) fn run() -> anyhow::Result<()> {
    let dist = root().join("target/dist");
    let files = binaries(&dist)?;
    write_sums(&dist, &files)?;
    println!(
        "==> wrote {} (check with `cd target/dist && sha256sum -c SHA256SUMS`)",
        dist.join("SHA256SUMS").display()
    );
    Ok(())
}

/// Builds the stripped release binaries and copies them into `out`.
pub(crate) fn binaries(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut build = cargo();
    build.args(["build", "--release", "--locked"]);
    for bin in BINARIES {
        build.args(["--package", bin]);
    }
    println!("==> building release binaries (stripped: profile.release.strip = \"symbols\")");
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("release build failed");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = Vec::new();
    for bin in BINARIES {
        let from = root().join("target/release").join(bin);
        let to = out.join(bin);
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        files.push(to);
    }
    Ok(files)
}

/// Writes `dir/SHA256SUMS` over `files` (all inside `dir`), in the format `sha256sum -c` reads.
pub(crate) fn write_sums(dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut sums = String::new();
    for file in files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let name = file.strip_prefix(dir).unwrap_or(file).display().to_string();
        writeln!(sums, "{hex}  {name}")?;
        println!(
            "    {name}: {:.1} MiB, sha256 {hex}",
            bytes.len() as f64 / (1024.0 * 1024.0)
        );
    }
    std::fs::write(dir.join("SHA256SUMS"), &sums)?;
    Ok(())
}
