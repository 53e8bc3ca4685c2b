//! `status`, `manage --list-nodes` and `--export-nodes`: ask the local daemon and show (or
//! write down) its view of the mesh.

use std::{io::Write, path::Path};

use node::control::{ControlClient, ControlRequest, ControlResponse, StatusReport};

use crate::{
    Failure,
    export_file::{self, PrivateFile},
    output, render,
};

pub enum View {
    Status {
        json: bool,
    },
    Nodes {
        json: bool,
    },
    /// Every member as this node sees it, written to a file (YAML for .yaml/.yml, else JSON).
    /// The members, written to `file`; `json`: what was written said as JSON.
    ExportNodes {
        file: std::path::PathBuf,
        json: bool,
    },
}

/// How long `status` waits for its answer: the daemon answers it from memory (leaving out
/// what a busy part of it cannot say at once), so one silent this long is stopped or stuck,
/// and an operator hears so sooner than after the other requests' minute.
const STATUS_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Fetches the status report from the daemon of `state_dir`.
pub async fn fetch(state_dir: &Path) -> Result<StatusReport, Failure> {
    let mut client = ControlClient::connect(state_dir)
        .await
        .map_err(Failure::runtime)?
        .with_answer_timeout(STATUS_ANSWER_TIMEOUT);
    match client
        .request(&ControlRequest::Status)
        .await
        .map_err(Failure::runtime)?
    {
        ControlResponse::Status(report) => Ok(*report),
        other => Err(Failure::Runtime(format!(
            "unexpected answer from the daemon: {other:?}"
        ))),
    }
}

pub fn run(state_dir: &Path, view: View) -> Result<(), Failure> {
    let report = crate::client_runtime()?.block_on(fetch(state_dir))?;
    let text = match view {
        View::Status { json: true } => to_json(&report)?,
        View::Nodes { json: true } => to_json(&report.nodes)?,
        View::Status { json: false } => render::status(&report),
        View::Nodes { json: false } => render::nodes_table(&report.nodes),
        View::ExportNodes { file, json } => {
            let replaced = export_file::check(state_dir, &file)?;
            let yaml = export_file::is_yaml(&file);
            let text = if yaml {
                serde_yaml_ng::to_string(&report.nodes).map_err(Failure::runtime)?
            } else {
                to_json(&report.nodes)?
            };
            let what = export_file::name(&file);
            let cannot = |e: std::io::Error| Failure::Runtime(format!("cannot write {what}: {e}"));
            let mut out = PrivateFile::create(&file).map_err(cannot)?;
            out.write_all(text.as_bytes()).map_err(cannot)?;
            out.finish().map_err(cannot)?;
            export_file::say(report.nodes.len(), "nodes", &file, replaced, json);
            return Ok(());
        }
    };
    output::line(text);
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(Failure::runtime)
}
