//! `manage`: the operator's views of jobs and of this node's cache (Directord's names).

use std::{collections::BTreeMap, path::Path};

use comfy_table::{Table, presets::NOTHING};
use jobs::executor::ResultState;
use node::{
    control::{ControlClient, ControlRequest, ControlResponse, JobParts, NodeRow},
    records::{JobRecord, JobStatus, Pick, Picking},
};
use serde_json::{Value, json};

use crate::{
    Failure,
    export_file::{self, PrivateFile},
    output, render,
};

/// Which jobs `--list-jobs --filter` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Filter {
    Success,
    Failed,
    Processing,
}

/// One `manage` action.
pub enum Action {
    /// `last`: only the newest this many (of those `filter` keeps).
    ListJobs {
        filter: Option<Filter>,
        last: Option<usize>,
    },
    JobInfo(String),
    PurgeJobs,
    ExportJobs(std::path::PathBuf),
    DumpCache,
    AnalyzeJob(String),
    AnalyzeParent(String),
}

async fn ask(state_dir: &Path, request: ControlRequest) -> Result<ControlResponse, Failure> {
    let mut client = ControlClient::connect(state_dir)
        .await
        .map_err(Failure::runtime)?;
    client.request(&request).await.map_err(Failure::runtime)
}

/// Connects to the daemon of `state_dir` (its list of jobs is then read in parts: see
/// [`JobParts`]).
async fn connect(state_dir: &Path) -> Result<ControlClient, Failure> {
    ControlClient::connect(state_dir)
        .await
        .map_err(Failure::runtime)
}

/// How a list of records is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON array, indented.
    Json,
    /// One YAML sequence.
    Yaml,
}

/// A writer that notes a write refused because the reader of its pipe has gone.
struct ReaderGone<W> {
    out: W,
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W: std::io::Write> std::io::Write for ReaderGone<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf).inspect_err(|e| self.noted(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().inspect_err(|e| self.noted(e))
    }
}

impl<W> ReaderGone<W> {
    fn noted(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            self.gone.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Writes the records of the daemon's list that `keep` passes to `out` (oldest first, as one
/// JSON array or YAML sequence) as the daemon sends them, a part at a time: a long history is
/// never in memory whole. Gives `out` back, and how many records it holds. A write that
/// fails is `cannot write {what}: ...`; a list cut short by the daemon is its error, with
/// `out` holding a well-formed but shorter list.
async fn write_records<W: std::io::Write + Send + 'static>(
    parts: &mut JobParts<'_>,
    keep: impl Fn(&JobRecord) -> bool,
    format: Format,
    out: W,
    what: &str,
) -> Result<(W, usize), Failure> {
    // A few records ahead of the writer (one may hold every target's output).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<JobRecord>(4);
    let reader_gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = ReaderGone {
        out,
        gone: reader_gone.clone(),
    };
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        let count = std::cell::Cell::new(0);
        let records = Streamed::new(std::iter::from_fn(|| {
            let mut record = rx.blocking_recv()?;
            count.set(count.get() + 1);
            if format == Format::Yaml {
                yaml_times(&mut record);
            }
            Some(record)
        }));
        let written = match format {
            Format::Json => serde_json::to_writer_pretty(&mut out, &records)
                .map_err(|e| e.to_string())
                .and_then(|()| out.write_all(b"\n").map_err(|e| e.to_string())),
            Format::Yaml => serde_yaml_ng::to_writer(&mut out, &records).map_err(|e| e.to_string()),
        };
        written
            .and_then(|()| out.into_inner().map_err(|e| e.error().to_string()))
            .map(|out| (out.out, count.get()))
    });
    let listed: Result<(), node::control::ControlError> = async {
        while let Some(part) = parts.next().await? {
            for record in part.into_iter().filter(|r| keep(r)) {
                if tx.send(record).await.is_err() {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Failure::Runtime(format!("cannot write {what}: {e}")))?
        .map_err(|e| {
            if reader_gone.load(std::sync::atomic::Ordering::Relaxed) {
                // A pipe whose reader has all it wanted (`| head`): nothing to say, as for
                // any other output of this command.
                Failure::Silent(0)
            } else {
                Failure::Runtime(format!("cannot write {what}: {e}"))
            }
        })?;
    listed.map_err(Failure::runtime)?;
    Ok(written)
}

/// The newest `n` records of the daemon's list that `keep` passes, oldest first (the list
/// comes oldest first; only `n` are held), and how many it passed in all.
async fn newest(
    parts: &mut JobParts<'_>,
    keep: impl Fn(&JobRecord) -> bool,
    n: usize,
) -> Result<(std::collections::VecDeque<JobRecord>, usize), Failure> {
    let mut newest = std::collections::VecDeque::with_capacity(n.min(1024));
    let mut matched = 0;
    while let Some(part) = parts.next().await.map_err(Failure::runtime)? {
        for record in part.into_iter().filter(|r| keep(r)) {
            matched += 1;
            if newest.len() == n {
                newest.pop_front();
            }
            newest.push_back(record);
        }
    }
    Ok((newest, matched))
}

/// A sequence serialized as its items come (serde takes it by reference: the cell hands the
/// items over once).
/// A record's times to 10 µs, for YAML: a time under that would be written `2e-7`, which YAML
/// 1.1 readers (PyYAML) take for text; from 10 µs on, numbers are written with a dot.
fn yaml_times(record: &mut JobRecord) {
    let to_10us = |secs: f64| (secs * 1e5).round() / 1e5;
    for r in record.results.values_mut() {
        r.execution_secs = to_10us(r.execution_secs);
        r.roundtrip_secs = to_10us(r.roundtrip_secs);
    }
}

struct Streamed<I>(std::cell::RefCell<Option<I>>);

impl<I> Streamed<I> {
    fn new(items: I) -> Streamed<I> {
        Streamed(std::cell::RefCell::new(Some(items)))
    }
}

impl<I: Iterator<Item = JobRecord>> serde::Serialize for Streamed<I> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.borrow_mut().take().into_iter().flatten())
    }
}

