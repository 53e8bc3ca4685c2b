//! Files for ADD/COPY: fetching them from the nodes that hold them, and serving them to others.
//!
//! One actor owns the downloads in progress (one per file, however many jobs wait for it) and
//! drives each with `coordination::transfer::Download`; chunk requests, disk writes and hashing
//! run in spawned tasks that report back. Serving reads chunks from the blob store, so only
//! content this node holds for a job is ever served, by hash.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use coordination::{
    JobMessage, JobReply, NodeId,
    transfer::{Action, ChunkResult, Download, Input, Sources},
};
use jobs::{Fingerprint, spec::FileRef};
use mesh::{
    BlobToken, MeshError, MeshHandle, MeshStatus, PeerId,
    wire::{BlobRequest, BlobResponse},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::blobs::{Attempt, BlobStore, ChunkLookup};

/// How often downloads are nudged (retries after `NotYet`). Far below
/// `coordination::transfer::MAX_COUNTED_GAP`: a longer gap between two ticks is taken for
/// time this node was not running.
pub const TICK: Duration = Duration::from_millis(25);

/// Test hooks, on only when `DIRECTORD_MESH_TEST_HOOKS=1`: files in the state directory that
/// make this node serve corrupt (`test-corrupt-blobs`) or slow (`test-slow-blobs`) chunks, or
/// its transfer task panic at the next fetch (`test-panic-transfers`).
#[derive(Clone)]
pub struct TestHooks {
    dir: Option<PathBuf>,
}

impl TestHooks {
    pub fn from_env(state_dir: &Path) -> TestHooks {
        let on = std::env::var("DIRECTORD_MESH_TEST_HOOKS").is_ok_and(|v| v == "1");
        TestHooks {
            dir: on.then(|| state_dir.to_path_buf()),
        }
    }

    fn active(&self, name: &str) -> bool {
        self.dir.as_ref().is_some_and(|d| d.join(name).exists())
    }
}

enum TInput {
    Fetch {
        file: FileRef,
        sources: Sources,
        reply: oneshot::Sender<Result<PathBuf, String>>,
    },
    /// A chunk's answer, for the download `generation` of `hash` (the answer to one given up
    /// meanwhile is no news to the next).
    Got {
        hash: Fingerprint,
        generation: Attempt,
        index: usize,
        from: NodeId,
        result: ChunkResult,
        corruption: Option<String>,
    },
    Finished {
        hash: Fingerprint,
        result: Result<PathBuf, String>,
    },
    /// A received chunk cannot be written here (a full disk): no source can help. Said of
    /// the download `generation` of `hash` (one given up meanwhile says nothing of the next).
    CannotWrite {
        hash: Fingerprint,
        generation: Attempt,
        why: String,
    },
    Serve {
        request: BlobRequest,
        token: BlobToken,
    },
}

/// The handle to the transfers actor.
#[derive(Clone)]
pub struct Transfers {
    inbox: mpsc::Sender<TInput>,
    served: Arc<AtomicU64>,
}

struct Active {
    /// Which download of this hash this is: the blob store's attempt, for which alone its
    /// chunks are written (a late write of one given up can never count for the next).
    generation: Attempt,
    file: FileRef,
    download: Download,
    waiters: Vec<oneshot::Sender<Result<PathBuf, String>>>,
    /// The last corrupt chunk seen, for the failure message.
    corruption: Option<String>,
    /// Sources told that a chunk they served was corrupt (once each per download).
    told_corrupt: HashSet<NodeId>,
}

impl Transfers {
    /// Starts the actor; the handle stops it (a crash, in tests and simulations).
    pub fn start(
        store: Arc<BlobStore>,
        mesh: MeshHandle,
        hooks: TestHooks,
    ) -> (Transfers, tokio::task::JoinHandle<()>) {
        // Bounded: fetches come from jobs, chunk reports from this actor's own tasks.
        let (tx, rx) = mpsc::channel(4096);
        let served = Arc::new(AtomicU64::new(0));
        let actor = Actor {
            store,
            mesh,
            hooks,
            served: served.clone(),
            inbox: tx.clone(),
            active: HashMap::new(),
            parked: HashMap::new(),
        };
        let task = tokio::spawn(actor.run(rx));
        (Transfers { inbox: tx, served }, task)
    }

    /// Bytes of files served to other nodes since the start.
    pub fn served_bytes(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Makes `file` available here, fetching it from `sources` (in order of preference). Fails
    /// once no node may hold it any more (the originator and every other source answered they
    /// do not hold it; see [`Sources`]), else waits for a holder for as long as the caller does.
    pub async fn fetch(&self, file: FileRef, sources: Sources) -> Result<PathBuf, String> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(TInput::Fetch {
                file,
                sources,
                reply,
            })
            .await
            .map_err(|_| "the node is shutting down".to_string())?;
        answer
            .await
            .map_err(|_| "the node is shutting down".to_string())?
    }

    /// Answers a peer's chunk request.
    pub async fn serve(&self, request: BlobRequest, token: BlobToken) {
        let _ = self.inbox.send(TInput::Serve { request, token }).await;
    }
}

struct Actor {
    store: Arc<BlobStore>,
    mesh: MeshHandle,
    hooks: TestHooks,
    served: Arc<AtomicU64>,
    inbox: mpsc::Sender<TInput>,
    active: HashMap<Fingerprint, Active>,
    /// Chunk requests waiting for a chunk this node is still fetching: at most
    /// [`MAX_PARKED_CHUNKS`] chunks, [`MAX_PARKED_PER_CHUNK`] requests each, for up to
    /// [`PARK_FOR`]; a request past that is answered `NotYet` at once (its asker asks again).
    parked: HashMap<(Fingerprint, u64), Vec<Parked>>,
}

/// How many times a holder is told that it served a corrupt chunk, at most.
const TELL_CORRUPT_TRIES: usize = 3;

/// Most chunks that requests wait for here at once (see [`Actor::parked`]).
const MAX_PARKED_CHUNKS: usize = 1024;
/// Most requests that wait here for one chunk.
const MAX_PARKED_PER_CHUNK: usize = 64;

/// A chunk request waiting here: the request, how to answer it, and until when it waits.
type Parked = (BlobRequest, BlobToken, Instant);

/// How long a chunk request waits here for a chunk still on its way before `NotYet`. The
/// asking node asks again, and turns to another once this one has kept it waiting for
/// `coordination::transfer::NOT_YET_PATIENCE` without giving a chunk.
pub const PARK_FOR: Duration = Duration::from_secs(5);

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<TInput>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    None => return,
                },
                // Idle (nothing fetching, nothing parked): no ticks, so idle nodes stay asleep.
                _ = tick.tick(), if !self.active.is_empty() || !self.parked.is_empty() => {
                    let now = Instant::now();
                    self.expire_parked(now);
                    self.give_up_unwanted();
                    let hashes: Vec<Fingerprint> = self.active.keys().copied().collect();
                    for hash in hashes {
                        self.step(hash, Input::Tick, now);
                    }
                }
            }
        }
    }

    fn handle(&mut self, input: TInput) {
        let now = Instant::now();
        match input {
            TInput::Fetch {
                file,
                sources,
                reply,
            } => {
                // A task that dies, as a bug would make it: the daemon must not go on without.
                if self.hooks.active("test-panic-transfers") {
                    panic!("test hook test-panic-transfers");
                }
                if self.store.has(&file.hash) {
                    let _ = reply.send(Ok(self.store.path(&file.hash)));
                    return;
                }
                if let Some(active) = self.active.get_mut(&file.hash) {
                    active.waiters.push(reply);
                    self.step(file.hash, Input::Sources(sources), now);
                    return;
                }
                // Blocking, on the actor's thread, once per file fetched: the partial file is
                // created (sparse) and the chunk list checked (bounded by the message that
                // brought it: at most about 250 000 digests, a few milliseconds). The chunk
                // writes, where the time goes, run on blocking threads.
                let generation = match self.store.begin(&file) {
                    Ok(attempt) => attempt,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let hash = file.hash;
                debug!(%hash, chunks = file.chunks.len(), ?sources, "fetch begins");
                let (download, actions) = Download::new(file.chunks.len(), sources, now);
                self.active.insert(
                    hash,
                    Active {
                        generation,
                        file,
                        download,
                        waiters: vec![reply],
                        corruption: None,
                        told_corrupt: HashSet::new(),
                    },
                );
                self.act(hash, actions);
            }
            TInput::Got {
                hash,
                generation,
                index,
                from,
                result,
                corruption,
            } => {
                if self
                    .active
                    .get(&hash)
                    .is_none_or(|a| a.generation != generation)
                {
                    // A download given up meanwhile: what it wrote counts for no other.
                    return;
                }
                if result == ChunkResult::Ok {
                    self.unpark(hash, Some(index as u64));
                }
                if result != ChunkResult::Ok {
                    debug!(%hash, index, %from, ?result, "chunk not received");
                }
                let tell = match (corruption, self.active.get_mut(&hash)) {
                    (Some(detail), Some(active)) => {
                        active.corruption = Some(format!("{detail} from {from}"));
                        active.told_corrupt.insert(from.clone())
                    }
                    _ => false,
                };
                if tell {
                    self.tell_served_corrupt(hash, &from);
                }
                self.step(
                    hash,
                    Input::Got {
                        index,
                        from,
                        result,
                    },
                    now,
                )
            }
            TInput::CannotWrite {
                hash,
                generation,
                why,
            } => {
                // A chunk of a download given up meanwhile (its partial file removed) fails
                // to write: no word on the download begun since.
                let current = self
                    .active
                    .get(&hash)
                    .is_some_and(|a| a.generation == generation);
                if current && let Some(active) = self.drop_download(hash) {
                    let why = format!("this node cannot write the file: {why}");
                    warn!(%hash, "file transfer failed: {why}");
                    for w in active.waiters {
                        let _ = w.send(Err(why.clone()));
                    }
                }
            }
            TInput::Finished { hash, result } => {
                debug!(%hash, ok = result.is_ok(), "fetch ends");
                self.unpark(hash, None);
                if let Some(active) = self.active.remove(&hash) {
                    for w in active.waiters {
                        let _ = w.send(result.clone());
                    }
                }
            }
            TInput::Serve { request, token } => {
                let hash = Fingerprint(request.hash);
                match self.store.has_chunk(&hash, request.index) {
                    // Being fetched here and not in yet: answer when it is (or at the deadline),
                    // so a chain of nodes streams without polling.
                    Some(false)
                        if self.active.contains_key(&hash)
                            && self.may_park(hash, request.index) =>
                    {
                        self.parked.entry((hash, request.index)).or_default().push((
                            request,
                            token,
                            now + PARK_FOR,
                        ));
                    }
                    _ => self.serve_now(request, token),
                }
            }
        }
    }

    /// Tells `holder` that a chunk it served of `hash` did not match its digest, so that it
    /// checks its copy (a damaged one would go on failing every fetcher that asks it). Tried
    /// [`TELL_CORRUPT_TRIES`] times, a second apart, while the holder cannot be reached or
    /// answers that it is busy; a word lost leaves things as they were.
    fn tell_served_corrupt(&self, hash: Fingerprint, holder: &NodeId) {
        let Ok(peer) = holder.0.parse::<PeerId>() else {
            return;
        };
        let word = JobMessage::ServedCorrupt { hash };
        let Ok(bytes) = mesh::wire::encode(&word, mesh::wire::MAX_JOB_DATA) else {
            return;
        };
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            let ask = || mesh.request_job(peer, bytes.clone());
            let said = say_until_taken(ask, TELL_CORRUPT_TRIES, Duration::from_secs(1)).await;
            debug!(%peer, ?said, "told a holder that it served a corrupt chunk");
        });
    }

    /// Whether one more request may wait here for chunk `index` of `hash`.
    fn may_park(&self, hash: Fingerprint, index: u64) -> bool {
        match self.parked.get(&(hash, index)) {
            Some(waiting) => waiting.len() < MAX_PARKED_PER_CHUNK,
            None => self.parked.len() < MAX_PARKED_CHUNKS,
        }
    }

    /// Reads the chunk and answers (in a spawned task).
    fn serve_now(&self, request: BlobRequest, token: BlobToken) {
        let store = self.store.clone();
        let mesh = self.mesh.clone();
        let hooks = self.hooks.clone();
        let served = self.served.clone();
        tokio::spawn(async move {
            let hash = Fingerprint(request.hash);
            let found = tokio::task::spawn_blocking(move || store.chunk(&hash, request.index))
                .await
                .unwrap_or(ChunkLookup::NotYet);
            let mut response = answer_to(found);
            if let BlobResponse::Chunk(data) = &mut response {
                if hooks.active("test-slow-blobs") {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if hooks.active("test-corrupt-blobs")
                    && let Some(b) = data.first_mut()
                {
                    *b ^= 0xff;
                }
                served.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            let _ = mesh.reply_blob(token, response).await;
        });
    }

    /// Answers the requests parked for `hash` (all chunks, or only `index`).
    fn unpark(&mut self, hash: Fingerprint, index: Option<u64>) {
        let keys: Vec<(Fingerprint, u64)> = self
            .parked
            .keys()
            .filter(|(h, i)| *h == hash && index.is_none_or(|x| x == *i))
            .copied()
            .collect();
        for key in keys {
            for (request, token, _) in self.parked.remove(&key).unwrap_or_default() {
                self.serve_now(request, token);
            }
        }
    }

    /// Answers parked requests whose deadline passed (with `NotYet`, by reading again).
    fn expire_parked(&mut self, now: Instant) {
        let mut due = Vec::new();
        for waiting in self.parked.values_mut() {
            let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(waiting)
                .into_iter()
                .partition(|(_, _, at)| *at <= now);
            *waiting = keep;
            due.extend(late);
        }
        self.parked.retain(|_, w| !w.is_empty());
        for (request, token, _) in due {
            self.serve_now(request, token);
        }
    }

    /// Downloads no job waits for any more (their jobs timed out waiting) are given up: one
    /// whose holders are all out of reach would otherwise go on asking them for ever.
    fn give_up_unwanted(&mut self) {
        let unwanted: Vec<Fingerprint> = self
            .active
            .iter()
            // One whose every chunk is in is being moved into place: not given up any more.
            .filter(|(_, a)| !a.download.is_over() && a.waiters.iter().all(|w| w.is_closed()))
            .map(|(hash, _)| *hash)
            .collect();
        for hash in unwanted {
            let Some(active) = self.drop_download(hash) else {
                continue;
            };
            // Said for the operator whose job timed out waiting: how far it got, and whom it
            // could not reach.
            let (have, total) = active.download.progress();
            let waited_on = WaitedOn {
                out_of_reach: active.download.out_of_reach(),
                lacking: active.download.lacking(Instant::now()),
                fetching: active.download.fetching(),
                unanswered: Vec::new(),
            };
            let mesh = self.mesh.clone();
            tokio::spawn(async move {
                let names = node_names(&mesh).await;
                let waiting = match waited_on.describe(&names) {
                    who if who.is_empty() => who,
                    who => format!("; {who}"),
                };
                warn!(
                    %hash,
                    "file transfer given up, no job waits for it any more (their timeouts \
                     ended): {have} of {total} chunks had arrived{waiting}"
                );
            });
        }
    }

    /// Ends the download of `hash` without the file: its partial copy goes, the requests
    /// parked for its chunks are answered. Returns it, for its waiters.
    fn drop_download(&mut self, hash: Fingerprint) -> Option<Active> {
        let active = self.active.remove(&hash)?;
        self.store.abandon(&hash);
        self.unpark(hash, None);
        Some(active)
    }

    fn step(&mut self, hash: Fingerprint, input: Input, now: Instant) {
        let Some(active) = self.active.get_mut(&hash) else {
            return;
        };
        let actions = active.download.handle(input, now);
        self.act(hash, actions);
    }

    /// Logs that the download of `hash` is stalled (said once per stall): how far it got, and
    /// the nodes it waits for by name.
    fn say_stalled(&self, hash: Fingerprint, waited_on: WaitedOn) {
        let Some(active) = self.active.get(&hash) else {
            return;
        };
        let (have, total) = active.download.progress();
        let file = active.file.name.clone();
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            let names = node_names(&mesh).await;
            warn!(
                %hash,
                "transfer of {file} stalled at {have} of {total} chunks, no node that may hold \
                 the file serving it now ({}); it goes on when one does, until the job's timeout",
                waited_on.describe(&names)
            );
        });
    }

    fn act(&mut self, hash: Fingerprint, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Fetch { index, from } => {
                    let Some(active) = self.active.get(&hash) else {
                        return;
                    };
                    let file = active.file.clone();
                    let generation = active.generation;
                    let store = self.store.clone();
                    let mesh = self.mesh.clone();
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        let fetched = fetch_chunk(&mesh, &store, &file, generation, index, &from);
                        let input = match fetched.await {
                            Ok((result, corruption)) => TInput::Got {
                                hash,
                                generation,
                                index,
                                from,
                                result,
                                corruption,
                            },
                            Err(why) => TInput::CannotWrite {
                                hash,
                                generation,
                                why,
                            },
                        };
                        let _ = inbox.send(input).await;
                    });
                }
                Action::Done => {
                    let Some(active) = self.active.get(&hash) else {
                        return;
                    };
                    let file = active.file.clone();
                    let store = self.store.clone();
                    let inbox = self.inbox.clone();
                    tokio::spawn(async move {
                        let result = tokio::task::spawn_blocking(move || store.finish(&file))
                            .await
                            .unwrap_or_else(|e| {
                                Err(format!("moving the file into place stopped: {e}"))
                            });
                        let _ = inbox.send(TInput::Finished { hash, result }).await;
                    });
                }
                Action::Failed(failure) => {
                    if let Some(active) = self.drop_download(hash) {
                        let mesh = self.mesh.clone();
                        // Named as the operator knows the nodes (asking the mesh's table takes
                        // a moment: the jobs hear of it from a task of their own).
                        tokio::spawn(async move {
                            let names = node_names(&mesh).await;
                            let file = format!("{} (blake3 {hash})", active.file.name);
                            let why = failure.describe(&file, |n| name_of(&names, n));
                            let why = match active.corruption {
                                Some(detail) => format!("integrity failure: {detail}; {why}"),
                                None => why,
                            };
                            warn!(%hash, "file transfer failed: {why}");
                            for w in active.waiters {
                                let _ = w.send(Err(why.clone()));
                            }
                        });
                    }
                }
                Action::Stalled {
                    out_of_reach,
                    lacking,
                    fetching,
                    unanswered,
                } => {
                    let waited_on = WaitedOn {
                        out_of_reach,
                        lacking,
                        fetching,
                        unanswered,
                    };
                    self.say_stalled(hash, waited_on);
                }
            }
        }
    }
}

