//! Access control of the API: who the caller is (HTTP Basic against an htpasswd file) and what
//! the access rules let them do, decided before a handler runs. Handlers, and the registry
//! below them, get a [`Verdict`] (what may be read), never a user.
//!
//! Authentication is on as soon as the htpasswd file holds a user; until then every request is
//! let through, as before this module existed.

pub mod access;
mod credentials;
pub mod htpasswd;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};
use serde_json::json;

use crate::config::AuthConfig;
use crate::registry::RepoName;

pub use access::{AccessError, AccessRules, Caller, Right};
pub use htpasswd::{HtpasswdError, HtpasswdFile, Users};
pub use users::PasswordChecker;

use super::error::ApiError;
use super::route::Route;
use credentials::Presented;
use users::UserDirectory;

/// The challenge of every 401: `docker login` and `podman login` send credentials only after
/// they have seen it.
const CHALLENGE: &str = "Basic realm=\"ipns-registry\"";

/// Errors setting up access control.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An access rule is invalid.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The htpasswd file cannot be used.
    #[error(transparent)]
    Htpasswd(#[from] HtpasswdError),
}

/// What a request asks to do, as far as access control is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// `GET /v2/`: the version check, which is also how clients test a login.
    Login,
    /// `GET /v2/_catalog`: lists what the caller may pull.
    Catalog,
    /// Read from a repository.
    Pull(&'a RepoName),
    /// Write to a repository (uploads, manifests, tags).
    Push(&'a RepoName),
    /// Delete from a repository.
    Delete(&'a RepoName),
    /// Read blocks and records through the trustless gateway: any content of any repository
    /// (a CID says nothing of where it belongs), so only for callers who may pull everywhere.
    Gateway,
}

impl<'a> Action<'a> {
    /// The action of `method` on `route`; `None` where the endpoint does not answer the method
    /// (the handler refuses it, whoever asks).
    pub fn of(route: &'a Route, method: &Method) -> Option<Self> {
        let read = method == Method::GET || method == Method::HEAD;
        Some(match route {
            Route::Base if read => Action::Login,
            Route::Catalog if read => Action::Catalog,
            Route::Tags(repo) | Route::Referrers(repo, _) if read => Action::Pull(repo),
            Route::Manifest(repo, _)
            | Route::ManifestByInvalidReference(repo, _)
            | Route::Blob(repo, _)
                if read =>
            {
                Action::Pull(repo)
            }
            Route::Manifest(repo, _) | Route::ManifestByInvalidReference(repo, _)
                if method == Method::PUT =>
            {
                Action::Push(repo)
            }
            Route::Manifest(repo, _)
            | Route::ManifestByInvalidReference(repo, _)
            | Route::Blob(repo, _)
                if method == Method::DELETE =>
            {
                Action::Delete(repo)
            }
            Route::UploadStart(repo) if method == Method::POST => Action::Push(repo),
            Route::Upload(repo, _)
                if [
                    Method::GET,
                    Method::HEAD,
                    Method::PATCH,
                    Method::PUT,
                    Method::DELETE,
                ]
                .contains(method) =>
            {
                Action::Push(repo)
            }
            _ => return None,
        })
    }

    /// Whether the action changes the registry.
    pub fn writes(&self) -> bool {
        matches!(self, Action::Push(_) | Action::Delete(_))
    }

    fn target(&self) -> Option<(&'a RepoName, Right)> {
        match *self {
            Action::Pull(repo) => Some((repo, Right::Pull)),
            Action::Push(repo) => Some((repo, Right::Push)),
            Action::Delete(repo) => Some((repo, Right::Delete)),
            Action::Login | Action::Catalog | Action::Gateway => None,
        }
    }
}

/// What an admitted request may read: handlers that list repositories or take content from a
/// second repository (a mount) ask it.
#[derive(Debug, Clone)]
pub struct Verdict {
    scope: Scope,
}

#[derive(Debug, Clone)]
enum Scope {
    /// Authentication is off: everything.
    Everything,
    /// What the rules let this caller do.
    Caller(Caller, Arc<AccessRules>),
}

impl Verdict {
    /// The verdict where access control is off.
    pub fn unrestricted() -> Self {
        Verdict {
            scope: Scope::Everything,
        }
    }

    /// Whether the caller may pull from `repo`.
    pub fn may_pull(&self, repo: &RepoName) -> bool {
        match &self.scope {
            Scope::Everything => true,
            Scope::Caller(caller, rules) => rules.allows(caller, Right::Pull, repo),
        }
    }

    /// Whether the caller may pull from every repository (a mount of a blob found anywhere).
    pub fn may_pull_everywhere(&self) -> bool {
        match &self.scope {
            Scope::Everything => true,
            Scope::Caller(caller, rules) => rules.allows_pull_everywhere(caller),
        }
    }
}

/// The access control of one node: its users and its rules.
pub struct Auth {
    users: UserDirectory,
    rules: Arc<AccessRules>,
    checker: PasswordChecker,
}

impl Auth {
    /// Validates `config`'s rules and reads its htpasswd file (under `data_dir` unless the
    /// path is absolute). Errors here stop a node from starting.
    pub async fn open(config: &AuthConfig, data_dir: &Path) -> Result<Self, AuthError> {
        let rules = AccessRules::new(config)?;
        let users = UserDirectory::open(config.htpasswd_path(data_dir)).await?;
        let auth = Auth {
            users,
            rules: Arc::new(rules),
            checker: PasswordChecker::new(),
        };
        auth.report();
        Ok(auth)
    }

    /// Logs what is in force, and what looks like a mistake.
    fn report(&self) {
        let users = self.users.loaded();
        let file = self.users.path().display();
        if users.is_empty() {
            if !self.rules.is_default() {
                tracing::warn!(%file, "access rules are configured but the htpasswd file holds no user: authentication is off and anyone may pull, push and delete until a user is added");
            } else {
                tracing::info!(%file, "no users: authentication is off (add one with `ipns-registry user add`)");
            }
            return;
        }
        tracing::info!(%file, users = users.len(), "authentication is on");
        for name in self.rules.named_users() {
            if !users.contains(name) {
                tracing::warn!(user = name, %file, "an access rule names a user the htpasswd file does not list");
            }
        }
    }

    /// The htpasswd file.
    pub fn htpasswd_path(&self) -> PathBuf {
        self.users.path().to_owned()
    }

    /// Decides whether a request with `headers` may do `action`: a [`Verdict`], or the 401
    /// (`UNAUTHORIZED`, with the Basic challenge) or 403 (`DENIED`) to answer.
    ///
    /// No credentials (or empty ones) make an anonymous caller; wrong credentials are a 401
    /// even where anonymous callers would be let in, so a client with a mistyped password
    /// learns it at once instead of being served as someone else.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        action: Action<'_>,
    ) -> Result<Verdict, ApiError> {
        let users = self.users.current().await;
        if users.is_empty() {
            return Ok(Verdict::unrestricted());
        }
        let caller = match credentials::presented(headers.get(http::header::AUTHORIZATION)) {
            Presented::Nothing => Caller::Anonymous,
            Presented::Unusable => {
                return Err(unauthorized(
                    "the Authorization header must hold HTTP Basic credentials",
                    &action,
                ))
            }
            Presented::Basic { user, password } => {
                if !self.checker.check(&users, &user, &password).await {
                    tracing::info!(%user, "authentication failed");
                    return Err(unauthorized("invalid user name or password", &action));
                }
                Caller::User(user)
            }
        };
        if action == Action::Gateway && !self.rules.allows_pull_everywhere(&caller) {
            return Err(match caller {
                Caller::Anonymous => unauthorized(
                    "authentication required: the gateway serves content of every repository",
                    &action,
                ),
                Caller::User(user) => ApiError::denied(format!(
                    "user {user:?} may not pull every repository, which the gateway serves"
                )),
            });
        }
        let Some((repo, right)) = action.target() else {
            if action == Action::Login && caller == Caller::Anonymous {
                return Err(unauthorized(
                    "authentication required: log in with a user of this registry",
                    &action,
                ));
            }
            return Ok(Verdict {
                scope: Scope::Caller(caller, self.rules.clone()),
            });
        };
        if self.rules.allows(&caller, right, repo) {
            return Ok(Verdict {
                scope: Scope::Caller(caller, self.rules.clone()),
            });
        }
        match caller {
            Caller::Anonymous => Err(unauthorized(
                format!("authentication required to {} {repo}", right.as_str()),
                &action,
            )),
            Caller::User(user) => {
                tracing::info!(%user, %repo, right = right.as_str(), "access denied");
                Err(
                    ApiError::denied(format!("user {user:?} may not {} {repo}", right.as_str()))
                        .detail(json!({ "repository": repo.as_str(), "action": right.as_str() })),
                )
            }
        }
    }
}

fn unauthorized(message: impl Into<String>, action: &Action<'_>) -> ApiError {
    let err = ApiError::unauthorized(message, HeaderValue::from_static(CHALLENGE));
    match action.target() {
        Some((repo, right)) => {
            err.detail(json!({ "repository": repo.as_str(), "action": right.as_str() }))
        }
        None => err,
    }
}
