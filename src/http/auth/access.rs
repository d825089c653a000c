//! Access rules: who may pull, push and delete in which repositories, from `[auth]` and
//! `[[auth.access]]` in the config.
//!
//! Semantics (the README says the same):
//! - The rule for a repository is the `[[auth.access]]` entry with the longest prefix that
//!   matches its name at a `/` boundary (`team` and `team/` both match `team` and `team/app`,
//!   not `teamx`; `""` matches everything). Without one, the default rule applies: every
//!   authenticated user may pull, push and delete, and anonymous pulls follow
//!   `auth.anonymous_pull`.
//! - In a rule, `pull`, `push` and `delete` list user names, or `"*"` for any authenticated
//!   user; a list left out is empty. `anonymous_pull` left out is `auth.anonymous_pull`.
//! - Pushing or deleting includes pulling (clients read what they write: a push checks which
//!   blobs exist first), and so does anonymous pulling: whatever anonymous callers may do, every
//!   user may do.

use std::collections::HashSet;

use crate::config::AuthConfig;
use crate::registry::RepoName;

use super::htpasswd::check_user_name;

/// Who a request comes from, once its credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials (or empty ones).
    Anonymous,
    /// A user whose password matched.
    User(String),
}

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and push manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Right {
    /// The word for it in messages and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Pull => "pull",
            Right::Push => "push",
            Right::Delete => "delete",
        }
    }
}

/// A rule that does not hold up, found when the config is loaded.
#[derive(Debug, thiserror::Error)]
#[error("auth.access[{index}] (prefix {prefix:?}): {message}")]
pub struct AccessError {
    /// Position of the rule in `[[auth.access]]`, from 0.
    pub index: usize,
    /// Its prefix as written.
    pub prefix: String,
    /// What is wrong.
    pub message: String,
}

/// The users one list of a rule grants a right to.
#[derive(Debug, Clone, Default)]
struct Grant {
    any_user: bool,
    users: HashSet<String>,
}

impl Grant {
    fn parse(names: &[String], field: &str) -> Result<Self, String> {
        let mut grant = Grant::default();
        for name in names {
            if name == "*" {
                grant.any_user = true;
            } else {
                check_user_name(name).map_err(|e| format!("{field}: {e}"))?;
                grant.users.insert(name.clone());
            }
        }
        Ok(grant)
    }

    fn everyone() -> Self {
        Grant {
            any_user: true,
            users: HashSet::new(),
        }
    }

    fn includes(&self, user: &str) -> bool {
        self.any_user || self.users.contains(user)
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// Without a trailing `/`; empty for "every repository".
    prefix: String,
    pull: Grant,
    push: Grant,
    delete: Grant,
    anonymous_pull: bool,
}

impl Rule {
    fn matches(&self, repo: &str) -> bool {
        self.prefix.is_empty()
            || repo
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn allows(&self, caller: &Caller, right: Right) -> bool {
        match (caller, right) {
            (Caller::Anonymous, Right::Pull) => self.anonymous_pull,
            (Caller::Anonymous, _) => false,
            (Caller::User(user), Right::Pull) => {
                self.anonymous_pull
                    || self.pull.includes(user)
                    || self.push.includes(user)
                    || self.delete.includes(user)
            }
            (Caller::User(user), Right::Push) => self.push.includes(user),
            (Caller::User(user), Right::Delete) => self.delete.includes(user),
        }
    }
}

/// The validated access rules of a node.
#[derive(Debug, Clone)]
pub struct AccessRules {
    /// Longest prefix first, so the first match is the one that decides.
    rules: Vec<Rule>,
    default: Rule,
}

impl AccessRules {
    /// Validates the rules of `config`: prefixes that can match repository names, each once,
    /// and user lists of valid names or `"*"`.
    pub fn new(config: &AuthConfig) -> Result<Self, AccessError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (index, entry) in config.access.iter().enumerate() {
            let error = |message: String| AccessError {
                index,
                prefix: entry.prefix.clone(),
                message,
            };
            let prefix = entry
                .prefix
                .strip_suffix('/')
                .unwrap_or(&entry.prefix)
                .to_owned();
            if !prefix.is_empty() && RepoName::parse(&prefix).is_none() {
                return Err(error(
                    "not a repository name or a leading part of one ending at a `/` \
                     (lowercase letters and digits, separated by `.`, `_`, `__`, `-` or `/`)"
                        .into(),
                ));
            }
            if let Some(earlier) = rules.iter().position(|r| r.prefix == prefix) {
                return Err(error(format!(
                    "the same prefix as auth.access[{earlier}]: merge the two rules"
                )));
            }
            rules.push(Rule {
                prefix,
                pull: Grant::parse(&entry.pull, "pull").map_err(error)?,
                push: Grant::parse(&entry.push, "push").map_err(error)?,
                delete: Grant::parse(&entry.delete, "delete").map_err(error)?,
                anonymous_pull: entry.anonymous_pull.unwrap_or(config.anonymous_pull),
            });
        }
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(AccessRules {
            rules,
            default: Rule {
                prefix: String::new(),
                pull: Grant::everyone(),
                push: Grant::everyone(),
                delete: Grant::everyone(),
                anonymous_pull: config.anonymous_pull,
            },
        })
    }

