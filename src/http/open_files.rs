//! The process's limit on open file descriptors, and how many connections fit under it.
//!
//! Every connection is a descriptor, and a busy one may hold two more (an upload file, a block
//! being read or written); blocks, sled, libp2p and the runtime need theirs too. The connection
//! cap is kept well below the limit so that accepting clients never starves the rest.

/// Descriptors kept for everything but connections, at most (a quarter of a small limit).
const RESERVE: u64 = 128;

/// Raises the soft limit on open files to the hard limit (as Go's runtime does), and returns
/// the soft limit in force; `None` where it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is narrower than u64 on some targets
        Some(limit.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The most connections to serve at once: `configured`, lowered so that every connection can
/// hold two descriptors while a reserve stays free for the rest of the node.
pub fn connection_cap(configured: usize, open_file_limit: Option<u64>) -> usize {
    let Some(limit) = open_file_limit else {
        return configured.max(1);
    };
    let reserve = RESERVE.min(limit / 4);
    let fits = (limit.saturating_sub(reserve) / 2).max(1);
    configured.clamp(1, usize::try_from(fits).unwrap_or(usize::MAX))
}

/// Whether an `accept` failure means the process or system ran out of descriptors or memory
/// (worth backing off for), rather than one client's connection failing.
pub fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fits_under_the_limit() {
        assert_eq!(connection_cap(1024, Some(256)), 96);
        assert_eq!(connection_cap(1024, Some(1024)), 448);
        assert_eq!(connection_cap(1024, Some(65536)), 1024);
        assert_eq!(connection_cap(10, Some(65536)), 10);
        assert_eq!(connection_cap(1024, Some(4)), 1);
        assert_eq!(connection_cap(0, None), 1);
    }
}