/// Whether `--filter` keeps `record`. As Directord's, `failed` keeps a job that failed on
/// some node, even while others still run it (an operator looks for failures mid-run);
/// `success` keeps only jobs done on every node without a failure (Directord's kept any with
/// one success, a job that failed on all nodes but one among them).
fn passes(filter: Option<Filter>, record: &JobRecord) -> bool {
    match filter {
        None => true,
        Some(Filter::Success) => record.status() == JobStatus::Success,
        Some(Filter::Failed) => !record.failures().is_empty(),
        Some(Filter::Processing) => record.status() == JobStatus::Processing,
    }
}

/// One job's record (`id`: its id, the start of it, or `last`), found by the daemon.
async fn job(state_dir: &Path, id: &str) -> Result<JobRecord, Failure> {
    match ask(state_dir, ControlRequest::JobInfo(id.to_string())).await? {
        ControlResponse::Job(Some(r)) => Ok(*r),
        ControlResponse::Job(None) => Err(Failure::Input(format!("no job '{id}' on this node"))),
        ControlResponse::Refused(why) => Err(Failure::Input(why)),
        other => Err(Failure::Runtime(format!(
            "unexpected answer: {}",
            other.kind()
        ))),
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(Failure::runtime)
}

/// A `--job-info`, `--follow-run` or `--analyze-*` value as the daemon looks it up: `last` and
/// ids (lowercase hexadecimal digits and dashes) in any case; a control character is refused
/// (it would be printed back in the answer).
pub fn record_id(value: &str) -> Result<String, String> {
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "a control character ({:?}) at byte {at}: give a job or run id, the start of one, \
             or `last`",
            c
        ));
    }
    let hex = |c: char| c.is_ascii_hexdigit() || c == '-';
    if value.eq_ignore_ascii_case("last") || value.chars().all(hex) {
        Ok(value.to_ascii_lowercase())
    } else {
        Ok(value.to_string())
    }
}

