//! Tells systemd how the node is doing (the `sd_notify` protocol): ready once it serves, watchdog
//! pings only while its own parts still answer, a status line, and a notice when it stops.
//! Started by anything but systemd (no `NOTIFY_SOCKET`), every notification is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::names::IpnsName;
use crate::p2p::P2p;
use crate::registry::Registry;

/// Sends notifications to the systemd instance that started this process, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemdNotifier {
    /// Whether `NOTIFY_SOCKET` was set at start: without it nothing is sent.
    enabled: bool,
    /// `WATCHDOG_USEC`, when systemd expects watchdog pings from this process.
    watchdog: Option<Duration>,
}

/// Why the node's own loop is not healthy enough to feed the watchdog.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogCheckError {
    /// The p2p swarm task did not answer a round trip in time.
    #[error("the p2p swarm did not answer within {0:?}")]
    P2pSilent(Duration),
    /// The p2p swarm task answered but has no listen address left: it has stopped.
    #[error("the p2p swarm has stopped (no listen address)")]
    P2pStopped,
    /// The registry's root block could not be read from the block store.
    #[error("reading the registry root {root}: {error}")]
    Store {
        /// The root that was read.
        root: String,
        /// The underlying error.
        error: crate::store::StoreError,
    },
    /// The store did not answer in time (disk or blocking threads stuck).
    #[error("the block store did not answer within {0:?}")]
    StoreSilent(Duration),
}

impl SystemdNotifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env() -> Self {
        SystemdNotifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to ping the watchdog: a third of `WatchdogSec`, so that one late or failed
    /// check still leaves a second chance before systemd gives up on the node.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
            .filter(|_| self.enabled)
            .map(|limit| (limit / 3).max(Duration::from_millis(10)))
    }

    /// Tells systemd that start-up is complete (`READY=1`), with a status line.
    pub async fn ready(&self, status: &str) {
        self.send(vec!["READY=1".to_owned(), format!("STATUS={status}")])
            .await;
    }

    /// Updates the status line `systemctl status` shows.
    pub async fn status(&self, status: &str) {
        self.send(vec![format!("STATUS={status}")]).await;
    }

    /// Feeds the watchdog (`WATCHDOG=1`), with a fresh status line.
    pub async fn watchdog(&self, status: &str) {
        self.send(vec!["WATCHDOG=1".to_owned(), format!("STATUS={status}")])
            .await;
    }

    /// Tells systemd that the node is shutting down (`STOPPING=1`).
    pub async fn stopping(&self) {
        self.send(vec!["STOPPING=1".to_owned(), "STATUS=stopping".to_owned()])
            .await;
    }

    async fn send(&self, lines: Vec<String>) {
        if !self.enabled {
            return;
        }
        // A datagram to a local socket is quick, but it may block while systemd's queue is
        // full: keep it off the runtime's worker threads.
        let sent = tokio::task::spawn_blocking(move || {
            let states: Vec<NotifyState<'_>> =
                lines.iter().map(|l| NotifyState::Custom(l)).collect();
            sd_notify::notify(&states)
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot notify systemd"),
            Err(e) => tracing::warn!(error = %e, "notifying systemd failed"),
        }
    }
}

/// What the watchdog task checks and reports: the parts a wedged node would stop turning.
pub struct WatchdogTarget {
    /// The embedded IPFS node, whose swarm task must answer a round trip.
    pub p2p: P2p,
    /// The registry, whose committed root must be readable from the block store.
    pub registry: Arc<Registry>,
    /// Whether the node was configured with p2p listen addresses (then it must still have one).
    pub p2p_listens: bool,
    /// The HTTP address, for the status line.
    pub http_addr: String,
}

impl WatchdogTarget {
    /// One check of the node's own loop: a round trip through the p2p swarm task and a read of
    /// the registry's root block through the block store. Returns the status line on success.
    pub async fn check(&self, within: Duration) -> Result<String, WatchdogCheckError> {
        let swarm = async {
            let listen = self.p2p.listen_addrs().await;
            let peers = self.p2p.connected_peers().await;
            (listen, peers)
        };
        let (listen, peers) = tokio::time::timeout(within, swarm)
            .await
            .map_err(|_| WatchdogCheckError::P2pSilent(within))?;
        // `P2p` answers an empty list once its swarm task is gone: a node configured to listen
        // always has at least one address while the swarm runs.
        if self.p2p_listens && listen.is_empty() {
            return Err(WatchdogCheckError::P2pStopped);
        }
        let root = self.registry.root();
        // The block may be absent (an empty tree that was never written): any answer from the
        // store shows that the disk and the blocking threads respond.
        tokio::time::timeout(within, self.registry.tree().blocks().get(&root))
            .await
            .map_err(|_| WatchdogCheckError::StoreSilent(within))?
            .map_err(|error| WatchdogCheckError::Store {
                root: root.to_string(),
                error,
            })?;
        Ok(format!(
            "serving http://{} as {}, {} peer{} connected",
            self.http_addr,
            IpnsName::from_peer_id(self.p2p.peer_id()),
            peers.len(),
            if peers.len() == 1 { "" } else { "s" }
        ))
    }

    /// Checks the node every `every` and pings the watchdog only after a check passes, so a
    /// node whose own loop is stuck stops pinging and systemd restarts it. Runs until dropped.
    pub async fn run(self, notifier: SystemdNotifier, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.check(every).await {
                Ok(status) => {
                    if failing {
                        tracing::info!("node answers again: feeding the systemd watchdog");
                        failing = false;
                    }
                    notifier.watchdog(&status).await;
                }
                Err(e) => {
                    // Logged at every failure: systemd restarts the node after WatchdogSec,
                    // and the log must say why.
                    tracing::warn!(error = %e, "node check failed: not feeding the systemd watchdog");
                    failing = true;
                }
            }
        }
    }
}
