//! The node's local cache: job and parent results with a time to live, and the cached args and
//! envs that templates and RUN see.
//!
//! Reads come from memory. Every change is also handed to a [`CacheSink`] to be written to the
//! node's redb database (table [`TABLE_NAME`]); the node's sink batches these writes with its
//! own. The cache is an optimisation: a crash may lose its last writes, never the records or
//! results the node keeps elsewhere.
//!
//! Rows: `job/HEX` and `parent/NAME` (an outcome and when it expires), `arg/NAME` and
//! `env/NAME` (one value each), and `argq/["NODE","NAME"]` for each value of the `query` arg
//! that QUERY sets fill (each value replacing that node's value of that name before it, see
//! [`Cache::merge_args`]): those gather large values from every node, and a change writes only
//! the values it changed, whatever else the node holds (a `query` of another shape, set by
//! hand, is one row). Changes reach the sink in the order they were made.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    spec::{CacheTag, Fingerprint},
    template::Vars,
};

/// How long a success is remembered (Directord's 72 hours).
pub const DEFAULT_TTL: Duration = Duration::from_secs(72 * 3600);

/// How often expiries further ahead than the TTL, and outcomes past it, are looked for.
const CLAMP_EVERY: Duration = Duration::from_secs(60);

/// Most outcomes past their TTL dropped at one look ([`Cache::clamp_expiries`]).
const PRUNE_AT_ONCE: usize = 10_000;

/// Name of the cache's table in the node's database.
pub const TABLE_NAME: &str = "cache";
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new(TABLE_NAME);

/// Changes to store: `(key, Some(value))` to write, `(key, None)` to delete.
pub type CacheWrites = Vec<(String, Option<Vec<u8>>)>;

/// Where the cache's changes go to be written.
pub trait CacheSink: Send + Sync {
    fn write(&self, writes: CacheWrites);
}

/// A sink that writes each change straight to the database (one transaction per change,
/// without waiting for the disk).
pub struct DirectSink(pub Arc<Database>);

impl CacheSink for DirectSink {
    fn write(&self, writes: CacheWrites) {
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let mut w = self.0.begin_write()?;
            w.set_durability(redb::Durability::None)?;
            {
                let mut t = w.open_table(TABLE)?;
                for (k, v) in &writes {
                    match v {
                        Some(bytes) => {
                            t.insert(k.as_str(), bytes.as_slice())?;
                        }
                        None => {
                            t.remove(k.as_str())?;
                        }
                    }
                }
            }
            w.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!("cache write failed: {e}");
        }
    }
}

/// The remembered outcome of a job or a parent on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachedState {
    Success,
    Failed,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Timed {
    state: CachedState,
    expires_unix: u64,
    /// A templated job's: what the args it rendered with were (see [`rendered_with`]). A
    /// success counts for the same args only. (Absent in what releases before wrote.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rendered: Option<Fingerprint>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<Fingerprint, Timed>,
    parents: HashMap<String, Timed>,
    /// The args as templates see them, shared with the jobs rendering them: a change copies
    /// them only while a job still holds them.
    args: Vars,
    /// Counts the changes of `args`, for the runs' views made from them.
    args_changes: u64,
    /// When expiries are next looked at ([`Cache::clamp_expiries`]).
    next_clamp: Option<std::time::Instant>,
    envs: Map<String, Value>,
    /// What each run set here itself (its ARGs and ENVs, the sets its QUERYs collected), by
    /// run, until the run has nothing left to do here ([`Cache::forget_run`]). In memory only.
    runs: HashMap<String, RunView>,
}

/// What one run's own jobs set on the node: its later jobs see these over whatever another
/// run set under the same names meanwhile (two runs of one orchestration at once).
#[derive(Default)]
struct RunView {
    /// Args as the run's ARGs left them, by name.
    args: Map<String, Value>,
    /// Envs as the run's ENVs left them, by name.
    envs: Map<String, Value>,
    /// What its QUERYs collected, `{node: {name: value}}`.
    query: Map<String, Value>,
    /// The args its jobs render with when they differ from the node's, made after the
    /// node's args' change of that number: each job of the run shares it until either
    /// changes (a copy per job would cost as much as the args).
    view: Option<(u64, Vars)>,
}

/// A cache failure (the database could not be read or written).
#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(String);

/// The cache of one node. Cheap to share behind an `Arc`.
pub struct Cache {
    state: Mutex<State>,
    sink: Option<Arc<dyn CacheSink>>,
    ttl: Duration,
}

/// `names` with their values in `map` (as a merge left them).
fn as_left(map: &Map<String, Value>, names: Vec<String>) -> Vec<(String, Value)> {
    names
        .into_iter()
        .filter_map(|k| map.get(&k).cloned().map(|v| (k, v)))
        .collect()
}

/// An env value as a process sees it.
fn env_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows to write for the args `names` as they are now in `args`. For a QUERY set merged
/// into a `query` kept one row per value (`brought`: its (node, name) pairs), only the values
/// it brought; for any other name all its rows, and for a `query` written whole, the removal
/// of the rows it had before (`query_rows_before`) and has no more.
fn arg_writes(
    args: &Vars,
    names: &[String],
    brought: Option<&[(String, String)]>,
    query_rows_before: &[String],
) -> CacheWrites {
    let mut writes = CacheWrites::new();
    for name in names {
        let Some(now) = args.get(name) else {
            continue;
        };
        match brought {
            Some(brought) if name == "query" => {
                writes.extend(brought.iter().filter_map(|(node, key)| {
                    let v = now.get(node)?.get(key)?;
                    Some((query_row(node, key), Some(json_bytes(v))))
                }));
            }
            _ => {
                let rows = arg_rows(name, now);
                writes.extend(
                    query_rows_before
                        .iter()
                        .filter(|k| name == "query" && !rows.iter().any(|(r, _)| r == *k))
                        .map(|k| (k.clone(), None)),
                );
                writes.extend(rows);
            }
        }
    }
    writes
}

/// Whether `query` has the shape of a QUERY set, `{node: {name: value}}`.
fn is_query_set(query: &Value) -> bool {
    query
        .as_object()
        .is_some_and(|q| q.values().all(Value::is_object))
}

/// Merges a QUERY set (`{node: {name: value}}`) into `into`, name by name: each node's value
/// of a name replaces the one before.
fn merge_query(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (node, values) in from {
        let slot = into
            .entry(node.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        match (slot, values) {
            (Value::Object(slot), Value::Object(values)) => {
                slot.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            (slot, values) => *slot = values.clone(),
        }
    }
}

/// The names a run's QUERY sets (`{node: {name: value}}`) hold.
fn queried_names(sets: &Map<String, Value>) -> std::collections::BTreeSet<String> {
    sets.values()
        .filter_map(Value::as_object)
        .flat_map(|values| values.keys().cloned())
        .collect()
}

/// The names of `queried` that `node`'s `values` in the node's args hold but the run's own
/// `sets` do not give it: values another run gathered, not this one.
fn outside<'a>(
    sets: &Map<String, Value>,
    node: &str,
    values: &'a Value,
    queried: &std::collections::BTreeSet<String>,
) -> Vec<&'a str> {
    let own = sets.get(node).and_then(Value::as_object);
    values
        .as_object()
        .into_iter()
        .flat_map(|v| v.keys())
        .filter(|k| queried.contains(*k) && own.is_none_or(|own| !own.contains_key(*k)))
        .map(String::as_str)
        .collect()
}

