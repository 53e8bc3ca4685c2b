//! Rendering for people: tables, durations, short peer ids.

use comfy_table::{Table, presets::NOTHING};
use node::control::{NodeRow, StatusReport};

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `now` within a second, else `12s ago`.
pub fn ago(secs: f64) -> String {
    if secs < 1.0 {
        "now".into()
    } else {
        format!("{} ago", duration(secs as u64))
    }
}

/// `text`, or its first `max` bytes (at a character boundary) and how much more there is: a
/// value of megabytes is no use on a screen (`manage --export-jobs` writes it all).
pub fn clipped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // A result over the cap ends with a note that says so: clipped here, it would not show.
    let cap = jobs::components::MAX_OUTPUT_BYTES;
    let cut = if text.ends_with(&format!("\n[output cut at {cap} bytes]")) {
        format!("; the job printed more, and only its first {cap} bytes were kept")
    } else {
        String::new()
    };
    format!(
        "{}… [{} more bytes; `manage` with `--json` shows it all{cut}]",
        &text[..end],
        text.len() - end
    )
    .into()
}

/// The distinctive tail of a peer id (all ed25519 peer ids start alike).
pub fn short_peer(peer: &str) -> String {
    let tail: String = peer
        .chars()
        .rev()
        .take(10)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// A table as text, without the spaces comfy-table pads every line with to the widest cell
/// (a long stdout in one row would otherwise trail every other row with hundreds of them).
pub fn table_text(table: &Table) -> String {
    table
        .to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The members table of `status` and `manage --list-nodes`.
pub fn nodes_table(nodes: &[NodeRow]) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(vec![
        "NAME",
        "PEER ID",
        "ADDRESS",
        "VERSION",
        "HOST UPTIME",
        "AGENT UPTIME",
        "LAST SEEN",
        "STATE",
    ]);
    for n in nodes {
        let name = if n.is_self {
            format!("{}*", n.name)
        } else {
            n.name.clone()
        };
        table.add_row(vec![
            name,
            short_peer(&n.peer_id),
            n.addresses.first().cloned().unwrap_or_else(|| "-".into()),
            n.version.clone(),
            duration(n.host_uptime_secs),
            duration(n.agent_uptime_secs),
            if n.is_self {
                "-".into()
            } else {
                ago(n.last_seen_secs)
            },
            n.state.clone(),
        ]);
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for n in nodes {
        *counts.entry(n.state.as_str()).or_default() += 1;
    }
    let by_state: Vec<String> = counts.iter().map(|(s, c)| format!("{c} {s}")).collect();
    format!(
        "{}\n\nTotal nodes: {} ({})   * = this node",
        table_text(&table),
        nodes.len(),
        by_state.join(", ")
    )
}

/// `status`: this node, then the members table.
pub fn status(report: &StatusReport) -> String {
    let me = &report.local;
    let mesh = match &me.mesh_key_fingerprint {
        Some(f) => format!("key fingerprint {f}"),
        None => "open (no mesh key)".into(),
    };
    let warnings: String = me
        .warnings
        .iter()
        .map(|w| format!("Warning    {w}\n"))
        .collect();
    let owed: String = me
        .results_owed
        .iter()
        .map(|o| {
            let name = report
                .nodes
                .iter()
                .find(|n| n.peer_id == o.peer_id)
                .map_or(o.peer_id.as_str(), |n| n.name.as_str());
            let plural = if o.results == 1 { "" } else { "s" };
            let how = match o.failing_secs {
                Some(secs) => format!(", not taken for {}", duration(secs)),
                None => String::new(),
            };
            format!("Owed       {} result{plural} to {name}{how}\n", o.results)
        })
        .collect();
    format!(
        "Node       {} ({})\nRelease    {} (wire version {})\nMesh       {}\nListening  {}\nPeers      {} connected, heartbeat every {}\n{owed}{warnings}\n{}",
        me.name,
        me.peer_id,
        me.version,
        me.wire_version,
        mesh,
        me.listen_addresses.join(", "),
        me.connected_peers,
        humanize_ms(me.heartbeat_interval_ms),
        nodes_table(&report.nodes)
    )
}

fn humanize_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long cell in one row does not trail every other row with spaces.
    #[test]
    fn tables_carry_no_padding_at_line_ends() {
        let mut table = Table::new();
        table.load_preset(NOTHING).set_header(vec!["KEY", "VALUE"]);
        table.add_row(vec!["ID", "j"]);
        table.add_row(vec!["STDOUT", &"x".repeat(80)]);
        let text = table_text(&table);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l == l.trim_end()), "{text:?}");
        assert!(text.lines().nth(1).unwrap().ends_with(" j"), "{text:?}");
    }

    #[test]
    fn long_values_are_clipped_at_a_character() {
        assert_eq!(clipped("short", 10), "short");
        assert_eq!(
            clipped("ééé", 3),
            "é… [4 more bytes; `manage` with `--json` shows it all]"
        );
        let cap = jobs::components::MAX_OUTPUT_BYTES;
        let cut = format!("{}\n[output cut at {cap} bytes]", "x".repeat(100));
        assert_eq!(
            clipped(&cut, 10),
            format!(
                "xxxxxxxxxx… [{} more bytes; `manage` with `--json` shows it all; the job \
                 printed more, and only its first {cap} bytes were kept]",
                cut.len() - 10
            )
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m 5s");
        assert_eq!(duration(7260), "2h 1m");
        assert_eq!(duration(90_000), "1d 1h");
        assert_eq!(ago(0.2), "now");
        assert_eq!(ago(12.7), "12s ago");
        assert_eq!(short_peer("12D3KooWabcdefghijKLMNOPQRST"), "…KLMNOPQRST");
    }
}
