//! `cargo xtask bench <name>` runs this in release mode. Each benchmark prints its figures
//! beside a baseline measured in the same run, and exits non-zero when a target is missed.
#![allow(clippy::print_stdout)]

mod csi_bench;
mod truenas_bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks with same-run baselines.
#[derive(Debug, Parser)]
#[command(name = "bench", max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// TrueNAS client against the simulator on loopback: calls/s and p50/p99 latency at 1, 16
    /// and 256 calls in flight, beside raw WebSocket round trips with no client.
    Truenas {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// The controller binary against the simulator: CreateVolume then DeleteVolume for NFS and
    /// NVMe-oF, 16 at a time, with latency injected into every TrueNAS call; volumes/s, p50/p99
    /// and the controller's peak RSS, beside the same work done one at a time.
    Csi {
        /// The tns-csi binary (cargo xtask bench builds it in release mode).
        #[arg(long, env = "BENCH_CONTROLLER_BIN")]
        binary: std::path::PathBuf,
        /// Volumes per protocol.
        #[arg(long, default_value_t = 200)]
        volumes: usize,
        /// Milliseconds added to every TrueNAS call.
        #[arg(long, default_value_t = 5)]
        latency_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            println!("bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.bench {
        Bench::Truenas { seconds } => runtime.block_on(truenas_bench::run(seconds)),
        Bench::Csi {
            binary,
            volumes,
            latency_ms,
        } => runtime.block_on(csi_bench::run_bench(&binary, volumes, latency_ms)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("bench: a target was missed (see above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            println!("bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
