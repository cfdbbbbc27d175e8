//! The CI gates, one step at a time, failing on the first with its name and how to reproduce.

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
    for step in STEPS {
        let shown = format!("cargo {}", step.args.join(" "));
        println!("==> {}: {shown}", step.name);
        let t = Instant::now();
        let status = cargo()
            .args(step.args)
            .envs(step.env.iter().copied())
            .status()
            .with_context(|| format!("cannot run `{shown}`"))?;
        if !status.success() {
            bail!(
                "CI step `{}` failed ({status}); reproduce with `{shown}`",
                step.name
            );
        }
        println!("==> {}: ok in {:.1}s", step.name, t.elapsed().as_secs_f64());
    }
    println!(
        "==> all CI steps passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
