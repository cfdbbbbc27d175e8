//! `tns-csi`: the Kubernetes CSI driver for TrueNAS SCALE. The binary parses the command line
//! and config, then assembles the library crates; logic lives in those crates.

mod cli;
mod cluster;
mod config;
mod grpc;
mod orphans;
mod run;

fn main() -> std::process::ExitCode {
    run::main(cli::parse())
}