pub fn run(state_dir: &Path, action: Action, json: bool) -> Result<(), Failure> {
    crate::client_runtime()?.block_on(async {
        let text = match action {
            Action::ListJobs { filter, last } => {
                let mut client = connect(state_dir).await?;
                // The table shows no output; the JSON list is every record whole.
                let mut parts = client.list_jobs(json).await.map_err(Failure::runtime)?;
                let keep = |r: &JobRecord| passes(filter, r);
                match (json, last) {
                    (true, None) => {
                        let out = output::Stdout;
                        write_records(&mut parts, keep, Format::Json, out, "standard output")
                            .await?;
                        return Ok(());
                    }
                    (true, Some(n)) => json_text(&newest(&mut parts, keep, n).await?.0)?,
                    (false, None) => {
                        let mut table = JobsTable::new();
                        while let Some(part) = parts.next().await.map_err(Failure::runtime)? {
                            part.iter().filter(|r| keep(r)).for_each(|r| table.add(r));
                        }
                        table.text()
                    }
                    (false, Some(n)) => {
                        let (records, matched) = newest(&mut parts, keep, n).await?;
                        let mut table = JobsTable::new();
                        records.iter().for_each(|r| table.add(r));
                        let shown = records.len();
                        format!("{}   (the newest {shown} of {matched})", table.text())
                    }
                }
            }
            Action::JobInfo(id) => {
                let r = job(state_dir, &id).await?;
                let members = match r.waiting_for().is_empty() {
                    true => Vec::new(),
                    false => members(state_dir).await,
                };
                if json {
                    json_text(&job_info_json(&r, &members)?)?
                } else {
                    job_info(&r, &members)
                }
            }
            Action::PurgeJobs => match ask(state_dir, ControlRequest::PurgeJobs).await? {
                ControlResponse::Purged { purged, kept } if json => {
                    json_text(&json!({ "purged": purged, "kept": kept }))?
                }
                // The jobs of runs still waiting for results are kept.
                ControlResponse::Purged { purged, kept: 0 } => {
                    format!("Purged every job record ({purged})")
                }
                ControlResponse::Purged { purged, kept } => {
                    format!("Purged {purged} job records; kept {kept} of runs still running")
                }
                other => {
                    return Err(Failure::Runtime(format!(
                        "unexpected answer: {}",
                        other.kind()
                    )));
                }
            },
            Action::ExportJobs(file) => {
                let format = if export_file::is_yaml(&file) {
                    Format::Yaml
                } else {
                    Format::Json
                };
                let what = export_file::name(&file);
                let cannot =
                    |e: std::io::Error| Failure::Runtime(format!("cannot write {what}: {e}"));
                let replaced = export_file::check(state_dir, &file)?;
                let mut client = connect(state_dir).await?;
                let mut parts = client.list_jobs(true).await.map_err(Failure::runtime)?;
                let out = PrivateFile::create(&file).map_err(cannot)?;
                let (out, count) = write_records(&mut parts, |_| true, format, out, &what).await?;
                out.finish().map_err(cannot)?;
                export_file::say(count, "jobs", &file, replaced, json);
                return Ok(());
            }
            Action::DumpCache => match ask(state_dir, ControlRequest::DumpCache).await? {
                ControlResponse::Cache(v) => json_text(&v)?,
                other => return Err(Failure::Runtime(format!("unexpected answer: {other:?}"))),
            },
            Action::AnalyzeJob(id) => {
                let job = job(state_dir, &id).await?;
                let report = analyze(&job.job_id.clone(), &[job]);
                if json {
                    json_text(&report)?
                } else {
                    key_values(&report)
                }
            }
            Action::AnalyzeParent(id) => {
                let mut client = connect(state_dir).await?;
                // The analysis counts and times the results: no output is sent.
                let mut parts = client.list_jobs(false).await.map_err(Failure::runtime)?;
                let mut picking = Picking::new(Pick::Parent, &id);
                while let Some(part) = parts.next().await.map_err(Failure::runtime)? {
                    part.into_iter().for_each(|r| picking.add(r));
                }
                let (id, pick) = picking.pick().map_err(Failure::Input)?;
                let report = analyze(&id, &pick);
                if json {
                    json_text(&report)?
                } else {
                    key_values(&report)
                }
            }
        };
        output::line(text);
        Ok(())
    })
}

