//! The node's signing key on disk: one file holding the libp2p protobuf-encoded private key (the
//! format kubo's keystore uses), readable by the owner only, replaced atomically.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libp2p::identity::Keypair;

/// Why a key could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, writing or syncing the key file failed.
    #[error("key file {path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The file does not hold a protobuf-encoded private key this build supports.
    #[error("key file {path} is not a usable private key: {reason}")]
    Decode {
        /// The file involved.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The key type cannot be written in the protobuf format (libp2p cannot encode RSA keys).
    #[error("key cannot be encoded for storage: {0}")]
    Encode(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Loads the key at `path`, or creates a new ed25519 key there when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, KeyError> {
    match load(path) {
        Err(KeyError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let keypair = Keypair::generate_ed25519();
    let encoded = keypair
        .to_protobuf_encoding()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let temp = write_temp(path, &encoded)?;
    // Publish without clobbering: a hard link fails if another process created the key
    // meanwhile, in which case that key wins and ours is discarded. Filesystems without hard
    // links fall back to rename.
    let linked = fs::hard_link(&temp, path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return load(path),
        Err(_) => {
            let temp = write_temp(path, &encoded)?;
            fs::rename(&temp, path).map_err(io_error(path))?;
        }
    }
    sync_parent(path)?;
    tracing::info!(path = %path.display(), peer_id = %keypair.public().to_peer_id(), "created a new ed25519 key");
    Ok(keypair)
}

/// Loads the private key stored at `path`.
pub fn load(path: &Path) -> Result<Keypair, KeyError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    warn_if_readable_by_others(path);
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyError::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Stores `keypair` at `path` (mode 0600), replacing any key there atomically: a temporary file
/// in the same directory is written and synced, then renamed over `path`.
pub fn save(path: &Path, keypair: &Keypair) -> Result<(), KeyError> {
    let encoded = keypair
        .to_protobuf_encoding()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let temp = write_temp(path, &encoded)?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(io_error(path)(e));
    }
    sync_parent(path)
}

/// Writes `bytes` to a new owner-only file beside `path` and syncs it; returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, KeyError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io_error(path)(io::Error::other("key path has no file name")))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    // Unique per process and call, so concurrent writers never share a temp file.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    temp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = path.with_file_name(temp_name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created 0600 from the start, so the key is never readable by others, even briefly.
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp)?;
        // A leftover temp file from a crashed run keeps its old mode: set it again.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(io_error(&temp)(e))
        }
    }
}

/// Syncs the directory holding `path`, so the rename or link that put it there is durable.
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "private key file is accessible to other users");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let created = load_or_create(&path).unwrap();
        let loaded = load_or_create(&path).unwrap();
        assert_eq!(created.public(), loaded.public());
        assert_eq!(load(&path).unwrap().public(), created.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);

        let other = Keypair::generate_secp256k1();
        save(&path, &other).unwrap();
        assert_eq!(load(&path).unwrap().public(), other.public());
        assert_eq!(load_or_create(&path).unwrap().public(), other.public());
    }

    #[test]
    fn load_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        assert!(matches!(load(&path), Err(KeyError::Io { .. })));
        fs::write(&path, b"not a key").unwrap();
        assert!(matches!(load(&path), Err(KeyError::Decode { .. })));
        assert!(matches!(
            load_or_create(&path),
            Err(KeyError::Decode { .. })
        ));
    }
}
