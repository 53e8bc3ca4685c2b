//! Orchestration files in Directord's format.
//!
//! ```yaml
//! - targets: [web1, web2]      # optional: default (or []) every member, or the CLI's --target
//!   async: true                # optional: run this entry's jobs in their own queue
//!   jobs:
//!   - RUN: --skip-cache echo hi
//!   - ARG: port 8080
//!     vars: {skip_cache: true} # optional: override the inline options
//! ```
//!
//! Every error names the file, the entry and the job it is about and says what is wrong; YAML
//! syntax errors carry the line and column.

use std::{collections::BTreeMap, fmt, path::Path};

use serde_json::Value;

use crate::spec::{Fingerprint, JobSpec, ParseOutcome};

/// A parsed orchestration file: its entries in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Orchestration {
    pub entries: Vec<Entry>,
}

/// One entry (a "parent" in Directord's words): jobs that run in order on each target.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: Option<String>,
    pub targets: Option<Vec<String>>,
    pub is_async: bool,
    pub jobs: Vec<JobDef>,
    /// Fingerprint of the entry exactly as written (targets, async and vars included).
    pub fingerprint: Fingerprint,
}

/// One job of an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    pub spec: JobSpec,
    /// `VERB: inline arguments` as written, for listings.
    pub text: String,
}

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestrationError {
    pub file: String,
    /// 1-based entry number.
    pub entry: Option<usize>,
    /// 1-based job number within the entry, and its verb.
    pub job: Option<(usize, String)>,
    pub message: String,
    /// `--exec-help` was given: `message` is the verb's help, not an error.
    pub is_help: bool,
}

impl fmt::Display for OrchestrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(entry) = self.entry {
            write!(f, ": entry {entry}")?;
        }
        if let Some((job, verb)) = &self.job {
            write!(f, ", job {job} ({verb})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for OrchestrationError {}

/// The largest orchestration file read: a run the control socket takes from the command line
/// is at most 64 MiB in all (`node::control::MAX_FRAME`).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and parses an orchestration file.
pub fn parse_file(path: &Path) -> Result<Orchestration, OrchestrationError> {
    let name = path.display().to_string();
    let text =
        crate::yaml_text::read_capped(path, MAX_FILE_BYTES).map_err(|e| OrchestrationError {
            file: name.clone(),
            entry: None,
            job: None,
            message: format!("cannot read: {e}"),
            is_help: false,
        })?;
    parse_str(&text, &name)
}

/// Why a file of several YAML documents is refused, naming the `---` line that starts the
/// second (a `---` before any content only opens the first).
fn second_document(text: &str) -> String {
    let mut content = false;
    let mut second = None;
    for (i, line) in text.lines().enumerate() {
        let starts_document = line == "---" || line.starts_with("--- ");
        if starts_document && content {
            second = Some(i + 1);
            break;
        }
        let trimmed = line.trim();
        content |= !starts_document && !trimmed.is_empty() && !trimmed.starts_with('#');
    }
    let at = second
        .map(|n| format!(" (the second begins at line {n})"))
        .unwrap_or_default();
    format!(
        "the file holds more than one YAML document{at}; an orchestration is one list of \
         entries: remove the `---` line, or put each document in its own file"
    )
}

/// A duplicate key, said where it is: the parser names the line its mapping starts on
/// (`mapping_line`), the operator needs the line written twice. For a verb, the likely cause
/// is a job without its `- `. `None` when `why` is not about a duplicate key or the key is
/// not found again.
fn duplicate_key(text: &str, why: &str, mapping_line: usize) -> Option<String> {
    let key = why
        .split_once("duplicate entry with key \"")?
        .1
        .split_once('"')?
        .0;
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .skip(mapping_line.saturating_sub(1))
        .filter(|(_, l)| {
            let l = l.trim_start();
            let l = l.strip_prefix("- ").unwrap_or(l).trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|(i, _)| i + 1)
        .take(2)
        .collect();
    let [first, again] = lines[..] else {
        return None;
    };
    let hint = if crate::spec::Verb::from_name(key).is_some() {
        ": each job is its own list item, so start each VERB line with '- '"
    } else {
        ""
    };
    Some(format!(
        "YAML syntax error at line {again}: '{key}' is given twice in one mapping (first at \
         line {first}){hint}"
    ))
}

/// Parses orchestration text; `file` names it in errors.
pub fn parse_str(text: &str, file: &str) -> Result<Orchestration, OrchestrationError> {
    let err = |entry, job, message| located(file, entry, job, message);
    // A byte-order mark, as some editors write one: no content (YAML allows it at the start).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Named here where it is: the parser refuses them before reading, at line 1 column 1.
    if let Some(said) = crate::yaml_text::refusal(text) {
        return Err(err(None, None, said));
    }
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        // The parser's own text names the position too: said once, up front.
        let mut why = e.to_string();
        if !at.is_empty() {
            why = why.replacen(&at, "", 1);
        }
        if let Some(said) = e
            .location()
            .and_then(|l| duplicate_key(text, &why, l.line()))
        {
            return err(None, None, said);
        }
        if why.contains("more than one document") {
            return err(None, None, second_document(text));
        }
        err(None, None, format!("YAML syntax error{at}: {why}"))
    })?;
    let list = match doc {
        serde_yaml_ng::Value::Sequence(list) => list,
        serde_yaml_ng::Value::Null => return Err(err(None, None, "the file is empty".into())),
        other => {
            return Err(err(
                None,
                None,
                format!(
                    "expected a list of entries (each with `jobs:`), found {}",
                    kind(&other)
                ),
            ));
        }
    };
    if list.is_empty() {
        return Err(err(None, None, "the file has no entries".into()));
    }
    let mut entries = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        entries.push(parse_entry(file, i + 1, item)?);
    }
    Ok(Orchestration { entries })
}

