//! `cargo xtask`: the project's build tasks in Rust instead of Makefiles or shell scripts.
//!
//! `ci` runs exactly the gates CI runs; `test` first makes sure this machine has what those
//! gates need (installing it with apt-get where it can), then runs them; `dist` builds
//! stripped release binaries with checksums; `demo` runs the two systems on embedded defaults;
//! `charts` checks the Helm charts, `image` builds the container images, `release` all of it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod charts;
mod ci;
mod demo;
mod dist;
mod image;
mod release;
mod setup;
#[cfg(test)]
mod tidy;
mod walkthrough;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, test, package and demo tasks for the tns-csi / warpdrive workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run exactly what CI runs: fmt check, clippy -D warnings, rustdoc -D warnings, all tests
    /// (including the tidy tests that enforce docs/ARCHITECTURE.md).
    Ci,
    /// Check and install what the tests need on this machine, then run `ci`. This is the
    /// command README.md gives and `.ci/run` calls.
    Test,
    /// Build both binaries in release mode, stripped, into target/dist/ with SHA256SUMS.
    Dist,
    /// Build and run both binaries on embedded example configs, show their endpoints, stop.
    Demo,
    /// Lint and render both Helm charts with every charts/*/ci/*-values.yaml, validate the
    /// manifests against the oldest and newest supported Kubernetes, check the rendered configs
    /// with the binaries' own check-config and their flags against --help, and check that
    /// deploy/ matches the charts.
    Charts {
        /// Regenerate deploy/ from the charts instead of checking it.
        #[arg(long)]
        write: bool,
    },
    /// Build the container images (buildah + mmdebstrap, no Docker) as OCI archives in
    /// target/images/.
    Image {
        /// Use the debug binaries instead of building release ones (faster; CI uses it).
        #[arg(long)]
        debug: bool,
        /// Afterwards run `--version` and look up every node tool inside each image.
        #[arg(long)]
        check: bool,
    },
    /// Everything a release ships, into `target/dist/<version>/`: stripped binaries, checked
    /// images, packaged charts, an SPDX SBOM and one SHA256SUMS. The version is the
    /// workspace's (Cargo.toml) and stamps binaries, images and charts.
    Release,
    /// Run a benchmark in release mode and print its figures beside same-run baselines
    /// (`truenas`: client calls/s and latency against the simulator; `csi`: controller
    /// volumes/s and peak memory; `fuse`: warpdrive-mount against local disk, object_store and
    /// rclone over the moto S3 server; `cache`: block-cache restart with 100k blocks).
    Bench {
        /// Which benchmark: `truenas`, `csi`, `fuse` or `cache`.
        name: String,
        /// Extra arguments for the benchmark (see `cargo run -p bench -- help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Ci => ci::run(),
        Task::Test => setup::ensure().and_then(|()| ci::run()),
        Task::Dist => dist::run(),
        Task::Demo => demo::run(),
        Task::Charts { write } => charts::run(write),
        Task::Image { debug, check } => {
            image::build(image::ImageOptions { debug, check }).map(drop)
        }
        Task::Release => release::run(),
        Task::Bench { name, args } => bench(&name, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the `bench` package in release mode and runs one benchmark.
fn bench(name: &str, args: &[String]) -> anyhow::Result<()> {
    const KNOWN: &[&str] = &["truenas", "csi", "fuse", "cache"];
    if !KNOWN.contains(&name) {
        anyhow::bail!(
            "unknown benchmark `{name}`; available: {}",
            KNOWN.join(", ")
        );
    }
    let built = cargo()
        .current_dir(root())
        .args(["build", "--release", "--locked", "--quiet"])
        .args(["--package", "bench", "--package", "tns-csi"])
        .args(["--package", "warpdrive-mount"])
        .status()?;
    anyhow::ensure!(built.success(), "release build failed");
    let status = std::process::Command::new(root().join("target/release/bench"))
        .current_dir(root())
        .arg(name)
        .args(args)
        .env(
            "BENCH_CONTROLLER_BIN",
            root().join("target/release/tns-csi"),
        )
        .env(
            "BENCH_WARPDRIVE_BIN",
            root().join("target/release/warpdrive-mount"),
        )
        .status()?;
    anyhow::ensure!(
        status.success(),
        "benchmark `{name}` failed or missed a target"
    );
    Ok(())
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Whether we run as root (mounts, loop devices, buildah's chroot isolation).
fn is_root() -> bool {
    demo::is_root()
}

/// The one version of the project: `[workspace.package] version` in Cargo.toml.
fn workspace_version() -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))?;
    let section = manifest
        .split("[workspace.package]")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("Cargo.toml has no [workspace.package]"))?;
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("[workspace.package] has no version"))
}

/// The cargo that invoked us, so the pinned toolchain is used for every step.
fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}
