//! Provider records on both DHTs: what the node provides (announced, re-announced, withdrawn),
//! what peers announce to it (kept within bounds), and provider lookups (for callers, and for
//! Bitswap wants no connected peer delivers, whose providers are dialled).
//!
//! Keys are the CID's multihash, as kubo and Helia announce and look up providers, so a CID in
//! either version or codec finds the same providers.

use std::collections::{HashMap, HashSet, VecDeque};

use cid::Cid;
use libp2p::kad::store::RecordStore as _;
use libp2p::kad::{self, QueryId, QueryStats};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{dht_of, Dht, SwarmTask};
use crate::p2p::{P2pError, ProviderRecords};

/// Addresses kept per provider record a peer announces.
const MAX_PROVIDER_ADDRESSES: usize = 8;
/// Provider records from peers kept per DHT; the oldest announcement goes first when more
/// arrive. Below the store's key limit, so the node's own records always fit.
const MAX_INBOUND_PROVIDER_RECORDS: usize = 768;
/// Dials one stuck Bitswap want makes at most (a provider found in both DHTs may take two):
/// enough to find one that answers, without letting a lookup full of unreachable or lying peers
/// open connections without end.
const MAX_PROVIDER_DIALS: usize = 8;
/// Lookups kept waiting for a first DHT peer; the oldest is dropped when more arrive.
const MAX_DEFERRED_SEARCHES: usize = 64;

/// The provider state of the swarm task.
#[derive(Default)]
pub(super) struct Providers {
    /// Roots provided in someone's name (a routing key): a new root replaces the old one.
    roots: HashMap<Vec<u8>, Cid>,
    /// CIDs provided until withdrawn.
    explicit: HashSet<Cid>,
    /// DHTs whose last announcement reached no peer: announced again when a peer joins.
    unannounced: HashSet<Dht>,
    /// Peers added to each DHT's routing table so far, to tell whether one joined while an
    /// announcement was under way.
    joined: HashMap<Dht, u64>,
    /// Own announcements under way, with the `joined` count when they started.
    announcing: HashMap<(Dht, QueryId), u64>,
    /// Peers' provider records held, oldest first, per DHT.
    inbound: HashMap<Dht, VecDeque<(kad::RecordKey, PeerId)>>,
    /// Provider lookups under way.
    searches: HashMap<u64, ProviderSearch>,
    /// Their DHT queries.
    queries: HashMap<(Dht, QueryId), u64>,
    /// Lookups asked for while both routing tables were empty (a node that just started):
    /// run when the first peer joins, rather than answered with nothing at once.
    deferred: VecDeque<ProviderSearch>,
    next_search: u64,
}

/// One provider lookup, on both DHTs.
struct ProviderSearch {
    cid: Cid,
    /// Where providers found go, for a caller of `find_providers`.
    found: Option<mpsc::UnboundedSender<PeerId>>,
    /// Whether providers found are dialled (a stuck Bitswap want).
    dial: bool,
    dialled: usize,
    seen: HashSet<PeerId>,
    /// Providers dialled, per DHT: each DHT's lookup knows other addresses for the same
    /// provider (the LAN one its private ones, the WAN one its public or relayed ones).
    dialled_from: HashSet<(Dht, PeerId)>,
    /// DHT queries not finished.
    outstanding: usize,
}

/// The DHT key of a CID's provider records: its multihash.
fn provider_key(cid: &Cid) -> kad::RecordKey {
    kad::RecordKey::new(&cid.hash().to_bytes())
}

impl SwarmTask {
    /// Whether the node provides `cid` for any reason.
    fn is_provided(&self, cid: &Cid) -> bool {
        self.providers.explicit.contains(cid) || self.providers.roots.values().any(|r| r == cid)
    }

    /// Every CID the node provides.
    fn provided_cids(&self) -> Vec<Cid> {
        let mut cids: Vec<Cid> = self.providers.explicit.iter().copied().collect();
        for root in self.providers.roots.values() {
            if !cids.contains(root) {
                cids.push(*root);
            }
        }
        cids
    }

    /// Provides `cid` until [`SwarmTask::stop_providing`]: stored as our provider record in
    /// both DHTs and announced to the peers closest to it.
    pub(super) fn provide(&mut self, cid: Cid) -> Result<(), P2pError> {
        for dht in [Dht::Wan, Dht::Lan] {
            self.announce(dht, &cid)?;
        }
        self.providers.explicit.insert(cid);
        Ok(())
    }

    /// Provides `root` in the name of `slot`, in place of the root provided for it before
    /// (withdrawn unless provided for another reason): a writer's tree, or a mirrored one,
    /// keeps one provider record however often it changes.
    pub(super) fn provide_root(&mut self, slot: Vec<u8>, root: Cid) -> Result<(), P2pError> {
        if self.providers.roots.get(&slot) == Some(&root) {
            return Ok(());
        }
        if !self.is_provided(&root) {
            for dht in [Dht::Wan, Dht::Lan] {
                self.announce(dht, &root)?;
            }
        }
        tracing::debug!(%root, "providing a root");
        if let Some(old) = self.providers.roots.insert(slot, root) {
            if !self.is_provided(&old) {
                self.withdraw(&old);
            }
        }
        Ok(())
    }

