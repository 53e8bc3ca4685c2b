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

/// `2026-12-02T20:31:05Z`: a time by the wall clock of the node that noted it, in UTC.
pub fn utc_time(unix_ms: u64) -> String {
    use std::fmt::Write;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let mut text = String::new();
    // Past the year 9999 the format has no digits for it: a time no clock gives, shown as it is.
    if write!(text, "{}", humantime::format_rfc3339_seconds(at)).is_err() {
        return format!("{unix_ms} ms after 1970 (past the year 9999)");
    }
    text
}

/// `text`, or its first `max` bytes (at a character boundary) and how much more there is: a
/// value of megabytes is no use on a screen (`manage --export-jobs` writes it all).
pub fn clipped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    clipped_to(text, max, usize::MAX)
}

/// Like [`clipped`], also at the end of the `max_lines`th line: thousands of short lines are
/// no more use on a screen than a long one.
pub fn clipped_to(text: &str, max: usize, max_lines: usize) -> std::borrow::Cow<'_, str> {
    // Where the line after the last one shown starts, if there is one.
    let lines_end = text
        .match_indices('\n')
        .nth(max_lines.saturating_sub(1))
        .map(|(at, _)| at)
        .filter(|&at| at + 1 < text.len());
    if text.len() <= max && lines_end.is_none() {
        return text.into();
    }
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Cut at a line's end (what follows it is counted in lines too), or within a line.
    let (end, more_lines) = match lines_end {
        Some(at) if at <= end => (at, Some(text[at + 1..].lines().count())),
        _ => (end, None),
    };
    // A result over the cap ends with a note that says so: clipped here, it would not show.
    let cap = jobs::components::MAX_OUTPUT_BYTES;
    let cut = if text.ends_with(&format!("\n[output cut at {cap} bytes]")) {
        format!("; the job printed more, and only its first {cap} bytes were kept")
    } else {
        String::new()
    };
    let lines = match more_lines {
        Some(1) => "1 more line, ".to_string(),
        Some(n) => format!("{n} more lines, "),
        None => String::new(),
    };
    format!(
        "{}… [{lines}{} more bytes; `manage` with `--json` shows it all{cut}]",
        &text[..end],
        text.len() - end
    )
    .into()
}