/// Entry `n` of the list (counted from 1): its keys, then each of its jobs.
fn parse_entry(
    file: &str,
    n: usize,
    item: serde_yaml_ng::Value,
) -> Result<Entry, OrchestrationError> {
    let err = |entry, job, message| located(file, entry, job, message);
    let n = Some(n);
    let json: Value =
        serde_json::to_value(&item).map_err(|e| err(n, None, format!("unsupported YAML: {e}")))?;
    let serde_yaml_ng::Value::Mapping(map) = item else {
        return Err(err(
            n,
            None,
            format!("expected a mapping with `jobs:`, found {}", kind(&item)),
        ));
    };
    let mut name = None;
    let mut targets = None;
    let mut is_async = false;
    let mut jobs_value = None;
    for (k, v) in map {
        let key = key_text(&k);
        match key.as_str() {
            "jobs" => jobs_value = Some(v),
            "targets" => {
                let list = string_list(&v).map_err(|m| err(n, None, format!("targets: {m}")))?;
                // An empty list is every node, as in Directord.
                targets = (!list.is_empty()).then_some(list)
            }
            "async" => is_async = truthy(&v).map_err(|m| err(n, None, format!("async: {m}")))?,
            "name" => {
                name = Some(scalar(&v).ok_or_else(|| err(n, None, "name: expected text".into()))?)
            }
            other => {
                return Err(err(
                    n,
                    None,
                    format!(
                        "unknown key '{other}' (an entry has jobs, and optionally targets, async, name)"
                    ),
                ));
            }
        }
    }
    let jobs = match jobs_value {
        Some(serde_yaml_ng::Value::Sequence(jobs)) if !jobs.is_empty() => jobs,
        Some(serde_yaml_ng::Value::Sequence(_)) => {
            return Err(err(n, None, "jobs: the list is empty".into()));
        }
        Some(other) => {
            return Err(err(
                n,
                None,
                format!("jobs: expected a list, found {}", kind(&other)),
            ));
        }
        None => return Err(err(n, None, "missing `jobs:`".into())),
    };
    let mut defs = Vec::new();
    for (j, job) in jobs.into_iter().enumerate() {
        defs.push(parse_job(file, n, j + 1, job)?);
    }
    Ok(Entry {
        name,
        targets,
        is_async,
        jobs: defs,
        fingerprint: Fingerprint::of(&json),
    })
}

