//! Unix socket paths that may be long. A socket address holds at most 108 bytes of path
//! (`sun_path`), so a data directory deep in a file system would keep the node from binding its
//! admin socket. A longer path is reached through an open descriptor of its directory:
//! `/proc/self/fd/N/NAME` is short and names the same file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Paths at least this long go through the directory's descriptor (`sun_path` is 108 bytes,
/// with its terminating NUL).
const LONGEST_DIRECT: usize = 100;

/// A path to bind or connect a unix socket at, short enough for a socket address.
pub(super) struct SocketPath {
    path: PathBuf,
    /// Keeps the descriptor that `path` goes through open.
    _dir: Option<File>,
}

impl SocketPath {
    /// The socket address for `path`. Blocking when the path is long (opens its directory).
    pub(super) fn new(path: &Path) -> std::io::Result<Self> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(Self::direct(path));
        };
        if path.as_os_str().len() < LONGEST_DIRECT {
            return Ok(Self::direct(path));
        }
        let dir = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?;
        Ok(SocketPath {
            path: PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name),
            _dir: Some(dir),
        })
    }

    fn direct(path: &Path) -> Self {
        SocketPath {
            path: path.to_owned(),
            _dir: None,
        }
    }

    /// The path to hand to `bind` or `connect`.
    pub(super) fn as_path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_is_bound_and_reached_through_its_directory() {
        let base = tempfile::tempdir().unwrap();
        let deep = base.path().join("d".repeat(120));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join("admin.sock");
        let bind_at = SocketPath::new(&path).unwrap();
        assert!(bind_at.as_path().as_os_str().len() < LONGEST_DIRECT);
        let listener = std::os::unix::net::UnixListener::bind(bind_at.as_path()).unwrap();
        assert!(path.exists(), "the socket is at its real path");
        let connect_to = SocketPath::new(&path).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(connect_to.as_path()).unwrap();
        listener.accept().unwrap();
    }

    #[test]
    fn a_short_path_is_used_as_it_is() {
        let path = Path::new("/run/x/admin.sock");
        assert_eq!(SocketPath::new(path).unwrap().as_path(), path);
    }
}