/// Takes out of `query` (the node's, with the run's `sets` merged in) the values of the
/// `queried` names that the run's sets do not give; a node left with nothing goes.
fn hide_outside(
    query: &mut Map<String, Value>,
    sets: &Map<String, Value>,
    queried: &std::collections::BTreeSet<String>,
) {
    query.retain(|node, values| {
        let hidden: Vec<String> = outside(sets, node, values, queried)
            .into_iter()
            .map(str::to_string)
            .collect();
        if hidden.is_empty() {
            return true;
        }
        if let Value::Object(values) = values {
            for name in &hidden {
                values.remove(name);
            }
            !values.is_empty()
        } else {
            true
        }
    });
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// A cache that lives only in memory (tests, simulations).
    pub fn in_memory(ttl: Duration) -> Cache {
        Cache {
            state: Mutex::new(State::default()),
            sink: None,
            ttl,
        }
    }

    /// Loads the cache kept in `db`, dropping outcomes past their TTL (their rows too, through
    /// `sink`); later changes go to `sink`.
    pub fn open(
        db: Arc<Database>,
        ttl: Duration,
        sink: Arc<dyn CacheSink>,
    ) -> Result<Cache, CacheError> {
        let e = |x: &dyn std::fmt::Display| CacheError(x.to_string());
        let mut state = State::default();
        {
            let w = db.begin_write().map_err(|x| e(&x))?;
            w.open_table(TABLE).map_err(|x| e(&x))?;
            w.commit().map_err(|x| e(&x))?;
        }
        let now = now_unix();
        let mut args = Map::new();
        let mut query_values = Vec::new();
        let mut old_layout = Vec::new();
        // Outcomes past their TTL: not loaded, and their rows go (nothing reads them again).
        let mut expired: CacheWrites = Vec::new();
        let r = db.begin_read().map_err(|x| e(&x))?;
        let table = r.open_table(TABLE).map_err(|x| e(&x))?;
        for row in table.iter().map_err(|x| e(&x))? {
            let (k, v) = row.map_err(|x| e(&x))?;
            let (key, bytes) = (k.value().to_string(), v.value().to_vec());
            if let Some(hex) = key.strip_prefix("job/") {
                if let (Some(fp), Ok(t)) = (
                    Fingerprint::from_hex(hex),
                    ciborium::from_reader::<Timed, _>(bytes.as_slice()),
                ) {
                    if t.expires_unix > now {
                        state.jobs.insert(fp, t);
                    } else {
                        expired.push((key, None));
                    }
                }
            } else if let Some(parent) = key.strip_prefix("parent/") {
                if let Ok(t) = ciborium::from_reader::<Timed, _>(bytes.as_slice()) {
                    if t.expires_unix > now {
                        state.parents.insert(parent.to_string(), t);
                    } else {
                        expired.push((key, None));
                    }
                }
            } else if let Some(name) = key.strip_prefix("arg/") {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    args.insert(name.to_string(), v);
                }
            } else if let Some(pair) = key.strip_prefix("argq/") {
                if let (Ok((node, name)), Ok(v)) = (
                    serde_json::from_str::<(String, String)>(pair),
                    serde_json::from_slice::<Value>(&bytes),
                ) {
                    query_values.push((node, name, v));
                }
            } else if let Some(name) = key.strip_prefix("env/") {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    state.envs.insert(name.to_string(), v);
                }
            } else if (key == "args" || key == "envs")
                && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes)
            {
                // Kept whole by an earlier release: read, and written again as rows below.
                if key == "args" {
                    args.extend(map);
                } else {
                    state.envs.extend(map);
                }
                old_layout.push(key);
            }
        }
        for (node, name, v) in query_values {
            let query = object_at(&mut args, "query");
            object_at(query, &node).insert(name, v);
        }
        let mut rewrite = expired;
        if !old_layout.is_empty() {
            for (name, v) in &args {
                rewrite.extend(arg_rows(name, v));
            }
            for (name, v) in &state.envs {
                rewrite.push((env_row(name), Some(json_bytes(v))));
            }
            // Last: the old rows go only after the new ones are written (a crash in between
            // reads both, the same values, and migrates again).
            rewrite.extend(old_layout.into_iter().map(|k| (k, None)));
        }
        state.args = Vars::from(args);
        let cache = Cache {
            state: Mutex::new(state),
            sink: Some(sink),
            ttl,
        };
        if !rewrite.is_empty() {
            cache.persist(rewrite);
        }
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters (each update is one insert), so a poisoned lock is still usable.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if s.next_clamp.is_none_or(|at| at <= now) {
            s.next_clamp = Some(now + CLAMP_EVERY);
            self.clamp_expiries(&mut s);
        }
        s
    }

    /// Outcomes that expire further ahead than the TTL were remembered while the wall clock
    /// ran ahead (stepped back since): they expire a TTL from now instead, not when the clock
    /// comes back to that time. Outcomes past their TTL go, from memory and from the rows (a
    /// node records a parent for every run, and an outcome for every job it runs). Looked for
    /// once a minute.
    fn clamp_expiries(&self, s: &mut State) {
        let now = now_unix();
        let latest = now + self.ttl.as_secs();
        let mut writes = CacheWrites::new();
        // At most `PRUNE_AT_ONCE` go per look, so that one look stays short (the rest go at
        // the next); one past its TTL counts as absent meanwhile.
        let mut budget = PRUNE_AT_ONCE;
        s.jobs.retain(|fp, t| {
            let keep = t.expires_unix > now || budget == 0;
            if !keep {
                budget -= 1;
                writes.push((format!("job/{}", fp.to_hex()), None));
            }
            keep
        });
        s.parents.retain(|parent, t| {
            let keep = t.expires_unix > now || budget == 0;
            if !keep {
                budget -= 1;
                writes.push((format!("parent/{parent}"), None));
            }
            keep
        });
        for (fp, t) in s.jobs.iter_mut().filter(|(_, t)| t.expires_unix > latest) {
            t.expires_unix = latest;
            writes.push((format!("job/{}", fp.to_hex()), Some(cbor(t))));
        }
        for (parent, t) in s
            .parents
            .iter_mut()
            .filter(|(_, t)| t.expires_unix > latest)
        {
            t.expires_unix = latest;
            writes.push((format!("parent/{parent}"), Some(cbor(t))));
        }
        if !writes.is_empty() {
            self.persist(writes);
        }
    }

    /// Hands `writes` to the sink. Called with the state locked: changes reach the sink in the
    /// order they were made, so the rows on disk are the last change's, never an earlier one
    /// that lost a race to the sink.
    fn persist(&self, writes: CacheWrites) {
        if let Some(sink) = &self.sink {
            sink.write(writes);
        }
    }

    fn timed(&self, state: CachedState) -> Timed {
        Timed {
            state,
            expires_unix: now_unix() + self.ttl.as_secs(),
            rendered: None,
        }
    }

    /// Whether the job with this fingerprint succeeded here within the TTL, rendered (if it
    /// is a templated job) with args that were `rendered` (see [`rendered_with`]).
    ///
    /// A templated job's success cached by a release before this one (which kept no digest of
    /// the args: only the executor records a success, and it gives a templated job's digest)
    /// counts, as it did for that release, and takes the args of now as its own: after an
    /// upgrade nothing runs again that the release before would have skipped, and a change
    /// of the args from then on runs the job again.
    pub fn succeeded(&self, fp: &Fingerprint, rendered: Option<Fingerprint>) -> bool {
        let now = now_unix();
        let mut s = self.lock();
        let Some(t) = s.jobs.get_mut(fp) else {
            return false;
        };
        if t.state != CachedState::Success || t.expires_unix <= now {
            return false;
        }
        if t.rendered == rendered {
            return true;
        }
        if t.rendered.is_none() && rendered.is_some() {
            t.rendered = rendered;
            let row = *t;
            // With the state locked, as every change (see `persist`).
            self.persist(vec![(format!("job/{}", fp.to_hex()), Some(cbor(&row)))]);
            drop(s);
            return true;
        }
        false
    }

    /// `success` or `failed` if a job whose fingerprint starts with `prefix` (hex) finished here
    /// within the TTL.
    pub fn finished_state(&self, prefix: &str) -> Option<&'static str> {
        let now = now_unix();
        let prefix = prefix.to_ascii_lowercase();
        self.lock()
            .jobs
            .iter()
            .filter(|(fp, t)| t.expires_unix > now && fp.to_hex().starts_with(&prefix))
            .map(|(_, t)| match t.state {
                CachedState::Success => "success",
                CachedState::Failed => "failed",
            })
            .next()
    }

    /// Whether the job `fp` has an outcome here (within the TTL): one lookup, where
    /// [`Cache::finished_state`] looks through every job for a prefix.
    pub fn has_outcome(&self, fp: &Fingerprint) -> bool {
        let now = now_unix();
        self.lock()
            .jobs
            .get(fp)
            .is_some_and(|t| t.expires_unix > now)
    }

    /// Whether a job of this parent failed here (within the TTL).
    pub fn parent_failed(&self, parent: &str) -> bool {
        let now = now_unix();
        self.lock()
            .parents
            .get(parent)
            .is_some_and(|t| t.state == CachedState::Failed && t.expires_unix > now)
    }

    /// Remembers a job's outcome, and its parent's: a failed parent stays failed.
    pub fn record(&self, fp: &Fingerprint, parent: &str, state: CachedState) {
        self.record_rendered(fp, parent, state, None);
    }

    /// [`Cache::record`] of a templated job, with what its args were (see [`rendered_with`]).
    pub fn record_rendered(
        &self,
        fp: &Fingerprint,
        parent: &str,
        state: CachedState,
        rendered: Option<Fingerprint>,
    ) {
        let job = Timed {
            rendered,
            ..self.timed(state)
        };
        {
            let mut s = self.lock();
            s.jobs.insert(*fp, job);
            let keep_failed = s
                .parents
                .get(parent)
                .is_some_and(|t| t.state == CachedState::Failed);
            let p = if keep_failed {
                self.timed(CachedState::Failed)
            } else {
                job
            };
            s.parents.insert(parent.to_string(), p);
            self.persist(vec![
                (format!("job/{}", fp.to_hex()), Some(cbor(&job))),
                (format!("parent/{parent}"), Some(cbor(&p))),
            ]);
        }
    }

    /// Records how a job that never ran here ended (it failed without running: its parent had
    /// failed, a QUEUESENTINEL purged it, its run was refused), its parent untouched: a
    /// JOB_WAIT that asks after it hears what those waiting then heard.
    pub fn record_unrun(&self, fp: &Fingerprint, state: CachedState) {
        let job = self.timed(state);
        let mut s = self.lock();
        s.jobs.insert(*fp, job);
        self.persist(vec![(format!("job/{}", fp.to_hex()), Some(cbor(&job)))]);
    }

    /// Marks a parent failed here without touching any job's outcome (a job a restart cut
    /// short whose fingerprint has an earlier run's outcome cached): its later jobs do not run.
    pub fn fail_parent(&self, parent: &str) {
        let failed = self.timed(CachedState::Failed);
        let mut s = self.lock();
        s.parents.insert(parent.to_string(), failed);
        self.persist(vec![(format!("parent/{parent}"), Some(cbor(&failed)))]);
    }

    /// The cached args, as a JSON object (the variables of templates). Shared, not copied,
    /// until the args change.
    pub fn args(&self) -> Vars {
        self.lock().args.clone()
    }

    /// Whether the arg `name` is cached.
    pub fn has_arg(&self, name: &str) -> bool {
        self.lock().args.contains_key(name)
    }

    /// The args a job of `run_id` renders with: the cached args, with what its own run set
    /// (ARGs, QUERY sets) over what another run set under the same names since (the node
    /// keeps what was set last). For a name its QUERYs collected, the run's jobs see only
    /// the nodes of its own sets: a node left out of them (gone, or back too late) shows no
    /// value of that name, rather than one an earlier run gathered.
    pub fn args_for_run(&self, run_id: &str) -> Vars {
        let mut s = self.lock();
        let base = s.args.clone();
        let changes = s.args_changes;
        let Some(own) = s.runs.get_mut(run_id) else {
            return base;
        };
        if let Some((made_after, view)) = &own.view
            && *made_after == changes
        {
            return view.clone();
        }
        // As a rule no other run set the same names in between: the node's args are the
        // run's, shared, not copied (they may hold megabytes of values).
        let query_there = base.get("query");
        let same_query = own.query.iter().all(|(node, values)| {
            match (query_there.and_then(|q| q.get(node)), values) {
                (Some(Value::Object(there)), Value::Object(values)) => {
                    values.iter().all(|(k, v)| there.get(k) == Some(v))
                }
                (there, values) => there == Some(values),
            }
        });
        let queried = queried_names(&own.query);
        let others_queried = query_there.and_then(Value::as_object).is_some_and(|q| {
            q.iter()
                .any(|(node, values)| !outside(&own.query, node, values, &queried).is_empty())
        });
        let same_args = own.args.iter().all(|(k, v)| base.get(k) == Some(v));
        if same_query && !others_queried && same_args {
            return base;
        }
        let mut args = base;
        let map = args.map_mut();
        map.extend(own.args.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !own.query.is_empty() {
            let query = object_at(map, "query");
            merge_query(query, &own.query);
            hide_outside(query, &own.query, &queried);
        }
        own.view = Some((changes, args.clone()));
        args
    }

    /// The envs a job of `run_id` runs with: the cached envs, with what its own run's ENVs
    /// set over what another run set under the same names since.
    pub fn envs_for_run(&self, run_id: &str) -> Vec<(String, String)> {
        let s = self.lock();
        let own = s.runs.get(run_id).map(|v| &v.envs);
        let mut envs: Vec<(String, String)> = s
            .envs
            .iter()
            .filter(|(k, _)| own.is_none_or(|own| !own.contains_key(*k)))
            .chain(own.into_iter().flatten())
            .map(|(k, v)| (k.clone(), env_text(v)))
            .collect();
        envs.sort();
        envs
    }

    /// Keeps what a QUERY of `run_id` collected (`{"query": {node: {name: value}}}`) for the
    /// run's later jobs here ([`Cache::args_for_run`]).
    pub fn keep_run_query(&self, run_id: &str, aggregate: &Value) {
        let Some(query) = aggregate.get("query").and_then(Value::as_object) else {
            return;
        };
        let mut s = self.lock();
        let own = s.runs.entry(run_id.to_string()).or_default();
        merge_query(&mut own.query, query);
        own.view = None;
    }

    /// `run_id` has nothing left to do here: what it set for its own jobs goes.
    pub fn forget_run(&self, run_id: &str) {
        self.lock().runs.remove(run_id);
    }

    /// The cached envs, as strings for a process environment.
    pub fn envs(&self) -> Vec<(String, String)> {
        self.lock()
            .envs
            .iter()
            .map(|(k, v)| (k.clone(), env_text(v)))
            .collect()
    }

    /// Merges `values` into the cached args (`extend`: maps merge deeply, lists extend, but
    /// for a QUERY set under `query`, `{node: {name: value}}`, whose every value replaces
    /// that node's value of that name).
    pub fn merge_args(&self, values: Map<String, Value>, extend: bool) {
        self.merge_args_of(None, values, extend);
    }

    /// As [`Cache::merge_args`], by a job of `run`: the run's later jobs see these names as
    /// this left them ([`Cache::args_for_run`]).
    pub fn merge_args_of(&self, run: Option<&str>, values: Map<String, Value>, extend: bool) {
        {
            let mut s = self.lock();
            let names: Vec<String> = values.keys().cloned().collect();
            // A QUERY set merged into a `query` kept as one row per value writes the values
            // it brought; anything else rewrites the rows of the names it touched.
            let brought = values
                .get("query")
                .filter(|_| extend)
                .and_then(query_pairs)
                .filter(|_| s.args.get("query").is_none_or(|q| query_pairs(q).is_some()))
                .map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|(n, k)| (n.to_string(), k.to_string()))
                        .collect::<Vec<_>>()
                });
            let query_rows_before = match (&brought, s.args.get("query")) {
                (None, Some(q)) if values.contains_key("query") => arg_keys("query", q),
                _ => Vec::new(),
            };
            // A QUERY set: each node's value of each name replaces the one before, as in a
            // run's own view (`merge_query`); extended, a list would grow by the whole list
            // at every run, and a map would keep the keys a node has since dropped.
            let mut values = values;
            let set = match values.get("query") {
                Some(q) if extend && is_query_set(q) => values.remove("query"),
                _ => None,
            };
            let args = s.args.map_mut_names(&names);
            merge(args, values, extend);
            if let Some(Value::Object(set)) = set {
                merge_query(object_at(args, "query"), &set);
            }
            s.args_changes += 1;
            let writes = arg_writes(&s.args, &names, brought.as_deref(), &query_rows_before);
            if let Some(run) = run {
                let now = as_left(&s.args, names);
                s.runs.entry(run.to_string()).or_default().args.extend(now);
            }
            self.persist(writes);
        }
    }

    /// Merges `values` into the cached envs.
    pub fn merge_envs(&self, values: Map<String, Value>, extend: bool) {
        self.merge_envs_of(None, values, extend);
    }

    /// As [`Cache::merge_envs`], by a job of `run` ([`Cache::envs_for_run`]).
    pub fn merge_envs_of(&self, run: Option<&str>, values: Map<String, Value>, extend: bool) {
        {
            let mut s = self.lock();
            let names: Vec<String> = values.keys().cloned().collect();
            merge(&mut s.envs, values, extend);
            let writes = names
                .iter()
                .filter_map(|k| Some((env_row(k), Some(json_bytes(s.envs.get(k)?)))))
                .collect();
            if let Some(run) = run {
                let now = as_left(&s.envs, names);
                s.runs.entry(run.to_string()).or_default().envs.extend(now);
            }
            self.persist(writes);
        }
    }

    /// Forgets the tagged part of the cache; returns how many items went.
    pub fn evict(&self, tag: CacheTag) -> usize {
        let mut writes = Vec::new();
        let mut s = self.lock();
        let mut count = 0;
        if matches!(tag, CacheTag::Jobs | CacheTag::All) {
            count += s.jobs.len();
            writes.extend(
                s.jobs
                    .drain()
                    .map(|(fp, _)| (format!("job/{}", fp.to_hex()), None)),
            );
        }
        if matches!(tag, CacheTag::Parents | CacheTag::All) {
            count += s.parents.len();
            writes.extend(
                s.parents
                    .drain()
                    .map(|(p, _)| (format!("parent/{p}"), None)),
            );
        }
        if matches!(tag, CacheTag::Args | CacheTag::All) {
            count += s.args.len();
            for (name, v) in s.args.iter() {
                writes.extend(arg_keys(name, v).into_iter().map(|k| (k, None)));
            }
            s.args = Vars::default();
            s.args_changes += 1;
        }
        if matches!(tag, CacheTag::Envs | CacheTag::All) {
            count += s.envs.len();
            writes.extend(s.envs.keys().map(|k| (env_row(k), None)));
            s.envs.clear();
        }
        // What runs set for their own jobs goes with the node's.
        for view in s.runs.values_mut() {
            view.view = None;
            match tag {
                CacheTag::Args => {
                    view.args.clear();
                    view.query.clear();
                }
                CacheTag::Envs => view.envs.clear(),
                CacheTag::Query => {
                    view.args.remove("query");
                    view.query.clear();
                }
                CacheTag::All => *view = RunView::default(),
                CacheTag::Jobs | CacheTag::Parents => {}
            }
        }
        if tag == CacheTag::Query
            && s.args.contains_key("query")
            && let Some(query) = s.args.map_mut_names(&["query".into()]).remove("query")
        {
            s.args_changes += 1;
            count += 1;
            writes.extend(arg_keys("query", &query).into_iter().map(|k| (k, None)));
        }
        self.persist(writes);
        count
    }

    /// The whole cache as JSON, for `manage --dump-cache`: outcomes past their TTL (not yet
    /// dropped) are left out, as every lookup leaves them out.
    pub fn dump(&self) -> Value {
        let now = now_unix();
        let s = self.lock();
        let timed = |t: &Timed| serde_json::json!({"state": t.state, "expires_in_secs": t.expires_unix.saturating_sub(now)});
        let live = |t: &&Timed| t.expires_unix > now;
        serde_json::json!({
            "jobs": s.jobs.iter().filter(|(_, t)| live(t)).map(|(k, t)| (k.to_hex(), timed(t))).collect::<Map<String, Value>>(),
            "parents": s.parents.iter().filter(|(_, t)| live(t)).map(|(k, t)| (k.clone(), timed(t))).collect::<Map<String, Value>>(),
            "args": Value::Object(Map::clone(&s.args)),
            "envs": Value::Object(s.envs.clone()),
        })
    }
}

