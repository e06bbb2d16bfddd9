//! The `latchkey` binary: parse the command line, set up tracing, dispatch.

use std::cell::Cell;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
    {
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

/// The shortest time between two collections on one worker thread.
const COLLECT_EVERY: Duration = Duration::from_millis(100);

thread_local! {
    /// When this worker thread last collected.
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs as a worker thread goes idle: mimalloc collects, at most once per [`COLLECT_EVERY`]
/// on each worker: the thread's own heap (blocks other threads freed to its pages, pages left
/// empty) and the memory of threads that have exited (tokio's blocking threads, where argon2
/// ran, end after 10 s idle).
///
/// A block freed on another thread than the one that allocated it is reclaimed only when its
/// owner allocates again, and an exited thread's pages wait for another thread to adopt them;
/// after a burst, a worker that goes idle would otherwise keep those pages: several MiB at
/// rest, a different amount after each burst (docs/RELIABILITY.md, What moves the service's
/// memory). Collecting as it parks gives a quiet service back its working size; under load a
/// worker seldom parks, and in a profile of the malformed storm the collection took 0.02% of
/// the samples.
fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        mi_collect();
    }
}

/// `mi_collect(true)`: the calling thread's heap, and abandoned memory of exited threads.
#[allow(unsafe_code)]
fn mi_collect() {
    // SAFETY: `mi_collect` takes no pointer and touches only the allocator's own state, under
    // its own synchronisation; mimalloc is this program's global allocator, so it is set up.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