/// `--list-jobs` as a table, a row added as each record comes (the records need not be kept).
struct JobsTable {
    table: Table,
    total: usize,
    failed: usize,
    processing: usize,
}

impl JobsTable {
    fn new() -> JobsTable {
        let mut table = Table::new();
        table.load_preset(NOTHING).set_header(vec![
            "ID",
            "PARENT JOB ID",
            "VERB",
            "EXECUTION TIME",
            "ROUNDTRIP TIME",
            "PROCESSING",
            "SUCCESS",
            "FAILED",
        ]);
        JobsTable {
            table,
            total: 0,
            failed: 0,
            processing: 0,
        }
    }

    fn add(&mut self, r: &JobRecord) {
        let (exec, round) = r.mean_times();
        let status = r.status();
        self.table.add_row(vec![
            r.job_id.clone(),
            r.parent_id.clone(),
            r.verb.clone(),
            format!("{exec:.6}"),
            format!("{round:.6}"),
            (status == JobStatus::Processing).to_string(),
            r.successes().len().to_string(),
            r.failures().len().to_string(),
        ]);
        // As `--filter` counts: a job that failed on some node is failed, processing or not.
        self.total += 1;
        self.failed += usize::from(!r.failures().is_empty());
        self.processing += usize::from(status == JobStatus::Processing);
    }

    fn text(&self) -> String {
        format!(
            "{}\n\nTotal Items: {}   Total Failed: {}   Total Processing: {}",
            render::table_text(&self.table),
            self.total,
            self.failed,
            self.processing
        )
    }
}

/// The mesh's members as the daemon sees them (none if it does not say).
async fn members(state_dir: &Path) -> Vec<NodeRow> {
    match ask(state_dir, ControlRequest::Status).await {
        Ok(ControlResponse::Status(report)) => report.nodes,
        _ => Vec::new(),
    }
}

/// The member a job's target is, by its identity (a node rebuilt under the same name is
/// another member).
fn member<'a>(members: &'a [NodeRow], r: &JobRecord, name: &str) -> Option<&'a NodeRow> {
    let peer_id = &r.nodes.iter().find(|n| n.name == name)?.peer_id;
    members.iter().find(|m| m.peer_id == *peer_id)
}

/// How the daemon sees a node a job waits for: `alive`, `expired`, `left`, `conflict`, or
/// `unknown` (not in its table of the mesh).
fn member_state<'a>(members: &'a [NodeRow], r: &JobRecord, name: &str) -> &'a str {
    member(members, r, name).map_or("unknown", |m| m.state.as_str())
}

/// A node a job waits for, with why as far as this node can tell (`members` empty: the
/// daemon did not say, the name alone).
fn waited_on(members: &[NodeRow], r: &JobRecord, name: &str) -> String {
    let Some(m) = member(members, r, name) else {
        return match members.is_empty() {
            true => name.to_string(),
            false => format!("{name} (not in this node's table of the mesh)"),
        };
    };
    let ago = m.last_seen_secs.round() as u64;
    match m.state.as_str() {
        "alive" => format!(
            "{name} (alive: the job is queued or running there, or its result is on its way)"
        ),
        "expired" => format!(
            "{name} (not heard from for {ago} s: down or cut off; its result comes once it is \
             back, or it is written off)"
        ),
        "left" => format!(
            "{name} (left the mesh {ago} s ago: written off unless it is back within the \
             grace a goodbye gets)"
        ),
        "conflict" => format!("{name} (two nodes use this identity)"),
        other => format!("{name} ({other})"),
    }
}

/// One job's record as JSON, with what the table shows beside its fields: whether it is
/// still processing, the nodes it succeeded and failed on, those it waits for and how this
/// node sees each of them (`waiting_for_state`: see [`member_state`]).
fn job_info_json(r: &JobRecord, members: &[NodeRow]) -> Result<Value, Failure> {
    let mut value = serde_json::to_value(r).map_err(Failure::runtime)?;
    if let Value::Object(map) = &mut value {
        map.insert(
            "processing".into(),
            json!(r.status() == JobStatus::Processing),
        );
        map.insert("success".into(), json!(r.successes()));
        map.insert("failed".into(), json!(r.failures()));
        let waiting = r.waiting_for();
        if !members.is_empty() {
            let states: serde_json::Map<String, Value> = waiting
                .iter()
                .map(|n| (n.to_string(), json!(member_state(members, r, n))))
                .collect();
            map.insert("waiting_for_state".into(), Value::Object(states));
        }
        map.insert("waiting_for".into(), json!(waiting));
    }
    Ok(value)
}