/// The row of a top-level arg.
fn arg_row(name: &str) -> String {
    format!("arg/{name}")
}

/// The row of one value of a QUERY set: `query.NODE.NAME`.
fn query_row(node: &str, name: &str) -> String {
    // Two strings as JSON: cannot fail.
    format!(
        "argq/{}",
        serde_json::to_string(&(node, name)).unwrap_or_default()
    )
}

/// The row of an env.
fn env_row(name: &str) -> String {
    format!("env/{name}")
}

fn json_bytes(v: &Value) -> Vec<u8> {
    // Plain data into memory: cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The `(node, name)` pairs of a `query` arg shaped as QUERY sets leave it, a non-empty map
/// of non-empty maps, kept as one row per value; `None` for any other shape (kept as one row:
/// an empty map has no value to keep a row of, yet is there).
fn query_pairs(query: &Value) -> Option<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    for (node, values) in query.as_object().filter(|q| !q.is_empty())? {
        let values = values.as_object().filter(|v| !v.is_empty())?;
        pairs.extend(values.keys().map(|k| (node.as_str(), k.as_str())));
    }
    Some(pairs)
}

/// The rows that keep the arg `name` of value `v`.
fn arg_rows(name: &str, v: &Value) -> CacheWrites {
    match (name, query_pairs(v)) {
        ("query", Some(pairs)) => pairs
            .into_iter()
            .map(|(node, key)| (query_row(node, key), Some(json_bytes(&v[node][key]))))
            .collect(),
        _ => vec![(arg_row(name), Some(json_bytes(v)))],
    }
}

