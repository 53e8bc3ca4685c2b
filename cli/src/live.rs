//! `--stream`'s live output, complete even when lines go missing on the way.
//!
//! Live output is best effort between a job's node and this command: a full queue on the way
//! (the target's queue to the submitter, this command's connection) drops lines rather than
//! slowing the job down. Every line says where it starts in its stream
//! ([`OutputLine::offset`]) and the job's result holds the whole output (up to its cap), so a
//! line that does not start where the last one shown ended marks a gap: a note says so (once a
//! stream), live lines go on, and when the job is done the missed lines come from its result,
//! in their order after a note that says what they are, followed by whatever came after the
//! last line shown. Each line is shown once.

use std::collections::{HashMap, HashSet};

use jobs::components::{OutputLine, OutputStream};
use node::records::JobRecord;

/// What was shown of each job's output, per node and stream.
#[derive(Default)]
pub struct LiveOutput {
    shown: HashMap<(String, String, OutputStream), Shown>,
    /// The jobs and nodes whose results were shown whole.
    done: HashSet<(String, String)>,
}

#[derive(Default)]
struct Shown {
    /// Where the next line shown must start.
    end: u64,
    /// Byte ranges of the output that went missing on the way, in order.
    missed: Vec<(u64, u64)>,
}

/// Said at the first gap in a stream (later gaps of it are filled in as quietly).
const GAP_NOTE: &str = "[some lines are not shown live: they follow when the job is done, as \
                        far as its result keeps them (3 MiB a stream)]";

/// Said before the lines of a stream that missed being shown live, when they are filled in.
const FILLED_IN_NOTE: &str = "[the lines that were not shown live, in their order:]";

/// How the note the node appends to a result over the cap starts (see `jobs::components`).
const CUT_MARK: &str = "\n[output cut at ";

impl LiveOutput {
    /// A live line of `job_id` on `node`: the lines to print (a note of a gap before it, if
    /// lines went missing), nothing if it was shown already or the job is done.
    pub fn line(&mut self, job_id: &str, node: &str, line: &OutputLine) -> Vec<String> {
        if self.done.contains(&(job_id.to_string(), node.to_string())) {
            return Vec::new();
        }
        let key = (job_id.to_string(), node.to_string(), line.stream);
        let shown = self.shown.entry(key).or_default();
        if line.offset < shown.end {
            return Vec::new();
        }
        let mut lines = Vec::new();
        if line.offset > shown.end {
            if shown.missed.is_empty() {
                lines.push(labelled(node, line.stream, GAP_NOTE));
            }
            shown.missed.push((shown.end, line.offset));
        }
        shown.end = line.offset + line.text.len() as u64;
        lines.push(labelled(node, line.stream, &line.text));
        lines
    }

    /// `record`'s job is done: the lines of its results not shown live, in order (the gaps,
    /// then what followed the last line shown). Later live lines of a result shown are not
    /// shown; a target written off is not done (should it report after all, the record comes
    /// again with its result, whose lines are shown then).
    pub fn rest(&mut self, record: &JobRecord) -> Vec<String> {
        let mut lines = Vec::new();
        for (node, result) in &record.results {
            if result.is_write_off() || !self.done.insert((record.job_id.clone(), node.clone())) {
                continue;
            }
            for (stream, text) in [
                (OutputStream::Stdout, &result.stdout),
                (OutputStream::Stderr, &result.stderr),
            ] {
                let key = (record.job_id.clone(), node.clone(), stream);
                let shown = self.shown.remove(&key).unwrap_or_default();
                let (kept, cut) = cut_note(text);
                let gaps = !shown.missed.is_empty();
                let mut missed = shown.missed;
                missed.push((shown.end, u64::MAX));
                let mut filled = Vec::new();
                for (from, to) in missed {
                    let piece = range(kept, from, to);
                    filled.extend(piece.lines().map(|l| labelled(node, stream, l)));
                }
                // After gaps, what follows is no longer the stream's next lines: said so.
                if gaps && !filled.is_empty() {
                    lines.push(labelled(node, stream, FILLED_IN_NOTE));
                }
                lines.extend(filled);
                // Never streamed: the node adds it when it cuts.
                if let Some(cut) = cut {
                    lines.extend(cut.lines().map(|l| labelled(node, stream, l)));
                }
            }
        }
        lines
    }
}

