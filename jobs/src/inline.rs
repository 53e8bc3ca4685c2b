//! Inline arguments: the text after a verb, e.g. `--skip-cache --stdout-arg out echo "a  b"`.
//!
//! Splitting is shell-like: ASCII whitespace separates words (a no-break or ideographic space
//! is part of its word, as in the shell), single quotes keep everything literal, double quotes
//! keep whitespace and honour `\"` and `\\`, a backslash outside quotes escapes the
//! next character, and a template expression (`{{ name }}`) is part of its word, spaces and all.
//! Unlike Directord, quoted whitespace is kept.
//!
//! Options come first (`--name value`, `--name=value` or a bare `--flag`); the first word that is
//! not an option ends them. What follows is returned both as words and as the raw text, so that
//! a RUN command reaches the shell exactly as written (quotes, pipes and all).

/// One word and where it started in the inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
}

/// Splits `input` into words; fails on an unterminated quote or a trailing backslash.
pub fn split(input: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
            continue;
        }
        let mut text = String::new();
        while let Some(&(pos, c)) = chars.peek() {
            if c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => text.push(c),
                        None => {
                            return Err(format!(
                                "unterminated single quote (opened at character {pos})"
                            ));
                        }
                    }
                },
                '"' => loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c @ ('"' | '\\' | '$' | '`'))) => text.push(c),
                            Some((_, c)) => {
                                text.push('\\');
                                text.push(c);
                            }
                            None => {
                                return Err(format!(
                                    "unterminated double quote (opened at character {pos})"
                                ));
                            }
                        },
                        Some((_, c)) => text.push(c),
                        None => {
                            return Err(format!(
                                "unterminated double quote (opened at character {pos})"
                            ));
                        }
                    }
                },
                '\\' => match chars.next() {
                    Some((_, c)) => text.push(c),
                    None => return Err("trailing backslash".into()),
                },
                // A template expression is one word, spaces and all: `/srv/{{ name }}`.
                '{' if template_end(&input[pos..]).is_some() => {
                    let end = pos + template_end(&input[pos..]).unwrap_or_default();
                    text.push('{');
                    while let Some(&(at, c)) = chars.peek() {
                        if at >= end {
                            break;
                        }
                        text.push(c);
                        chars.next();
                    }
                }
                c => text.push(c),
            }
        }
        words.push(Word { text, start });
    }
    Ok(words)
}

/// Splits `input` at ASCII whitespace only, quotes and backslashes kept as characters (as
/// Directord splits): for the free text of ECHO, ARG and ENV when [`split`] cannot take it
/// (`ECHO: Don't panic`).
pub fn split_plain(input: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in input.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                words.push(Word {
                    text: input[s..i].to_string(),
                    start: s,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(Word {
            text: input[s..].to_string(),
            start: s,
        });
    }
    words
}

/// Where the template expression `text` starts with (`{{ ... }}`) ends, past its `}}`; a
/// `}}` inside one of its quoted strings does not end it. `None`: not a whole expression.
fn template_end(text: &str) -> Option<usize> {
    let body = text.strip_prefix("{{")?;
    let mut quote = None;
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '}') if body[i..].starts_with("}}") => return Some(2 + i + 2),
            (None, _) => {}
        }
    }
    None
}

/// How an option is written and whether it takes a value.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// Long name without the dashes, e.g. `stdout-arg`.
    pub name: &'static str,
    /// Placeholder of the value (`NAME`, `SECONDS`), or `None` for a flag.
    pub value: Option<&'static str>,
    /// Whether the option takes every word after it up to the next option (`--identity a b`,
    /// as Directord's `nargs="+"`); a value given with `=` is one word.
    pub many: bool,
    pub help: &'static str,
}

/// The options every verb accepts.
pub const COMMON_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "skip-cache",
        value: None,
        many: false,
        help: "run even if this job already succeeded on the node within the cache TTL",
    },
    OptionSpec {
        name: "run-once",
        value: None,
        many: false,
        help: "run on exactly one of the targets (the first given, else the first by name)",
    },
    OptionSpec {
        name: "timeout",
        value: Some("SECONDS"),
        many: false,
        help: "kill the job (and every process it started) after this long: seconds, or 5m, \
               2h, 1d (at most a year); default 600",
    },
    OptionSpec {
        name: "force-lock",
        value: None,
        many: false,
        help: "run alone on the node: wait for the jobs running to end; jobs that start \
               later wait for this one (QUERY, QUERY_WAIT and JOB_WAIT waiting for other nodes \
               neither wait nor hold it up; given to one of them, it holds up every job of \
               the node until it ends, the job it waits for too if that runs here)",
    },
    OptionSpec {
        name: "exec-help",
        value: None,
        many: false,
        help: "print this help and run nothing",
    },
];

