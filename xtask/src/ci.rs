//! The CI gates, one step at a time, failing on the first with its name and how to reproduce.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::cargo;

/// One gate: a name and the cargo arguments that run it.
struct Step {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const STEPS: &[Step] = &[
    Step {
        name: "format",
        args: &["fmt", "--all", "--check"],
        env: &[],
    },
    Step {
        name: "clippy",
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        name: "rustdoc",
        args: &["doc", "--workspace", "--no-deps", "--locked"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    Step {
        name: "tests",
        args: &["test", "--workspace", "--all-features", "--locked"],
        env: &[],
    },
];

/// Runs every gate in order.
pub(crate) fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut totals = Totals::default();
    for step in STEPS {
        let shown = format!("cargo {}", step.args.join(" "));
        println!("==> {}: {shown}", step.name);
        let t = Instant::now();
        let mut cmd = cargo();
        cmd.args(step.args).envs(step.env.iter().copied());
        let status = if step.name == "tests" {
            run_counting_tests(cmd, &mut totals)
        } else {
            cmd.status()
        }
        .with_context(|| format!("cannot run `{shown}`"))?;
        if !status.success() {
            if step.name == "tests" {
                println!("tests: {} passed, {} failed", totals.passed, totals.failed);
            }
            bail!(
                "CI step `{}` failed ({status}); reproduce with `{shown}`",
                step.name
            );
        }
        println!("==> {}: ok in {:.1}s", step.name, t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    println!("==> charts: cargo xtask charts");
    crate::charts::run(false)?;
    println!("==> charts: ok in {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    if crate::is_root() {
        println!("==> images: cargo xtask image --debug --check");
        crate::image::build(crate::image::ImageOptions {
            debug: true,
            check: true,
        })
        .context("CI step `images` failed; reproduce with `cargo xtask image --debug --check`")?;
        println!("==> images: ok in {:.1}s", t.elapsed().as_secs_f64());
    } else {
        println!("==> images: skipped (buildah with chroot isolation needs root; CI runs as root)");
    }
    println!(
        "==> all CI steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // One closing line for the whole run, so a reader need not add up every test binary.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    Ok(())
}

/// Test counts summed over every test binary of the run.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test`, echoing its output while adding up its `test result:` lines.
fn run_counting_tests(mut cmd: Command, totals: &mut Totals) -> std::io::Result<ExitStatus> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count(rest, " passed");
            totals.failed += count(rest, " failed");
        }
    }
    child.wait()
}

/// Reads the number before `label` in "ok. 13 passed; 0 failed; ...".
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ");
            part.strip_suffix(label)?.trim().parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn reads_cargo_test_summaries() {
        let ok =
            "ok. 13 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s";
        assert_eq!((count(ok, " passed"), count(ok, " failed")), (13, 0));
        let bad = "FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!((count(bad, " passed"), count(bad, " failed")), (4, 2));
    }
}