/// The nodes a stalled download waits for, by what keeps each from serving it.
struct WaitedOn {
    out_of_reach: Vec<NodeId>,
    lacking: Vec<NodeId>,
    fetching: Vec<NodeId>,
    unanswered: Vec<NodeId>,
}

impl WaitedOn {
    /// "out of reach: a, b; not holding it yet: c; ...", by name, for the parts that have
    /// nodes.
    fn describe(&self, names: &Option<MeshStatus>) -> String {
        let parts = [
            ("out of reach", &self.out_of_reach),
            ("not holding it yet", &self.lacking),
            ("still fetching it themselves", &self.fetching),
            ("asked, not answering yet", &self.unanswered),
        ];
        parts
            .iter()
            .filter(|(_, nodes)| !nodes.is_empty())
            .map(|(what, nodes)| {
                let nodes: Vec<String> = nodes.iter().map(|n| name_of(names, n)).collect();
                format!("{what}: {}", nodes.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The mesh's membership table, to name nodes by (`None` if the mesh does not answer).
async fn node_names(mesh: &MeshHandle) -> Option<MeshStatus> {
    mesh.status().await.ok()
}

/// A node as the operator knows it: its name, else its id.
fn name_of(names: &Option<MeshStatus>, node: &NodeId) -> String {
    match names {
        Some(status) => status.name_or_id(&node.0),
        None => node.0.clone(),
    }
}

/// The answer to a chunk request, as the blob store found the chunk.
fn answer_to(found: ChunkLookup) -> BlobResponse {
    match found {
        ChunkLookup::Have(data) => BlobResponse::Chunk(data),
        ChunkLookup::NotYet => BlobResponse::NotYet,
        ChunkLookup::Unknown => BlobResponse::Unknown,
        ChunkLookup::Unreadable => BlobResponse::Unavailable,
    }
}

/// How a word to another node ended (see [`say_until_taken`]).
#[derive(Debug, PartialEq, Eq)]
enum Said {
    /// It answered Ok, at the given try.
    Taken { tries: usize },
    /// It answered, but not Ok (a release that does not know the word, or will not take it):
    /// saying it again would change nothing.
    NotTaken,
    /// It was out of reach or busy at every try.
    Lost,
}

/// Says a job message with `ask` (one request each call) until the node answers Ok, at most
/// `tries` times, `pause` apart while it is out of reach or busy. A busy node refuses the
/// request (`refused: busy: ...`), which reaches here as a failed request, like a node out of
/// reach: both are tried again. So is an answer that cannot be read (two small requests more
/// at most).
async fn say_until_taken<F, Fut>(mut ask: F, tries: usize, pause: Duration) -> Said
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, MeshError>>,
{
    for attempt in 1..=tries {
        match ask().await {
            Ok(reply) => match mesh::wire::decode(&reply, mesh::wire::MAX_JOB_DATA) {
                Ok(JobReply::Ok) => return Said::Taken { tries: attempt },
                Ok(other) => {
                    debug!(?other, "a node did not take a word");
                    return Said::NotTaken;
                }
                Err(e) => debug!("a node's answer to a word could not be read: {e}"),
            },
            Err(e) => debug!("a word not taken yet: {e}"),
        }
        if attempt < tries {
            tokio::time::sleep(pause).await;
        }
    }
    Said::Lost
}

/// The chunk an answer brings, to check and write; or, without one, what the download hears
/// of its source. A holder that cannot read its copy now is taken as one out of reach, as is
/// a request that failed: passed over for a while and asked again, never counted as a node
/// that does not hold the file (which, from every source, fails the job).
fn chunk_or_result(answer: Result<BlobResponse, MeshError>) -> Result<Vec<u8>, ChunkResult> {
    match answer {
        Ok(BlobResponse::Chunk(data)) => Ok(data),
        Ok(BlobResponse::NotYet) => Err(ChunkResult::NotYet),
        Ok(BlobResponse::Unknown) => Err(ChunkResult::Unknown),
        Ok(BlobResponse::Unavailable) | Err(_) => Err(ChunkResult::Unreachable),
    }
}

/// Asks `from` for one chunk and writes it for the download `attempt` if it checks out; a
/// corrupt chunk comes back with what was expected and found; `Err` when this node cannot
/// write it (or that download was given up meanwhile).
async fn fetch_chunk(
    mesh: &MeshHandle,
    store: &Arc<BlobStore>,
    file: &FileRef,
    attempt: Attempt,
    index: usize,
    from: &NodeId,
) -> Result<(ChunkResult, Option<String>), String> {
    let Ok(peer) = from.0.parse::<PeerId>() else {
        return Ok((ChunkResult::Unknown, None));
    };
    let request = BlobRequest {
        hash: file.hash.0,
        index: index as u64,
    };
    let answer = mesh.request_blob(peer, request).await;
    match &answer {
        Err(e) => debug!(%from, index, "chunk request failed: {e}"),
        Ok(BlobResponse::Unavailable) => {
            debug!(%from, index, "the holder cannot read its copy now");
        }
        Ok(_) => {}
    }
    let data = match chunk_or_result(answer) {
        Ok(data) => data,
        Err(result) => return Ok((result, None)),
    };
    let store = store.clone();
    let file = file.clone();
    let write = move || store.write_chunk(&file, attempt, index, &data);
    Ok(match tokio::task::spawn_blocking(write).await {
        Ok(Ok(None)) => (ChunkResult::Ok, None),
        Ok(Ok(Some(detail))) => {
            warn!(%from, "corrupt chunk: {detail}");
            (ChunkResult::Corrupt, Some(detail))
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(format!("the chunk check stopped: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node that answers the requests of `say_until_taken` in turn with `answers`
    /// (`None`: refused as busy, as the mesh layer of a node whose job inbox is full answers);
    /// returns how it ended and how many requests were made.
    async fn say_to(answers: Vec<Option<JobReply>>) -> (Said, usize) {
        let peer = PeerId::random();
        let asked = std::cell::Cell::new(0);
        let ask = || {
            let answer = answers.get(asked.get()).cloned().flatten();
            asked.set(asked.get() + 1);
            async move {
                match answer {
                    Some(reply) => {
                        Ok(mesh::wire::encode(&reply, mesh::wire::MAX_JOB_DATA).unwrap())
                    }
                    None => Err(MeshError::Request {
                        peer,
                        reason: "refused: busy: this node cannot take more job messages now; \
                                 send it again later"
                            .into(),
                    }),
                }
            }
        };
        let said = say_until_taken(ask, TELL_CORRUPT_TRIES, Duration::from_secs(1)).await;
        (said, asked.get())
    }

    /// Word of a corrupt chunk reaches a holder that is busy for a while, a second apart, and
    /// stops at the first Ok, or after three tries, or at an answer that is not Ok.
    #[tokio::test(start_paused = true)]
    async fn word_of_a_corrupt_chunk_is_said_again_while_its_holder_is_busy() {
        let started = tokio::time::Instant::now();
        assert_eq!(
            say_to(vec![None, None, Some(JobReply::Ok)]).await,
            (Said::Taken { tries: 3 }, 3)
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2), "a second apart");
        assert_eq!(
            say_to(vec![Some(JobReply::Ok)]).await,
            (Said::Taken { tries: 1 }, 1)
        );
        // Busy at every try: given up after three, without a last wait.
        let started = tokio::time::Instant::now();
        assert_eq!(say_to(vec![None; 5]).await, (Said::Lost, 3));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // A release that does not know the word: not said again.
        assert_eq!(
            say_to(vec![
                None,
                Some(JobReply::Refused("unknown message".into()))
            ])
            .await,
            (Said::NotTaken, 2)
        );
    }

    /// A holder whose copy cannot be read says so ("unavailable"), not "unknown"; the asker
    /// takes that as a holder out of reach, never as one without the file, which would fail
    /// the job once every source said it for a minute.
    #[test]
    fn a_holder_that_cannot_read_its_copy_is_out_of_reach_not_without_it() {
        assert_eq!(
            answer_to(ChunkLookup::Unreadable),
            BlobResponse::Unavailable
        );
        assert_eq!(
            chunk_or_result(Ok(BlobResponse::Unavailable)),
            Err(ChunkResult::Unreachable)
        );
        // The other answers, as before.
        assert_eq!(answer_to(ChunkLookup::Unknown), BlobResponse::Unknown);
        assert_eq!(answer_to(ChunkLookup::NotYet), BlobResponse::NotYet);
        assert_eq!(
            answer_to(ChunkLookup::Have(b"hi".to_vec())),
            BlobResponse::Chunk(b"hi".to_vec())
        );
        assert_eq!(
            chunk_or_result(Ok(BlobResponse::Unknown)),
            Err(ChunkResult::Unknown)
        );
        assert_eq!(
            chunk_or_result(Ok(BlobResponse::NotYet)),
            Err(ChunkResult::NotYet)
        );
        assert_eq!(
            chunk_or_result(Err(MeshError::Stopped)),
            Err(ChunkResult::Unreachable)
        );
        assert_eq!(
            chunk_or_result(Ok(BlobResponse::Chunk(b"hi".to_vec()))),
            Ok(b"hi".to_vec())
        );
    }
}
