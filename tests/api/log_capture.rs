//! The service's logs, captured: a `tracing` subscriber for this test process that records
//! every event at `debug` and above (the `log` crate's records too) into the buffers of the
//! captures running at that moment. With no capture running it records nothing.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

type Buffer = Arc<Mutex<Vec<u8>>>;

/// The buffers of the running captures.
static CAPTURES: Mutex<Vec<Buffer>> = Mutex::new(Vec::new());
/// How many captures run: the subscriber drops every event while it is 0.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Writes each formatted event to every running capture.
#[derive(Clone, Copy)]
struct ToCaptures;

impl Write for ToCaptures {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for buffer in CAPTURES.lock().expect("captures").iter() {
            buffer.lock().expect("capture").extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ToCaptures {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        *self
    }
}

fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(ToCaptures)
            .with_ansi(false)
            .with_target(true)
            .with_filter(filter_fn(|meta| {
                RUNNING.load(Ordering::SeqCst) > 0 && *meta.level() <= Level::DEBUG
            }));
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("no other global subscriber in the test process");
    });
}

/// A running capture of every log line the process writes at `debug` and above (every
/// test's: look for your own values in it).
pub struct LogCapture {
    buffer: Buffer,
}

impl LogCapture {
    /// Starts capturing.
    pub fn start() -> Self {
        install();
        let buffer = Buffer::default();
        CAPTURES.lock().expect("captures").push(buffer.clone());
        RUNNING.fetch_add(1, Ordering::SeqCst);
        Self { buffer }
    }

    /// What was captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("capture")).into_owned()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURES
            .lock()
            .expect("captures")
            .retain(|b| !Arc::ptr_eq(b, &self.buffer));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}
