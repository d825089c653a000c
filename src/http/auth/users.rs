//! The users a node knows: its htpasswd file, read again when it changes, and password checks
//! with a short-lived cache of the ones that succeeded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::htpasswd::{verify_password, HtpasswdError, Users};

/// How often a request may look at the file for changes (one `stat`).
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a successful password check is remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(120);
/// How many successful checks are remembered at most.
const VERIFIED_MAX: usize = 1024;

/// A bcrypt hash of a random password at the default cost, checked against when the user is
/// unknown so that the answer takes as long as for a known user.
const UNKNOWN_USER_HASH: &str = "$2y$10$NzB80LP4bF6.9KwcuwHzl.zB3UQTQVIMy.oeqxfPrF0sJZR2Ek7U.";

/// What identifies one version of the file: a rewrite by `user add` (a rename) changes the
/// inode, an edit in place the size or modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileVersion {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileVersion {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// What a look at the file found.
enum Look {
    Unchanged,
    Absent,
    Changed(Users, FileVersion),
}

fn look(path: &Path, known: Option<&FileVersion>) -> Result<Look, HtpasswdError> {
    let io = |error| HtpasswdError::Io {
        path: path.to_owned(),
        error,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Look::Absent),
        Err(e) => return Err(io(e)),
        Ok(meta) if Some(&FileVersion::of(&meta)) == known => return Ok(Look::Unchanged),
        Ok(_) => {}
    }
    // Version and text from one open file, so that they belong together.
    let mut file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Look::Absent),
        other => other.map_err(io)?,
    };
    let version = FileVersion::of(&file.metadata().map_err(io)?);
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(io)?;
    Ok(Look::Changed(Users::parse(&text, path)?, version))
}

struct Snapshot {
    users: Arc<Users>,
    version: Option<FileVersion>,
    checked: Instant,
    /// The last reload error logged, so that a broken file is reported once, not every second.
    error: Option<String>,
}

/// The users of one htpasswd file, kept current.
pub struct UserDirectory {
    path: PathBuf,
    snapshot: RwLock<Snapshot>,
    reloading: tokio::sync::Mutex<()>,
}