/// Lines of a value (a node's stdout or stderr) `--job-info` shows; `--json` gives them all.
const JOB_INFO_LINES: usize = 50;

fn job_info(r: &JobRecord, members: &[NodeRow]) -> String {
    let (exec, round) = r.mean_times();
    let mut rows: Vec<(String, String)> = vec![
        ("ID".into(), r.job_id.clone()),
        ("PARENT_JOB_ID".into(), r.parent_id.clone()),
        ("RUN_ID".into(), r.run_id.clone()),
        ("VERB".into(), r.verb.clone()),
        ("JOB_DEFINITION".into(), r.definition.clone()),
        ("JOB_FINGERPRINT".into(), r.fingerprint.clone()),
        ("PARENT_FINGERPRINT".into(), r.parent_fingerprint.clone()),
        ("ORIGINATOR".into(), r.originator.clone()),
        (
            "PROCESSING".into(),
            (r.status() == JobStatus::Processing).to_string(),
        ),
        ("SUCCESS".into(), r.successes().join("\n")),
        ("FAILED".into(), r.failures().join("\n")),
        ("EXECUTION_TIME".into(), format!("{exec:.8}")),
        ("ROUNDTRIP_TIME".into(), format!("{round:.8}")),
        ("SUBMITTED".into(), render::utc_time(r.created_unix_ms)),
    ];
    if let Some(name) = &r.parent_name {
        rows.insert(2, ("PARENT_NAME".into(), name.clone()));
    }
    let waiting = r.waiting_for();
    if !waiting.is_empty() {
        let why: Vec<String> = waiting.iter().map(|n| waited_on(members, r, n)).collect();
        rows.push(("WAITING_FOR".into(), why.join("\n")));
    }
    for (node, x) in &r.results {
        let state = match x.state {
            ResultState::Success => "success",
            ResultState::Failed => "failed",
            ResultState::Skipped => "skipped",
        };
        rows.push((format!("{node} STATE"), state.into()));
        for (key, value) in [
            ("STDOUT", &x.stdout),
            ("STDERR", &x.stderr),
            ("INFO", &x.info),
        ] {
            if !value.is_empty() {
                rows.push((format!("{node} {key}"), value.clone()));
            }
        }
        rows.push((
            format!("{node} EXECUTION_TIME"),
            format!("{:.8}", x.execution_secs),
        ));
        rows.push((
            format!("{node} ROUNDTRIP_TIME"),
            format!("{:.8}", x.roundtrip_secs),
        ));
        // Written off as unreachable: no time of the node's.
        if x.finished_unix_ms > 0 && !x.is_write_off() {
            rows.push((
                format!("{node} FINISHED"),
                render::utc_time(x.finished_unix_ms),
            ));
        }
    }
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(vec!["KEY", "VALUE"]);
    for (k, v) in rows {
        // What a job printed is cut at a number of lines; lists of nodes are whole.
        let lines = if k.ends_with(" STDOUT") || k.ends_with(" STDERR") {
            JOB_INFO_LINES
        } else {
            usize::MAX
        };
        let v = render::clipped_to(&v, 16 * 1024, lines);
        table.add_row(vec![k, render::shown(&v, false).into_owned()]);
    }
    render::table_text(&table)
}

