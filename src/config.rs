//! The node's configuration: one TOML file, every key also settable by flag and environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::http::{
    DEFAULT_BODY_STALL_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
};
use crate::registry::{
    DEFAULT_LAYER_GRACE, DEFAULT_MAX_MANIFEST_BYTES, DEFAULT_MAX_UPLOAD_SESSIONS,
    DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT, DEFAULT_UPLOAD_EXPIRY,
};

/// Name of the config file inside a data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts pushes into its own tree and publishes its root under its IPNS name.
    #[default]
    Writer,
    /// Serves only the trees of the names it follows; refuses pushes.
    Replica,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Writer => f.write_str("writer"),
            Role::Replica => f.write_str("replica"),
        }
    }
}

/// Errors reading or writing configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The node's role.
    pub role: Role,
    /// The HTTP endpoint.
    pub http: HttpConfig,
    /// Registry limits.
    pub registry: RegistryConfig,
    /// The IPNS names this node follows, searched in this order after its own tree.
    pub follow: Vec<FollowConfig>,
    /// The embedded IPFS node.
    pub p2p: P2pConfig,
    /// Publishing of the own root.
    pub ipns: IpnsConfig,
    /// Authentication (htpasswd) and access rules of the HTTP API.
    pub auth: AuthConfig,
    /// Memory knobs, for small boards.
    pub memory: MemoryConfig,
    /// The Prometheus endpoint `/metrics`.
    pub metrics: MetricsConfig,
    /// The admin API (`status`, `gc` on a running node).
    pub admin: AdminConfig,
    /// Garbage collection.
    pub gc: GcConfig,
    /// What `/readyz` checks.
    pub health: HealthConfig,
    /// The trustless gateway: serving it, and other nodes' gateways to take content from.
    pub gateway: GatewayConfig,
}

/// The trustless gateway (`/ipfs/`, `/ipns/` on the HTTP port) and the gateways this node
/// takes blocks and records from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Serve `/ipfs/` and `/ipns/` on the HTTP port.
    pub enabled: bool,
    /// Other nodes' gateway URLs to take blocks and followed records from when no peer
    /// provides them (for networks where libp2p is blocked but HTTP passes), in order.
    pub urls: Vec<String>,
    /// Seconds between asking those gateways for the records of followed names.
    pub poll_interval_secs: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: true,
            urls: Vec::new(),
            poll_interval_secs: 30,
        }
    }
}

/// Memory knobs: how much the node caches and keeps in flight (see also `http.max_connections`
/// and `p2p.max_connections`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// MiB of the metadata store (sled) cached in memory.
    pub meta_cache_mib: u64,
    /// Blocks one pull or mirror walk fetches from peers at once (each up to 1 MiB).
    pub fetch_concurrency: usize,
    /// Blocks received over Bitswap that are hashed and stored at once, per peer stream (each
    /// up to 1 MiB).
    pub bitswap_receive_concurrency: usize,
    /// KiB of path lookups and small files (manifests, tag links) of the trees cached in
    /// memory; 0 turns the cache off.
    pub read_cache_kib: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            meta_cache_mib: crate::store::DEFAULT_META_CACHE_BYTES / (1024 * 1024),
            fetch_concurrency: crate::registry::DEFAULT_FETCH_CONCURRENCY,
            bitswap_receive_concurrency: crate::p2p::bitswap::DEFAULT_RECEIVE_CONCURRENCY,
            read_cache_kib: crate::registry::DEFAULT_READ_CACHE_BYTES as u64 / 1024,
        }
    }
}

/// The Prometheus endpoint `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (a 404 when off; nothing else changes).
    pub enabled: bool,
    /// Whether `/metrics` needs no credentials once the htpasswd file holds users; `false`:
    /// any user's credentials (HTTP Basic), as for `GET /v2/`.
    pub anonymous: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            anonymous: true,
        }
    }
}

/// One followed IPNS name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowConfig {
    /// The name (base36 `k51…`, or a peer id).
    pub name: String,
    /// What to fetch ahead of requests.
    #[serde(default)]
    pub mirror: Mirror,
}

/// What a replica fetches of a followed tree before anyone asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mirror {
    /// Nothing: blocks are fetched when a pull needs them.
    #[default]
    None,
    /// The whole tree, as soon as a new root arrives.
    All,
    /// These repositories (with all their blobs).
    Repositories(Vec<String>),
}

impl std::str::FromStr for Mirror {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Mirror::None),
            "all" => Ok(Mirror::All),
            "" => Err("mirror is none, all, or a comma-separated list of repositories".into()),
            list => Ok(Mirror::Repositories(
                list.split(',').map(|r| r.trim().to_owned()).collect(),
            )),
        }
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::None => f.write_str("none"),
            Mirror::All => f.write_str("all"),
            Mirror::Repositories(r) => f.write_str(&r.join(",")),
        }
    }
}

impl Serialize for Mirror {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mirror::Repositories(r) => r.serialize(s),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Mirror {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "none" || w == "all" => {
                w.parse().map_err(serde::de::Error::custom)
            }
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "mirror must be \"none\", \"all\" or a list of repositories, not {w:?}"
            ))),
            Raw::List(list) => Ok(Mirror::Repositories(list)),
        }
    }
}

