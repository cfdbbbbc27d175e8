//! Container images without Docker: a Debian root filesystem from mmdebstrap (no registry can
//! be pulled from), our binary on top, built by buildah (`--storage-driver vfs --isolation
//! chroot`) from `deploy/images/<binary>.Containerfile` and written as an OCI archive.
//! `--check` then runs `--version` and looks up every node tool inside the built image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{cargo, root, workspace_version};

/// The Debian release the images are built on: the glibc our binaries are built against here.
const SUITE: &str = "bookworm";

/// What the images are built from and where they go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageOptions {
    /// Use the debug binaries (CI: already built by the tests) instead of a release build.
    pub(crate) debug: bool,
    /// Run `--version` and look up each tool inside the image after building it.
    pub(crate) check: bool,
}

/// One image: its Containerfile's declared packages and tools.
struct Recipe {
    binary: &'static str,
    containerfile: PathBuf,
    packages: Vec<String>,
    tools: Vec<String>,
}

impl Recipe {
    fn load(binary: &'static str) -> anyhow::Result<Self> {
        let containerfile = root().join(format!("deploy/images/{binary}.Containerfile"));
        let text = std::fs::read_to_string(&containerfile)
            .with_context(|| format!("cannot read {}", containerfile.display()))?;
        let list = |key: &str| -> anyhow::Result<Vec<String>> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}:")))
                .with_context(|| format!("{} has no `# {key}:` line", containerfile.display()))?;
            Ok(line.split_whitespace().map(str::to_owned).collect())
        };
        Ok(Self {
            binary,
            packages: list("packages")?,
            tools: list("tools")?,
            containerfile,
        })
    }
}

fn buildah() -> Command {
    let mut cmd = Command::new("buildah");
    cmd.args(["--storage-driver", "vfs"]);
    cmd
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A root filesystem with `packages`, cached by their list so a rebuild skips mmdebstrap.
fn rootfs(packages: &[String], dir: &Path) -> anyhow::Result<PathBuf> {
    let mut hasher = Sha256::new();
    hasher.update(SUITE);
    for package in packages {
        hasher.update(package.as_bytes());
        hasher.update(b"\n");
    }
    let digest: String = hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tar = dir.join(format!("rootfs-{SUITE}-{digest}.tar"));
    if tar.exists() {
        println!("    root filesystem: {} (cached)", tar.display());
        return Ok(tar);
    }
    println!(
        "    root filesystem: mmdebstrap {SUITE} with {} (about a minute)",
        packages.join(" ")
    );
    let partial = tar.with_extension("tar.partial");
    let started = Instant::now();
    run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=essential", "--format=tar"])
            .arg(format!("--include={}", packages.join(",")))
            .arg(SUITE)
            .arg(&partial),
        "mmdebstrap",
    )?;
    std::fs::rename(&partial, &tar)?;
    println!(
        "    root filesystem ready in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(tar)
}

/// Builds both images; returns the OCI archives.
pub(crate) fn build(options: ImageOptions) -> anyhow::Result<Vec<PathBuf>> {
    for tool in ["buildah", "mmdebstrap"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            bail!(
                "`{tool}` is missing: `apt-get install -y buildah mmdebstrap` (or run `cargo xtask test`, which installs them)"
            );
        }
    }
    let profile = if options.debug { "debug" } else { "release" };
    let mut build = cargo();
    build.args(["build", "--locked"]);
    if !options.debug {
        build.arg("--release");
    }
    for bin in crate::dist::BINARIES {
        build.args(["--package", bin]);
    }
    println!("==> image: building the {profile} binaries");
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("cargo build failed");
    }
    let version = workspace_version()?;
    let revision = run(
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(root()),
        "git rev-parse",
    )
    .unwrap_or_else(|_| "unknown".to_owned());
    let out = root().join("target/images");
    std::fs::create_dir_all(&out)?;
    let mut archives = Vec::new();
    for binary in crate::dist::BINARIES {
        let started = Instant::now();
        let recipe = Recipe::load(binary)?;
        let tag = format!("localhost/{}:{version}", recipe.binary);
        println!("==> image: {tag}");
        let rootfs = rootfs(&recipe.packages, &out)?;
        let context = out.join(recipe.binary);
        if context.exists() {
            std::fs::remove_dir_all(&context)?;
        }
        std::fs::create_dir_all(&context)?;
        std::fs::hard_link(&rootfs, context.join("rootfs.tar"))
            .or_else(|_| std::fs::copy(&rootfs, context.join("rootfs.tar")).map(drop))?;
        std::fs::copy(
            root().join("target").join(profile).join(recipe.binary),
            context.join(recipe.binary),
        )
        .with_context(|| format!("cannot copy the {profile} {} binary", recipe.binary))?;
        run(
            buildah()
                .args(["bud", "--quiet", "--isolation", "chroot", "--layers=false"])
                .arg(format!("--build-arg=VERSION={version}"))
                .arg(format!("--build-arg=REVISION={revision}"))
                .arg("-f")
                .arg(&recipe.containerfile)
                .args(["-t", &tag])
                .arg(&context),
            "buildah bud",
        )?;
        let archive = out.join(format!("{}-{version}.oci.tar", recipe.binary));
        let _ = std::fs::remove_file(&archive);
        run(
            buildah()
                .args(["push", "--quiet", &tag])
                .arg(format!("oci-archive:{}:{tag}", archive.display())),
            "buildah push",
        )?;
        let checked = if options.check {
            check(&recipe, &tag)
        } else {
            Ok(())
        };
        // The archive is the product; the image in buildah's storage goes either way, so a
        // failed check leaves nothing behind.
        let removed = run(buildah().args(["rmi", &tag]), "buildah rmi");
        std::fs::remove_dir_all(&context)?;
        checked?;
        removed?;
        let size = std::fs::metadata(&archive)?.len();
        println!(
            "    {}: {:.0} MiB in {:.0}s",
            archive.display(),
            size as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64()
        );
        archives.push(archive);
    }
    println!(
        "==> image: load one with `podman load -i FILE` or `ctr -n k8s.io images import FILE`"
    );
    Ok(archives)
}

/// Inside the image: the binary runs and every tool the Containerfile names is on PATH.
fn check(recipe: &Recipe, tag: &str) -> anyhow::Result<()> {
    let container = run(buildah().args(["from", "--quiet", tag]), "buildah from")?;
    let result = (|| -> anyhow::Result<()> {
        let exec = |args: &[&str]| {
            run(
                buildah()
                    .args(["run", "--isolation", "chroot", &container, "--"])
                    .args(args),
                &format!("`{}` inside {tag}", args.join(" ")),
            )
        };
        let version = exec(&[&format!("/usr/local/bin/{}", recipe.binary), "--version"])?;
        println!("    inside: {version}");
        let mut missing = Vec::new();
        for tool in &recipe.tools {
            if exec(&["/bin/sh", "-c", &format!("command -v {tool}")]).is_err() {
                missing.push(tool.as_str());
            }
        }
        if !missing.is_empty() {
            bail!("{tag} lacks {}", missing.join(", "));
        }
        println!("    inside: found {}", recipe.tools.join(" "));
        Ok(())
    })();
    let _ = buildah().args(["rm", &container]).output();
    result
}
