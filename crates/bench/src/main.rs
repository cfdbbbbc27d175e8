//! `cargo xtask bench <name>` runs this in release mode. Each benchmark prints its figures
//! beside a baseline measured in the same run, and exits non-zero when a target is missed.
#![allow(clippy::print_stdout)]

mod cache_bench;
mod csi_bench;
mod fuse_bench;
mod s3_server;
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
        /// Then fill the pool with this many NFS volumes and measure again: create and delete
        /// rates beside the empty pool's, and ListVolumes of them all in pages of 500
        /// (0 skips the scale rows).
        #[arg(long, default_value_t = 10_000)]
        existing: usize,
    },
    /// The block cache's restart: time to rebuild the index of 100,000 blocks, with the
    /// kernel's caches warm and dropped, beside a plain walk of the same files.
    Cache {
        /// Blocks to create.
        #[arg(long, default_value_t = 100_000)]
        blocks: u64,
    },
    /// warpdrive-mount over a fast S3 server of our own (`bench s3-server`): 4 × 1 GiB
    /// sequential, 20,000 × 128 KiB files shuffled by 8 threads, random 64 KiB reads in a 2 GiB
    /// file, each cold, warm and after a restart, beside local disk, direct GETs with no FUSE,
    /// s3fs-fuse and `rclone mount --vfs-cache-mode full`; `ls -l` of 10^4–10^6 entries; CPU
    /// per GiB and warpdrive's peak RSS. Needs root and /dev/fuse; installs s3fs and rclone
    /// (apt-get) if missing.
    /// Not a benchmark: the S3 server `bench fuse` starts (one directory served as one
    /// read-only bucket on 127.0.0.1, 1 MiB reads, signed requests), to run it by hand.
    S3Server {
        /// The directory to serve.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// The bucket name it is served as.
        #[arg(long, default_value = "bench")]
        bucket: String,
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Access key id requests must be signed with.
        #[arg(long, default_value = "bench")]
        access_key: String,
        /// Environment variable holding the secret key (never a value on the command line).
        #[arg(long, default_value = "BENCH_S3_SECRET")]
        secret_key_env: String,
    },
    Fuse {
        /// The warpdrive-mount binary (cargo xtask bench builds it in release mode).
        #[arg(long, env = "BENCH_WARPDRIVE_BIN")]
        binary: std::path::PathBuf,
        /// Working directory: generated data (kept for the next run), caches, mount points.
        #[arg(long, default_value = "target/bench-fuse")]
        dir: std::path::PathBuf,
        /// Large files read sequentially, one reader each.
        #[arg(long, default_value_t = 4)]
        large_files: usize,
        /// Size of each large file, MiB.
        #[arg(long, default_value_t = 1024)]
        large_mib: u64,
        /// Small files read whole in shuffled order.
        #[arg(long, default_value_t = 20_000)]
        small_files: usize,
        /// Size of each small file, KiB.
        #[arg(long, default_value_t = 128)]
        small_kib: u64,
        /// Size of the file read at random offsets, MiB.
        #[arg(long, default_value_t = 2048)]
        random_mib: u64,
        /// Random 64 KiB reads per run (the first reads of a cold file).
        #[arg(long, default_value_t = 2000)]
        random_reads: usize,
        /// Time limit of each random-read pass, seconds; throughput counts the reads done.
        #[arg(long, default_value_t = 60)]
        random_secs: u64,
        /// Reader threads for the small-file and random cases.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Leave out the rclone baseline.
        #[arg(long)]
        skip_rclone: bool,
        /// Leave out the s3fs-fuse baseline (its targets are then not checked).
        #[arg(long)]
        skip_s3fs: bool,
        /// Directory sizes for the `ls -l` case, comma-separated (empty: skipped); the
        /// directories are made once under --dir and kept.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        listing: Vec<usize>,
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
            existing,
        } => runtime.block_on(csi_bench::run_bench(&binary, volumes, latency_ms, existing)),
        Bench::Cache { blocks } => cache_bench::run(blocks),
        Bench::S3Server {
            dir,
            bucket,
            port,
            access_key,
            secret_key_env,
        } => {
            let secret = std::env::var(&secret_key_env).unwrap_or_else(|_| "bench".into());
            runtime.block_on(s3_server::serve(&dir, &bucket, port, &access_key, &secret))
        }
        Bench::Fuse {
            binary,
            dir,
            large_files,
            large_mib,
            small_files,
            small_kib,
            random_mib,
            random_reads,
            random_secs,
            threads,
            skip_rclone,
            skip_s3fs,
            listing,
        } => runtime.block_on(fuse_bench::run(fuse_bench::Options {
            binary,
            dir,
            large_files,
            large_size: large_mib << 20,
            small_files,
            small_size: small_kib << 10,
            random_size: random_mib << 20,
            random_reads,
            random_cold_secs: random_secs,
            threads: threads.max(1),
            skip_rclone,
            skip_s3fs,
            listing,
        })),
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
