//! The tokio runtime of both binaries: on one CPU (as when pinned for a
//! benchmark) a single-threaded runtime, which spares the hand-offs between
//! threads that even a one-worker multi-threaded runtime makes (BENCHMARKS.md).

/// A runtime with `threads` worker threads (default: one per CPU this process
/// may use); with one, a single-threaded runtime.
pub fn build(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}
