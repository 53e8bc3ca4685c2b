//! `manage`: the operator's views of jobs and of this node's cache (Directord's names).

use std::{
    collections::BTreeMap,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use comfy_table::{Table, presets::NOTHING};
use jobs::executor::ResultState;
use node::{
    control::{ControlClient, ControlRequest, ControlResponse},
    records::{JobRecord, JobStatus},
};
use serde_json::{Value, json};

use crate::{Failure, output, render};

/// Which jobs `--list-jobs --filter` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Filter {
    Success,
    Failed,
    Processing,
}

/// One `manage` action.
pub enum Action {
    ListJobs { filter: Option<Filter> },
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

async fn records(state_dir: &Path) -> Result<Vec<JobRecord>, Failure> {
    let mut client = ControlClient::connect(state_dir)
        .await
        .map_err(Failure::runtime)?;
    client.records().await.map_err(Failure::runtime)
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

pub fn run(state_dir: &Path, action: Action, json: bool) -> Result<(), Failure> {
    crate::client_runtime()?.block_on(async {
        let text = match action {
            Action::ListJobs { filter } => {
                let mut all = records(state_dir).await?;
                all.retain(|r| match filter {
                    None => true,
                    Some(Filter::Success) => r.status() == JobStatus::Success,
                    Some(Filter::Failed) => r.status() == JobStatus::Failed,
                    Some(Filter::Processing) => r.status() == JobStatus::Processing,
                });
                if json {
                    json_text(&all)?
                } else {
                    jobs_table(&all)
                }
            }
            Action::JobInfo(id) => {
                let r = job(state_dir, &id).await?;
                if json { json_text(&r)? } else { job_info(&r) }
            }
            Action::PurgeJobs => match ask(state_dir, ControlRequest::PurgeJobs).await? {
                // Jobs still waiting for results are kept.
                ControlResponse::Purged { purged, kept: 0 } => {
                    format!("Purged every job record ({purged})")
                }
                ControlResponse::Purged { purged, kept } => {
                    format!("Purged {purged} job records; kept {kept} still running")
                }
                other => {
                    return Err(Failure::Runtime(format!(
                        "unexpected answer: {}",
                        other.kind()
                    )));
                }
            },
            Action::ExportJobs(file) => {
                let all = records(state_dir).await?;
                let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
                let text = if yaml {
                    serde_yaml_ng::to_string(&all).map_err(Failure::runtime)?
                } else {
                    json_text(&all)?
                };
                write_private(&file, text.as_bytes()).map_err(|e| {
                    Failure::Runtime(format!("cannot write {}: {e}", file.display()))
                })?;
                format!("Exported {} jobs to [ {} ]", all.len(), file.display())
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
                let (id, pick) = node::records::pick_parent(records(state_dir).await?, &id)
                    .map_err(Failure::Input)?;
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

fn jobs_table(records: &[JobRecord]) -> String {
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
    for r in records {
        let (exec, round) = r.mean_times();
        table.add_row(vec![
            r.job_id.clone(),
            r.parent_id.clone(),
            r.verb.clone(),
            format!("{exec:.6}"),
            format!("{round:.6}"),
            (r.status() == JobStatus::Processing).to_string(),
            r.successes().len().to_string(),
            r.failures().len().to_string(),
        ]);
    }
    // As `--filter` counts: a job still processing is neither failed nor succeeded yet,
    // whatever its FAILED column says so far.
    let count = |status: JobStatus| records.iter().filter(|r| r.status() == status).count();
    format!(
        "{}\n\nTotal Items: {}   Total Failed: {}   Total Processing: {}",
        render::table_text(&table),
        records.len(),
        count(JobStatus::Failed),
        count(JobStatus::Processing)
    )
}

/// Writes `bytes` to `path` readable by its owner only, as the records in the state
/// directory are (every job's output is in them). A new or regular file is written aside and
/// renamed over the path (a file there before, with another mode, is replaced); a link is
/// written through, its file made the owner's only; a device or a pipe (`/dev/stdout`, a
/// process substitution) is just written to.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(bytes);
        }
        Ok(_) if is_link => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            return f.write_all(bytes);
        }
        _ => {}
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut aside_name = std::ffi::OsString::from(".");
    aside_name.push(name);
    aside_name.push(format!(".{}.tmp", std::process::id()));
    let aside = path.with_file_name(aside_name);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&aside, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written
}

fn job_info(r: &JobRecord) -> String {
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
    ];
    if let Some(name) = &r.parent_name {
        rows.insert(2, ("PARENT_NAME".into(), name.clone()));
    }
    let waiting: Vec<&str> = r
        .nodes
        .iter()
        .filter(|n| !r.results.contains_key(&n.name))
        .map(|n| n.name.as_str())
        .collect();
    if !waiting.is_empty() {
        rows.push(("WAITING_FOR".into(), waiting.join("\n")));
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
    }
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(vec!["KEY", "VALUE"]);
    for (k, v) in rows {
        table.add_row(vec![k, render::clipped(&v, 16 * 1024).into_owned()]);
    }
    render::table_text(&table)
}

/// Directord's analysis over a set of jobs (one job, or every job of a parent).
pub fn analyze(id: &str, jobs: &[JobRecord]) -> Value {
    let mut exec: BTreeMap<&str, f64> = BTreeMap::new();
    let mut round: BTreeMap<&str, f64> = BTreeMap::new();
    let (mut successes, mut failures) = (0, 0);
    for j in jobs {
        for (node, r) in &j.results {
            *exec.entry(node).or_default() += r.execution_secs;
            *round.entry(node).or_default() += r.roundtrip_secs;
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
                .map(|r| j.created_unix_ms + (r.roundtrip_secs * 1000.0) as u64)
        })
        .max()
        .unwrap_or(start);
    let extreme = |m: &BTreeMap<&str, f64>, max: bool| -> Value {
        let pick = m
            .iter()
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
        "total_node_count": exec.len(),
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
