//! The command line (clap). The binary's edge: errors become `anyhow` messages here.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use ipns_registry::admin::{
    AdminClient, AdminEndpoint, AdminError, ExportRequest, GcRequest, ImportRequest, StatusReport,
    StatusRequest,
};
use ipns_registry::config::{default_data_dir, Config, FollowConfig, Mirror, Role, CONFIG_FILE};
use ipns_registry::http::auth::htpasswd::{self, HtpasswdFile};
use ipns_registry::names::{keys, Follower, IpnsName};
use ipns_registry::node::{followed_names, key_path, Node, StartOptions, SystemdNotifier};
use ipns_registry::p2p::PUBLIC_BOOTSTRAP;
use ipns_registry::registry::{GcOptions, GcReport, Registry, RegistryOptions, Stores};

/// A peer-to-peer replicated OCI container registry node.
///
/// The registry's state is an IPFS UnixFS tree kept in the data directory; `serve` answers
/// the OCI Distribution API (docker, podman, skopeo, oras) on 127.0.0.1:5000 by default.
/// A writer publishes its tree's root under its IPNS name (`id` prints it); replicas follow
/// IPNS names and fetch blocks from any peer.
#[derive(Parser)]
#[command(name = "ipns-registry", version, propagate_version = true)]
struct Cli {
    /// Data directory (blocks, metadata, config.toml). Default: ~/.local/share/ipns-registry.
    #[arg(
        long,
        global = true,
        env = "IPNS_REGISTRY_DATA_DIR",
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,