impl UserDirectory {
    /// Reads the file at `path` (absent means no users). A file that does not parse is an
    /// error here, at start-up; later, a broken file keeps the users read before.
    pub async fn open(path: PathBuf) -> Result<Self, HtpasswdError> {
        let read = path.clone();
        let look = tokio::task::spawn_blocking(move || look(&read, None))
            .await
            .map_err(|e| HtpasswdError::Io {
                path: path.clone(),
                error: std::io::Error::other(e),
            })??;
        let (users, version) = match look {
            Look::Changed(users, version) => (users, Some(version)),
            Look::Absent | Look::Unchanged => (Users::default(), None),
        };
        Ok(UserDirectory {
            path,
            snapshot: RwLock::new(Snapshot {
                users: Arc::new(users),
                version,
                checked: Instant::now(),
                error: None,
            }),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users as last read, without looking at the file.
    pub fn loaded(&self) -> Arc<Users> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .users
            .clone()
    }

    /// The current users: the file is looked at again (one `stat`, off the runtime threads)
    /// when the last look is older than a second, and read again if it changed.
    pub async fn current(&self) -> Arc<Users> {
        let known = {
            let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
            if snapshot.checked.elapsed() < RELOAD_CHECK {
                return snapshot.users.clone();
            }
            snapshot.version.clone()
        };
        // One request looks; the others go on with what is loaded.
        let Ok(_looking) = self.reloading.try_lock() else {
            return self.loaded();
        };
        let path = self.path.clone();
        let outcome = tokio::task::spawn_blocking(move || look(&path, known.as_ref())).await;
        let mut snapshot = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        snapshot.checked = Instant::now();
        match outcome {
            Ok(Ok(Look::Unchanged)) => {}
            Ok(Ok(Look::Absent)) => {
                if !snapshot.users.is_empty() {
                    tracing::warn!(file = %self.path.display(), "the htpasswd file is gone: authentication is off");
                }
                snapshot.users = Arc::new(Users::default());
                snapshot.version = None;
                snapshot.error = None;
            }
            Ok(Ok(Look::Changed(users, version))) => {
                match (snapshot.users.is_empty(), users.is_empty()) {
                    (true, false) => {
                        tracing::info!(file = %self.path.display(), users = users.len(), "authentication is on")
                    }
                    (false, true) => {
                        tracing::warn!(file = %self.path.display(), "the htpasswd file holds no user: authentication is off")
                    }
                    _ => {
                        tracing::info!(file = %self.path.display(), users = users.len(), "users reloaded")
                    }
                }
                snapshot.users = Arc::new(users);
                snapshot.version = Some(version);
                snapshot.error = None;
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                if snapshot.error.as_ref() != Some(&message) {
                    tracing::error!(error = %message, "the htpasswd file cannot be used: keeping the users read before");
                    snapshot.error = Some(message);
                }
            }
            Err(e) => tracing::error!(error = %e, "looking at the htpasswd file failed"),
        }
        snapshot.users.clone()
    }
}

/// Checks passwords against bcrypt hashes off the runtime threads, a few at a time, and
/// remembers the successful checks for a short while: bcrypt costs tens of milliseconds by
/// design, which every request of an authenticated pull would otherwise pay.
pub struct PasswordChecker {
    /// Keys remembered checks, so that the cache holds nothing a password can be recovered
    /// from faster than from the hash itself without also reading this process's memory.
    secret: [u8; 32],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Bounds the CPU a flood of wrong passwords can take.
    slots: Semaphore,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordChecker {
    /// A checker with an empty cache.
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PasswordChecker {
            secret,
            verified: Mutex::new(HashMap::new()),
            slots: Semaphore::new(cores),
        }
    }

    /// The cache key of a check: it covers the hash entry, so a changed password or a user
    /// removed and added again is checked afresh.
    fn key(&self, user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Whether `password` is `user`'s in `users`. Failures are never cached.
    pub async fn check(&self, users: &Users, user: &str, password: &str) -> bool {
        let hash = users.hash(user).map(str::to_owned);
        let key = hash.as_deref().map(|h| self.key(user, password, h));
        if let Some(key) = &key {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified
                .get(key)
                .is_some_and(|until| *until > Instant::now())
            {
                return true;
            }
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let known = hash.is_some();
        let matched = tokio::task::spawn_blocking(move || {
            let hash = hash.as_deref().unwrap_or(UNKNOWN_USER_HASH);
            verify_password(&password, hash)
        })
        .await
        .unwrap_or(false);
        let matched = matched && known;
        if let (true, Some(key)) = (matched, key) {
            self.remember(key);
        }
        matched
    }

    fn remember(&self, key: [u8; 32]) {
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, until| *until > now);
        }
        if verified.len() >= VERIFIED_MAX {
            // Still full of live entries: the one closest to expiry goes.
            if let Some(oldest) = verified
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| *k)
            {
                verified.remove(&oldest);
            }
        }
        verified.insert(key, now + VERIFIED_TTL);
    }

    /// How many successful checks are remembered now (for tests of the bound).
    pub fn remembered(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::htpasswd::hash_password;

    #[tokio::test]
    async fn successes_are_cached_within_bounds_failures_are_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("htpasswd");
        let hash = hash_password("right", 4).expect("hash");
        std::fs::write(&path, format!("alice:{hash}\n")).expect("write");
        let directory = UserDirectory::open(path).await.expect("open");
        let users = directory.current().await;
        let checker = PasswordChecker::new();
        assert!(!checker.check(&users, "alice", "wrong").await);
        assert!(!checker.check(&users, "nobody", "right").await);
        assert_eq!(checker.remembered(), 0);
        assert!(checker.check(&users, "alice", "right").await);
        assert!(checker.check(&users, "alice", "right").await);
        assert_eq!(checker.remembered(), 1);
        for i in 0..VERIFIED_MAX + 10 {
            checker.remember(checker.key("u", &i.to_string(), "h"));
        }
        assert_eq!(checker.remembered(), VERIFIED_MAX);
    }

    #[tokio::test]
    async fn a_broken_file_keeps_the_users_read_before() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "bob:$apr1$x$y\n").expect("write");
        assert!(UserDirectory::open(path.clone()).await.is_err());
        let hash = hash_password("pw", 4).expect("hash");
        std::fs::write(&path, format!("alice:{hash}\n")).expect("write");
        let directory = UserDirectory::open(path.clone()).await.expect("open");
        std::fs::write(&path, format!("alice:{hash}\nbob:$apr1$x$y\n")).expect("write");
        // Force a look now instead of waiting for the next second.
        directory.snapshot.write().expect("lock").checked -= RELOAD_CHECK;
        let users = directory.current().await;
        assert!(users.contains("alice") && !users.contains("bob"));
        std::fs::remove_file(&path).expect("remove");
        directory.snapshot.write().expect("lock").checked -= RELOAD_CHECK;
        assert!(directory.current().await.is_empty());
    }
}