/// The embedded IPFS node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// Multiaddrs to listen on (TCP and QUIC).
    pub listen: Vec<String>,
    /// Peers to connect to and stay connected with (multiaddrs, ideally ending in /p2p/<id>).
    pub peers: Vec<String>,
    /// Find peers on the local network with mDNS.
    pub mdns: bool,
    /// Seconds to wait for peers to provide a missing block (a fetch with no peer connected
    /// at all gives up after 5 s).
    pub fetch_timeout_secs: u64,
    /// A private network's pre-shared key, a file in kubo's `swarm.key` format; unset:
    /// `<data-dir>/swarm.key` if that exists, else the public network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_key: Option<PathBuf>,
    /// Most established connections in total.
    pub max_connections: u32,
    /// Most established connections with any one peer.
    pub max_connections_per_peer: u32,
    /// Peers dialled first to join a network (multiaddrs ending in /p2p/<id>; /dnsaddr/ names
    /// resolve through DNS). Empty by default: the node announces itself nowhere unless told.
    pub bootstrap: Vec<String>,
    /// Join the public IPFS network (Amino): the bootstrap peers kubo ships are added to
    /// `bootstrap` at start. Ignored, with a warning, in a private network.
    pub public_network: bool,
    /// The public DHT's mode: `auto` (server once AutoNAT confirms a public address, else
    /// client; server when no bootstrap peer is configured, as on a LAN), `server` or `client`.
    pub dht_mode: DhtModeConfig,
    /// Serve as a Circuit Relay v2 relay for other nodes, within `relay`'s limits.
    pub relay_service: bool,
    /// Limits of the relay service.
    pub relay: RelayLimitsConfig,
    /// Ask the router for a port mapping with UPnP (home routers).
    pub upnp: bool,
    /// Exchange blocks (fetch and serve) over relayed connections too: only sensible between
    /// your own nodes, through your own relays whose `relay.max_circuit_bytes` allows it, and
    /// both ends must set it. Off: blocks move over direct connections only.
    pub blocks_over_relay: bool,
}

/// `p2p.dht_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhtModeConfig {
    /// Server once a public address is confirmed (or when no bootstrap peer is configured).
    #[default]
    Auto,
    /// Always answer DHT queries.
    Server,
    /// Never answer DHT queries.
    Client,
}

/// `[p2p.relay]`: what the relay service (`p2p.relay_service`) grants to others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimitsConfig {
    /// Reservations held at once (peers reachable through this relay).
    pub max_reservations: usize,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Relayed connections at once with any one peer.
    pub max_circuits_per_peer: usize,
    /// Seconds a relayed connection may last.
    pub max_circuit_secs: u64,
    /// Bytes a relayed connection may carry (each way); enough for hole punching and records,
    /// not for image layers, unless raised.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimitsConfig {
    fn default() -> Self {
        // libp2p's (and kubo's) defaults for a relay that serves strangers.
        RelayLimitsConfig {
            max_reservations: 128,
            max_circuits: 16,
            max_circuits_per_peer: 4,
            max_circuit_secs: 120,
            max_circuit_bytes: 128 * 1024,
        }
    }
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4011".into(),
                "/ip4/0.0.0.0/udp/4011/quic-v1".into(),
            ],
            peers: Vec::new(),
            mdns: true,
            fetch_timeout_secs: 30,
            swarm_key: None,
            max_connections: crate::p2p::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: crate::p2p::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            bootstrap: Vec::new(),
            public_network: false,
            dht_mode: DhtModeConfig::Auto,
            relay_service: false,
            relay: RelayLimitsConfig::default(),
            upnp: false,
            blocks_over_relay: false,
        }
    }
}

/// Publishing of the own root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpnsConfig {
    /// How long a published record stays valid, in seconds (renewed while the node runs).
    pub record_lifetime_secs: u64,
    /// The TTL readers are told to cache a record for, in seconds.
    pub record_ttl_secs: u64,
    /// How often held records are sent to peers again, in seconds.
    pub republish_interval_secs: u64,
}

impl Default for IpnsConfig {
    fn default() -> Self {
        IpnsConfig {
            record_lifetime_secs: 48 * 3600,
            record_ttl_secs: 60,
            republish_interval_secs: 120,
        }
    }
}

/// The HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the OCI API listens on.
    pub listen: SocketAddr,
    /// Seconds a client has to send a whole request head (and to finish a TLS handshake).
    pub header_read_timeout_secs: u64,
    /// Seconds a keep-alive connection may wait for its next request.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may deliver nothing (or a client read nothing of a response)
    /// before the request fails and the connection closes.
    pub body_stall_timeout_secs: u64,
    /// Most connections open at once (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Serve HTTPS with this certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT.as_secs(),
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT.as_secs(),
            body_stall_timeout_secs: DEFAULT_BODY_STALL_TIMEOUT.as_secs(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

/// HTTPS credentials: PEM files, relative paths taken from the data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Registry limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Largest manifest accepted on push, in bytes.
    pub max_manifest_bytes: u64,
    /// Seconds an upload session may receive nothing before it is removed with its bytes.
    pub upload_expiry_secs: u64,
    /// Most upload sessions open at once.
    pub max_upload_sessions: usize,
    /// Most upload sessions open at once for one client address.
    pub max_upload_sessions_per_client: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            upload_expiry_secs: DEFAULT_UPLOAD_EXPIRY.as_secs(),
            max_upload_sessions: DEFAULT_MAX_UPLOAD_SESSIONS,
            max_upload_sessions_per_client: DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT,
        }
    }
}

