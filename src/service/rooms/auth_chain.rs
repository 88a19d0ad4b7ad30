//! Auth chains from the auth DAG. Each accepted event's direct auth events are stored as short
//! ids ([`AUTH_EDGES`], one small row per event); an event's auth chain (every event reachable
//! through auth events, the event itself excluded) is computed by walking those edges, and kept
//! in a bounded in-memory cache.
//!
//! A walk stops at every event whose chain is cached and takes that chain whole, so in steady
//! state a new event's chain is one union of its auth events' cached chains. The cache keeps the
//! chains that were asked for, those of accepted events and those of their direct auth events,
//! not the chain of every event a walk passes: memoising each step of a long linear history (power levels, one member's
//! membership changes) would cost memory and time quadratic in its length, which is what this
//! index replaces on disk.
//!
//! The cache has two generations: entries go into the young one; when it is full, the old one
//! is dropped and the young one becomes old, and a hit in the old one moves the entry back. Its
//! size is bounded in stored ids, whatever the rooms look like.
//!
//! Entries are never wrong, even for an event whose batch is not committed yet: a short event
//! id is only handed out for an event being accepted, its direct auth events are fixed by the
//! event, and an id whose batch fails is never used again.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    sync::{Arc, Mutex},
};

use crate::{
    Result,
    storage::{Batch, Db, room_tables::AUTH_EDGES},
};

/// An auth chain: short event ids, sorted ascending, without duplicates.
pub type AuthChain = Arc<[u64]>;

/// Ids of cached chains, both generations together (about 32 MB of ids).
const CHAIN_BUDGET: usize = 4_000_000;
/// Ids of cached direct auth events, both generations together.
const EDGE_BUDGET: usize = 1_000_000;

/// A two-generation cache of id lists, bounded in ids stored.
struct Generations {
    young: HashMap<u64, Arc<[u64]>>,
    old: HashMap<u64, Arc<[u64]>>,
    young_weight: usize,
    /// The most one generation holds.
    generation_budget: usize,
}

fn weight(ids: &[u64]) -> usize {
    ids.len() + 1
}

impl Generations {
    fn new(budget: usize) -> Self {
        Self { young: HashMap::new(), old: HashMap::new(), young_weight: 0, generation_budget: (budget / 2).max(1) }
    }

    fn get(&mut self, key: u64) -> Option<Arc<[u64]>> {
        if let Some(ids) = self.young.get(&key) {
            return Some(ids.clone());
        }
        let ids = self.old.remove(&key)?;
        self.insert(key, ids.clone());
        Some(ids)
    }

    fn insert(&mut self, key: u64, ids: Arc<[u64]>) {
        let added = weight(&ids);
        if added > self.generation_budget {
            return;
        }
        if self.young_weight + added > self.generation_budget {
            self.old = std::mem::take(&mut self.young);
            self.young_weight = 0;
        }
        if let Some(previous) = self.young.insert(key, ids) {
            self.young_weight -= weight(&previous);
        }
        self.young_weight += added;
    }

    #[cfg(test)]
    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_weight = 0;
    }
}

fn sorted(events: HashSet<u64>) -> AuthChain {
    let mut chain: Vec<u64> = events.into_iter().collect();
    chain.sort_unstable();
    chain.into()
}

/// The auth DAG's index and chain cache (one per server; rooms share it).
pub struct AuthChains {
    chains: Mutex<Generations>,
    edges: Mutex<Generations>,
}

impl Default for AuthChains {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthChains {
    pub fn new() -> Self {
        Self::with_budget(CHAIN_BUDGET, EDGE_BUDGET)
    }

    /// A cache holding at most about `chain_ids` ids of chains and `edge_ids` ids of edges.
    pub fn with_budget(chain_ids: usize, edge_ids: usize) -> Self {
        Self { chains: Mutex::new(Generations::new(chain_ids)), edges: Mutex::new(Generations::new(edge_ids)) }
    }

    /// Records an event being accepted: writes its direct auth events (short ids) in the event's
    /// batch, and returns (and caches) its auth chain. The chain is computed from committed
    /// events only, so it is right while `batch` is still unwritten.
    pub fn record(&self, db: &Db, batch: &mut Batch, short_event: u64, direct_auth: &[u64]) -> Result<AuthChain> {
        let mut direct = direct_auth.to_vec();
        direct.sort_unstable();
        direct.dedup();
        batch.put(&AUTH_EDGES, &short_event, &direct)?;
        let chain = self.chain_with(db, &direct)?;
        if let Ok(mut edges) = self.edges.lock() {
            edges.insert(short_event, direct.into());
        }
        if let Ok(mut chains) = self.chains.lock() {
            chains.insert(short_event, chain.clone());
        }
        Ok(chain)
    }