    /// Stops providing `cid` (unless it is also a provided root). Peers holding the record
    /// keep it until it expires: Kademlia has no withdrawal.
    pub(super) fn stop_providing(&mut self, cid: &Cid) {
        self.providers.explicit.remove(cid);
        if !self.is_provided(cid) {
            self.withdraw(cid);
        }
    }

    fn withdraw(&mut self, cid: &Cid) {
        tracing::debug!(%cid, "no longer providing");
        let key = provider_key(cid);
        for dht in [Dht::Wan, Dht::Lan] {
            self.kad_mut(dht).stop_providing(&key);
        }
    }

    /// Stores our provider record for `cid` in one DHT and announces it there.
    fn announce(&mut self, dht: Dht, cid: &Cid) -> Result<(), P2pError> {
        let joined = self.providers.joined.get(&dht).copied().unwrap_or_default();
        let id = self
            .kad_mut(dht)
            .start_providing(provider_key(cid))
            .map_err(|e| P2pError::Provide {
                cid: *cid,
                reason: format!("{e:?}"),
            })?;
        self.providers.announcing.insert((dht, id), joined);
        Ok(())
    }

    /// An announcement finished (ours, or kad's periodic one): if it reached nobody, announce
    /// again when a peer joins the DHT, or at once if one joined meanwhile.
    pub(super) fn on_provide_done(
        &mut self,
        dht: Dht,
        id: QueryId,
        result: kad::AddProviderResult,
        stats: &QueryStats,
    ) {
        let joined_at_start = self.providers.announcing.remove(&(dht, id));
        let joined_now = self.providers.joined.get(&dht).copied().unwrap_or_default();
        let reached = result.is_ok() && stats.num_successes() > 0;
        tracing::debug!(
            ?dht,
            reached,
            peers = stats.num_successes(),
            "provider announcement done"
        );
        if reached {
            return;
        }
        if joined_at_start.is_some_and(|at_start| at_start != joined_now) {
            self.announce_all(dht);
        } else {
            self.providers.unannounced.insert(dht);
        }
    }

    /// A peer joined a DHT's routing table.
    pub(super) fn on_dht_peer_joined(&mut self, dht: Dht) {
        *self.providers.joined.entry(dht).or_default() += 1;
        self.start_deferred_record_lookups(dht);
        if self.providers.unannounced.remove(&dht) {
            self.announce_all(dht);
        }
        for search in std::mem::take(&mut self.providers.deferred) {
            // A caller that stopped waiting needs no lookup.
            if search.found.as_ref().is_some_and(|found| found.is_closed()) {
                continue;
            }
            self.start_search(search);
        }
    }

    /// Peers in both routing tables.
    fn dht_peers(&mut self) -> usize {
        [Dht::Wan, Dht::Lan]
            .into_iter()
            .map(|dht| self.routing_table_size(dht))
            .sum()
    }

    /// Peers in one DHT's routing table.
    pub(super) fn routing_table_size(&mut self, dht: Dht) -> usize {
        self.kad_mut(dht)
            .kbuckets()
            .map(|bucket| bucket.num_entries())
            .sum()
    }

    fn announce_all(&mut self, dht: Dht) {
        for cid in self.provided_cids() {
            if let Err(e) = self.announce(dht, &cid) {
                tracing::warn!(%cid, error = %e, "announcing a provider record failed");
            }
        }
    }

    /// A peer's ADD_PROVIDER to one DHT (kad checked that it announces itself): kept with a
    /// few of its addresses of the DHT's kind, the oldest peer record going when there are
    /// too many.
    pub(super) fn on_add_provider(&mut self, dht: Dht, mut record: kad::ProviderRecord) {
        record.addresses.retain(|addr| dht_of(addr) == Some(dht));
        record.addresses.truncate(MAX_PROVIDER_ADDRESSES);
        let entry = (record.key.clone(), record.provider);
        let fifo = self.providers.inbound.entry(dht).or_default();
        if let Some(at) = fifo.iter().position(|held| *held == entry) {
            // A re-announcement: it becomes the newest.
            fifo.remove(at);
        }
        let evicted = if fifo.len() >= MAX_INBOUND_PROVIDER_RECORDS {
            fifo.pop_front()
        } else {
            None
        };
        let store = self.kad_mut(dht).store_mut();
        if let Some((key, provider)) = evicted {
            store.remove_provider(&key, &provider);
        }
        match store.add_provider(record) {
            Ok(()) => self
                .providers
                .inbound
                .entry(dht)
                .or_default()
                .push_back(entry),
            Err(e) => tracing::debug!(?dht, error = ?e, "provider record not stored"),
        }
    }