    fn rule_for(&self, repo: &str) -> &Rule {
        self.rules
            .iter()
            .find(|r| r.matches(repo))
            .unwrap_or(&self.default)
    }

    /// Whether `caller` may do `right` in `repo`.
    pub fn allows(&self, caller: &Caller, right: Right, repo: &RepoName) -> bool {
        self.rule_for(repo.as_str()).allows(caller, right)
    }

    /// Whether `caller` may pull from every repository there is or could be: every rule
    /// lets it (the default one too, unless a `""` prefix rule replaces it).
    pub fn allows_pull_everywhere(&self, caller: &Caller) -> bool {
        let default_applies = !self.rules.iter().any(|r| r.prefix.is_empty());
        self.rules.iter().all(|r| r.allows(caller, Right::Pull))
            && (!default_applies || self.default.allows(caller, Right::Pull))
    }

    /// The user names the rules mention (not `"*"`), for warnings about users that the
    /// htpasswd file does not list.
    pub fn named_users(&self) -> HashSet<&str> {
        self.rules
            .iter()
            .flat_map(|r| [&r.pull, &r.push, &r.delete])
            .flat_map(|g| g.users.iter().map(String::as_str))
            .collect()
    }

    /// Whether any rule is configured beyond the default.
    pub fn is_default(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(toml: &str) -> Result<AccessRules, AccessError> {
        AccessRules::new(&Config::parse(toml).expect("config parses").auth)
    }

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).expect("repository name")
    }

    fn user(name: &str) -> Caller {
        Caller::User(name.into())
    }

    const TEAM: &str = r#"
[[auth.access]]
prefix = "team/"
pull = ["*"]
push = ["alice"]
delete = ["alice"]

[[auth.access]]
prefix = "team/secret"
anonymous_pull = false
pull = ["alice"]

[[auth.access]]
prefix = "ci"
anonymous_pull = false
push = ["ci-bot"]
"#;