/// Options found, in order, and what follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `(name, value)`; flags have `None`.
    pub options: Vec<(String, Option<String>)>,
    /// The words after the options.
    pub rest: Vec<Word>,
    /// The raw text after the options, from the first remaining word to the end (trimmed).
    pub rest_raw: String,
}

impl Parsed {
    pub fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// Every value given for `name`, in order; comma-separated values count as several.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect()
    }

    /// The last value given for `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Splits `input` and takes leading options known to `specs` (plus the common options).
/// `--` ends the options explicitly. Unknown options are an error naming the known ones.
pub fn parse(input: &str, specs: &[OptionSpec]) -> Result<Parsed, String> {
    parse_with(split(input)?, input, specs, false)
}

/// Like [`parse`], with the words of [`split_plain`].
pub fn parse_plain(input: &str, specs: &[OptionSpec]) -> Result<Parsed, String> {
    parse_with(split_plain(input), input, specs, false)
}

/// Like [`parse`], but options may also follow the positional words (for verbs whose
/// positionals are plain names, such as `JOB_WAIT FINGERPRINT --identity web1`).
pub fn parse_anywhere(input: &str, specs: &[OptionSpec]) -> Result<Parsed, String> {
    parse_with(split(input)?, input, specs, true)
}

fn parse_with(
    words: Vec<Word>,
    input: &str,
    specs: &[OptionSpec],
    anywhere: bool,
) -> Result<Parsed, String> {
    let known = |name: &str| {
        specs
            .iter()
            .chain(COMMON_OPTIONS)
            .find(|s| s.name == name)
            .copied()
    };
    let mut options = Vec::new();
    let mut positionals = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i].text;
        if word == "--" {
            i += 1;
            break;
        }
        let Some(body) = word.strip_prefix("--").filter(|b| !b.is_empty()) else {
            if anywhere {
                positionals.push(words[i].clone());
                i += 1;
                continue;
            }
            break;
        };
        let (name, inline_value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let spec = known(name).ok_or_else(|| {
            let names: Vec<String> = specs
                .iter()
                .chain(COMMON_OPTIONS)
                .map(|s| format!("--{}", s.name))
                .collect();
            format!("unknown option --{name} (known: {})", names.join(", "))
        })?;
        let value = match (spec.value, inline_value) {
            (None, None) => None,
            (None, Some(_)) => return Err(format!("--{name} takes no value")),
            (Some(_), Some(v)) => Some(v),
            (Some(placeholder), None) => {
                i += 1;
                match words.get(i) {
                    // `--identity --timeout 5`: the value left out, not a node named so.
                    Some(w)
                        if w.text.strip_prefix("--").is_some_and(|o| {
                            known(o.split_once('=').map_or(o, |(o, _)| o)).is_some()
                        }) =>
                    {
                        return Err(format!(
                            "--{name} needs a value ({placeholder}) before {}",
                            w.text
                        ));
                    }
                    Some(w) => Some(w.text.clone()),
                    None => return Err(format!("--{name} needs a value ({placeholder})")),
                }
            }
        };
        let takes_more = spec.many && !word.contains('=');
        options.push((name.to_string(), value));
        i += 1;
        while takes_more && words.get(i).is_some_and(|w| !w.text.starts_with("--")) {
            options.push((name.to_string(), Some(words[i].text.clone())));
            i += 1;
        }
    }
    let tail = &words[i.min(words.len())..];
    let (rest, rest_raw) = if anywhere {
        positionals.extend(tail.iter().cloned());
        let raw = positionals
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        (positionals, raw)
    } else {
        let raw = tail
            .first()
            .map(|w| input[w.start..].trim_ascii().to_string())
            .unwrap_or_default();
        (tail.to_vec(), raw)
    };
    Ok(Parsed {
        options,
        rest,
        rest_raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Vec<String> {
        split(s).unwrap().into_iter().map(|w| w.text).collect()
    }

    #[test]
    fn splitting_keeps_quoted_whitespace() {
        assert_eq!(
            texts(r#"echo "a   b" 'c  d' e\ f"#),
            vec!["echo", "a   b", "c  d", "e f"]
        );
        assert_eq!(
            texts(r#"say "he said \"hi\"""#),
            vec!["say", "he said \"hi\""]
        );
        assert_eq!(texts("  spaced   out  "), vec!["spaced", "out"]);
        assert_eq!(texts("a\tb\nc"), vec!["a", "b", "c"]);
        // Other spaces are characters of their word, as the shell takes them.
        assert_eq!(
            texts("/tmp/x\u{3000}dir y\u{a0}z"),
            vec!["/tmp/x\u{3000}dir", "y\u{a0}z"]
        );
        assert_eq!(texts(r#"x"y z"w"#), vec!["xy zw"]);
        // Template expressions stay in their word; a lone brace is a character.
        assert_eq!(
            texts("/srv/{{ name }}/x {{ a | join(', ') }} {b} {{ open"),
            vec![
                "/srv/{{ name }}/x",
                "{{ a | join(', ') }}",
                "{b}",
                "{{",
                "open"
            ]
        );
        assert_eq!(texts("echo {{ '}}' }} x"), vec!["echo", "{{ '}}' }}", "x"]);
        assert!(
            split("echo 'open")
                .unwrap_err()
                .contains("unterminated single quote")
        );
        assert!(
            split("echo \"open")
                .unwrap_err()
                .contains("unterminated double quote")
        );
        assert!(split("echo \\").unwrap_err().contains("trailing backslash"));
    }

    const RUN: &[OptionSpec] = &[
        OptionSpec {
            name: "stdout-arg",
            value: Some("NAME"),
            many: false,
            help: "",
        },
        OptionSpec {
            name: "no-block",
            value: None,
            many: false,
            help: "",
        },
    ];

    #[test]
    fn options_first_then_raw_rest() {
        let p = parse(
            r#"--skip-cache --stdout-arg=out --timeout 5 echo "a   b" | grep a"#,
            RUN,
        )
        .unwrap();
        assert!(p.flag("skip-cache"));
        assert_eq!(p.value("stdout-arg"), Some("out"));
        assert_eq!(p.value("timeout"), Some("5"));
        assert_eq!(p.rest_raw, r#"echo "a   b" | grep a"#);
        // Options after the command belong to the command.
        let p = parse("ls --timeout 5 /", RUN).unwrap();
        assert!(p.options.is_empty());
        assert_eq!(p.rest_raw, "ls --timeout 5 /");
        // `--` ends options.
        let p = parse("-- --skip-cache", RUN).unwrap();
        assert_eq!(p.rest_raw, "--skip-cache");
    }

    #[test]
    fn options_anywhere_for_plain_positionals() {
        const WAIT: &[OptionSpec] = &[OptionSpec {
            name: "identity",
            value: Some("NODE"),
            many: true,
            help: "",
        }];
        let p = parse_anywhere("abc123 --identity n1 --identity=n2,n3 --timeout 5", WAIT).unwrap();
        assert_eq!(p.rest.len(), 1);
        assert_eq!(p.rest[0].text, "abc123");
        assert_eq!(p.values("identity"), vec!["n1", "n2", "n3"]);
        assert_eq!(p.value("timeout"), Some("5"));
        // Several words after it, as Directord takes them, up to the next option; one
        // after `=`.
        let p = parse_anywhere("abc123 --identity n1 n2 n3 --timeout 5", WAIT).unwrap();
        assert_eq!(p.rest.len(), 1);
        assert_eq!(p.values("identity"), vec!["n1", "n2", "n3"]);
        assert_eq!(p.value("timeout"), Some("5"));
        let p = parse_anywhere("--identity=n1 abc123", WAIT).unwrap();
        assert_eq!(p.values("identity"), vec!["n1"]);
        assert_eq!(p.rest[0].text, "abc123");
        let p = parse_anywhere("--identity n1 n2 -- abc123", WAIT).unwrap();
        assert_eq!(p.values("identity"), vec!["n1", "n2"]);
        assert_eq!(p.rest[0].text, "abc123");
    }

    #[test]
    fn option_errors_say_what_is_wrong() {
        assert!(
            parse("--bogus x", RUN)
                .unwrap_err()
                .contains("unknown option --bogus")
        );
        assert!(
            parse("--stdout-arg", RUN)
                .unwrap_err()
                .contains("needs a value (NAME)")
        );
        assert!(
            parse("--no-block=yes cmd", RUN)
                .unwrap_err()
                .contains("takes no value")
        );
        // Another option where the value should be: left out, not a value spelled so.
        assert!(
            parse("--stdout-arg --timeout 5 cmd", RUN)
                .unwrap_err()
                .contains("--stdout-arg needs a value (NAME) before --timeout")
        );
        // A word that only looks like an option is a value.
        let p = parse("--stdout-arg --x cmd", RUN).unwrap();
        assert_eq!(p.value("stdout-arg"), Some("--x"));
    }
}