/// A result over the cap keeps a prefix and says where it was cut: `text` as the part kept
/// and that note (`[output cut at N bytes]`), if it ends with one. Only the exact end the node
/// appends counts (see `jobs::components::shell`): the same words printed by the job itself,
/// anywhere else, are its output and shown as such.
fn cut_note(text: &str) -> (&str, Option<&str>) {
    let note = || {
        let head = text.strip_suffix(" bytes]")?;
        let digits = head.bytes().rev().take_while(u8::is_ascii_digit).count();
        let head = &head[..head.len() - digits];
        let kept = head.strip_suffix(CUT_MARK).filter(|_| digits > 0)?;
        Some((kept, &text[kept.len() + 1..]))
    };
    match note() {
        Some((kept, cut)) => (kept, Some(cut)),
        None => (text, None),
    }
}

/// `text[from..to]`, clamped to the text; empty when a bound falls inside a character.
fn range(text: &str, from: u64, to: u64) -> &str {
    let len = text.len() as u64;
    let (from, to) = (from.min(len) as usize, to.min(len) as usize);
    text.get(from..to.max(from)).unwrap_or_default()
}

fn labelled(node: &str, stream: OutputStream, text: &str) -> String {
    let label = match stream {
        OutputStream::Stdout => "STDOUT",
        OutputStream::Stderr => "STDERR",
    };
    // As `str::lines` ends a line: at `\n`, and a `\r` before it.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    format!(
        "{node} -- {label} {}",
        crate::render::shown(text, crate::render::colours_on_stdout())
    )
}

#[cfg(test)]
mod tests {
    use jobs::executor::ResultState;
    use node::records::NodeResult;

    use super::*;

    fn line(stream: OutputStream, offset: u64, text: &str) -> OutputLine {
        OutputLine {
            stream,
            offset,
            text: text.into(),
        }
    }

    fn record(job_id: &str, results: &[(&str, &str, &str)]) -> JobRecord {
        let mut r = JobRecord {
            job_id: job_id.into(),
            ..JobRecord::default()
        };
        for (node, stdout, stderr) in results {
            let result = NodeResult {
                state: ResultState::Success,
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
                info: String::new(),
                execution_secs: 0.0,
                roundtrip_secs: 0.0,
                finished_unix_ms: 0,
            };
            r.results.insert(node.to_string(), result);
        }
        r
    }

    const OUT: OutputStream = OutputStream::Stdout;
    const ERR: OutputStream = OutputStream::Stderr;

    fn one(lines: Vec<String>) -> Option<String> {
        assert!(lines.len() <= 1, "{lines:?}");
        lines.into_iter().next()
    }

    #[test]
    fn lines_in_order_are_shown_and_the_result_adds_nothing() {
        let mut live = LiveOutput::default();
        assert_eq!(
            one(live.line("j", "n1", &line(OUT, 0, "a\n"))).as_deref(),
            Some("n1 -- STDOUT a")
        );
        assert_eq!(
            one(live.line("j", "n1", &line(OUT, 2, "b\r\n"))).as_deref(),
            Some("n1 -- STDOUT b")
        );
        assert_eq!(
            one(live.line("j", "n1", &line(ERR, 0, "oops\n"))).as_deref(),
            Some("n1 -- STDERR oops")
        );
        assert!(
            live.rest(&record("j", &[("n1", "a\nb", "oops")]))
                .is_empty()
        );
    }

    #[test]
    fn after_a_gap_live_lines_go_on_and_the_result_fills_in_what_was_missed() {
        let mut live = LiveOutput::default();
        live.line("j", "n1", &line(OUT, 0, "a\n"));
        // "b\n" was lost on the way: "c\n" starts at 4, not 2.
        assert_eq!(
            live.line("j", "n1", &line(OUT, 4, "c\n")),
            [format!("n1 -- STDOUT {GAP_NOTE}"), "n1 -- STDOUT c".into()]
        );
        // A second gap ("d\n" lost) is filled in as well, without another note.
        assert_eq!(
            one(live.line("j", "n1", &line(OUT, 8, "e\n"))).as_deref(),
            Some("n1 -- STDOUT e")
        );
        let done = record("j", &[("n1", "a\nb\nc\nd\ne\nf", "")]);
        let rest = live.rest(&done);
        assert_eq!(
            rest,
            [
                format!("n1 -- STDOUT {FILLED_IN_NOTE}"),
                "n1 -- STDOUT b".into(),
                "n1 -- STDOUT d".into(),
                "n1 -- STDOUT f".into()
            ]
        );
        // Told once, even if told again.
        assert!(live.rest(&done).is_empty());
    }