    #[test]
    fn longest_prefix_at_a_slash_decides() {
        let r = rules(TEAM).expect("valid");
        let anon = Caller::Anonymous;
        // Default rule: anonymous pulls, every user writes.
        assert!(r.allows(&anon, Right::Pull, &repo("other/app")));
        assert!(!r.allows(&anon, Right::Push, &repo("other/app")));
        assert!(r.allows(&user("bob"), Right::Push, &repo("other/app")));
        assert!(r.allows(&user("bob"), Right::Delete, &repo("teamx/app")));
        // team/: any user pulls, only alice writes; anonymous pulls by the global default.
        assert!(r.allows(&anon, Right::Pull, &repo("team/app")));
        assert!(r.allows(&user("bob"), Right::Pull, &repo("team/app")));
        assert!(!r.allows(&user("bob"), Right::Push, &repo("team/app")));
        assert!(r.allows(&user("alice"), Right::Push, &repo("team/app")));
        assert!(r.allows(&user("alice"), Right::Delete, &repo("team")));
        // team/secret and below: alice only, not even bob's pull; the longer prefix wins.
        for name in ["team/secret", "team/secret/x"] {
            assert!(!r.allows(&anon, Right::Pull, &repo(name)), "{name}");
            assert!(!r.allows(&user("bob"), Right::Pull, &repo(name)), "{name}");
            assert!(r.allows(&user("alice"), Right::Pull, &repo(name)), "{name}");
            assert!(
                !r.allows(&user("alice"), Right::Push, &repo(name)),
                "{name}"
            );
        }
        assert!(r.allows(&anon, Right::Pull, &repo("team/secrets")));
        // ci: pushing includes pulling.
        assert!(r.allows(&user("ci-bot"), Right::Pull, &repo("ci/build")));
        assert!(!r.allows(&user("bob"), Right::Pull, &repo("ci/build")));
        assert!(!r.allows(&anon, Right::Pull, &repo("ci")));

        assert!(!r.allows_pull_everywhere(&anon));
        assert!(!r.allows_pull_everywhere(&user("alice")));
        let names = r.named_users();
        assert!(names.contains("alice") && names.contains("ci-bot") && names.len() == 2);
    }

    #[test]
    fn a_root_rule_replaces_the_default() {
        let r = rules(
            "[auth]\nanonymous_pull = false\n[[auth.access]]\nprefix = \"\"\npull = [\"*\"]\npush = [\"alice\"]\n",
        )
        .expect("valid");
        assert!(!r.allows(&Caller::Anonymous, Right::Pull, &repo("a")));
        assert!(r.allows(&user("bob"), Right::Pull, &repo("a")));
        assert!(!r.allows(&user("bob"), Right::Push, &repo("a")));
        assert!(!r.allows(&user("alice"), Right::Delete, &repo("a")));
        assert!(r.allows_pull_everywhere(&user("bob")));
        assert!(!r.allows_pull_everywhere(&Caller::Anonymous));
        let open = rules("").expect("no rules");
        assert!(open.is_default());
        assert!(open.allows_pull_everywhere(&Caller::Anonymous));
    }

    #[test]
    fn the_example_config_holds_up() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/auth.toml");
        let config = Config::load(std::path::Path::new(path)).expect("config/auth.toml");
        let r = AccessRules::new(&config.auth).expect("valid rules");
        assert!(r.allows(&Caller::Anonymous, Right::Pull, &repo("team/app")));
        assert!(!r.allows(&Caller::Anonymous, Right::Pull, &repo("team/secret/app")));
        assert!(r.allows(&user("bob"), Right::Push, &repo("team/app")));
        assert!(!r.allows(&user("bob"), Right::Delete, &repo("team/app")));
        assert!(!r.allows(&user("bob"), Right::Push, &repo("team/secret/app")));
        assert!(r.allows(&user("carol"), Right::Pull, &repo("ci/build")));
    }

    #[test]
    fn bad_rules_are_refused_with_their_place() {
        for (toml, what) in [
            (
                "[[auth.access]]\nprefix = \"Team/\"\n",
                "not a repository name",
            ),
            (
                "[[auth.access]]\nprefix = \"team//\"\n",
                "not a repository name",
            ),
            (
                "[[auth.access]]\nprefix = \"a\"\n[[auth.access]]\nprefix = \"a/\"\n",
                "auth.access[0]",
            ),
            (
                "[[auth.access]]\nprefix = \"a\"\npush = [\"x:y\"]\n",
                "push",
            ),
            ("[[auth.access]]\nprefix = \"a\"\npull = [\"\"]\n", "empty"),
        ] {
            let err = rules(toml).expect_err(toml).to_string();
            assert!(err.contains(what), "{toml}: {err}");
        }
        assert!(Config::parse("[[auth.access]]\nprefix = \"a\"\nwrite = []\n").is_err());
        assert!(Config::parse("[[auth.access]]\npull = []\n").is_err());
    }
}
