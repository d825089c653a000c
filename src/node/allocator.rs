//! How the C allocator keeps memory: few arenas, so freed memory is reused, not hoarded, and
//! what is free goes back to the system while the node idles.
//!
//! glibc's malloc gives threads their own arenas (up to eight per core) and keeps what is freed
//! in each for later use by that arena. The node's blocking threads come and go (block writes,
//! hashing, sled), and every new one may take a fresh arena: after a few pushes an idle writer
//! held about 8 MiB more than with two arenas (measured with `scripts/footprint.sh`), which is
//! what a small board notices. Two arenas keep contention low for the two runtime workers.

use std::time::Duration;

/// Arenas the allocator may use unless `MALLOC_ARENA_MAX` says otherwise.
pub const DEFAULT_MALLOC_ARENAS: i32 = 2;

/// Caps glibc's malloc arenas at [`DEFAULT_MALLOC_ARENAS`], unless the environment sets
/// `MALLOC_ARENA_MAX` (glibc reads that itself, and an operator's choice wins). Call it before
/// any thread starts: arenas made before it stay. Elsewhere than glibc it does nothing.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes a tuning parameter of the allocator; it is called before
        // the process starts any thread.
        let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, DEFAULT_MALLOC_ARENAS) };
        if set != 1 {
            tracing::debug!("mallopt(M_ARENA_MAX) was refused; the allocator keeps its default");
        }
    }
}

/// How often memory the allocator holds free is handed back to the system.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Every [`TRIM_INTERVAL`], hands the memory glibc's malloc holds free back to the system
/// (`malloc_trim`). By itself malloc returns only the free end of each heap; the buffers of a
/// push or a pull freed below live allocations stay resident: an idle writer after a few pushes
/// held 2-4 MiB of them (`scripts/footprint.sh`), a tenth of what a small board grants it. A trim
/// is cheap (it walks the free lists) and costs at most a page fault per page reused later.
/// Elsewhere than glibc it returns at once.
pub async fn return_freed_memory_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the
            // system; it takes the allocator's locks itself. It runs off the async runtime's
            // threads, as it may walk many megabytes of free lists.
            let trimmed = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
            if trimmed.is_err() {
                return;
            }
        }
    }
}