    /// The auth chain of a committed event (empty for an event without recorded edges).
    pub fn chain(&self, db: &Db, short_event: u64) -> Result<AuthChain> {
        if let Some(chain) = self.cached_chain(short_event) {
            return Ok(chain);
        }
        let direct = self.edges(db, short_event)?;
        let chain = self.chain_with(db, &direct)?;
        if let Ok(mut chains) = self.chains.lock() {
            chains.insert(short_event, chain.clone());
        }
        Ok(chain)
    }

    /// The auth chain of an event with these direct auth events: the events and their chains.
    /// For an event whose own edges are not committed (or not known) yet. The direct auth
    /// events' chains are cached too: many events share them (the power levels, join rules and
    /// member events most of a room's events were authorised by), so after a cold start the
    /// next event that shares one stops its walk there.
    pub fn chain_with(&self, db: &Db, direct_auth: &[u64]) -> Result<AuthChain> {
        let mut found: HashSet<u64> = HashSet::new();
        for &event in direct_auth {
            if !found.insert(event) {
                continue;
            }
            let chain = match self.cached_chain(event) {
                Some(chain) => chain,
                None => {
                    let chain = self.walk(db, &self.edges(db, event)?)?;
                    if let Ok(mut chains) = self.chains.lock() {
                        chains.insert(event, chain.clone());
                    }
                    chain
                }
            };
            found.extend(chain.iter().copied());
        }
        Ok(sorted(found))
    }

    /// Everything reachable from `roots` through auth events, `roots` included: a walk that
    /// takes cached chains whole instead of walking them.
    fn walk(&self, db: &Db, roots: &[u64]) -> Result<AuthChain> {
        let mut found: HashSet<u64> = HashSet::new();
        let mut stack: Vec<u64> = roots.to_vec();
        while let Some(event) = stack.pop() {
            if !found.insert(event) {
                continue;
            }
            // A cached chain is closed under auth events: nothing in it needs walking.
            if let Some(chain) = self.cached_chain(event) {
                found.extend(chain.iter().copied());
                continue;
            }
            stack.extend(self.edges(db, event)?.iter().copied().filter(|e| !found.contains(e)));
        }
        Ok(sorted(found))
    }

    /// The conflicted state subgraph (room version 12): the `conflicted` events and every event
    /// on an auth path between two of them, i.e. in the auth chain of a conflicted event and with
    /// a conflicted event in its own auth chain. One depth-first walk over the conflicted
    /// events' auth chains, remembering per event whether it reaches a conflicted one.
    /// `pending` gives the direct auth events of the event being accepted (not committed yet).
    pub fn conflicted_subgraph(
        &self,
        db: &Db,
        conflicted: &HashSet<u64>,
        pending: Option<(u64, &[u64])>,
    ) -> Result<HashSet<u64>> {
        let edges_of = |event: u64| -> Result<Arc<[u64]>> {
            match pending {
                Some((short, direct)) if short == event => Ok(direct.into()),
                _ => self.edges(db, event),
            }
        };
        // Per event walked: `None` while in progress, then whether a conflicted event is in its
        // auth chain.
        let mut reaches: HashMap<u64, Option<bool>> = HashMap::new();
        let mut starts: Vec<u64> = conflicted.iter().copied().collect();
        starts.sort_unstable();
        for start in starts {
            let Entry::Vacant(slot) = reaches.entry(start) else { continue };
            slot.insert(None);
            let mut stack: Vec<(u64, Arc<[u64]>, usize)> = vec![(start, edges_of(start)?, 0)];
            while let Some((event, edges, next)) = stack.last_mut() {
                if let Some(&child) = edges.get(*next) {
                    *next += 1;
                    if let Entry::Vacant(slot) = reaches.entry(child) {
                        slot.insert(None);
                        let child_edges = edges_of(child)?;
                        stack.push((child, child_edges, 0));
                    }
                    continue;
                }
                let event = *event;
                let result = edges.iter().any(|e| conflicted.contains(e) || reaches.get(e) == Some(&Some(true)));
                reaches.insert(event, Some(result));
                stack.pop();
            }
        }
        // Everything walked other than the starts lies in a conflicted event's auth chain.
        let mut subgraph = conflicted.clone();
        subgraph.extend(reaches.into_iter().filter(|(_, reaches)| *reaches == Some(true)).map(|(event, _)| event));
        Ok(subgraph)
    }