/// Job `jn` (counted from 1) of entry `n`: `VERB: arguments`, with optional `vars:`.
fn parse_job(
    file: &str,
    n: Option<usize>,
    jn: usize,
    job: serde_yaml_ng::Value,
) -> Result<JobDef, OrchestrationError> {
    let err = |entry, job, message| located(file, entry, job, message);
    let serde_yaml_ng::Value::Mapping(map) = job else {
        return Err(err(
            n,
            Some((jn, "?".into())),
            format!("expected `VERB: arguments`, found {}", kind(&job)),
        ));
    };
    // What errors about `vars` call the job: its verb, wherever in the job it is written.
    let label = map
        .keys()
        .map(key_text)
        .find(|k| k != "vars" && k != "name")
        .unwrap_or_else(|| "?".into());
    let mut verb = None;
    let mut vars = BTreeMap::new();
    for (k, v) in map {
        let key = key_text(&k);
        if key == "vars" {
            let serde_yaml_ng::Value::Mapping(m) = v else {
                return Err(err(
                    n,
                    Some((jn, label.clone())),
                    "vars: expected a mapping".into(),
                ));
            };
            for (vk, vv) in m {
                let vk = key_text(&vk);
                if holds_non_finite(&vv) {
                    return Err(err(
                        n,
                        Some((jn, label.clone())),
                        format!(
                            "vars: '{vk}' holds .nan or .inf, which no job can use (JSON has \
                             no such number)"
                        ),
                    ));
                }
                let vv = serde_json::to_value(&vv)
                    .map_err(|e| err(n, Some((jn, label.clone())), format!("vars: {e}")))?;
                vars.insert(vk, vv);
            }
        } else if key == "name" {
            // Directord's later versions name jobs; accepted and not needed to run.
        } else if verb.is_some() {
            return Err(err(
                n,
                Some((jn, key.clone())),
                "a job has exactly one verb (plus optional vars)".into(),
            ));
        } else {
            let args = match &v {
                serde_yaml_ng::Value::Null => String::new(),
                other => scalar(other).ok_or_else(|| {
                    err(
                        n,
                        Some((jn, key.clone())),
                        format!("expected inline arguments as text, found {}", kind(other)),
                    )
                })?,
            };
            verb = Some((key, args));
        }
    }
    let Some((verb, args)) = verb else {
        return Err(err(
            n,
            Some((jn, "?".into())),
            "no verb (expected e.g. `RUN: echo hi`)".into(),
        ));
    };
    let args = args.trim_ascii().to_string();
    match JobSpec::parse(&verb, &args, &vars) {
        Ok(ParseOutcome::Spec(spec)) => Ok(JobDef {
            text: format!("{}: {args}{}", spec.verb(), shown_vars(&vars)),
            spec,
        }),
        Ok(ParseOutcome::Help(help)) => Err(OrchestrationError {
            is_help: true,
            ..err(n, Some((jn, verb)), help)
        }),
        Err(message) => Err(err(n, Some((jn, verb)), message)),
    }
}

/// Whether `value` is or holds `.nan` or `.inf` (JSON would turn them into null unsaid).
fn holds_non_finite(value: &serde_yaml_ng::Value) -> bool {
    use serde_yaml_ng::Value;
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| !f.is_finite()),
        Value::Sequence(items) => items.iter().any(holds_non_finite),
        Value::Mapping(m) => m.values().any(holds_non_finite),
        Value::Tagged(t) => holds_non_finite(&t.value),
        _ => false,
    }
}

/// A job's `vars:` as its definition shows them (` [vars: a=1, b="x"]`), so that two jobs
/// that differ only there do not look the same in `--finger-print` and `--job-info`.
fn shown_vars(vars: &BTreeMap<String, serde_json::Value>) -> String {
    if vars.is_empty() {
        return String::new();
    }
    let each: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" [vars: {}]", each.join(", "))
}

