//! Text an operator gives as YAML (an orchestration, a config file, a cache file, an ARG's
//! value), read safely before the parser sees it: a read stops at a cap (a device such as
//! /dev/zero never ends), bytes that are not UTF-8 and characters YAML does not allow are
//! named by line and column, and nesting too deep is refused up front (the parser's time
//! grows with the square of the depth before it refuses more than 128 levels itself).

use std::path::Path;

/// Reads the text file `path` an operator gave (an orchestration, a config file): at most
/// `cap` bytes (a device such as /dev/zero, or a pipe that never ends, is refused once past
/// it rather than read until memory runs out), in UTF-8 (the first byte that is not is
/// named by its line).
pub fn read_capped(path: &Path, cap: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "it is larger than {} MiB, more than such a file can be",
            cap.div_ceil(1024 * 1024)
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        format!(
            "it is not UTF-8 text: line {line}, byte {} of the line, is not",
            valid.len() - line_start + 1
        )
    })
}

/// Why `text` is no YAML to hand the parser, if it is not: a control character, or nesting
/// deeper than [`MAX_FLOW_DEPTH`] (each named by line and column).
pub fn refusal(text: &str) -> Option<String> {
    control_character(text).or_else(|| nested_too_deep(text))
}

/// Where `text` holds a character YAML does not allow (a control character other than tab
/// and line ends), if it does.
pub fn control_character(text: &str) -> Option<String> {
    let not_allowed = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
            || ('\u{7f}'..='\u{9f}').contains(&c) && c != '\u{85}'
    };
    for (i, line) in text.split('\n').enumerate() {
        if let Some((at, c)) = line.chars().enumerate().find(|(_, c)| not_allowed(*c)) {
            return Some(format!(
                "YAML syntax error at line {} column {}: a control character (U+{:04X}) is \
                 not allowed in YAML",
                i + 1,
                at + 1,
                u32::from(c)
            ));
        }
    }
    None
}

/// How deep `[` and `{` may nest: the parser refuses more than 128 levels anyway, but only
/// after a time that grows with the square of the depth (half a minute for 100 000).
const MAX_FLOW_DEPTH: usize = 1000;

/// Where `text` opens its flow collection number [`MAX_FLOW_DEPTH`] + 1 inside the others, if
/// it does. Quoted text (on one line) and comments are passed over; a `[` or `{` in plain or
/// block text counts too, which only a file far beyond anything the parser takes could reach.
pub fn nested_too_deep(text: &str) -> Option<String> {
    let mut depth = 0usize;
    for (i, line) in text.split('\n').enumerate() {
        let mut quote = None;
        let mut previous = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            match (quote, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => {
                    // '' inside single quotes is a quote, not the end.
                    if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                (Some(_), _) => {}
                (None, '#') if previous.is_whitespace() => break,
                // A quote opens a quoted scalar only where one may start (`O'Brien` and
                // `it's` are plain text).
                (None, '"' | '\'') if previous.is_whitespace() || "[{,:".contains(previous) => {
                    quote = Some(c)
                }
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(format!(
                            "YAML nested too deep at line {} column {}: more than \
                             {MAX_FLOW_DEPTH} lists or mappings inside each other",
                            i + 1,
                            at + 1
                        ));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file past the cap (a device that never ends) is refused once past it; bytes that are
    /// not UTF-8 are named by line.
    #[test]
    fn files_are_read_up_to_a_cap_and_as_text() {
        let e = read_capped(Path::new("/dev/zero"), 1024 * 1024).unwrap_err();
        assert_eq!(e, "it is larger than 1 MiB, more than such a file can be");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.yaml");
        std::fs::write(&path, b"- jobs:\n  - RUN: echo \xff\n").unwrap();
        let e = read_capped(&path, 100).unwrap_err();
        assert_eq!(
            e,
            "it is not UTF-8 text: line 2, byte 15 of the line, is not"
        );
        std::fs::write(&path, "- jobs: []\n").unwrap();
        assert_eq!(read_capped(&path, 11).unwrap(), "- jobs: []\n");
        assert!(read_capped(&path, 10).is_err());
    }

    /// Control characters and nesting too deep are named where they are; text within the
    /// limits is no concern of this module.
    #[test]
    fn what_the_parser_is_not_handed_is_named_by_line_and_column() {
        assert_eq!(
            refusal("a: 1\nb: x\u{1}y\n").unwrap(),
            "YAML syntax error at line 2 column 5: a control character (U+0001) is not \
             allowed in YAML"
        );
        let deep = format!("a: 1\nb: {}", "[".repeat(MAX_FLOW_DEPTH + 1));
        assert_eq!(
            refusal(&deep).unwrap(),
            format!(
                "YAML nested too deep at line 2 column {}: more than {MAX_FLOW_DEPTH} lists or \
                 mappings inside each other",
                4 + MAX_FLOW_DEPTH
            )
        );
        let fits = format!(
            "{}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(refusal(&fits), None);
        assert_eq!(refusal("a: \"[[[\" # {{{\n"), None);
    }
}