/// Authentication and access rules of the HTTP API (checked by `http::auth`, which also
/// validates the rules when a node starts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The htpasswd file (bcrypt entries); a relative path is taken under the data directory.
    /// `None`: `<data-dir>/htpasswd`. Authentication is on as soon as it holds a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<PathBuf>,
    /// Whether pulls need no credentials, where no access rule says otherwise.
    pub anonymous_pull: bool,
    /// Access rules per repository prefix; the longest matching prefix decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            htpasswd: None,
            anonymous_pull: true,
            access: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// The htpasswd file of a node whose data directory is `data_dir`.
    pub fn htpasswd_path(&self, data_dir: &Path) -> PathBuf {
        match &self.htpasswd {
            Some(path) => data_dir.join(path),
            None => data_dir.join(HTPASSWD_FILE),
        }
    }
}

/// Name of the default htpasswd file inside a data directory.
pub const HTPASSWD_FILE: &str = "htpasswd";

/// Who may pull, push and delete in the repositories under one prefix (`[[auth.access]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Repository name prefix, matched at `/` boundaries (`team` and `team/` both match `team`
    /// and `team/app`, not `teamx`); `""` matches every repository.
    pub prefix: String,
    /// Users who may pull; `"*"` is any authenticated user.
    #[serde(default)]
    pub pull: Vec<String>,
    /// Users who may push (and pull); `"*"` is any authenticated user.
    #[serde(default)]
    pub push: Vec<String>,
    /// Users who may delete (and pull); `"*"` is any authenticated user.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Whether pulls need no credentials here; unset: `auth.anonymous_pull`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_pull: Option<bool>,
}

/// The admin API: reachable only from this machine, through a unix socket and, if set, a
/// loopback TCP port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The unix socket (mode 0600); a relative path is taken under the data directory;
    /// `""` turns it off.
    pub socket: PathBuf,
    /// Also serve the admin API on this TCP address, which must be a loopback address.
    /// Every local user can reach a TCP port; only the node's user can reach the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from(ADMIN_SOCKET_FILE),
            listen: None,
        }
    }
}

impl AdminConfig {
    /// The admin socket of a node whose data directory is `data_dir`, unless turned off.
    pub fn socket_path(&self, data_dir: &Path) -> Option<PathBuf> {
        (!self.socket.as_os_str().is_empty()).then(|| data_dir.join(&self.socket))
    }
}

/// Name of the default admin socket inside a data directory.
pub const ADMIN_SOCKET_FILE: &str = "admin.sock";

/// Garbage collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between garbage collections of a running node; 0 turns periodic collection off.
    pub interval_secs: u64,
    /// Seconds a blob linked into a repository must have been referenced by none of its
    /// manifests before a collection unlinks it (pushes upload blobs before their manifest).
    pub layer_grace_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_secs: 24 * 3600,
            layer_grace_secs: DEFAULT_LAYER_GRACE.as_secs(),
        }
    }
}

/// What `/readyz` checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The node is not ready when the data directory's file system has fewer bytes free (for
    /// unprivileged users) than this.
    pub min_free_bytes: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            min_free_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Writes the config file atomically (temporary file, sync, rename).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |error| ConfigError::Io {
            path: path.to_owned(),
            error,
        };
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// The data directory used when none is given: `$XDG_DATA_HOME/ipns-registry` or
/// `~/.local/share/ipns-registry`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("ipns-registry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_forms() {
        let c = Config::parse(
            "[[follow]]\nname = \"a\"\n[[follow]]\nname = \"b\"\nmirror = \"all\"\n[[follow]]\nname = \"c\"\nmirror = [\"x/y\"]\n",
        )
        .expect("valid");
        assert_eq!(c.follow[0].mirror, Mirror::None);
        assert_eq!(c.follow[1].mirror, Mirror::All);
        assert_eq!(c.follow[2].mirror, Mirror::Repositories(vec!["x/y".into()]));
        assert!(Config::parse("[[follow]]\nname = \"a\"\nmirror = \"some\"\n").is_err());
        let text = toml::to_string(&c).expect("serialise");
        assert_eq!(Config::parse(&text).expect("round trip"), c);
    }

    #[test]
    fn defaults_and_examples() {
        assert_eq!(
            Config::parse("").expect("empty is valid"),
            Config::default()
        );
        assert!(Config::parse("unknown = 1").is_err());
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config"))
            .expect("config/ exists")
        {
            let path = entry.expect("entry").path();
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