/// Text from a job's node (its output, its info) as it may be written to a screen: control
/// characters are shown in caret notation (`^[` for escape, `^M` for a carriage return, as
/// `cat -v` does) and the bidirectional overrides as `\u{202e}`, so nothing a node prints can
/// move the cursor, retitle or clear the terminal, write its clipboard, overwrite the node name
/// a line starts with, or reorder what is read. Tabs and line breaks stay. With `colours`,
/// colour and style sequences (`ESC [ 1;31 m`) stay too, less what hides or disguises text
/// (see [`painting_only`]), and a line they leave painted ends with a reset (`ESC [ 0 m`), so
/// no style runs on into the next line, another node's output or the shell prompt. `--json`
/// and `--export-jobs` give the text as it is.
pub fn shown(text: &str, colours: bool) -> std::borrow::Cow<'_, str> {
    let tame = |c: char| !c.is_control() && !is_bidi_control(c);
    if text.chars().all(|c| c == '\n' || c == '\t' || tame(c)) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    // Whether a style let through on this line is still on.
    let mut painted = false;
    while let Some(c) = rest.chars().next() {
        if colours
            && c == '\x1b'
            && let Some(sgr) = colour_sequence(rest)
        {
            if let Some((kept, on)) = painting_only(&sgr[2..sgr.len() - 1]) {
                painted = on;
                out.push_str(&format!("\x1b[{}m", kept.join(";")));
            }
            rest = &rest[sgr.len()..];
            continue;
        }
        match c {
            '\n' => {
                if std::mem::take(&mut painted) {
                    out.push_str(RESET);
                }
                out.push(c);
            }
            '\t' => out.push(c),
            '\x7f' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if !tame(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    if painted {
        out.push_str(RESET);
    }
    out.into()
}

/// Ends every style: written at the end of a line a node left painted.
const RESET: &str = "\x1b[0m";

/// The parameters of a colour sequence (`1;31`, `38;5;8`) less those that hide text (8),
/// make it blink (5, 6) or swap its colours (7): a line that blinks, or shows nothing until
/// selected, misleads whoever reads it. Colours and the other styles stay, each colour with
/// its arguments (`38;5;8` is grey, not hidden text). With them, whether a style is still on
/// after them (their last one is not a reset, `0`). `None` when nothing is left: an empty
/// sequence would reset every style, which the node did not ask for.
fn painting_only(params: &str) -> Option<(Vec<&str>, bool)> {
    let mut kept = Vec::new();
    let mut on = false;
    let mut items = params.split(';');
    while let Some(item) = items.next() {
        let code = item.split(':').next().unwrap_or_default();
        let code = if code.is_empty() {
            Some(0)
        } else {
            code.parse::<u32>().ok()
        };
        match code {
            // Colour by index (`5;N`) or by red, green and blue (`2;R;G;B`), unless given with `:`.
            Some(38 | 48 | 58) if !item.contains(':') => {
                let args = match items.clone().next() {
                    Some("5") => 2,
                    Some("2") => 4,
                    _ => 0,
                };
                kept.push(item);
                kept.extend(items.by_ref().take(args));
            }
            Some(5..=8) | None => continue,
            Some(_) => kept.push(item),
        }
        // Only a plain `0` turns every style off.
        on = code != Some(0) || item.contains(':');
    }
    (!kept.is_empty()).then_some((kept, on))
}

/// Whether lines written to standard output may keep their colours: it is a terminal and
/// `NO_COLOR` is not set (<https://no-color.org>).
pub fn colours_on_stdout() -> bool {
    static COLOURS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *COLOURS.get_or_init(|| {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    })
}

/// Characters that reorder the text around them (U+202A-U+202E, U+2066-U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The colour or style sequence `text` starts with (`ESC [`, digits, `;` or `:`, `m`), if any.
fn colour_sequence(text: &str) -> Option<&str> {
    let body = text.strip_prefix("\x1b[")?;
    let len = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b';' | b':'))
        .count();
    // Longer than any real one: not a colour, shown as text.
    (len <= 64 && body.as_bytes().get(len) == Some(&b'm')).then(|| &text[..2 + len + 1])
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

/// Labels a row of the members table shows (the rest are counted), and the most bytes of each.
const LABELS_SHOWN: usize = 8;
const LABEL_SHOWN_BYTES: usize = 40;

/// A node's labels on one line (`dc=a,role=web`), as text whatever they hold; `-` for none.
/// Each label shows whole up to a length, the first [`LABELS_SHOWN`] of them, so that a long
/// one does not hide the others (`--json` gives them all, whole).
fn labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    let mut shown_labels: Vec<String> = labels
        .iter()
        .take(LABELS_SHOWN)
        .map(|(k, v)| {
            let label = format!("{k}={v}");
            if label.len() <= LABEL_SHOWN_BYTES {
                return label;
            }
            let mut end = LABEL_SHOWN_BYTES;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &label[..end])
        })
        .collect();
    if labels.len() > LABELS_SHOWN {
        shown_labels.push(format!("+{} more (--json)", labels.len() - LABELS_SHOWN));
    }
    shown(&shown_labels.join(","), false).into_owned()
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
        "LABELS",
    ]);
    for n in nodes {
        let name = if n.is_self {
            format!("{}*", n.name)
        } else {
            n.name.clone()
        };
        // Uptimes go on only while a node is heard; those of one gone would read as current.
        let heard = matches!(n.state.as_str(), "alive" | "conflict");
        let uptime = |secs| if heard { duration(secs) } else { "-".into() };
        table.add_row(vec![
            name,
            short_peer(&n.peer_id),
            // What a node says of itself: shown as text, whatever it holds.
            n.addresses
                .first()
                .map_or_else(|| "-".into(), |a| shown(a, false).into_owned()),
            n.version.clone(),
            uptime(n.host_uptime_secs),
            uptime(n.agent_uptime_secs),
            if n.is_self {
                "-".into()
            } else {
                ago(n.last_seen_secs)
            },
            n.state.clone(),
            labels(&n.labels),
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
        .map(|w| format!("Warning    {}\n", shown(w, false)))
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

    /// Every label shows, a long one shortened on its own, up to a number of them.
    #[test]
    fn labels_show_each_up_to_a_length() {
        let of = |pairs: &[(&str, String)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let some = of(&[
            ("app", "a".repeat(50)),
            ("datacenter", "eu-west-1-long-name".into()),
            ("role", "web".into()),
            ("zone", "a".into()),
        ]);
        let line = labels(&some);
        assert!(line.contains(",role=web,zone=a"), "{line}");
        assert!(
            line.starts_with(&format!("app={}…,", "a".repeat(36))),
            "{line}"
        );
        assert!(line.contains("datacenter=eu-west-1-long-name"), "{line}");
        let many: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), "v".into())).collect();
        let many = many
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>();
        let line = labels(&of(&many));
        assert!(line.ends_with(",k7=v,+2 more (--json)"), "{line}");
        assert_eq!(labels(&of(&[])), "-");
    }

    /// Many short lines are cut after a number of them.
    #[test]
    fn many_lines_are_clipped_after_a_number_of_them() {
        let text: String = (1..=200).map(|i| format!("{i}\n")).collect();
        let shown = clipped_to(&text, 16 * 1024, 50);
        assert!(shown.starts_with("1\n2\n"), "{shown}");
        assert!(
            shown.ends_with(
                "\n50… [150 more lines, 552 more bytes; `manage` with `--json` shows it all]"
            ),
            "{shown}"
        );
        // As many lines as allowed, the last ending in a line break: whole.
        let fifty: String = (1..=50).map(|i| format!("{i}\n")).collect();
        assert_eq!(clipped_to(&fifty, 16 * 1024, 50), fifty.as_str());
        assert_eq!(
            clipped_to("a\nb", 16 * 1024, 1),
            "a… [1 more line, 2 more bytes; `manage` with `--json` shows it all]"
        );
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

    /// Nothing a node prints can steer the terminal; colours stay only where asked for.
    #[test]
    fn node_output_cannot_steer_the_terminal() {
        assert_eq!(shown("plain\tline\nnext", false), "plain\tline\nnext");
        // A retitle (OSC), a clear screen, a carriage return over the line's node name, a
        // clipboard write ended by BEL, DEL, a C1 control and a right-to-left override.
        let nasty = "\x1b]0;owned\x07\x1b[2J\rn9 -- STDOUT ok\x1b]52;c;aGk=\x07\x7f\u{9b}\u{202e}x";
        assert_eq!(
            shown(nasty, true),
            "^[]0;owned^G^[[2J^Mn9 -- STDOUT ok^[]52;c;aGk=^G^?\\u{9b}\\u{202e}x"
        );
        let red = "\x1b[1;31mfailed\x1b[0m";
        assert_eq!(shown(red, true), red);
        assert_eq!(shown(red, false), "^[[1;31mfailed^[[0m");
        // A sequence that only starts like a colour is shown as text.
        assert_eq!(shown("\x1b[31", true), "^[[31");
        assert_eq!(shown("\x1b[31;Hx", true), "^[[31;Hx");
    }

    /// Hidden, blinking and reversed text is not let through, and no style outlasts its line.
    #[test]
    fn node_styles_end_with_their_line() {
        let line = shown("\x1b[8mx \x1b[1;31mred", true);
        assert_eq!(line, "x \x1b[1;31mred\x1b[0m");
        assert!(!line.contains("[8") && !line.contains(";8"), "{line:?}");
        // Each line left painted is ended on its own; one that ends in a reset is not.
        assert_eq!(
            shown("\x1b[32ma\nb\n\x1b[7;5;6;34mc\x1b[0m", true),
            "\x1b[32ma\x1b[0m\nb\n\x1b[34mc\x1b[0m"
        );
        // A colour's arguments are not styles: `38;5;8` is grey, `48;2;7;8;5` a background.
        assert_eq!(
            shown("\x1b[38;5;8;48;2;7;8;5;8mg", true),
            "\x1b[38;5;8;48;2;7;8;5mg\x1b[0m"
        );
        assert_eq!(
            shown("\x1b[0;08;7m\x1b[38:5:8mz", true),
            "\x1b[0m\x1b[38:5:8mz\x1b[0m"
        );
    }

    /// A node gone shows no uptimes: those of its last heartbeat would read as current.
    #[test]
    fn uptimes_are_shown_for_nodes_heard_only() {
        let row = |name: &str, state: &str| node::control::NodeRow {
            name: name.into(),
            peer_id: "12D3KooWAbcdefgh".into(),
            state: state.into(),
            version: "0.1.0".into(),
            addresses: vec![],
            machine_id: String::new(),
            host_uptime_secs: 3 * 86_400,
            agent_uptime_secs: 7,
            last_seen_secs: 1.0,
            load: 0.0,
            labels: Default::default(),
            is_self: false,
        };
        let table = nodes_table(&[
            row("up", "alive"),
            row("gone", "left"),
            row("cut", "expired"),
        ]);
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {table}"))
                .to_string()
        };
        assert!(
            line("up").contains("3d") && line("up").contains(" 7s"),
            "{table}"
        );
        for gone in ["gone", "cut"] {
            assert!(
                !line(gone).contains("3d") && !line(gone).contains(" 7s"),
                "{table}"
            );
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(125), "2m 5s");
        assert_eq!(duration(7260), "2h 1m");
        assert_eq!(duration(90_000), "1d 1h");
        assert_eq!(ago(0.2), "now");
        assert_eq!(ago(12.7), "12s ago");
        assert_eq!(utc_time(1_796_243_465_123), "2026-12-02T20:31:05Z");
        assert_eq!(
            utc_time(u64::MAX),
            format!("{} ms after 1970 (past the year 9999)", u64::MAX)
        );
        assert_eq!(short_peer("12D3KooWabcdefghijKLMNOPQRST"), "…KLMNOPQRST");
    }
}
