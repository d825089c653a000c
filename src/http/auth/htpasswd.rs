//! The htpasswd file: one `user:hash` line per user, bcrypt hashes as `htpasswd -B` writes
//! them. A serving node reads it strictly ([`Users`]); `ipns-registry user` edits it leniently
//! ([`HtpasswdFile`]), so that a file with a bad entry can still be repaired with it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The bcrypt cost `ipns-registry user add` uses unless told otherwise: about 50 ms per
/// verification on a small server core, paid once per login thanks to the verification cache.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// The longest password bcrypt takes into account, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Errors reading, parsing or writing an htpasswd file.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A line of the file is not a usable entry.
    #[error("{path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A user name that cannot be stored.
    #[error("user name {name:?}: {reason}")]
    UserName {
        /// The name.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// A password that cannot be stored.
    #[error("password: {0}")]
    Password(String),
    /// Hashing failed (no randomness for the salt, or a cost out of range).
    #[error("hashing the password: {0}")]
    Hash(bcrypt::BcryptError),
}

// Written out rather than `#[from]`, which would also make the inner error the `source`: its
// text is already in the message, and error-chain printers (anyhow's `{:#}`) would repeat it.
impl From<bcrypt::BcryptError> for HtpasswdError {
    fn from(e: bcrypt::BcryptError) -> Self {
        HtpasswdError::Hash(e)
    }
}

/// Checks that `name` can be a user: what htpasswd files and the access rules can both hold.
pub fn check_user_name(name: &str) -> Result<(), HtpasswdError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > 255 {
        Some("must be at most 255 bytes")
    } else if name.contains(':') {
        Some("must not contain ':' (it separates the name from the hash)")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain spaces or control characters")
    } else if name == "*" {
        Some("\"*\" means any authenticated user in access rules")
    } else if name.starts_with('#') {
        Some("must not start with '#' (a comment line)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HtpasswdError::UserName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What kind of hash an entry holds, for messages about entries that are not bcrypt.
fn scheme_of(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "an Apache MD5 ($apr1$)"
    } else if hash.starts_with("{SHA}") {
        "a SHA-1 ({SHA})"
    } else if hash.starts_with("$1$") {
        "an MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-crypt ($5$/$6$)"
    } else if hash.starts_with("$2x$") {
        "a $2x$ bcrypt (the variant marking hashes of a buggy implementation)"
    } else if hash.starts_with("$2") {
        "a malformed bcrypt"
    } else {
        "a crypt(3) or plain-text"
    }
}

/// Whether `hash` is a well-formed bcrypt hash of a kind `htpasswd -B` and common libraries
/// write: `$2y$`, `$2b$` or `$2a$`, a cost of 4 to 31, then 53 characters of salt and hash.
pub fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    if b.len() != 60
        || !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$"))
    {
        return false;
    }
    let cost_ok = b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && (4..=31).contains(&((b[4] - b'0') as u32 * 10 + (b[5] - b'0') as u32));
    cost_ok
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
}

/// Hashes `password` for an htpasswd entry: bcrypt with `cost`, written as `$2y$`, the
/// prefix Apache's `htpasswd -B` writes.
pub fn hash_password(password: &str, cost: u32) -> Result<String, HtpasswdError> {
    if password.is_empty() {
        return Err(HtpasswdError::Password("must not be empty".into()));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(HtpasswdError::Password(format!(
            "{} bytes is longer than the {MAX_PASSWORD_BYTES} bytes bcrypt uses (it would ignore the rest)",
            password.len()
        )));
    }
    Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY))
}

/// Whether `password` matches the bcrypt `hash`. Slow on purpose (that is bcrypt): call it
/// off the async runtime's threads.
pub fn verify_password(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// The users of an htpasswd file, as a serving node reads it: every entry a bcrypt hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// Parses the text of the file at `path` (named in errors). Blank lines and lines starting
    /// with `#` are skipped; any other line must be `user:bcrypt-hash`. An entry of another
    /// hash scheme is an error, not a user silently left out.
    pub fn parse(text: &str, path: &Path) -> Result<Self, HtpasswdError> {
        let mut hashes = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |message: String| HtpasswdError::Invalid {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(invalid("not a `user:hash` entry".into()));
            };
            check_user_name(user).map_err(|e| invalid(e.to_string()))?;
            if !is_bcrypt(hash) {
                return Err(invalid(format!(
                    "user {user:?} has {} hash; only bcrypt ($2y$, $2b$, $2a$) is accepted: \
                     set a new password with `ipns-registry user add {user}` or `htpasswd -B`",
                    scheme_of(hash)
                )));
            }
            if hashes.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(invalid(format!("user {user:?} is listed twice")));
            }
        }
        Ok(Users { hashes })
    }

    /// The hash of `user`, if the file lists the user.
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    /// Whether `user` is listed.
    pub fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    /// How many users are listed.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no user is listed (authentication is off).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

/// One line of an htpasswd file being edited.
#[derive(Debug, Clone)]
enum Line {
    /// `user:hash` (any hash scheme).
    Entry { user: String, hash: String },
    /// A blank line, a comment, or something else kept as it was.
    Other(String),
}

/// An htpasswd file being edited by `ipns-registry user`: entries keep their order, and lines
/// it does not understand are kept as they are.
#[derive(Debug, Clone)]
pub struct HtpasswdFile {
    path: PathBuf,
    lines: Vec<Line>,
}