    /// Config file to use instead of <data-dir>/config.toml.
    #[arg(long, global = true, env = "IPNS_REGISTRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log lines on stderr: `text` for people (coloured on a terminal), `json` for journald
    /// and log collectors (one JSON object per line).
    #[arg(
        long,
        global = true,
        env = "IPNS_REGISTRY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the data directory, its config.toml and the node's key.
    Init {
        /// `writer` accepts pushes and publishes its root under its IPNS name; `replica` only
        /// serves the names it follows.
        #[arg(long, value_enum, default_value = "writer")]
        role: RoleArg,
        /// Join the public IPFS network: write the public (Amino) bootstrap peers that kubo
        /// ships into p2p.bootstrap. Without it the node dials no bootstrap peer.
        #[arg(long)]
        public_network: bool,
    },
    /// Run the node: serve the OCI Distribution API, publish (writer) and follow names.
    /// Initialises the data directory as a writer on first use.
    Serve(ServeArgs),
    /// Print the node's peer id and IPNS name (creating its key if needed).
    Id {
        /// Print JSON: {"peer_id", "ipns_name", "role", "p2p_listen"}.
        #[arg(long)]
        json: bool,
    },
    /// Manage the IPNS names this node follows (stored in config.toml; restart to apply).
    Follow {
        #[command(subcommand)]
        action: FollowAction,
    },
    /// Ask the running node (through its admin API) for its peers, own record, followed names,
    /// mirror progress, readiness and last garbage collection. Exits 1 when it reports a
    /// problem.
    Status {
        /// Print the node's status report as JSON.
        #[arg(long)]
        json: bool,
        /// Reach the admin API on this loopback TCP address (the node's admin.listen) instead
        /// of the data directory's admin socket.
        #[arg(long, env = "IPNS_REGISTRY_ADMIN_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Collect garbage: remove blobs no repository needs from the tree, then delete every block
    /// not reachable from the own root or a followed root held, and expired uploads. Works on
    /// a running node (through its admin API) and on a stopped one (opening its stores).
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Seconds a blob linked into a repository must have been referenced by none of its
        /// manifests before it is unlinked, for this run (config: gc.layer_grace_secs). 0 removes
        /// such blobs at once: only when no pushes run.
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Reach the running node's admin API on this loopback TCP address (its admin.listen)
        /// instead of the data directory's admin socket.
        #[arg(long, env = "IPNS_REGISTRY_ADMIN_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Manage the users of the HTTP API in the htpasswd file (auth.htpasswd, default
    /// <data-dir>/htpasswd). Authentication is on as soon as the file holds a user; a running
    /// node notices changes to the file within a second, no restart needed.
    User {
        /// The htpasswd file, if not the configured one (config: auth.htpasswd).
        #[arg(
            long,
            env = "IPNS_REGISTRY_HTPASSWD",
            value_name = "FILE",
            global = true
        )]
        htpasswd: Option<PathBuf>,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Write images to a CAR file (CARv1) for an air-gapped move: every block they need and
    /// a tree root holding just them. IMAGE is REPO (every tag of it), REPO:TAG or
    /// REPO@DIGEST. Works on a running node (through its admin API) and on a stopped one.
    Export {
        /// The images.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// The CAR file to write (`-`: standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// No progress bar (there is none either when standard output is not a terminal).
        #[arg(short, long)]
        quiet: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Reach the running node's admin API on this loopback TCP address (its admin.listen)
        /// instead of the data directory's admin socket.
        #[arg(long, env = "IPNS_REGISTRY_ADMIN_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Make the images of a CAR file written by `export` pullable from this node (a writer),
    /// with no network needed: every block is checked against its CID, every blob against its
    /// digest and every manifest as a push would be, then all is linked in one commit; a CAR
    /// that fails any check imports nothing. Works on a running node (through its admin API)
    /// and on a stopped one (a new data directory becomes a writer's).
    Import {
        /// The CAR file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// No progress bar (there is none either when standard output is not a terminal).
        #[arg(short, long)]
        quiet: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Reach the running node's admin API on this loopback TCP address (its admin.listen)
        /// instead of the data directory's admin socket.
        #[arg(long, env = "IPNS_REGISTRY_ADMIN_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Verify the stored tree (the node must be stopped): every block present, every blob
    /// matching its digest, every tag and link pointing at existing content. Exits 1 on problems.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the OCI API (config: http.listen).
    #[arg(long, env = "IPNS_REGISTRY_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Largest manifest accepted on push, in bytes (config: registry.max_manifest_bytes).
    #[arg(long, env = "IPNS_REGISTRY_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    max_manifest_bytes: Option<u64>,
    /// libp2p listen multiaddr, repeatable (config: p2p.listen), e.g. /ip4/0.0.0.0/tcp/4011.
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    p2p_listen: Vec<String>,
    /// Peer to connect to and keep connected, repeatable (config: p2p.peers),
    /// e.g. /ip4/192.0.2.7/tcp/4011/p2p/12D3KooW...
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// Bootstrap peer to join a network through, repeatable; replaces the config's list for
    /// this run (config: p2p.bootstrap), e.g. /ip4/198.51.100.11/tcp/4011/p2p/12D3KooW...
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// IPNS name to follow, repeatable, in lookup order; replaces the config's list for this
    /// run (config: [[follow]] name).
    #[arg(long = "follow", value_name = "NAME")]
    follow: Vec<String>,
    /// What to fetch ahead of requests for the --follow names: none, all, or a comma-separated
    /// list of repositories (config: [[follow]] mirror).
    #[arg(long, value_name = "none|all|REPOS", requires = "follow")]
    mirror: Option<Mirror>,
    /// Do not discover peers on the local network (config: p2p.mdns = false).
    #[arg(long)]
    no_mdns: bool,
    /// Another node's trustless gateway to take blocks and followed records from, repeatable
    /// (config: gateway.urls), e.g. http://192.0.2.7:5000: for networks where libp2p is blocked
    /// but HTTP passes.
    #[arg(long = "gateway", value_name = "URL")]
    gateways: Vec<String>,
    /// The htpasswd file of the API's users (config: auth.htpasswd; default
    /// <data-dir>/htpasswd). Authentication is on as soon as it holds a user; changes to the
    /// file (`ipns-registry user add`) apply to the running node within a second.
    #[arg(long, env = "IPNS_REGISTRY_HTPASSWD", value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// Become the writer of the own IPNS name again after a second writer was seen: forget the
    /// recorded conflict, accept writes and publish above the newest record peers hold. Stop
    /// the other writer first: if it still runs, it sees this node's record and stops in turn,
    /// and whatever it published since is no longer in the tree the name points to.
    #[arg(long)]
    take_over_name: bool,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user, or set a new password for an existing one. The password is read from the
    /// terminal (twice, not echoed) or, with --password-stdin, as one line from standard input;
    /// never from the command line.
    Add {
        /// The user name (no ':', spaces or control characters).
        name: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// bcrypt cost (4-31): each step doubles the time a password check takes.
        #[arg(long, default_value_t = htpasswd::DEFAULT_BCRYPT_COST, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
    /// Remove a user.
    Remove {
        /// The user name.
        name: String,
    },
    /// Print the user names, one per line.
    List,
}

#[derive(Subcommand)]
enum FollowAction {
    /// Follow a name (appended last in lookup order).
    Add {
        /// The IPNS name (k51… or a peer id).
        name: String,
        /// What to fetch ahead of requests: none, all, or a comma-separated list of repositories.
        #[arg(long, default_value = "none")]
        mirror: Mirror,
    },
    /// Stop following a name.
    Remove {
        /// The IPNS name.
        name: String,
    },
    /// List the followed names in lookup order.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Writer,
    Replica,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Writer => Role::Writer,
            RoleArg::Replica => Role::Replica,
        }
    }
}

/// Runs the command line and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // Before the runtime starts its threads (see node::allocator).
    ipns_registry::node::limit_malloc_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log filter when RUST_LOG is not set.
const DEFAULT_LOG_FILTER: &str = "info,libp2p_kad::behaviour=error";

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    // Kademlia warns "Failed to trigger bootstrap: No known peers" at every start and every
    // five minutes on a DHT without peers (the WAN DHT on any LAN, both DHTs on a lone node);
    // its only other warning is the same condition for record replication. RUST_LOG overrides.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only where a person reads them: not in files, pipes or the journal.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // Fields at the top level of each object, beside "timestamp", "level" and "target";
        // the spans (request, peer session) in "spans".
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

struct Paths {
    data_dir: PathBuf,
    config: PathBuf,
}

impl Paths {
    fn of(cli: &Cli) -> Self {
        let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
        let config = cli
            .config
            .clone()
            .unwrap_or_else(|| data_dir.join(CONFIG_FILE));
        Paths { data_dir, config }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::of(&cli);
    match cli.command {
        Command::Init {
            role,
            public_network,
        } => {
            init(&paths, role.into(), public_network)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let mut config = load_or_init(&paths)?;
            let options = StartOptions {
                take_over_name: args.take_over_name,
            };
            apply_serve_args(&mut config, args)?;
            serve(&paths, config, options).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::User { htpasswd, action } => {
            let file = match htpasswd {
                Some(file) => file,
                None => load_config(&paths)?.auth.htpasswd_path(&paths.data_dir),
            };
            // Hashing and file I/O: off the runtime's threads.
            tokio::task::spawn_blocking(move || user(&file, action)).await?
        }
        Command::Check { json } => check(&paths, json).await,
        Command::Id { json } => id(&paths, json),
        Command::Follow { action } => follow(&paths, action),
        Command::Status { json, listen } => status(&paths, json, listen).await,
        Command::Gc {
            dry_run,
            grace,
            json,
            listen,
        } => {
            let request = GcRequest {
                dry_run,
                layer_grace_secs: grace,
            };
            gc(&paths, request, json, listen).await
        }
        Command::Export {
            images,
            output,
            quiet,
            json,
            listen,
        } => {
            let request = ExportRequest { images };
            export(&paths, request, &output, quiet, json, listen).await
        }
        Command::Import {
            file,
            quiet,
            json,
            listen,
        } => import(&paths, &file, quiet, json, listen).await,
    }
}

fn apply_serve_args(config: &mut Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(max) = args.max_manifest_bytes {
        config.registry.max_manifest_bytes = max;
    }
    if !args.p2p_listen.is_empty() {
        config.p2p.listen = args.p2p_listen;
    }
    if !args.peers.is_empty() {
        config.p2p.peers = args.peers;
    }
    if !args.bootstrap.is_empty() {
        config.p2p.bootstrap = args.bootstrap;
    }
    if args.no_mdns {
        config.p2p.mdns = false;
    }
    if !args.gateways.is_empty() {
        config.gateway.urls = args.gateways;
    }
    if let Some(htpasswd) = args.htpasswd {
        // A path on the command line is relative to where the command runs, not to the data
        // directory (as a relative path in the config file is).
        let absolute = std::path::absolute(&htpasswd)
            .with_context(|| format!("--htpasswd {}", htpasswd.display()))?;
        config.auth.htpasswd = Some(absolute);
    }
    if !args.follow.is_empty() {
        let mirror = args.mirror.unwrap_or_default();
        config.follow = args
            .follow
            .into_iter()
            .map(|name| {
                IpnsName::parse(&name)
                    .map(|n| FollowConfig {
                        name: n.to_string(),
                        mirror: mirror.clone(),
                    })
                    .map_err(|e| anyhow::anyhow!("--follow {name}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    Ok(())
}

fn init(paths: &Paths, role: Role, public_network: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    if paths.config.exists() {
        let existing = Config::load(&paths.config)?;
        if existing.role != role {
            bail!(
                "{} is already initialised as a {} node",
                paths.data_dir.display(),
                existing.role
            );
        }
        println!(
            "{} is already initialised ({role})",
            paths.data_dir.display()
        );
        if public_network && existing.p2p.bootstrap.is_empty() && !existing.p2p.public_network {
            println!(
                "its config is left as it is: to join the public network, set public_network = true under [p2p] in {}",
                paths.config.display()
            );
        }
        return Ok(());
    }
    let mut config = Config {
        role,
        ..Config::default()
    };
    if public_network {
        config.p2p.bootstrap = PUBLIC_BOOTSTRAP.iter().map(|a| a.to_string()).collect();
    }
    let keypair = keys::load_or_create(&key_path(&paths.data_dir))?;
    config.save(&paths.config)?;
    let name = IpnsName::from_peer_id(keypair.public().to_peer_id());
    println!(
        "initialised a {role} node in {} (config: {})",
        paths.data_dir.display(),
        paths.config.display()
    );
    if role == Role::Writer {
        println!("its IPNS name: {name}");
    }
    Ok(())
}

fn load_config(paths: &Paths) -> anyhow::Result<Config> {
    if paths.config.exists() {
        Ok(Config::load(&paths.config)?)
    } else {
        Ok(Config::default())
    }
}

fn id(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(paths)?;
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    let keypair = keys::load_or_create(&key_path(&paths.data_dir))?;
    let peer_id = keypair.public().to_peer_id();
    let name = IpnsName::from_peer_id(peer_id);
    if json {
        let doc = serde_json::json!({
            "peer_id": peer_id.to_string(),
            "ipns_name": name.to_string(),
            "role": config.role.to_string(),
            "p2p_listen": config.p2p.listen,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("peer id:   {peer_id}");
        println!("IPNS name: {name}");
        println!("role:      {}", config.role);
    }
    Ok(ExitCode::SUCCESS)
}

fn follow(paths: &Paths, action: FollowAction) -> anyhow::Result<ExitCode> {
    let mut config = load_config(paths)?;
    match action {
        FollowAction::Add { name, mirror } => {
            let name = IpnsName::parse(&name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let text = name.to_string();
            if let Some(existing) = config.follow.iter_mut().find(|f| f.name == text) {
                existing.mirror = mirror;
            } else {
                config.follow.push(FollowConfig {
                    name: text.clone(),
                    mirror,
                });
            }
            std::fs::create_dir_all(&paths.data_dir)
                .with_context(|| format!("creating {}", paths.data_dir.display()))?;
            config.save(&paths.config)?;
            println!("following {text} (restart the node to apply)");
        }
        FollowAction::Remove { name } => {
            let text = IpnsName::parse(&name)
                .map(|n| n.to_string())
                .unwrap_or(name.clone());
            let before = config.follow.len();
            config.follow.retain(|f| f.name != text && f.name != name);
            if config.follow.len() == before {
                bail!("{name} is not followed");
            }
            config.save(&paths.config)?;
            println!("no longer following {text} (restart the node to apply)");
        }
        FollowAction::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&config.follow)?);
            } else if config.follow.is_empty() {
                println!("no followed names");
            } else {
                for (i, f) in config.follow.iter().enumerate() {
                    println!("{}. {} (mirror: {})", i + 1, f.name, f.mirror);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where this data directory's node serves its admin API: `listen` if given, else the
/// configured socket, else the configured TCP address.
fn admin_endpoint(
    paths: &Paths,
    config: &Config,
    listen: Option<SocketAddr>,
) -> anyhow::Result<AdminEndpoint> {
    if let Some(addr) = listen {
        return Ok(AdminEndpoint::Tcp(addr));
    }
    if let Some(path) = config.admin.socket_path(&paths.data_dir) {
        return Ok(AdminEndpoint::Socket(path));
    }
    match config.admin.listen {
        Some(addr) => Ok(AdminEndpoint::Tcp(addr)),
        None => bail!(
            "the admin API is off in {} (admin.socket = \"\" and no admin.listen)",
            paths.config.display()
        ),
    }
}

/// Asks the node for its status report and prints it.
async fn status(paths: &Paths, json: bool, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let config = load_config(paths)?;
    let client = AdminClient::new(admin_endpoint(paths, &config, listen)?)?;
    let report = client
        .call(&StatusRequest::default())
        .await
        .context("asking the node for its status (is it running?)")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&report);
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_status(report: &StatusReport) {
    println!("role:      {}", report.role);
    println!("peer id:   {}", report.peer_id);
    println!("IPNS name: {}", report.ipns_name);
    println!("peers:     {}", report.peers.len());
    for peer in &report.peers {
        match report.connections.iter().find(|c| &c.peer == peer) {
            Some(c) if c.blocks => println!("  {peer} ({})", c.connection),
            Some(c) => println!(
                "  {peer} ({}, no blocks: only a relay connects us)",
                c.connection
            ),
            None => println!("  {peer}"),
        }
    }
    let reach = &report.reachability;
    for addr in &reach.public {
        println!("reachable: {addr}");
    }
    for addr in &reach.relayed {
        println!("relayed:   {addr}");
    }
    if !reach.dht.is_empty() {
        println!("public DHT: {}", reach.dht);
    }
    if let Some(own) = &report.own {
        let sequence = own.sequence.map_or("-".into(), |s| s.to_string());
        println!("own tree:  root {} sequence {sequence}", own.root);
    }
    for f in &report.followed {
        println!("follows:   {}", f.name);
        match &f.root {
            Some(root) => {
                let age = f
                    .age_secs
                    .map_or("since before the last start".to_owned(), |a| {
                        format!("{a}s ago")
                    });
                let sequence = f.sequence.map_or("-".into(), |s| s.to_string());
                println!("  sequence {sequence}, root {root}, accepted {age}");
            }
            None => println!("  not resolved yet"),
        }
        match &f.mirror_progress {
            Some(m) => println!(
                "  mirror {}: {}, {}/{} blobs, {} blocks, {} bytes",
                f.mirror,
                m.state,
                m.progress.blobs_verified,
                m.progress.blobs_total,
                m.progress.blocks,
                m.progress.bytes
            ),
            None => println!("  mirror {}", f.mirror),
        }
    }
    if let Some(disk) = &report.disk {
        println!(
            "disk:      {} of {} bytes free",
            disk.available_bytes, disk.total_bytes
        );
    }
    let every = match report.gc.interval_secs {
        0 => "periodic gc off".to_owned(),
        secs => format!("gc every {secs}s"),
    };
    match &report.gc.last {
        Some(last) => println!(
            "gc:        {every}; last freed {} blocks ({} bytes) in {} ms",
            last.sweep.blocks_freed, last.sweep.bytes_freed, last.duration_ms
        ),
        None => println!("gc:        {every}; none since the start"),
    }
    if let Some(error) = &report.gc.last_error {
        println!("  last gc failed: {error}");
    }
    println!("ready:     {}", if report.ready { "yes" } else { "no" });
    if let Some(refused) = &report.writes_refused {
        println!("writes:    refused: {refused}");
    }
    for problem in &report.problems {
        println!("PROBLEM:   {problem}");
    }
}

/// Collects garbage through the running node's admin API, or, when no node answers on the
/// data directory's socket, in the stopped node's stores.
async fn gc(
    paths: &Paths,
    request: GcRequest,
    json: bool,
    listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(paths)?;
    let endpoint = admin_endpoint(paths, &config, listen);
    let running = match endpoint {
        // An address given or configured names a running node: no fallback.
        Ok(AdminEndpoint::Tcp(addr)) => Some(AdminClient::new(AdminEndpoint::Tcp(addr))?),
        Ok(AdminEndpoint::Socket(path)) if path.exists() => {
            Some(AdminClient::new(AdminEndpoint::Socket(path))?)
        }
        _ => None,
    };
    let report = match running {
        Some(client) => match client.call(&request).await {
            Ok(report) => report,
            // A socket nobody listens on: a node that stopped without removing it.
            Err(AdminError::Unreachable {
                endpoint: endpoint @ AdminEndpoint::Socket(_),
                source,
            }) => {
                eprintln!("no node answers on {endpoint} ({source}): collecting in the stopped node's stores");
                gc_offline(paths, &config, &request).await?
            }
            Err(e) => return Err(e).context("garbage collection on the running node"),
        },
        None => gc_offline(paths, &config, &request).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_gc(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Collects garbage in the stores of a stopped node: its own tree, and the roots of the names
/// its configuration follows as last resolved.
async fn gc_offline(
    paths: &Paths,
    config: &Config,
    request: &GcRequest,
) -> anyhow::Result<GcReport> {
    if !paths.data_dir.join("meta").exists() {
        bail!("{} holds no registry", paths.data_dir.display());
    }
    let stores = Stores::open(&paths.data_dir).context(
        "opening the stores (is a node running on this data directory with its admin API off?)",
    )?;
    let follower = Follower::load(followed_names(config)?, stores.meta.clone())?;
    let options = RegistryOptions {
        writable: config.role == Role::Writer,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(&stores, &paths.data_dir, options, stores.blocks.clone()).await?;
    registry.set_followed_roots(follower.roots());
    let grace = request
        .layer_grace_secs
        .unwrap_or(config.gc.layer_grace_secs);
    let options = GcOptions {
        dry_run: request.dry_run,
        layer_grace: std::time::Duration::from_secs(grace),
    };
    Ok(registry.collect_garbage(&options).await?)
}

fn print_gc(report: &GcReport) {
    let (free, freed) = if report.dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    let tree = &report.tree;
    match &tree.skipped {
        Some(why) => println!("tree:    left as it is: {why}"),
        None => {
            print!(
                "tree:    {free} {} layer links and {} blobs",
                tree.layer_links_removed, tree.blobs_removed
            );
            if let Some(root) = &tree.root {
                print!(" (root {root})");
            }
            println!();
            if tree.layer_links_waiting > 0 {
                println!(
                    "         {} layer links referenced by no manifest wait for their grace period",
                    tree.layer_links_waiting
                );
            }
        }
    }
    let mark = &report.mark;
    print!(
        "mark:    {} blocks reachable from {} roots",
        mark.blocks_marked, mark.roots
    );
    if mark.blocks_missing > 0 {
        print!(" ({} not stored here)", mark.blocks_missing);
    }
    println!();
    let sweep = &report.sweep;
    println!(
        "sweep:   {freed} {} of {} blocks ({} bytes); {} kept for writes in flight",
        sweep.blocks_freed, sweep.blocks_scanned, sweep.bytes_freed, sweep.blocks_in_flight
    );
    if !report.dry_run {
        println!(
            "uploads: {} expired sessions removed",
            report.uploads.sessions_expired
        );
    }
    for note in &report.notes {
        println!("note:    {note}");
    }
}

fn load_or_init(paths: &Paths) -> anyhow::Result<Config> {
    if !paths.config.exists() {
        tracing::info!(data_dir = %paths.data_dir.display(), "no config yet: initialising a writer node");
        init(paths, Role::Writer, false)?;
    }
    Ok(Config::load(&paths.config)?)
}

async fn serve(paths: &Paths, config: Config, options: StartOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    let node = Node::open_with(&paths.data_dir, config, options).await?;
    // Scripts and tests read the p2p addresses (ports may be ephemeral) from these lines.
    for addr in node.p2p().listen_addrs().await {
        println!("p2p listening on {addr}");
    }
    let listener = node.bind().await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, data_dir = %paths.data_dir.display(), root = %node.registry().root(), "serving the OCI API");
    // Scripts and tests read the admin API's endpoints (a port may be ephemeral) from these.
    for endpoint in node.admin_endpoints() {
        println!("admin API on {endpoint}");
    }
    // Registered before the address is announced: a SIGTERM sent as soon as the node reports it
    // listens must stop it cleanly, not kill it.
    let shutdown = shutdown_signal();
    // Scripts and tests read the bound address (the port may be ephemeral) from this line.
    let scheme = if node.uses_tls() { "https" } else { "http" };
    println!("listening on {scheme}://{addr}");
    std::io::stdout().flush().ok();
    node.serve(listener, shutdown, SystemdNotifier::from_env())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are registered when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (interrupt, terminate) => {
                    let error = interrupt.err().or(terminate.err());
                    tracing::warn!(error = ?error, "cannot listen for SIGINT or SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Edits or lists the htpasswd file `file`.
fn user(file: &Path, action: UserAction) -> anyhow::Result<ExitCode> {
    let mut htpasswd = HtpasswdFile::read(file)?;
    match action {
        UserAction::Add {
            name,
            password_stdin,
            cost,
        } => {
            htpasswd::check_user_name(&name)?;
            let password = if password_stdin {
                read_password_line()?
            } else {
                prompt_password(&name)?
            };
            let hash = htpasswd::hash_password(&password, cost)?;
            let added = htpasswd.set_hash(&name, hash)?;
            htpasswd.write()?;
            let what = if added {
                "added user"
            } else {
                "changed the password of"
            };
            println!("{what} {name} in {}", file.display());
        }
        UserAction::Remove { name } => {
            if !htpasswd.remove(&name) {
                bail!("{} has no user {name:?}", file.display());
            }
            htpasswd.write()?;
            println!("removed user {name} from {}", file.display());
            if htpasswd.users().is_empty() {
                eprintln!("note: no user is left: authentication is off");
            }
        }
        UserAction::List => {
            for (name, usable) in htpasswd.users() {
                println!("{name}");
                if !usable {
                    eprintln!("warning: {name} has a hash that is not bcrypt: a node refuses to start with it; set a new password with `user add {name}`");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of standard input, without its line ending (`--password-stdin`).
fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password.to_owned())
}

/// Asks for a password on the terminal, twice, without echo.
fn prompt_password(name: &str) -> anyhow::Result<String> {
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .context("reading the password from the terminal (without one, use --password-stdin)")
    };
    let first = ask(&format!("password for {name}: "))?;
    if first.is_empty() {
        bail!("the password must not be empty");
    }
    if ask("again: ")? != first {
        bail!("the two passwords differ");
    }
    Ok(first)
}

async fn check(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    if !Path::new(&paths.data_dir).join("meta").exists() {
        bail!("{} holds no registry", paths.data_dir.display());
    }
    let registry = Registry::open(&paths.data_dir, RegistryOptions::default())
        .await
        .context("opening the registry (is a node still running on this data directory?)")?;
    eprintln!(
        "checking {} (root {})…",
        paths.data_dir.display(),
        registry.root()
    );
    let report = registry.check().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} repositories, {} manifests, {} tags, {} blobs ({} bytes) verified",
            report.repositories, report.manifests, report.tags, report.blobs, report.bytes
        );
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        if report.problems.is_empty() {
            println!("consistent");
        }
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// ---- export / import: air-gapped moves in CAR files ----

/// The admin API client of the node running on this data directory, if one may be running
/// (`None`: no socket, so the node is stopped). An address given or configured names a
/// running node: no fallback then.
fn running_node(
    paths: &Paths,
    config: &Config,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Option<AdminClient>> {
    Ok(match admin_endpoint(paths, config, listen) {
        Ok(AdminEndpoint::Tcp(addr)) => Some(AdminClient::new(AdminEndpoint::Tcp(addr))?),
        Ok(AdminEndpoint::Socket(path)) if path.exists() => {
            Some(AdminClient::new(AdminEndpoint::Socket(path))?)
        }
        _ => None,
    })
}

/// Whether the error says no node listens on the data directory's socket (one that stopped
/// without removing it).
fn no_node_answers(e: &AdminError) -> bool {
    matches!(
        e,
        AdminError::Unreachable {
            endpoint: AdminEndpoint::Socket(_),
            ..
        }
    )
}

/// The registry of a stopped node, with the roots of the names it follows as last resolved.
async fn stopped_registry(paths: &Paths, config: &Config) -> anyhow::Result<Registry> {
    let stores = Stores::open(&paths.data_dir).context(
        "opening the stores (is a node running on this data directory with its admin API off?)",
    )?;
    let follower = Follower::load(followed_names(config)?, stores.meta.clone())?;
    let options = RegistryOptions {
        writable: config.role == Role::Writer,
        max_manifest_bytes: config.registry.max_manifest_bytes,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(&stores, &paths.data_dir, options, stores.blocks.clone()).await?;
    registry.set_followed_roots(follower.roots());
    Ok(registry)
}

/// A progress bar of bytes with rate on stderr, drawn only for a person watching: not with
/// `--quiet`, and not when standard output is not a terminal (scripts, pipes, `-o -`).
fn transfer_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stdout().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes:>10}/{total_bytes} {binary_bytes_per_sec:>12} [{wide_bar}] {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes images to a CAR file, through the running node or from a stopped one's stores.
async fn export(
    paths: &Paths,
    request: ExportRequest,
    output: &Path,
    quiet: bool,
    json: bool,
    listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    use ipns_registry::registry::{ExportReport, ImageSelector};
    let config = load_config(paths)?;
    let selectors = request
        .images
        .iter()
        .map(|i| i.parse::<ImageSelector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<anyhow::Result<bytes::Bytes>>(16);
    let client = running_node(paths, &config, listen)?;
    let mut stopped = client.is_none();
    let mut report: Option<ExportReport> = None;
    if let Some(client) = client {
        match client.export(&request).await {
            Ok((planned, mut car)) => {
                report = Some(planned);
                let chunks_tx = chunks_tx.clone();
                tokio::spawn(async move {
                    while let Some(chunk) = car.next_chunk().await {
                        let failed = chunk.is_err();
                        if chunks_tx.send(chunk.map_err(Into::into)).await.is_err() || failed {
                            break;
                        }
                    }
                });
            }
            Err(e) if no_node_answers(&e) => {
                eprintln!("no node answers on its admin socket ({e}): exporting from the stopped node's stores");
                stopped = true;
            }
            Err(e) => return Err(e).context("export on the running node"),
        }
    }
    if stopped {
        if !paths.data_dir.join("meta").exists() {
            bail!("{} holds no registry", paths.data_dir.display());
        }
        let registry = stopped_registry(paths, &config).await?;
        let plan = registry.plan_export(&selectors).await?;
        report = Some(plan.report());
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let writer = tokio::spawn(async move { plan.write(&registry, tx).await });
        let chunks_tx = chunks_tx.clone();
        // The writer's chunks, then its error if it failed: one channel for both paths.
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if chunks_tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            let failure = match writer.await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => anyhow::Error::from(e),
                Err(e) => anyhow::Error::from(e),
            };
            let _ = chunks_tx.send(Err(failure)).await;
        });
    }
    drop(chunks_tx);
    let Some(mut report) = report else {
        bail!("no export was started");
    };

    let to_stdout = output == Path::new("-");
    let bar = transfer_bar(report.bytes, quiet || to_stdout);
    let partial = output.with_file_name(format!(
        ".{}.partial-{}",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut written = 0u64;
    let copied: anyhow::Result<()> = async {
        use tokio::io::AsyncWriteExt;
        let mut out: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>> = if to_stdout {
            Box::pin(tokio::io::stdout())
        } else {
            Box::pin(
                tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("creating {}", partial.display()))?,
            )
        };
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.context("writing the CAR")?;
            written += chunk.len() as u64;
            bar.set_position(written);
        }
        out.flush().await.context("writing the CAR")?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = copied {
        if !to_stdout {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        return Err(e.context("export failed, no CAR written"));
    }
    if !to_stdout {
        tokio::fs::rename(&partial, output)
            .await
            .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    }
    report.bytes = written;
    let summary = if json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut text = String::new();
        for image in &report.images {
            text.push_str(&format!("exported {image}\n"));
        }
        text.push_str(&format!(
            "{} blocks, {} bytes, root {} -> {}",
            report.blocks,
            report.bytes,
            report.root,
            output.display()
        ));
        text
    };
    // With the CAR on standard output, the summary goes to standard error.
    if to_stdout {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Imports a CAR file, through the running node or into a stopped one's stores.
async fn import(
    paths: &Paths,
    file: &Path,
    quiet: bool,
    json: bool,
    listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    use futures_util::StreamExt;
    let length = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    // A data directory without a config is a writer's to be (`serve` initialises it).
    let config = load_config(paths)?;
    let mut report = None;
    if let Some(client) = running_node(paths, &config, listen)? {
        let opened = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let bar = transfer_bar(length, quiet);
        let counted = bar.clone();
        let chunks = futures_util::stream::unfold(opened, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            match file.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), file)),
                Err(e) => Some((Err(e), file)),
            }
        })
        .inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                counted.inc(chunk.len() as u64);
            }
        });
        let sent = client
            .import(&ImportRequest::default(), Box::pin(chunks), Some(length))
            .await;
        bar.finish_and_clear();
        match sent {
            Ok(imported) => report = Some(imported),
            Err(e) if no_node_answers(&e) => {
                eprintln!("no node answers on its admin socket ({e}): importing into the stopped node's stores");
            }
            Err(e) => return Err(e).context(format!("import of {}", file.display())),
        }
    }
    let report = match report {
        Some(report) => report,
        None => {
            std::fs::create_dir_all(&paths.data_dir)
                .with_context(|| format!("creating {}", paths.data_dir.display()))?;
            let registry = stopped_registry(paths, &config).await?;
            let opened =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let bar = transfer_bar(length, quiet);
            let imported = registry
                .import_car(std::io::BufReader::with_capacity(
                    1 << 20,
                    bar.wrap_read(opened),
                ))
                .await;
            bar.finish_and_clear();
            imported.with_context(|| format!("import of {}", file.display()))?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for image in &report.tags {
            println!("imported {image}");
        }
        println!(
            "{} repositories, {} manifests, {} blobs verified; {} blocks ({} new), {} bytes; root {}",
            report.repositories,
            report.manifests,
            report.blobs,
            report.blocks,
            report.blocks_new,
            report.bytes,
            report.new_root
        );
    }
    Ok(ExitCode::SUCCESS)
}