/// Directord's analysis over a set of jobs (one job, or every job of a parent).
pub fn analyze(id: &str, jobs: &[JobRecord]) -> Value {
    let mut exec: BTreeMap<&str, f64> = BTreeMap::new();
    let mut round: BTreeMap<&str, f64> = BTreeMap::new();
    let mut ran: BTreeMap<&str, usize> = BTreeMap::new();
    let mut nodes: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    let (mut successes, mut failures) = (0, 0);
    for j in jobs {
        for (node, r) in &j.results {
            nodes.insert(node);
            // A target written off, or one that did not run the job, has no times of its
            // own: it is counted among the failures (or successes), never the fastest node.
            if r.ran() {
                *exec.entry(node).or_default() += r.execution_secs;
                *round.entry(node).or_default() += r.roundtrip_secs;
                *ran.entry(node).or_default() += 1;
            }
            if r.state == ResultState::Failed {
                failures += 1;
            } else {
                successes += 1;
            }
        }
    }
    let start = jobs.iter().map(|j| j.created_unix_ms).min().unwrap_or(0);
    let end = jobs
        .iter()
        .flat_map(|j| {
            j.results
                .values()
                .filter(|r| r.ran())
                .map(|r| j.created_unix_ms + (r.roundtrip_secs * 1000.0) as u64)
        })
        .max()
        .unwrap_or(start);
    // The fastest and slowest of the nodes that ran every one of these jobs they were a
    // target of: a node that ran fewer (killed part way through a parent) is not faster for
    // it. (If none ran all of theirs, all count.)
    let targeted = |node: &str| {
        jobs.iter()
            .filter(|j| j.nodes.iter().any(|n| n.name == node))
            .count()
    };
    let ran_all: Vec<&str> = ran
        .iter()
        .filter(|(n, count)| **count >= targeted(n))
        .map(|(n, _)| *n)
        .collect();
    let extreme = |m: &BTreeMap<&str, f64>, max: bool| -> Value {
        let pick = m
            .iter()
            .filter(|(n, _)| ran_all.is_empty() || ran_all.contains(n))
            .fold(None::<(&str, f64)>, |best, (n, v)| match best {
                Some((_, b)) if (max && *v <= b) || (!max && *v >= b) => best,
                _ => Some((n, *v)),
            });
        pick.map_or(Value::Null, |(n, _)| json!(n))
    };
    let combined: f64 = exec.values().fold(0.0, |a, b| a + b);
    let combined_round: f64 = round.values().fold(0.0, |a, b| a + b);
    let total_jobs = jobs.len().max(1) as f64;
    // Microseconds: the sums' last digits are float noise (0.015884699000000002).
    let micros = |secs: f64| (secs * 1e6).round() / 1e6;
    json!({
        "id": id,
        "total_jobs": jobs.len(),
        "actual_runtime": (end.saturating_sub(start)) as f64 / 1000.0,
        "slowest_node_execution": extreme(&exec, true),
        "fastest_node_execution": extreme(&exec, false),
        "slowest_node_roundtrip": extreme(&round, true),
        "fastest_node_roundtrip": extreme(&round, false),
        "combined_execution_time": micros(combined),
        "total_avg_execution_time": micros(combined / total_jobs),
        "total_avg_roundtrip_time": micros(combined_round / total_jobs),
        "total_successes": successes,
        "total_failures": failures,
        "total_node_count": nodes.len(),
        // Not Directord's: an analysis of jobs still running is not final.
        "jobs_processing": jobs.iter().filter(|j| j.results.len() < j.nodes.len()).count(),
    })
}

fn key_values(report: &Value) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(vec!["KEY", "VALUE"]);
    if let Value::Object(map) = report {
        if let Some(id) = map.get("id") {
            table.add_row(vec![
                "ID".to_string(),
                id.as_str().unwrap_or_default().to_string(),
            ]);
        }
        for (k, v) in map.iter().filter(|(k, _)| *k != "id") {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            table.add_row(vec![k.to_uppercase(), value]);
        }
    }
    render::table_text(&table)
}

#[cfg(test)]
mod tests {
    use node::records::{JobRecord, NodeResult, write_off_info};

    use super::*;

    #[test]
    fn record_ids_are_taken_in_any_case_and_control_characters_refused() {
        assert_eq!(record_id("LAST").unwrap(), "last");
        assert_eq!(record_id("17A5-B").unwrap(), "17a5-b");
        // Not an id in any case: as given, for the daemon to say it has no such job.
        assert_eq!(record_id("No-Such").unwrap(), "No-Such");
        let why = record_id("a\u{1b}[2Jb").unwrap_err();
        assert!(
            why.starts_with("a control character ('\\u{1b}') at byte 1"),
            "{why}"
        );
    }

