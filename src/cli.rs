//! The command line (clap). The binary's edge: errors become `anyhow` messages here.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use ipns_registry::config::{default_data_dir, Config, Role, CONFIG_FILE};
use ipns_registry::node::Node;
use ipns_registry::registry::{Registry, RegistryOptions};

/// A peer-to-peer replicated OCI container registry node.
///
/// The registry's state is an IPFS UnixFS tree kept in the data directory; `serve` answers
/// the OCI Distribution API (docker, podman, skopeo, oras) on 127.0.0.1:5000 by default.
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
    /// Create the data directory and its config.toml.
    Init {
        /// What the node does: `writer` accepts pushes into its own tree.
        #[arg(long, value_enum, default_value = "writer")]
        role: RoleArg,
    },
    /// Run the node: serve the OCI Distribution API. Initialises the data directory on first use.
    Serve {
        /// Address of the OCI API (config: http.listen).
        #[arg(long, env = "IPNS_REGISTRY_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Largest manifest accepted on push, in bytes (config: registry.max_manifest_bytes).
        #[arg(long, env = "IPNS_REGISTRY_MAX_MANIFEST_BYTES", value_name = "BYTES")]
        max_manifest_bytes: Option<u64>,
    },
    /// Verify the stored tree (the node must be stopped): every block present, every blob
    /// matching its digest, every tag and link pointing at existing content. Exits 1 on problems.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Writer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Writer => Role::Writer,
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
        Command::Serve {
            listen,
            max_manifest_bytes,
        } => {
            let mut config = load_or_init(&paths)?;
            if let Some(listen) = listen {
                config.http.listen = listen;
            }
            if let Some(max) = max_manifest_bytes {
                config.registry.max_manifest_bytes = max;
            }
            serve(&paths, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json } => check(&paths, json).await,
    }
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
    config.save(&paths.config)?;
    println!(
        "initialised a {role} node in {} (config: {})",
        paths.data_dir.display(),
        paths.config.display()
    );
    Ok(())
}

fn load_or_init(paths: &Paths) -> anyhow::Result<Config> {
    if !paths.config.exists() {
        tracing::info!(data_dir = %paths.data_dir.display(), "no config yet: initialising a writer node");
        init(paths, Role::Writer)?;
    }
    Ok(Config::load(&paths.config)?)
}

async fn serve(paths: &Paths, config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&paths.data_dir)
        .with_context(|| format!("creating {}", paths.data_dir.display()))?;
    let node = Node::open(&paths.data_dir, config).await?;
    let listener = node.bind().await?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%addr, data_dir = %paths.data_dir.display(), root = %node.registry().root(), "serving the OCI API");
    // Scripts and tests read the bound address (the port may be ephemeral) from this line.
    println!("listening on http://{addr}");
    std::io::stdout().flush().ok();
    node.serve(listener, shutdown_signal()).await?;
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