/// An error in `file`, at entry and job when known.
fn located(
    file: &str,
    entry: Option<usize>,
    job: Option<(usize, String)>,
    message: String,
) -> OrchestrationError {
    OrchestrationError {
        file: file.to_string(),
        entry,
        job,
        message,
        is_help: false,
    }
}

fn kind(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Null => "nothing",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "text",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a mapping",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping key as errors name it: a number or boolean as written (`5: echo` is the verb
/// "5"), anything else by its kind.
fn key_text(k: &serde_yaml_ng::Value) -> String {
    scalar(k).unwrap_or_else(|| format!("<{}>", kind(k)))
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    match v {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_list(v: &serde_yaml_ng::Value) -> Result<Vec<String>, String> {
    match v {
        serde_yaml_ng::Value::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).ok_or_else(|| format!("expected node names, found {}", kind(i))))
            .collect(),
        serde_yaml_ng::Value::String(s) => Ok(vec![s.clone()]),
        other => Err(format!(
            "expected a list of node names, found {}",
            kind(other)
        )),
    }
}

/// Directord's `async`: a boolean, or text read like strtobool.
fn truthy(v: &serde_yaml_ng::Value) -> Result<bool, String> {
    match v {
        serde_yaml_ng::Value::Bool(b) => Ok(*b),
        serde_yaml_ng::Value::Number(n) => Ok(n.as_f64() != Some(0.0)),
        serde_yaml_ng::Value::String(s) => crate::spec::yes_or_no(s)
            .ok_or_else(|| format!("'{}' is not a boolean", s.trim().to_ascii_lowercase())),
        serde_yaml_ng::Value::Null => Ok(false),
        other => Err(format!("expected true or false, found {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Component;

    /// Lists nested deeper than the parser could take are refused before it reads them (it
    /// took half a minute for this file), where the level past the limit opens; brackets in
    /// quotes and comments do not count.
    #[test]
    fn yaml_nested_too_deep_is_refused_at_once() {
        let deep = format!(
            "- jobs:\n  - RUN: echo hi\n    vars: {{a: {}{}}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse_str(&deep, "f.yaml").unwrap_err().to_string();
        assert!(
            e.contains("nested too deep at line 3 column 1014: more than 1000"),
            "{e}"
        );
        let quoted = format!(
            "- jobs:\n  - RUN: echo '{}' \"{}\" # {}\n",
            "[".repeat(2000),
            "{\\\"".repeat(2000),
            "[".repeat(2000)
        );
        assert!(
            parse_str(&quoted, "f.yaml").is_ok(),
            "{:?}",
            parse_str(&quoted, "f.yaml").err()
        );
        // An apostrophe in plain text opens no quote: it hides no bracket, closing or not.
        let plain = "- name: see [it's x]\n  jobs:\n  - RUN: echo hi\n".repeat(1001);
        assert!(
            parse_str(&plain, "f.yaml").is_ok(),
            "{:?}",
            parse_str(&plain, "f.yaml").err()
        );
        let hidden = format!(
            "- jobs:\n  - RUN: echo hi\n    vars: {{a: [x'y, {}{}]}}\n",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        let e = parse_str(&hidden, "f.yaml").unwrap_err().to_string();
        assert!(e.contains("nested too deep"), "{e}");
    }

    /// A control character is named where it is; a key that is no text is named as written.
    #[test]
    fn control_characters_and_keys_that_are_no_text_are_named() {
        let e = parse_str("- jobs:\n  - RUN: echo a\u{0}b\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2 column 16: a control character (U+0000)"),
            "{e}"
        );
        // A carriage return and tab are no such characters.
        assert!(parse_str("- jobs:\r\n  - RUN:\techo a\r\n", "f.yaml").is_ok());
        let e = parse_str("- jobs:\n  - 5: echo\n", "f.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("job 1 (5): unknown verb '5'"), "{e}");
    }

    /// A file that is not UTF-8 is refused naming the file and the line.
    #[test]
    fn a_file_that_is_not_text_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.yaml");
        std::fs::write(&path, b"- jobs:\n  - RUN: echo \xff\n").unwrap();
        let e = parse_file(&path).unwrap_err().to_string();
        assert!(e.contains("o.yaml") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn parses_directord_files() {
        let text = r#"
# a comment
---
- jobs:
  - RUN: echo hello world
  - RUN: echo hello world 3
    vars:
      stdout_arg: test_stdout_arg2
  - ARG: >
      test_runtime_complex_arg_dict {"a": "b"}
- async: "yes"
  targets: [n1, n2]
  jobs:
  - ECHO: test
    vars:
      skip_cache: true
"#;
        let o = parse_str(text, "t.yaml").unwrap();
        assert_eq!(o.entries.len(), 2);
        let e = &o.entries[0];
        assert!(!e.is_async && e.targets.is_none());
        assert_eq!(e.jobs.len(), 3);
        assert!(
            matches!(&e.jobs[1].spec.component, Component::Run { stdout_arg: Some(a), .. } if a == "test_stdout_arg2")
        );
        assert_eq!(e.jobs[0].text, "RUN: echo hello world");
        let e = &o.entries[1];
        assert!(e.is_async);
        assert_eq!(e.targets, Some(vec!["n1".to_string(), "n2".to_string()]));
        assert!(e.jobs[0].spec.skip_cache);
        assert_eq!(e.jobs[0].text, "ECHO: test [vars: skip_cache=true]");
        assert_ne!(o.entries[0].fingerprint, o.entries[1].fingerprint);
    }

    fn error(text: &str) -> String {
        parse_str(text, "bad.yaml").unwrap_err().to_string()
    }

    #[test]
    fn several_documents_are_refused_naming_the_second() {
        let two = "---\n# deploy\n- jobs:\n  - RUN: echo 1\n---\n- jobs:\n  - RUN: echo 2\n";
        let said = error(two);
        assert!(
            said.starts_with(
                "bad.yaml: the file holds more than one YAML document (the second begins at line 5)"
            ),
            "{said}"
        );
        // A file that opens with `---` is one document.
        assert!(parse_str("---\n- jobs:\n  - RUN: echo 1\n", "one.yaml").is_ok());
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_no_content() {
        let o = parse_str("\u{feff}- jobs:\n  - RUN: echo bom\n", "bom.yaml").unwrap();
        assert_eq!(o.entries.len(), 1);
        // Positions in errors are those the editor shows, on the first line too.
        let e = parse_str("\u{feff}- jobs\n- x\n", "bom.yaml").unwrap_err();
        let plain = parse_str("- jobs\n- x\n", "bom.yaml").unwrap_err();
        assert_eq!(e.to_string(), plain.to_string());
        let e = parse_str("\u{feff}[unclosed\n", "bom.yaml").unwrap_err();
        let plain = parse_str("[unclosed\n", "bom.yaml").unwrap_err();
        assert_eq!(e.to_string(), plain.to_string());
    }

    #[test]
    fn errors_name_file_entry_job_and_reason() {
        assert_eq!(
            error("- jobs:\n  - RUN: echo hi\n  - FROB: x\n"),
            "bad.yaml: entry 1, job 2 (FROB): unknown verb 'FROB' (known: RUN, ECHO, ARG, ENV, WORKDIR, CACHEFILE, CACHEEVICT, QUEUESENTINEL, WAIT, QUERY, QUERY_WAIT, JOB_WAIT, ADD, COPY)"
        );
        assert!(
            error("- jobs: [{RUN: --bogus x}]\n")
                .starts_with("bad.yaml: entry 1, job 1 (RUN): unknown option --bogus")
        );
        let e = error("- jobs:\n  - RUN: [unclosed\n");
        assert!(e.starts_with("bad.yaml: YAML syntax error at line"), "{e}");
        // The position is said once (the parser's text repeats it); another, where the
        // unclosed list began, may follow.
        assert_eq!(e.matches(" at line 3 column 1").count(), 1, "{e}");
        // A key written twice is said where it is written again, with the likely cause.
        assert_eq!(
            error("- jobs:\n  - RUN: echo one\n    RUN: echo two\n"),
            "bad.yaml: YAML syntax error at line 3: 'RUN' is given twice in one mapping (first \
             at line 2): each job is its own list item, so start each VERB line with '- '"
        );
        assert_eq!(
            error("- targets: [a]\n  jobs: []\n  targets: [b]\n"),
            "bad.yaml: YAML syntax error at line 3: 'targets' is given twice in one mapping \
             (first at line 1)"
        );
        assert!(error("").contains("the file is empty"));
        assert!(error("[]").contains("no entries"));
        assert!(error("jobs: []").contains("expected a list of entries"));
        assert!(error("- RUN: x\n").contains("entry 1: unknown key 'RUN'"));
        assert!(error("- targets: [a]\n").contains("entry 1: missing `jobs:`"));
        assert!(error("- jobs: []\n").contains("the list is empty"));
        assert!(
            error("- jobs: [RUN]\n").contains("job 1 (?): expected `VERB: arguments`, found text")
        );
        assert!(error("- jobs: [{RUN: x, ECHO: y}]\n").contains("exactly one verb"));
        // `vars` errors name the job's verb, written before or after it.
        assert_eq!(
            error("- jobs:\n  - vars: [1]\n    RUN: echo\n"),
            "bad.yaml: entry 1, job 1 (RUN): vars: expected a mapping"
        );
        assert!(
            error("- jobs: [{vars: 3}]\n").contains("job 1 (?): vars: expected a mapping"),
            "{}",
            error("- jobs: [{vars: 3}]\n")
        );
        assert!(
            error("- async: maybe\n  jobs: [{RUN: x}]\n")
                .contains("async: 'maybe' is not a boolean")
        );
        assert!(
            error("- targets: {a: b}\n  jobs: [{RUN: x}]\n").contains("targets: expected a list")
        );
        assert!(
            parse_str("- targets: []\n  jobs: [{RUN: x}]\n", "t.yaml")
                .unwrap()
                .entries[0]
                .targets
                .is_none()
        );
        assert!(
            error("- jobs:\n  - RUN: x\n    vars: {bogus: 1}\n")
                .contains("'bogus' is not an option of RUN")
        );
        for nan in ["timeout: .nan", "stdout_arg: -.inf", "args: {a: [1, .NaN]}"] {
            let e = error(&format!("- jobs:\n  - RUN: x\n    vars: {{{nan}}}\n"));
            let key = nan.split(':').next().unwrap();
            assert!(
                e.contains(&format!(
                    "vars: '{key}' holds .nan or .inf, which no job can use"
                )),
                "{e}"
            );
        }
        assert!(error("- jobs: [{RUN: {a: b}}]\n").contains("expected inline arguments as text"));
        assert!(error("- jobs: [{RUN: }]\n").contains("RUN needs a command"));
    }

    #[test]
    fn exec_help_is_not_an_error() {
        let e = parse_str("- jobs: [{RUN: --exec-help}]\n", "h.yaml").unwrap_err();
        assert!(e.is_help);
        assert!(e.message.contains("RUN [OPTIONS] COMMAND"));
    }

    #[test]
    fn the_reference_orchestrations_parse_where_they_use_only_built_verbs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/reference/directord-orchestrations");
        for name in [
            "functional-tests-async-time.yaml",
            "functional-tests-queue-sentinel.yaml",
            "comparison-orchestration.yaml",
            "comparison-orchestration-async.yaml",
        ] {
            let path = dir.join(name);
            if !path.exists() {
                // The reference folder sits beside the repository in CI and development; a bare
                // clone elsewhere does not have it.
                continue;
            }
            let o = parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!o.entries.is_empty(), "{name}");
        }
    }
}