    /// Looks up providers of `cid` on both DHTs; each found goes to `found`, which closes
    /// when both lookups are done. With `dial`, providers not connected are dialled (at most
    /// [`MAX_PROVIDER_DIALS`]), so that Bitswap asks them for the wants pending.
    pub(super) fn find_providers(
        &mut self,
        cid: Cid,
        found: Option<mpsc::UnboundedSender<PeerId>>,
        dial: bool,
    ) {
        // A dialling lookup of a CID already looked up (or waiting to be) would find and dial
        // the same providers: a replica that has no DHT peer for hours must not pile them up.
        let same = |s: &ProviderSearch| s.cid == cid && s.dial && s.found.is_none();
        if found.is_none()
            && (self.providers.deferred.iter().any(same)
                || self.providers.searches.values().any(same))
        {
            return;
        }
        let search = ProviderSearch {
            cid,
            found,
            dial,
            dialled: 0,
            seen: HashSet::new(),
            dialled_from: HashSet::new(),
            outstanding: 2,
        };
        if self.dht_peers() == 0 {
            tracing::debug!(%cid, "no DHT peer yet: the provider lookup waits for one");
            if self.providers.deferred.len() >= MAX_DEFERRED_SEARCHES {
                self.providers.deferred.pop_front();
            }
            self.providers.deferred.push_back(search);
            return;
        }
        self.start_search(search);
    }

    fn start_search(&mut self, search: ProviderSearch) {
        let id = self.providers.next_search;
        self.providers.next_search += 1;
        for dht in [Dht::Wan, Dht::Lan] {
            let query = self.kad_mut(dht).get_providers(provider_key(&search.cid));
            self.providers.queries.insert((dht, query), id);
        }
        self.providers.searches.insert(id, search);
    }

    /// A step of a provider lookup.
    pub(super) fn on_providers_found(
        &mut self,
        dht: Dht,
        id: QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let Some(search_id) = self.providers.queries.get(&(dht, id)).copied() else {
            return;
        };
        let providers = match result {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => providers,
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => HashSet::new(),
            Err(e) => {
                tracing::debug!(?dht, error = %e, "provider lookup ended");
                HashSet::new()
            }
        };
        let local = *self.swarm.local_peer_id();
        for provider in providers {
            if provider == local {
                continue;
            }
            let Some(search) = self.providers.searches.get_mut(&search_id) else {
                break;
            };
            if search.seen.insert(provider) {
                if let Some(found) = &search.found {
                    let _ = found.send(provider);
                }
            }
            let cid = search.cid;
            if !search.dial || search.dialled >= MAX_PROVIDER_DIALS {
                continue;
            }
            // A provider connected only through a relay gets a fresh relayed connection, and
            // with it a new hole punching attempt (now and then: a symmetric NAT never lets
            // one succeed); a provider connected directly already has the want.
            let condition = if !self.swarm.is_connected(&provider) {
                PeerCondition::Disconnected
            } else if self.hole_punch_again(provider) {
                PeerCondition::Always
            } else {
                continue;
            };
            let Some(search) = self.providers.searches.get_mut(&search_id) else {
                break;
            };
            if !search.dialled_from.insert((dht, provider)) {
                continue;
            }
            search.dialled += 1;
            // No addresses given: kad hands the swarm those the lookup learned (the provider
            // record's, or the answering peer's routing table's) and its own routing table's.
            // A dial from the other DHT's lookup may still be under way, with other addresses.
            let opts = DialOpts::peer_id(provider).condition(condition).build();
            match self.swarm.dial(opts) {
                Ok(()) => tracing::debug!(%cid, %provider, ?dht, "dialling a provider"),
                Err(e) => {
                    tracing::debug!(%cid, %provider, error = %e, "cannot dial a provider")
                }
            }
        }
        if last {
            self.providers.queries.remove(&(dht, id));
            if let Some(search) = self.providers.searches.get_mut(&search_id) {
                search.outstanding = search.outstanding.saturating_sub(1);
                if search.outstanding == 0 {
                    let done = self.providers.searches.remove(&search_id);
                    if let Some(done) = done {
                        tracing::debug!(cid = %done.cid, found = done.seen.len(), dialled = done.dialled, "provider lookup finished");
                    }
                }
            }
        }
    }

    /// What the node provides, and the provider records its DHT stores hold.
    pub(super) fn provider_records(&mut self) -> ProviderRecords {
        let provided = self.provided_cids();
        let mut own_records = 0;
        let mut peer_records = 0;
        for dht in [Dht::Wan, Dht::Lan] {
            let held: Vec<(kad::RecordKey, PeerId)> = self
                .providers
                .inbound
                .get(&dht)
                .map(|fifo| fifo.iter().cloned().collect())
                .unwrap_or_default();
            let store = self.kad_mut(dht).store_mut();
            own_records += store.provided().count();
            // Expired records leave the store when read; count what is really there.
            peer_records += held
                .iter()
                .filter(|(key, peer)| store.providers(key).iter().any(|r| r.provider == *peer))
                .count();
        }
        ProviderRecords {
            provided,
            own_records,
            peer_records,
        }
    }
}
