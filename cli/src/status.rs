//! `status` and `manage --list-nodes`: ask the local daemon and show its view of the mesh.

use std::path::Path;

use node::control::{ControlClient, ControlRequest, ControlResponse, StatusReport};

use crate::{Failure, render};

pub enum View {
    Status { json: bool },
    Nodes { json: bool },
}

/// Fetches the status report from the daemon of `state_dir`.
pub async fn fetch(state_dir: &Path) -> Result<StatusReport, Failure> {
    let mut client = ControlClient::connect(state_dir)
        .await
        .map_err(Failure::runtime)?;
    match client
        .request(&ControlRequest::Status)
        .await
        .map_err(Failure::runtime)?
    {
        ControlResponse::Status(report) => Ok(report),
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
    };
    println!("{text}");
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(Failure::runtime)
}