impl HtpasswdFile {
    /// Reads the file at `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> Result<Self, HtpasswdError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                return Err(HtpasswdError::Io {
                    path: path.to_owned(),
                    error,
                })
            }
        };
        let lines = text
            .lines()
            .map(|raw| {
                let line = raw.trim();
                match line.split_once(':') {
                    Some((user, hash)) if !line.starts_with('#') && !user.is_empty() => {
                        Line::Entry {
                            user: user.to_owned(),
                            hash: hash.to_owned(),
                        }
                    }
                    _ => Line::Other(raw.to_owned()),
                }
            })
            .collect();
        Ok(HtpasswdFile {
            path: path.to_owned(),
            lines,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The users in file order, each with whether its hash is one a node accepts.
    pub fn users(&self) -> Vec<(&str, bool)> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Entry { user, hash } => Some((user.as_str(), is_bcrypt(hash))),
                Line::Other(_) => None,
            })
            .collect()
    }

    /// Sets `user`'s hash, adding the user if needed; returns whether the user is new.
    pub fn set_hash(&mut self, user: &str, new_hash: String) -> Result<bool, HtpasswdError> {
        check_user_name(user)?;
        let mut found = false;
        // Every entry of the user is replaced by one, where the first stood.
        self.lines.retain_mut(|l| match l {
            Line::Entry { user: u, hash } if u == user => {
                if found {
                    return false;
                }
                found = true;
                *hash = new_hash.clone();
                true
            }
            _ => true,
        });
        if !found {
            self.lines.push(Line::Entry {
                user: user.to_owned(),
                hash: new_hash,
            });
        }
        Ok(!found)
    }

    /// Removes `user`; returns whether it was there.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(l, Line::Entry { user: u, .. } if u == user));
        self.lines.len() != before
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            match line {
                Line::Entry { user, hash } => {
                    text.push_str(user);
                    text.push(':');
                    text.push_str(hash);
                }
                Line::Other(raw) => text.push_str(raw),
            }
            text.push('\n');
        }
        text
    }

    /// Writes the file atomically, readable by its owner only (mode 0600): a temporary file
    /// in the same directory, synced, then renamed over the old one, so a running node never
    /// reads half a file.
    pub fn write(&self) -> Result<(), HtpasswdError> {
        let io = |error| HtpasswdError::Io {
            path: self.path.clone(),
            error,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "htpasswd".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = (|| {
            let mut file = options.open(&tmp)?;
            // A leftover temporary file keeps its old mode through `open`: set it again.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(self.to_text().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            // The rename itself is durable once the directory is synced.
            std::fs::File::open(&dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `htpasswd -nbB -C 5 alice wonderland` (Apache 2.4).
    const APACHE_ALICE: &str = "alice:$2y$05$Q5kzK9WIGkKXS2B7vAFbA.oXXrFd9ZBmINbmLTNF2nnMMnHUpoB8m";

    #[test]
    fn strict_parse_accepts_bcrypt_only() {
        let path = Path::new("htpasswd");
        let users = Users::parse(&format!("# team\n\n{APACHE_ALICE}\r\n"), path).expect("valid");
        assert_eq!(users.len(), 1);
        let hash = users.hash("alice").expect("alice");
        assert!(verify_password("wonderland", hash));
        assert!(!verify_password("Wonderland", hash));

        for (line, what) in [
            ("bob:$apr1$abc$defghijklmnopqrstuvwxy", "Apache MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:plain", "plain-text"),
            (
                "bob:$2x$05$Nc3uf8AIQwb3qGa/WZ/qqu2.GdOaQ4kSOJnG3o7I0RWn/wjvu.QRq",
                "$2x$",
            ),
            (
                "bob:$2y$03$Nc3uf8AIQwb3qGa/WZ/qqu2.GdOaQ4kSOJnG3o7I0RWn/wjvu.QRq",
                "malformed",
            ),
            ("bob", "user:hash"),
            (
                ": $2y$05$Nc3uf8AIQwb3qGa/WZ/qqu2.GdOaQ4kSOJnG3o7I0RWn/wjvu.QRq",
                "empty",
            ),
        ] {
            let err = Users::parse(&format!("{APACHE_ALICE}\n{line}\n"), path)
                .expect_err(line)
                .to_string();
            assert!(err.contains("line 2"), "{err}");
            assert!(err.contains(what), "{line}: {err}");
        }
        let twice = format!("{APACHE_ALICE}\n{APACHE_ALICE}\n");
        assert!(Users::parse(&twice, path)
            .expect_err("duplicate")
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn editing_keeps_other_lines_and_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub").join("htpasswd");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, format!("# comment\n{APACHE_ALICE}\nbob:$apr1$x$y\n")).expect("seed");
        let mut file = HtpasswdFile::read(&path).expect("read");
        assert_eq!(file.users(), vec![("alice", true), ("bob", false)]);
        let hash = hash_password("s3cret", 4).expect("hash");
        assert!(hash.starts_with("$2y$04$") && is_bcrypt(&hash), "{hash}");
        assert!(!file.set_hash("bob", hash.clone()).expect("set"));
        assert!(file.set_hash("carol", hash).expect("add"));
        assert!(file.remove("alice"));
        assert!(!file.remove("alice"));
        file.write().expect("write");
        let text = std::fs::read_to_string(&path).expect("reread");
        assert!(text.starts_with("# comment\nbob:$2y$04$"), "{text}");
        let users = Users::parse(&text, &path).expect("strictly valid now");
        assert!(users.contains("bob") && users.contains("carol") && !users.contains("alice"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn names_and_passwords_are_checked() {
        for bad in ["", "a:b", "a b", "*", "#x", "tab\t"] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        check_user_name("ci-bot@example.org").expect("valid");
        assert!(hash_password("", 4).is_err());
        assert!(hash_password(&"x".repeat(73), 4).is_err());
        assert!(hash_password(&"x".repeat(72), 4).is_ok());
    }
}
