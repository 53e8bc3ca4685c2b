//! `--stream`'s live output, complete even when lines go missing on the way.
//!
//! Live output is best effort between a job and this command: a full queue anywhere on the way
//! drops lines rather than slowing the job down. Every line says where it starts in its stream
//! ([`OutputLine::offset`]) and the job's result holds the whole output (up to its cap), so a
//! line that does not start where the last one shown ended is a gap: live lines of that stream
//! stop there, and when the job is done the rest comes from its result. Each line is shown
//! once, in order, whatever was lost.

use std::collections::{HashMap, HashSet};

use jobs::components::{OutputLine, OutputStream};
use node::records::JobRecord;

/// What was shown of each job's output, per node and stream.
#[derive(Default)]
pub struct LiveOutput {
    shown: HashMap<(String, String, OutputStream), Shown>,
    done: HashSet<String>,
}

#[derive(Default, Clone, Copy)]
struct Shown {
    /// Where the next line shown must start.
    end: u64,
    /// A line went missing: nothing more is shown live, the result fills in.
    gap: bool,
}

impl LiveOutput {
    /// A live line of `job_id` on `node`: the text to print, if it is the next one to show.
    pub fn line(&mut self, job_id: &str, node: &str, line: &OutputLine) -> Option<String> {
        if self.done.contains(job_id) {
            return None;
        }
        let key = (job_id.to_string(), node.to_string(), line.stream);
        let shown = self.shown.entry(key).or_default();
        if shown.gap || line.offset < shown.end {
            return None;
        }
        if line.offset > shown.end {
            shown.gap = true;
            return None;
        }
        shown.end += line.text.len() as u64;
        Some(labelled(
            node,
            line.stream,
            line.text.trim_end_matches('\n'),
        ))
    }

    /// `record`'s job is done: the lines of its results not shown live, in order. Later live
    /// lines of it are not shown.
    pub fn rest(&mut self, record: &JobRecord) -> Vec<String> {
        self.done.insert(record.job_id.clone());
        let mut lines = Vec::new();
        for (node, result) in &record.results {
            for (stream, text) in [
                (OutputStream::Stdout, &result.stdout),
                (OutputStream::Stderr, &result.stderr),
            ] {
                let key = (record.job_id.clone(), node.clone(), stream);
                let start = self.shown.remove(&key).unwrap_or_default().end;
                // Past the end (the result cut what was streamed) or inside a character: the
                // result has nothing more to add.
                let rest = usize::try_from(start)
                    .ok()
                    .and_then(|start| text.get(start..))
                    .unwrap_or_default();
                lines.extend(rest.lines().map(|l| labelled(node, stream, l)));
            }
        }
        lines
    }
}

fn labelled(node: &str, stream: OutputStream, text: &str) -> String {
    let label = match stream {
        OutputStream::Stdout => "STDOUT",
        OutputStream::Stderr => "STDERR",
    };
    format!("{node} -- {label} {text}")
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

    #[test]
    fn lines_in_order_are_shown_and_the_result_adds_nothing() {
        let mut live = LiveOutput::default();
        assert_eq!(
            live.line("j", "n1", &line(OUT, 0, "a\n")).as_deref(),
            Some("n1 -- STDOUT a")
        );
        assert_eq!(
            live.line("j", "n1", &line(OUT, 2, "b\n")).as_deref(),
            Some("n1 -- STDOUT b")
        );
        assert_eq!(
            live.line("j", "n1", &line(ERR, 0, "oops\n")).as_deref(),
            Some("n1 -- STDERR oops")
        );
        assert!(
            live.rest(&record("j", &[("n1", "a\nb\n", "oops\n")]))
                .is_empty()
        );
    }

    #[test]
    fn a_gap_stops_live_lines_and_the_result_fills_in_the_rest() {
        let mut live = LiveOutput::default();
        live.line("j", "n1", &line(OUT, 0, "a\n"));
        // "b\n" was lost on the way: "c\n" starts at 4, not 2.
        assert_eq!(live.line("j", "n1", &line(OUT, 4, "c\n")), None);
        assert_eq!(live.line("j", "n1", &line(OUT, 6, "d\n")), None);
        let rest = live.rest(&record("j", &[("n1", "a\nb\nc\nd\ne", "")]));
        assert_eq!(
            rest,
            [
                "n1 -- STDOUT b",
                "n1 -- STDOUT c",
                "n1 -- STDOUT d",
                "n1 -- STDOUT e"
            ]
        );
    }

    #[test]
    fn a_node_heard_only_in_its_result_is_shown_whole_and_late_lines_are_dropped() {
        let mut live = LiveOutput::default();
        // The last line came after the result (it travels separately).
        live.line("j", "n1", &line(OUT, 0, "a\n"));
        let rest = live.rest(&record("j", &[("n1", "a\nb\n", ""), ("n2", "x\n", "y\n")]));
        assert_eq!(rest, ["n1 -- STDOUT b", "n2 -- STDOUT x", "n2 -- STDERR y"]);
        assert_eq!(live.line("j", "n1", &line(OUT, 2, "b\n")), None);
    }

    #[test]
    fn repeated_lines_are_shown_once_and_a_cut_result_adds_nothing() {
        let mut live = LiveOutput::default();
        live.line("j", "n1", &line(OUT, 0, "é\n"));
        assert_eq!(live.line("j", "n1", &line(OUT, 0, "é\n")), None);
        live.line("j", "n1", &line(OUT, 3, "more\n"));
        // The result kept less than was streamed, or the offset falls inside a character.
        assert!(live.rest(&record("j", &[("n1", "é\n", "")])).is_empty());
        let mut live = LiveOutput::default();
        live.line("k", "n1", &line(OUT, 0, "x"));
        assert!(live.rest(&record("k", &[("n1", "é", "")])).is_empty());
    }
}
