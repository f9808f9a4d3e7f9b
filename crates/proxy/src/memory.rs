//! Giving freed memory back to the system after a burst of connections.
//!
//! The binary allocates with mimalloc (see `main.rs`): under load the proxy's allocations are
//! made on the runtime's workers and freed on the capture writer's thread, a pattern glibc's
//! malloc serves with a lock per call and mimalloc without one. Either allocator keeps what a
//! burst of streams freed for reuse, so without a collection a proxy's RSS stays at its
//! busiest moment's long after the streams have closed. mimalloc collects per thread: a
//! collection asked for once is carried out by each thread the next time it goes idle.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many collections have been asked for.
static ASKED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last request this thread carried out.
    static DONE: Cell<u64> = const { Cell::new(0) };
}

/// Asks every thread to give back what it holds freed, and does it for this one now.
pub fn release_freed_memory() {
    ASKED.fetch_add(1, Ordering::Relaxed);
    when_idle();
}

/// Carries out a collection asked for since this thread last did one; cheap otherwise. For
/// threads about to wait: the runtime's workers when they park, the writer before it blocks.
pub fn when_idle() {
    let asked = ASKED.load(Ordering::Relaxed);
    if DONE.get() == asked {
        return;
    }
    DONE.set(asked);
    // SAFETY: mi_collect has no preconditions and frees nothing still in use. In a process
    // that allocates with another allocator it only tidies mimalloc's own, empty, heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// The multi-threaded runtime the proxy runs on, its workers collecting when they park.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(when_idle)
        .build()
}
