//! `warpdrive-mount`: one POSIX tree over many object stores, for GPU training jobs. The binary
//! parses the command line and config, then assembles the library crates.

mod cli;
mod config;
mod control;
mod identity;
mod run;
mod stores;

fn main() -> std::process::ExitCode {
    run::main(cli::parse())
}