/// The keys of [`arg_rows`].
fn arg_keys(name: &str, v: &Value) -> Vec<String> {
    match (name, query_pairs(v)) {
        ("query", Some(pairs)) => pairs
            .into_iter()
            .map(|(node, key)| query_row(node, key))
            .collect(),
        _ => vec![arg_row(name)],
    }
}

/// The map at `name` in `map`, made (in place of whatever else is there) if need be.
fn object_at<'a>(map: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made a map just above"),
    }
}

fn cbor<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Plain data into memory: cannot fail.
    ciborium::into_writer(v, &mut out).expect("CBOR encoding into memory");
    out
}

/// Directord's `merge_dict`: new keys are added; with `extend`, maps merge recursively and lists
/// are extended; otherwise values are replaced.
pub fn merge(base: &mut Map<String, Value>, new: Map<String, Value>, extend: bool) {
    for (k, v) in new {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(n)) if extend => merge(b, n, true),
            (Some(Value::Array(b)), Value::Array(n)) if extend => b.extend(n),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// What the args a templated job of `spec` renders with are, as a digest: the values of the
/// names its command, path or DEST reads, and every arg for a `--blueprint` file (its names
/// are known only once it is here) or a template that prints them all (`debug()`). `None` for a job without templates. A success cached with
/// other args does not skip the job: a templated command whose ARG changed runs again
/// (Directord skipped it, by a fingerprint of the job as written).
pub fn rendered_with(spec: &crate::JobSpec, args: impl FnOnce() -> Vars) -> Option<Fingerprint> {
    use crate::spec::Component;
    let (texts, every_arg): (Vec<&str>, bool) = match &spec.component {
        Component::Run { command, .. } => (vec![command.as_str()], false),
        Component::Workdir { path, .. } => (vec![path.as_str()], false),
        Component::Add(t) | Component::Copy(t) => (vec![t.dest.as_str()], t.blueprint),
        _ => return None,
    };
    let templated: Vec<&str> = texts
        .into_iter()
        .filter(|t| crate::template::is_template(t))
        .collect();
    if templated.is_empty() && !every_arg {
        return None;
    }
    let every_arg = every_arg
        || templated
            .iter()
            .any(|t| crate::template::reads_every_arg(t));
    let args = args();
    let mut names = std::collections::BTreeSet::new();
    if every_arg {
        names.extend(args.keys().cloned());
    }
    for text in templated {
        names.extend(crate::template::names_used(text).unwrap_or_default());
    }
    let mut hasher = blake3::Hasher::new();
    for name in &names {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        // Absent and null differ: a missing name fails the job, a null renders.
        match args.get(name) {
            Some(value) => {
                hasher.update(b"=");
                hasher.update(value.to_string().as_bytes());
            }
            None => {
                hasher.update(b"!");
            }
        }
        hasher.update(&[0]);
    }
    Some(Fingerprint(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The keys of the cache's rows in `db`, in order.
    fn row_keys(db: &Database) -> Vec<String> {
        let r = db.begin_read().unwrap();
        let t = r.open_table(TABLE).unwrap();
        let mut keys: Vec<String> = t
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value().to_string())
            .collect();
        keys.sort();
        keys
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    /// A template that prints the whole context (`debug()`) renders differently whenever any
    /// arg changes: its digest covers them all.
    #[test]
    fn a_template_printing_every_arg_depends_on_every_arg() {
        let spec = |cmd: &str| match crate::JobSpec::parse("RUN", cmd, &Default::default()) {
            Ok(crate::ParseOutcome::Spec(s)) => s,
            other => panic!("{other:?}"),
        };
        let args = |zz: i64| Vars::from(json!({"a": 1, "zz": zz}));
        // A command reading `a` alone does not depend on `zz`; one printing the context does.
        let reads_a = spec("echo {{ a }}");
        assert_eq!(
            rendered_with(&reads_a, || args(1)),
            rendered_with(&reads_a, || args(2))
        );
        let prints_all = spec("echo '{{ debug() }}'");
        assert_ne!(
            rendered_with(&prints_all, || args(1)),
            rendered_with(&prints_all, || args(2))
        );
    }

    /// A cached outcome keeps the args it rendered with across a restart, and one written by
    /// a release before (no such field) still reads, as rendered without templates.
    #[test]
    fn what_a_job_rendered_with_is_kept_and_old_rows_read() {
        #[derive(Serialize)]
        struct Before {
            state: CachedState,
            expires_unix: u64,
        }
        let before = cbor(&Before {
            state: CachedState::Success,
            expires_unix: 7,
        });
        let read: Timed = ciborium::from_reader(before.as_slice()).unwrap();
        assert_eq!((read.expires_unix, read.rendered), (7, None));
        let with = Timed {
            state: CachedState::Success,
            expires_unix: 7,
            rendered: Some(Fingerprint([9; 32])),
        };
        let read: Timed = ciborium::from_reader(cbor(&with).as_slice()).unwrap();
        assert_eq!(read.rendered, Some(Fingerprint([9; 32])));
        let cache = Cache::in_memory(DEFAULT_TTL);
        let fp = Fingerprint([1; 32]);
        cache.record_rendered(&fp, "p", CachedState::Success, Some(Fingerprint([9; 32])));
        assert!(cache.succeeded(&fp, Some(Fingerprint([9; 32]))));
        assert!(!cache.succeeded(&fp, Some(Fingerprint([8; 32]))));
        assert!(!cache.succeeded(&fp, None));
    }

    /// A templated job's success cached by a release before (no digest of its args) still
    /// skips the job after the upgrade, and takes the args of then as its own, on disk too: a
    /// later change of them runs the job again.
    #[test]
    fn a_templated_success_cached_by_a_release_before_counts_for_the_args_of_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let fp = Fingerprint([1; 32]);
        let (now, changed) = (Some(Fingerprint([9; 32])), Some(Fingerprint([8; 32])));
        let open = || {
            let db = Arc::new(Database::create(&path).unwrap());
            Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap()
        };
        {
            let cache = open();
            // As the release before wrote it.
            cache.record(&fp, "p", CachedState::Success);
            assert!(cache.succeeded(&fp, now));
            assert!(cache.succeeded(&fp, now));
            assert!(!cache.succeeded(&fp, changed));
        }
        let cache = open();
        assert!(cache.succeeded(&fp, now));
        assert!(!cache.succeeded(&fp, changed));
        // A failure is none, whatever its digest.
        let failed = Fingerprint([2; 32]);
        cache.record(&failed, "q", CachedState::Failed);
        assert!(!cache.succeeded(&failed, now));
    }
    #[test]
    fn merge_replaces_or_extends() {
        let mut base = obj(json!({"a": {"x": 1}, "l": [1], "s": "old"}));
        merge(
            &mut base,
            obj(json!({"a": {"y": 2}, "l": [2], "s": "new"})),
            true,
        );
        assert_eq!(
            Value::Object(base.clone()),
            json!({"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "new"})
        );
        merge(&mut base, obj(json!({"a": {"z": 3}})), false);
        assert_eq!(base["a"], json!({"z": 3}));
    }

    #[test]
    fn success_is_remembered_and_a_failed_parent_stays_failed() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let fp = Fingerprint([1; 32]);
        assert!(!cache.succeeded(&fp, None));
        cache.record(&fp, "p", CachedState::Success);
        assert!(cache.succeeded(&fp, None) && !cache.parent_failed("p"));
        cache.record(&Fingerprint([2; 32]), "p", CachedState::Failed);
        assert!(cache.parent_failed("p"));
        cache.record(&Fingerprint([3; 32]), "p", CachedState::Success);
        assert!(
            cache.parent_failed("p"),
            "a later success does not clear the parent failure"
        );
        assert_eq!(cache.evict(CacheTag::Jobs), 3);
        assert!(!cache.succeeded(&fp, None));
        // The parent's failure is not a job's: `jobs` leaves it, `parents` clears it.
        assert!(cache.parent_failed("p"));
        assert_eq!(cache.evict(CacheTag::Parents), 1);
        assert!(!cache.parent_failed("p"));
    }

    /// CACHEEVICT all: jobs, parents, args and envs all go; each other tag only its own.
    #[test]
    fn each_tag_evicts_its_own_part_and_all_evicts_everything() {
        let fill = || {
            let cache = Cache::in_memory(DEFAULT_TTL);
            cache.record(&Fingerprint([1; 32]), "p", CachedState::Failed);
            cache.merge_args(obj(json!({"a": 1, "b": "two"})), false);
            cache.merge_envs(obj(json!({"E": "x"})), false);
            cache
        };
        let left = |cache: &Cache| {
            (
                cache.has_outcome(&Fingerprint([1; 32])),
                cache.parent_failed("p"),
                cache.args().len(),
                cache.envs().len(),
            )
        };
        let cache = fill();
        assert_eq!(left(&cache), (true, true, 2, 1));
        assert_eq!(cache.evict(CacheTag::All), 5);
        assert_eq!(left(&cache), (false, false, 0, 0));
        for (tag, what) in [
            (CacheTag::Jobs, (false, true, 2, 1)),
            (CacheTag::Parents, (true, false, 2, 1)),
            (CacheTag::Args, (true, true, 0, 1)),
            (CacheTag::Envs, (true, true, 2, 0)),
        ] {
            let cache = fill();
            cache.evict(tag);
            assert_eq!(left(&cache), what, "{tag:?}");
        }
    }

    #[test]
    fn zero_ttl_remembers_nothing() {
        let cache = Cache::in_memory(Duration::ZERO);
        let fp = Fingerprint([1; 32]);
        cache.record(&fp, "p", CachedState::Success);
        assert!(!cache.succeeded(&fp, None));
    }

    /// Jobs share one copy of the args until an ARG, an eviction or a QUERY changes them.
    #[test]
    fn args_are_shared_until_they_change() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        cache.merge_args(obj(json!({"k": "v", "query": {"n": 1}})), false);
        let first = cache.args();
        assert!(Vars::same_as(&first, &cache.args()));
        cache.merge_args(obj(json!({"k": "w"})), false);
        let second = cache.args();
        assert!(!Vars::same_as(&first, &second));
        assert_eq!(
            (first["k"].clone(), second["k"].clone()),
            (json!("v"), json!("w"))
        );
        cache.evict(CacheTag::Query);
        assert!(cache.args().get("query").is_none() && second.get("query").is_some());
        cache.evict(CacheTag::Args);
        assert!(cache.args().is_empty());
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let fp = Fingerprint([7; 32]);
        {
            let db = Arc::new(Database::create(&path).unwrap());
            let cache = Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap();
            cache.record(&fp, "p", CachedState::Success);
            cache.merge_args(obj(json!({"k": "v", "query": {"n": 1}})), false);
            cache.merge_envs(obj(json!({"E": 1})), false);
        }
        let db = Arc::new(Database::create(&path).unwrap());
        let cache = Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap();
        assert!(cache.succeeded(&fp, None));
        assert_eq!(cache.args()["k"], json!("v"));
        assert_eq!(cache.envs(), vec![("E".to_string(), "1".to_string())]);
        assert_eq!(cache.evict(CacheTag::Query), 1);
        assert!(cache.args().get("query").is_none());
        let dump = cache.dump();
        assert_eq!(dump["args"], json!({"k": "v"}));
        assert_eq!(dump["jobs"][fp.to_hex()]["state"], json!("success"));
    }

    /// Keeps every write, to see which rows a change touches.
    #[derive(Default)]
    struct Recorded(Mutex<CacheWrites>);

    impl CacheSink for Recorded {
        fn write(&self, writes: CacheWrites) {
            self.0.lock().unwrap().extend(writes);
        }
    }

    impl Recorded {
        fn take(&self) -> Vec<(String, usize)> {
            let mut w: Vec<_> = std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .map(|(k, v)| (k, v.map_or(0, |v| v.len())))
                .collect();
            w.sort();
            w
        }
    }

    /// A change writes the rows of what it changed, not the whole args: a QUERY set after
    /// megabytes of values writes the values it brought.
    #[test]
    fn a_change_writes_only_what_it_changed() {
        let sink = Arc::new(Recorded::default());
        let cache = Cache {
            state: Mutex::new(State::default()),
            sink: Some(sink.clone()),
            ttl: DEFAULT_TTL,
        };
        let big = "x".repeat(1 << 20);
        cache.merge_args(
            obj(json!({"query": {"n1": {"big": big}, "n2": {"big": big}}})),
            true,
        );
        let q = |n: &str, k: &str| query_row(n, k);
        assert_eq!(
            sink.take(),
            vec![
                (q("n1", "big"), big.len() + 2),
                (q("n2", "big"), big.len() + 2)
            ]
        );
        cache.merge_args(
            obj(json!({"query": {"n1": {"ip": "a"}, "n3": {"ip": "c"}}})),
            true,
        );
        assert_eq!(sink.take(), vec![(q("n1", "ip"), 3), (q("n3", "ip"), 3)]);
        cache.merge_args(obj(json!({"k": 1})), false);
        assert_eq!(sink.take(), vec![("arg/k".to_string(), 1)]);
        // An ARG that makes `query` a plain value: its rows go, one row holds it.
        cache.merge_args(obj(json!({"query": 5})), false);
        let w = sink.take();
        assert_eq!(w.len(), 5, "{w:?}");
        assert!(w.contains(&("arg/query".to_string(), 1)));
        assert!(
            w.iter()
                .filter(|(k, n)| k.starts_with("argq/") && *n == 0)
                .count()
                == 4
        );
        // A QUERY set over it: the plain row goes, the set's rows come.
        cache.merge_args(obj(json!({"query": {"n1": {"ip": "a"}}})), true);
        assert_eq!(
            sink.take(),
            vec![("arg/query".to_string(), 0), (q("n1", "ip"), 3)]
        );
        cache.merge_envs(obj(json!({"A": "1", "B": "2"})), false);
        cache.merge_envs(obj(json!({"A": "3"})), false);
        assert_eq!(
            sink.take(),
            vec![
                ("env/A".to_string(), 3),
                ("env/A".to_string(), 3),
                ("env/B".to_string(), 3)
            ]
        );
    }

    /// An outcome remembered while the wall clock ran days ahead expires a TTL from now, not
    /// days after (when the clock comes back to that time).
    #[test]
    fn an_expiry_beyond_the_ttl_is_brought_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let fp = Fingerprint([9; 32]);
        let ttl = Duration::from_secs(3600);
        {
            let db = Arc::new(Database::create(&path).unwrap());
            let ahead = Timed {
                state: CachedState::Success,
                expires_unix: now_unix() + 3 * 24 * 3600 + ttl.as_secs(),
                rendered: None,
            };
            DirectSink(db).write(vec![
                (format!("job/{}", fp.to_hex()), Some(cbor(&ahead))),
                ("parent/p".into(), Some(cbor(&ahead))),
            ]);
        }
        let in_secs = |dump: &Value| {
            (
                dump["jobs"][fp.to_hex()]["expires_in_secs"]
                    .as_u64()
                    .unwrap(),
                dump["parents"]["p"]["expires_in_secs"].as_u64().unwrap(),
            )
        };
        {
            let db = Arc::new(Database::create(&path).unwrap());
            let cache = Cache::open(db.clone(), ttl, Arc::new(DirectSink(db))).unwrap();
            assert!(cache.succeeded(&fp, None));
            let (job, parent) = in_secs(&cache.dump());
            assert!(job <= 3600 && parent <= 3600, "{job} {parent}");
        }
        // Written back: a restart does not give it a TTL from then.
        let db = Arc::new(Database::create(&path).unwrap());
        let r = db.begin_read().unwrap();
        let t = r.open_table(TABLE).unwrap();
        let row = t
            .get(format!("job/{}", fp.to_hex()).as_str())
            .unwrap()
            .unwrap();
        let timed: Timed = ciborium::from_reader(row.value()).unwrap();
        assert!(timed.expires_unix <= now_unix() + 3600);
    }

    /// Outcomes past their TTL go: from the rows when the cache is opened, from memory and
    /// the rows while it is open (a node records a parent for every run), and from a dump
    /// before that. Those within it stay.
    #[test]
    fn outcomes_past_their_ttl_go_from_memory_and_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let ttl = Duration::from_secs(3600);
        let (old, live) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let at = |expires_unix| Timed {
            state: CachedState::Success,
            expires_unix,
            rendered: None,
        };
        {
            let db = Arc::new(Database::create(&path).unwrap());
            DirectSink(db).write(vec![
                (
                    format!("job/{}", old.to_hex()),
                    Some(cbor(&at(now_unix() - 10))),
                ),
                ("parent/old".into(), Some(cbor(&at(now_unix())))),
                (
                    format!("job/{}", live.to_hex()),
                    Some(cbor(&at(now_unix() + 600))),
                ),
                ("parent/live".into(), Some(cbor(&at(now_unix() + 600)))),
            ]);
        }
        let db = Arc::new(Database::create(&path).unwrap());
        let cache = Cache::open(db.clone(), ttl, Arc::new(DirectSink(db.clone()))).unwrap();
        assert_eq!(
            row_keys(&db),
            vec![format!("job/{}", live.to_hex()), "parent/live".to_string()]
        );
        {
            let s = cache.lock();
            assert_eq!(s.jobs.keys().collect::<Vec<_>>(), vec![&live]);
            assert_eq!(s.parents.keys().collect::<Vec<_>>(), vec!["live"]);
        }
        assert!(cache.succeeded(&live, None) && !cache.succeeded(&old, None));
        // While open: the live ones' time runs out (as if the clock had moved on).
        cache.record(&Fingerprint([3; 32]), "later", CachedState::Success);
        {
            let mut s = cache.lock();
            s.jobs.get_mut(&live).unwrap().expires_unix = now_unix() - 1;
            s.parents.get_mut("live").unwrap().expires_unix = now_unix() - 1;
        }
        // Not yet looked for: a dump leaves them out all the same.
        let dump = cache.dump();
        assert!(dump["jobs"].get(live.to_hex()).is_none(), "{dump}");
        assert!(dump["parents"].get("live").is_none(), "{dump}");
        assert!(dump["parents"].get("later").is_some(), "{dump}");
        cache.lock().next_clamp = None;
        assert!(!cache.succeeded(&live, None));
        {
            let s = cache.lock();
            assert!(!s.jobs.contains_key(&live) && !s.parents.contains_key("live"));
            assert_eq!(s.jobs.len() + s.parents.len(), 2);
        }
        assert_eq!(
            row_keys(&db),
            vec![
                format!("job/{}", Fingerprint([3; 32]).to_hex()),
                "parent/later".to_string()
            ]
        );
        drop(cache);
        drop(db);
        let db = Arc::new(Database::create(&path).unwrap());
        let again = Cache::open(db.clone(), ttl, Arc::new(DirectSink(db))).unwrap();
        assert!(again.succeeded(&Fingerprint([3; 32]), None) && !again.succeeded(&live, None));
    }

    /// Changes reach the sink in the order they were made: one that took the state after
    /// another cannot overtake it on the way to the disk (a reopened cache would read a value
    /// the live one never held).
    #[test]
    fn changes_reach_the_sink_in_the_order_made() {
        struct Slow(Recorded, std::sync::mpsc::SyncSender<()>);
        impl CacheSink for Slow {
            fn write(&self, writes: CacheWrites) {
                let first = self.0.0.lock().unwrap().is_empty();
                if first {
                    let _ = self.1.send(());
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.0.write(writes);
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sink = Arc::new(Slow(Recorded::default(), tx));
        let cache = Arc::new(Cache {
            state: Mutex::new(State::default()),
            sink: Some(sink.clone()),
            ttl: DEFAULT_TTL,
        });
        let first = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.merge_args(obj(json!({"query": {"n9": {"x": 9}}})), true)
            })
        };
        rx.recv().unwrap();
        cache.merge_args(obj(json!({"query": 5})), false);
        first.join().unwrap();
        let order: Vec<String> = sink
            .0
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            order.last().map(String::as_str),
            Some("arg/query"),
            "{order:?}"
        );
    }

    /// Whatever the order of changes, a reopened cache has the args and envs the live one had.
    #[test]
    fn the_rows_read_back_as_the_args_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        type Step = Box<dyn Fn(&Cache)>;
        let steps: Vec<Step> = vec![
            Box::new(|c| c.merge_args(obj(json!({"a": [1], "query": {"n1": {"x": 1}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"a": [2], "query": {"n2": {"x": 2}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n1": {"x": {"deep": 1}}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n1": {"x": {"more": 2}}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n9": {}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {}})), false)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n2": {"y": 3}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {}})), true)),
            Box::new(|c| {
                c.evict(CacheTag::Query);
            }),
            Box::new(|c| c.merge_args(obj(json!({"query": {}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n2": {"y": 3}}})), true)),
            Box::new(|c| c.merge_args(obj(json!({"query": "plain"})), false)),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n4": {"z": 4}}})), true)),
            Box::new(|c| c.merge_envs(obj(json!({"E": "1", "F": [1]})), false)),
            Box::new(|c| {
                c.evict(CacheTag::Query);
            }),
            Box::new(|c| c.merge_args(obj(json!({"query": {"n5": {"w": 5}}})), true)),
            Box::new(|c| {
                c.evict(CacheTag::Args);
            }),
            Box::new(|c| c.merge_args(obj(json!({"b": "B"})), true)),
            Box::new(|c| {
                c.evict(CacheTag::Envs);
            }),
        ];
        for step in &steps {
            let live = {
                let db = Arc::new(Database::create(&path).unwrap());
                let cache = Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap();
                step(&cache);
                cache.dump()
            };
            let db = Arc::new(Database::create(&path).unwrap());
            let again = Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap();
            let read = again.dump();
            assert_eq!(
                (&read["args"], &read["envs"]),
                (&live["args"], &live["envs"])
            );
        }
    }

    /// A database of a release that kept the args and envs whole is read, and rewritten as
    /// rows.
    #[test]
    fn args_kept_whole_are_read_and_rewritten_as_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let db = Arc::new(Database::create(&path).unwrap());
            DirectSink(db).write(vec![
                (
                    "args".into(),
                    Some(
                        serde_json::to_vec(&json!({"k": "v", "query": {"n1": {"x": 1}}})).unwrap(),
                    ),
                ),
                (
                    "envs".into(),
                    Some(serde_json::to_vec(&json!({"E": "e"})).unwrap()),
                ),
            ]);
        }
        {
            let db = Arc::new(Database::create(&path).unwrap());
            let cache =
                Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db.clone()))).unwrap();
            assert_eq!(cache.args()["query"]["n1"]["x"], json!(1));
            assert_eq!(
                row_keys(&db),
                vec!["arg/k".to_string(), query_row("n1", "x"), "env/E".into()]
            );
        }
        let db = Arc::new(Database::create(&path).unwrap());
        let cache = Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap();
        assert_eq!(
            cache.dump()["args"],
            json!({"k": "v", "query": {"n1": {"x": 1}}})
        );
        assert_eq!(cache.envs(), vec![("E".to_string(), "e".to_string())]);
    }

    /// A QUERY set merged again (the same QUERY run again) replaces each node's value of
    /// each name: a list is not extended by itself, a map loses the keys the node dropped;
    /// other names and nodes stay. The rows read back as the args were.
    #[test]
    fn a_query_set_replaces_each_nodes_value_of_each_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let open = || {
            let db = Arc::new(Database::create(&path).unwrap());
            Cache::open(db.clone(), DEFAULT_TTL, Arc::new(DirectSink(db))).unwrap()
        };
        let cache = open();
        let set = |v: Value| obj(json!({"query": {"n1": {"lst": v}}}));
        cache.merge_args(obj(json!({"query": {"n2": {"other": [7]}}})), true);
        for _ in 0..3 {
            cache.merge_args(set(json!([1, 2])), true);
        }
        assert_eq!(
            cache.args()["query"],
            json!({"n1": {"lst": [1, 2]}, "n2": {"other": [7]}})
        );
        cache.merge_args(set(json!({"a": 1, "b": 2})), true);
        cache.merge_args(set(json!({"a": 1})), true);
        assert_eq!(cache.args()["query"]["n1"]["lst"], json!({"a": 1}));
        cache.merge_args(set(Value::Null), true);
        assert_eq!(cache.args()["query"]["n1"]["lst"], Value::Null);
        cache.merge_args(set(json!([3])), true);
        let live = cache.dump();
        drop(cache);
        assert_eq!(open().dump()["args"], live["args"]);
        assert_eq!(
            live["args"]["query"],
            json!({"n1": {"lst": [3]}, "n2": {"other": [7]}})
        );
        // Any other arg still extends.
        let cache = open();
        cache.merge_args(obj(json!({"l": [1]})), true);
        cache.merge_args(obj(json!({"l": [1]})), true);
        assert_eq!(cache.args()["l"], json!([1, 1]));
    }

    #[test]
    fn a_run_renders_with_its_own_query_set_until_it_is_forgotten() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        cache.merge_args(obj(json!({"k": "v"})), false);
        let set = |v: &str| json!({"query": {"n1": {"x": v}, "n2": {"x": v}}});
        // Run A's QUERY merged first, then run B's of the same name: the node's args hold B's.
        for (run, v) in [("a", "A"), ("b", "B")] {
            cache.keep_run_query(run, &set(v));
            if let Value::Object(map) = set(v) {
                cache.merge_args(map, true);
            }
        }
        // Another name merged by another run later stays visible beside A's own.
        cache.merge_args(obj(json!({"query": {"n1": {"y": 1}}})), true);
        let a = cache.args_for_run("a");
        assert_eq!(a["query"]["n1"]["x"], json!("A"));
        assert_eq!(a["query"]["n2"]["x"], json!("A"));
        assert_eq!(a["query"]["n1"]["y"], json!(1));
        assert_eq!(a["k"], json!("v"));
        assert_eq!(cache.args_for_run("b")["query"]["n1"]["x"], json!("B"));
        // A's jobs share one view until the node's args or A's own change.
        assert!(Vars::same_as(&a, &cache.args_for_run("a")));
        cache.merge_args(obj(json!({"z": 1})), false);
        let again = cache.args_for_run("a");
        assert!(!Vars::same_as(&a, &again) && again["z"] == json!(1));
        // A run with no QUERY of its own sees the node's args, shared, as does one whose set
        // is the node's.
        assert!(Vars::same_as(&cache.args_for_run("c"), &cache.args()));
        assert!(Vars::same_as(&cache.args_for_run("b"), &cache.args()));
        cache.forget_run("a");
        assert_eq!(cache.args_for_run("a")["query"]["n1"]["x"], json!("B"));
        // A run's own QUERY set and an eviction show in its view at once.
        cache.keep_run_query("a", &json!({"query": {"n3": {"x": "A"}}}));
        assert_eq!(cache.args_for_run("a")["query"]["n3"]["x"], json!("A"));
        cache.evict(CacheTag::Query);
        assert!(cache.args_for_run("a").get("query").is_none());
    }

    /// A node left out of a run's QUERY set (cut off, back too late) shows no value of that
    /// name to the run's jobs, not the one an earlier run gathered; other names it holds
    /// stay, and a larger set of the run shows it again.
    #[test]
    fn a_run_sees_no_earlier_runs_value_of_a_node_left_out_of_its_set() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let earlier = json!({"query": {
            "n1": {"x": 0}, "n2": {"x": 0}, "n3": {"x": 0, "y": 1}, "n4": {"y": 2}
        }});
        if let Value::Object(map) = earlier {
            cache.merge_args(map, true);
        }
        let set = json!({"query": {"n1": {"x": "A"}, "n2": {"x": "A"}}});
        cache.keep_run_query("a", &set);
        if let Value::Object(map) = set {
            cache.merge_args(map, true);
        }
        let a = cache.args_for_run("a");
        assert_eq!(a["query"]["n1"]["x"], json!("A"));
        assert!(a["query"]["n3"].get("x").is_none(), "{a:?}");
        assert_eq!(a["query"]["n3"]["y"], json!(1));
        // The node keeps what was set last, for the runs after (as Directord's args).
        assert_eq!(cache.args()["query"]["n3"]["x"], json!(0));
        // A node whose only value was of the name queried is not in the run's view at all.
        let set = json!({"query": {"n1": {"y": "A"}}});
        cache.keep_run_query("b", &set);
        let b = cache.args_for_run("b");
        assert!(b["query"].get("n4").is_none(), "{b:?}");
        assert!(b["query"]["n1"]["y"] == json!("A") && b["query"]["n3"].get("y").is_none());
        assert_eq!(b["query"]["n3"]["x"], json!(0));
        // n3's value comes later, in a larger set of run a: its jobs see it.
        cache.keep_run_query("a", &json!({"query": {"n3": {"x": "A"}}}));
        assert_eq!(cache.args_for_run("a")["query"]["n3"]["x"], json!("A"));
    }
}
