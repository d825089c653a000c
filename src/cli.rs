//! The command line (clap). The binary's edge: errors become `anyhow` messages here.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use ipns_registry::config::{default_data_dir, Config, FollowConfig, Mirror, Role, CONFIG_FILE};
use ipns_registry::http::auth::htpasswd::{self, HtpasswdFile};
use ipns_registry::names::{keys, IpnsName};
use ipns_registry::node::{key_path, Node, StartOptions, SystemdNotifier};
use ipns_registry::registry::{Registry, RegistryOptions};

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
    /// Ask the running node for its peers, own record, followed names and mirror progress.
    Status {
        /// Print the node's JSON status document.
        #[arg(long)]
        json: bool,
        /// The node's HTTP address, if not the configured http.listen.
        #[arg(long, env = "IPNS_REGISTRY_LISTEN", value_name = "ADDR")]
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
    init_logging();
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
        Command::Init { role } => {
            init(&paths, role.into())?;
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

fn init(paths: &Paths, role: Role) -> anyhow::Result<()> {
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
        return Ok(());
    }
    let config = Config {
        role,
        ..Config::default()
    };
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

/// Fetches `/_status` from the node configured in this data directory, over HTTP/1.0 (over
/// TLS, trusting the node's own certificate, when the config has `[http.tls]`).
async fn status(paths: &Paths, json: bool, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let config = load_config(paths)?;
    let addr = listen.unwrap_or(config.http.listen);
    let connecting = || format!("connecting to the node at {addr} (is it running?)");
    let response = match &config.http.tls {
        None => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(connecting)?;
            fetch_status(stream).await?
        }
        Some(tls) => {
            let cert = paths.data_dir.join(&tls.cert);
            let stream = ipns_registry::http::tls::connect_own_node(addr, &cert)
                .await
                .with_context(connecting)?;
            fetch_status(stream).await?
        }
    };
    let text = String::from_utf8_lossy(&response);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("malformed answer from the node")?;
    let doc: serde_json::Value =
        serde_json::from_str(body).context("the node's status is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!("role:      {}", s(&doc["role"]));
    println!("peer id:   {}", s(&doc["peer_id"]));
    println!("IPNS name: {}", s(&doc["ipns_name"]));
    let peers = doc["peers"].as_array().cloned().unwrap_or_default();
    println!("peers:     {}", peers.len());
    for p in &peers {
        println!("  {}", s(p));
    }
    if doc["own"].is_object() {
        println!(
            "own tree:  root {} sequence {}",
            s(&doc["own"]["root"]),
            doc["own"]["sequence"]
        );
    }
    for f in doc["followed"].as_array().cloned().unwrap_or_default() {
        println!("follows:   {}", s(&f["name"]));
        if f["root"].is_string() {
            let age = f["age_secs"]
                .as_u64()
                .map_or("since before the last start".to_owned(), |a| {
                    format!("{a}s ago")
                });
            println!(
                "  sequence {}, root {}, accepted {age}",
                f["sequence"],
                s(&f["root"])
            );
        } else {
            println!("  not resolved yet");
        }
        let progress = &f["mirror_progress"];
        if progress.is_object() {
            let counts = &progress["progress"];
            println!(
                "  mirror {}: {}, {}/{} blobs, {} blocks, {} bytes",
                s(&f["mirror"]),
                s(&progress["state"]),
                counts["blobs_verified"],
                counts["blobs_total"],
                counts["blocks"],
                counts["bytes"]
            );
        } else {
            println!("  mirror {}", s(&f["mirror"]));
        }
    }
    if let Some(problem) = doc["problem"].as_str() {
        println!("PROBLEM:   {problem}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `GET /_status` over HTTP/1.0 and reads the whole answer.
async fn fetch_status<S>(mut stream: S) -> anyhow::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /_status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response).await {
        Ok(_) => Ok(response),
        // A TLS peer that closes without close_notify: the answer is complete all the same
        // (HTTP/1.0 ends it by closing).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}

fn load_or_init(paths: &Paths) -> anyhow::Result<Config> {
    if !paths.config.exists() {
        tracing::info!(data_dir = %paths.data_dir.display(), "no config yet: initialising a writer node");
        init(paths, Role::Writer)?;
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
    // Scripts and tests read the bound address (the port may be ephemeral) from this line.
    let scheme = if node.uses_tls() { "https" } else { "http" };
    println!("listening on {scheme}://{addr}");
    std::io::stdout().flush().ok();
    node.serve(listener, shutdown_signal(), SystemdNotifier::from_env())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
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