    fn result(
        state: ResultState,
        info: &str,
        execution_secs: f64,
        roundtrip_secs: f64,
    ) -> NodeResult {
        NodeResult {
            state,
            stdout: String::new(),
            stderr: String::new(),
            info: info.into(),
            execution_secs,
            roundtrip_secs,
            finished_unix_ms: 1_000,
        }
    }

    /// `--job-info` cuts what a job printed at a number of lines, never the lists of nodes.
    #[test]
    fn job_info_cuts_output_at_a_number_of_lines_and_lists_every_node() {
        let mut r = JobRecord {
            job_id: "j".into(),
            ..JobRecord::default()
        };
        for i in 0..60 {
            let mut x = result(ResultState::Failed, "exit code 1", 0.1, 0.1);
            x.stdout = (1..=60).map(|l| format!("line {l}\n")).collect();
            r.results.insert(format!("node-{i:02}"), x);
        }
        let text = job_info(&r, &[]);
        assert!(text.contains("node-59"), "{text}");
        let failed_listed = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("FAILED"))
            .take_while(|l| !l.trim_start().starts_with("EXECUTION_TIME"))
            .count();
        assert_eq!(failed_listed, 60, "{text}");
        assert_eq!(
            text.matches("line 50… [10 more lines").count(),
            60,
            "{text}"
        );
        assert!(!text.contains("line 51"), "{text}");
    }

    /// A YAML export's times are numbers to YAML 1.1 readers too: none is written with an
    /// exponent and no dot (`2e-7`).
    #[test]
    fn yaml_times_are_written_with_a_dot() {
        let mut r = JobRecord {
            job_id: "j".into(),
            ..JobRecord::default()
        };
        for (i, secs) in [2e-7, 3.4e-6, 1.234_56e-5, 0.25, 12.0]
            .into_iter()
            .enumerate()
        {
            r.results.insert(
                format!("n{i}"),
                result(ResultState::Success, "", secs, secs),
            );
        }
        yaml_times(&mut r);
        let yaml = serde_yaml_ng::to_string(&r).unwrap();
        for line in yaml.lines().filter(|l| l.contains("_secs:")) {
            let value = line.split(": ").nth(1).unwrap_or_default();
            assert!(value.contains('.'), "{line}");
            assert!(!value.contains('e'), "{line}");
        }
        assert!(yaml.contains("execution_secs: 0.00001\n"), "{yaml}");
        assert!(yaml.contains("execution_secs: 0.25\n"), "{yaml}");
    }

    /// A node a job waits for is found by its identity: another node under its name (a
    /// machine rebuilt) does not speak for it.
    #[test]
    fn a_node_waited_for_is_seen_by_its_identity() {
        let row = |peer_id: &str, state: &str| NodeRow {
            name: "web".into(),
            peer_id: peer_id.into(),
            state: state.into(),
            version: String::new(),
            addresses: Vec::new(),
            machine_id: String::new(),
            host_uptime_secs: 0,
            agent_uptime_secs: 0,
            last_seen_secs: 42.0,
            load: 0.0,
            labels: Default::default(),
            is_self: false,
        };
        let job = JobRecord {
            nodes: vec![node::records::NodeRef {
                peer_id: "waited".into(),
                name: "web".into(),
            }],
            ..JobRecord::default()
        };
        let members = [row("rebuilt", "alive"), row("waited", "expired")];
        assert_eq!(
            waited_on(&members, &job, "web"),
            "web (not heard from for 42 s: down or cut off; its result comes once it is back, \
             or it is written off)"
        );
        assert_eq!(member_state(&members, &job, "web"), "expired");
        assert_eq!(member_state(&members[..1], &job, "web"), "unknown");
        assert_eq!(waited_on(&[], &job, "web"), "web");
    }

    /// A target written off, or one that did not run the job, is a failure of the job but
    /// never its fastest or slowest node, and its zero or write-off delay counts in no time.
    #[test]
    fn the_analysis_times_only_targets_that_ran_the_job() {
        let mut job = JobRecord {
            job_id: "j".into(),
            created_unix_ms: 10_000,
            ..JobRecord::default()
        };
        job.results
            .insert("a".into(), result(ResultState::Success, "", 0.5, 0.6));
        job.results
            .insert("b".into(), result(ResultState::Success, "", 0.2, 0.3));
        job.results.insert(
            "gone".into(),
            result(ResultState::Failed, &write_off_info("gone", 10), 0.0, 2.5),
        );
        job.results.insert(
            "skipped".into(),
            result(
                ResultState::Failed,
                "not run: an earlier job of this parent failed on this node",
                0.0,
                0.1,
            ),
        );
        let report = analyze("j", &[job.clone()]);
        assert_eq!(report["fastest_node_execution"], json!("b"));
        assert_eq!(report["slowest_node_execution"], json!("a"));
        assert_eq!(report["fastest_node_roundtrip"], json!("b"));
        assert_eq!(report["slowest_node_roundtrip"], json!("a"));
        assert_eq!(report["actual_runtime"], json!(0.6));
        assert_eq!(report["combined_execution_time"], json!(0.7));
        assert_eq!(report["total_avg_execution_time"], json!(0.7));
        assert_eq!(report["total_avg_roundtrip_time"], json!(0.9));
        assert_eq!(report["total_successes"], json!(2));
        assert_eq!(report["total_failures"], json!(2));
        assert_eq!(report["total_node_count"], json!(4));
        let (exec, round) = job.mean_times();
        assert!((exec - 0.35).abs() < 1e-9, "{exec}");
        assert!((round - 0.45).abs() < 1e-9, "{round}");
    }

    /// Over a parent, a node that ran fewer of its jobs (killed part way through) is neither
    /// its fastest nor its slowest node, though its sums are the smallest.
    #[test]
    fn a_node_that_ran_fewer_of_a_parents_jobs_is_not_its_fastest() {
        let job = |id: &str, c_ran: bool| {
            let mut job = JobRecord {
                job_id: id.into(),
                nodes: ["a", "b", "c"]
                    .iter()
                    .map(|n| node::records::NodeRef {
                        name: n.to_string(),
                        peer_id: format!("peer-{n}"),
                    })
                    .collect(),
                ..JobRecord::default()
            };
            job.results
                .insert("a".into(), result(ResultState::Success, "", 0.5, 0.6));
            job.results
                .insert("b".into(), result(ResultState::Success, "", 0.4, 0.5));
            if c_ran {
                job.results
                    .insert("c".into(), result(ResultState::Success, "", 0.3, 0.4));
            }
            job
        };
        let jobs = [job("j1", true), job("j2", false), job("j3", false)];
        let report = analyze("p", &jobs);
        // Directord's averages: the sums over every node and job, divided by the jobs.
        assert_eq!(report["combined_execution_time"], json!(3.0));
        assert_eq!(report["total_avg_execution_time"], json!(1.0));
        assert_eq!(report["total_avg_roundtrip_time"], json!(1.233333));
        assert_eq!(report["total_jobs"], json!(3));
        assert_eq!(report["fastest_node_execution"], json!("b"));
        assert_eq!(report["slowest_node_execution"], json!("a"));
        assert_eq!(report["fastest_node_roundtrip"], json!("b"));
        // Two of the three jobs still wait for c.
        assert_eq!(report["jobs_processing"], json!(2));
        // A job for one node only (`--run-once`) does not make it the only one that counts.
        let mut once = job("j4", false);
        once.nodes.retain(|n| n.name == "a");
        once.results.retain(|n, _| n == "a");
        let mut all_ran = vec![job("j1", true), job("j2", true), once];
        all_ran[0].results.get_mut("a").unwrap().execution_secs = 0.5;
        let report = analyze("p", &all_ran);
        assert_eq!(report["fastest_node_execution"], json!("c"));
        assert_eq!(report["slowest_node_execution"], json!("a"));
    }
}
