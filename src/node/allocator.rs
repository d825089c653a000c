//! How the C allocator keeps memory: few arenas, so freed memory is reused, not hoarded.
//!
//! glibc's malloc gives threads their own arenas (up to eight per core) and keeps what is freed
//! in each for later use by that arena. The node's blocking threads come and go (block writes,
//! hashing, sled), and every new one may take a fresh arena: after a few pushes an idle writer
//! held about 8 MiB more than with two arenas (measured with `scripts/footprint.sh`), which is
//! what a small board notices. Two arenas keep contention low for the two runtime workers.

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
