//! The `sessiongate` binary: parse the command line, then hand over to the library.

use clap::Parser;

/// mimalloc: allocation is a visible share of a request's cost (see
/// `docs/performance.md#hand-written-fast-paths--ledger`); the library and its tests keep the
/// system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match sessiongate::cli::run(sessiongate::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