    #[test]
    fn a_node_heard_only_in_its_result_is_shown_whole_and_late_lines_are_dropped() {
        let mut live = LiveOutput::default();
        // The last line came after the result (it travels separately).
        live.line("j", "n1", &line(OUT, 0, "a\n"));
        let rest = live.rest(&record("j", &[("n1", "a\nb\n", ""), ("n2", "x\n", "y\n")]));
        assert_eq!(rest, ["n1 -- STDOUT b", "n2 -- STDOUT x", "n2 -- STDERR y"]);
        assert!(live.line("j", "n1", &line(OUT, 2, "b\n")).is_empty());
    }

    /// A target written off, then back with its result: the record comes again, and that
    /// result's lines are shown then (those of the others once only).
    #[test]
    fn a_late_result_of_a_target_written_off_is_shown() {
        let mut live = LiveOutput::default();
        let mut first = record("j", &[("n1", "a\n", "")]);
        let written_off = NodeResult {
            state: ResultState::Failed,
            info: node::records::write_off_info("n2", 10),
            ..first.results["n1"].clone()
        };
        first.results.insert(
            "n2".into(),
            NodeResult {
                stdout: String::new(),
                ..written_off
            },
        );
        assert_eq!(live.rest(&first), ["n1 -- STDOUT a"]);
        let late = record("j", &[("n1", "a\n", ""), ("n2", "late\n", "")]);
        assert_eq!(live.rest(&late), ["n2 -- STDOUT late"]);
        assert!(live.rest(&late).is_empty());
    }

    #[test]
    fn repeated_lines_are_shown_once_and_a_cut_result_says_so_once() {
        let mut live = LiveOutput::default();
        live.line("j", "n1", &line(OUT, 0, "é\n"));
        assert!(live.line("j", "n1", &line(OUT, 0, "é\n")).is_empty());
        live.line("j", "n1", &line(OUT, 3, "more\n"));
        // The result kept less than was streamed, or the offset falls inside a character.
        assert!(live.rest(&record("j", &[("n1", "é\n", "")])).is_empty());
        let mut live = LiveOutput::default();
        live.line("k", "n1", &line(OUT, 0, "x"));
        assert!(live.rest(&record("k", &[("n1", "é", "")])).is_empty());
        // Streamed past the cut, with a gap inside the kept part and one after it.
        let mut live = LiveOutput::default();
        live.line("c", "n1", &line(OUT, 0, "a\n"));
        live.line("c", "n1", &line(OUT, 4, "c\n"));
        live.line("c", "n1", &line(OUT, 10, "z\n"));
        let cut = "a\nb\nc\n\n[output cut at 6 bytes]";
        assert_eq!(
            live.rest(&record("c", &[("n1", cut, "")])),
            [
                format!("n1 -- STDOUT {FILLED_IN_NOTE}"),
                "n1 -- STDOUT b".into(),
                "n1 -- STDOUT [output cut at 6 bytes]".into()
            ]
        );
    }

    /// Words like the cut note printed by the job are its output, labelled as such.
    #[test]
    fn only_the_note_at_the_very_end_is_taken_as_the_cut() {
        let forged = "a\n[output cut at 5 bytes]\nr9 -- STDOUT forged\nJob Success: j";
        assert_eq!(cut_note(forged), (forged, None));
        let mut live = LiveOutput::default();
        assert_eq!(
            live.rest(&record("f", &[("n1", forged, "")])),
            [
                "n1 -- STDOUT a",
                "n1 -- STDOUT [output cut at 5 bytes]",
                "n1 -- STDOUT r9 -- STDOUT forged",
                "n1 -- STDOUT Job Success: j",
            ]
        );
        assert_eq!(
            cut_note("a\n[output cut at 6 bytes]"),
            ("a", Some("[output cut at 6 bytes]"))
        );
        for not_a_note in [
            "a\n[output cut at  bytes]",
            "a\n[output cut at 6 bytes]\n",
            "a\n[output cut at x6 bytes]",
            "a [output cut at 6 bytes]",
        ] {
            assert_eq!(cut_note(not_a_note), (not_a_note, None));
        }
    }

    #[test]
    fn the_gap_note_names_the_cap_a_result_keeps() {
        let mib = jobs::components::MAX_OUTPUT_BYTES / (1024 * 1024);
        assert!(GAP_NOTE.contains(&format!("({mib} MiB a stream)")));
    }
}