    fn cached_chain(&self, short_event: u64) -> Option<AuthChain> {
        self.chains.lock().ok()?.get(short_event)
    }

    /// An event's direct auth events.
    fn edges(&self, db: &Db, short_event: u64) -> Result<Arc<[u64]>> {
        if let Some(edges) = self.edges.lock().ok().and_then(|mut cache| cache.get(short_event)) {
            return Ok(edges);
        }
        let edges: Arc<[u64]> = AUTH_EDGES.get(db, &short_event)?.unwrap_or_default().into();
        if let Ok(mut cache) = self.edges.lock() {
            cache.insert(short_event, edges.clone());
        }
        Ok(edges)
    }

    /// Forgets every cached chain and edge (tests: the cold path must give the same answers).
    #[cfg(test)]
    fn clear_cache(&self) {
        for cache in [&self.chains, &self.edges] {
            if let Ok(mut cache) = cache.lock() {
                cache.clear();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

    use super::*;
    use crate::storage::memory::MemoryEngine;

    fn memory_db() -> Db {
        Db::with_engine(Arc::new(MemoryEngine::default()))
    }

    /// A random auth DAG over events 1..=n, each with up to four auth events among the earlier
    /// ones, mostly recent ones, so there are long chains as well as wide ones.
    pub(crate) fn random_dag(rng: &mut StdRng, n: u64) -> Vec<(u64, Vec<u64>)> {
        let mut dag = Vec::new();
        for event in 1..=n {
            let mut parents = BTreeSet::new();
            if event > 1 {
                for _ in 0..rng.gen_range(0..=4) {
                    let parent = if rng.gen_bool(0.7) {
                        event - rng.gen_range(1..=(event - 1).min(5))
                    } else {
                        rng.gen_range(1..event)
                    };
                    parents.insert(parent);
                }
            }
            dag.push((event, parents.into_iter().collect()));
        }
        dag
    }

    /// The auth chain by definition: everything reachable from the direct auth events.
    pub(crate) fn brute_chain(edges: &HashMap<u64, Vec<u64>>, direct: &[u64]) -> Vec<u64> {
        let mut seen = BTreeSet::new();
        let mut stack = direct.to_vec();
        while let Some(event) = stack.pop() {
            if seen.insert(event) {
                stack.extend(edges.get(&event).into_iter().flatten().copied());
            }
        }
        seen.into_iter().collect()
    }

    /// The conflicted subgraph by its definition, as `accept.rs` computed it before: conflicted
    /// events, and each event of a conflicted event's chain that is conflicted or has a
    /// conflicted event in its own chain.
    fn brute_subgraph(edges: &HashMap<u64, Vec<u64>>, conflicted: &HashSet<u64>) -> HashSet<u64> {
        let chain_of = |event: u64| brute_chain(edges, edges.get(&event).map_or(&[][..], Vec::as_slice));
        let mut subgraph = conflicted.clone();
        for start in conflicted {
            for ancestor in chain_of(*start) {
                if conflicted.contains(&ancestor) || chain_of(ancestor).iter().any(|e| conflicted.contains(e)) {
                    subgraph.insert(ancestor);
                }
            }
        }
        subgraph
    }

    /// Records every event of `dag` in its own committed batch, as accepting events does.
    fn record_all(db: &Db, chains: &AuthChains, dag: &[(u64, Vec<u64>)], edges: &HashMap<u64, Vec<u64>>) {
        for (event, parents) in dag {
            let mut batch = Batch::new();
            let chain = chains.record(db, &mut batch, *event, parents).unwrap();
            assert_eq!(&chain[..], brute_chain(edges, parents).as_slice(), "chain at record of {event}");
            db.write(batch).unwrap();
        }
    }

    #[test]
    fn chains_match_the_definition_warm_cold_and_evicted() {
        for seed in 0..4u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let dag = random_dag(&mut rng, 400);
            let edges: HashMap<u64, Vec<u64>> = dag.iter().cloned().collect();
            let db = memory_db();
            let chains = AuthChains::new();
            record_all(&db, &chains, &dag, &edges);

            let check = |chains: &AuthChains, order: &[u64]| {
                for event in order {
                    let expected = brute_chain(&edges, &edges[event]);
                    assert_eq!(
                        &chains.chain(&db, *event).unwrap()[..],
                        expected.as_slice(),
                        "seed {seed} event {event}"
                    );
                }
            };
            let mut order: Vec<u64> = edges.keys().copied().collect();
            order.sort_unstable();
            check(&chains, &order);
            // Cold: nothing cached, newest first, so the walks go all the way down.
            chains.clear_cache();
            order.reverse();
            check(&chains, &order);
            chains.clear_cache();
            order.shuffle(&mut rng);
            check(&chains, &order);
            // A tiny cache evicts all the time, and drops chains too big for it.
            let tiny = AuthChains::with_budget(64, 16);
            order.shuffle(&mut rng);
            check(&tiny, &order);
            check(&tiny, &order);
        }
    }

    #[test]
    fn pending_events_have_their_chain_before_commit() {
        let mut rng = StdRng::seed_from_u64(7);
        let dag = random_dag(&mut rng, 200);
        let mut edges: HashMap<u64, Vec<u64>> = dag.iter().cloned().collect();
        let db = memory_db();
        let chains = AuthChains::new();
        record_all(&db, &chains, &dag, &edges);
        for (round, pending) in (201..240u64).enumerate() {
            let direct: Vec<u64> = (0..rng.gen_range(1..=4)).map(|_| rng.gen_range(1..=200)).collect();
            if round % 2 == 0 {
                chains.clear_cache();
            }
            let mut batch = Batch::new();
            let chain = chains.record(&db, &mut batch, pending, &direct).unwrap();
            let expected = brute_chain(&edges, &direct);
            assert_eq!(&chain[..], expected.as_slice());
            assert_eq!(&chains.chain_with(&db, &direct).unwrap()[..], expected.as_slice());
            // Not committed: nothing is stored for it.
            assert!(AUTH_EDGES.get(&db, &pending).unwrap().is_none());
            let mut sorted = direct.clone();
            sorted.sort_unstable();
            sorted.dedup();
            edges.insert(pending, sorted.clone());
            // The conflicted subgraph sees the pending event's edges too.
            let mut conflicted: HashSet<u64> = (0..3).map(|_| rng.gen_range(1..=200)).collect();
            conflicted.insert(pending);
            let subgraph = chains.conflicted_subgraph(&db, &conflicted, Some((pending, sorted.as_slice()))).unwrap();
            assert_eq!(subgraph, brute_subgraph(&edges, &conflicted), "pending {pending}");
            // Committed, a cold cache reads the same chain back.
            db.write(batch).unwrap();
            chains.clear_cache();
            assert_eq!(&chains.chain(&db, pending).unwrap()[..], expected.as_slice());
        }
    }

    #[test]
    fn conflicted_subgraph_matches_the_definition() {
        for seed in 10..14u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let dag = random_dag(&mut rng, 150);
            let edges: HashMap<u64, Vec<u64>> = dag.iter().cloned().collect();
            let db = memory_db();
            let chains = AuthChains::new();
            record_all(&db, &chains, &dag, &edges);
            for round in 0..40 {
                if round % 3 == 0 {
                    chains.clear_cache();
                }
                let conflicted: HashSet<u64> = (0..rng.gen_range(1..=6)).map(|_| rng.gen_range(1..=150)).collect();
                let subgraph = chains.conflicted_subgraph(&db, &conflicted, None).unwrap();
                assert_eq!(subgraph, brute_subgraph(&edges, &conflicted), "seed {seed} round {round}");
            }
        }
    }

    #[test]
    fn a_deep_linear_history_costs_no_recursion() {
        // 50,000 events, each authorised by the one before: no stack overflow, linear work.
        let db = memory_db();
        let chains = AuthChains::with_budget(1_000, 1_000);
        let mut batch = Batch::new();
        for event in 1..=50_000u64 {
            let direct: Vec<u64> = if event == 1 { vec![] } else { vec![event - 1] };
            batch.put(&AUTH_EDGES, &event, &direct).unwrap();
        }
        db.write(batch).unwrap();
        assert_eq!(chains.chain(&db, 50_000).unwrap().len(), 49_999);
        let conflicted: HashSet<u64> = [1, 50_000].into_iter().collect();
        assert_eq!(chains.conflicted_subgraph(&db, &conflicted, None).unwrap().len(), 50_000);
    }
}
