//! The `latchkey` binary: parse the command line, set up tracing, dispatch.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc gives freed memory back to the system shortly after it is freed. With glibc's
/// malloc, the 19 MiB argon2 buffer of every login stays in the heap of the thread that hashed
/// it (its mmap threshold grows past the buffer size after the first free), so a service that
/// served a few logins kept 100+ MiB it no longer used.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = latchkey::config::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(latchkey::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
