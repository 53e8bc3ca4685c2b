use serde_json::json;

use super::*;

#[test]
fn a_fingerprint_reads_back_from_its_hex_form_only() {
    let fp = Fingerprint::of(&"x");
    assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
    let hex = fp.to_hex();
    for bad in [
        hex.to_ascii_uppercase(),
        format!("+{}", &hex[1..]),
        hex[..62].to_string(),
        format!("{hex}00"),
        format!("{}g", &hex[..63]),
        String::new(),
    ] {
        assert_eq!(Fingerprint::from_hex(&bad), None, "{bad}");
    }
}

fn spec(verb: &str, inline: &str) -> JobSpec {
    spec_vars(verb, inline, BTreeMap::new())
}

fn spec_vars(verb: &str, inline: &str, vars: BTreeMap<String, Value>) -> JobSpec {
    match JobSpec::parse(verb, inline, &vars).unwrap() {
        ParseOutcome::Spec(s) => s,
        ParseOutcome::Help(h) => panic!("help: {h}"),
    }
}

fn err(verb: &str, inline: &str) -> String {
    JobSpec::parse(verb, inline, &BTreeMap::new()).unwrap_err()
}

#[test]
fn a_copy_short_of_words_says_how_many_it_got() {
    let one = err("COPY", "/tmp/f1k");
    assert!(
        one.starts_with("COPY takes SRC and DEST, got only one word;"),
        "{one}"
    );
    let three = err("ADD", "a b c");
    assert!(
        three.contains("got 3 words (quote a path with spaces)"),
        "{three}"
    );
    // A name is not a path: no word of quoting paths.
    let two = err("QUERY", "a b");
    assert!(
        two.starts_with("QUERY takes one NAME, got 2 words;"),
        "{two}"
    );
}

#[test]
fn run_keeps_the_command_as_written() {
    let s = spec(
        "RUN",
        r#"--skip-cache --stdout-arg out --timeout 30 echo "a   b" | grep a"#,
    );
    assert_eq!(
        s.component,
        Component::Run {
            command: r#"echo "a   b" | grep a"#.into(),
            stdout_arg: Some("out".into()),
            no_block: false
        }
    );
    assert!(s.skip_cache && !s.run_once && !s.force_lock);
    assert_eq!(s.timeout_secs, 30);
    assert_eq!(spec("run", "true").timeout_secs, DEFAULT_TIMEOUT_SECS);
}

#[test]
fn timeouts_and_waits_beyond_a_year_are_refused_and_never_overflow_a_clock() {
    assert_eq!(
        spec("RUN", "--timeout 31622400 true").timeout_secs,
        MAX_SECONDS
    );
    for (given, secs) in [
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86_400),
    ] {
        let inline = format!("--timeout {given} true");
        assert_eq!(spec("RUN", &inline).timeout_secs, secs, "{given}");
    }
    for bad in ["5x", "m", "1.5m", "-1", "367d", "0m"] {
        let e = err("RUN", &format!("--timeout {bad} true"));
        assert!(e.contains(&format!("--timeout '{bad}'")), "{bad}: {e}");
    }
    for inline in [
        "--timeout 31622401 true",
        "--timeout 10000000000000000000 true",
    ] {
        let e = err("RUN", inline);
        assert!(e.contains("--timeout") && e.contains("a year"), "{e}");
    }
    let e = err("QUERY_WAIT", "--query-timeout 99999999999 item");
    assert!(e.contains("--query-timeout") && e.contains("a year"), "{e}");
    for inline in ["--seconds 1e20", "--seconds NaN", "--seconds -1"] {
        let e = err("WAIT", inline);
        assert!(e.contains("--seconds"), "{inline}: {e}");
    }
    // A job from a peer is not parsed here: whatever it carries stays within a year.
    let now = std::time::Instant::now();
    let _ = now + bounded_secs(u64::MAX);
    assert_eq!(bounded_secs(u64::MAX).as_secs(), MAX_SECONDS);
    assert_eq!(bounded_secs_f64(f64::NAN), std::time::Duration::ZERO);
    assert_eq!(bounded_secs_f64(-5.0), std::time::Duration::ZERO);
    assert_eq!(bounded_secs_f64(f64::INFINITY).as_secs(), MAX_SECONDS);
    assert_eq!(bounded_secs_f64(1.5).as_millis(), 1500);
}

/// ECHO, ARG and ENV take free text with a lone quote or a trailing backslash word by word at
/// its spaces, as Directord does; RUN does not (its shell would refuse the line too).
#[test]
fn free_text_with_a_lone_quote_is_taken_at_its_spaces() {
    assert_eq!(
        spec("ECHO", "it's   done").component,
        Component::Echo {
            text: "it's done".into()
        }
    );
    let value = |verb: &str, inline: &str| match spec(verb, inline).component {
        Component::Arg { args, extend } | Component::Env { envs: args, extend } => {
            assert!(!extend);
            args.into_iter().next().unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        value("ARG", "motd Don't panic"),
        ("motd".to_string(), json!("Don't panic"))
    );
    assert_eq!(
        value("ENV", "TAIL ends with \\"),
        ("TAIL".to_string(), json!("ends with \\"))
    );
    assert!(matches!(
        spec("ARG", "--extend-args k it's").component,
        Component::Arg { extend: true, .. }
    ));
    assert!(err("RUN", "echo it's").contains("unterminated single quote"));
}

#[test]
fn arg_values_are_yaml() {
    let value = |inline: &str| match spec("ARG", inline).component {
        Component::Arg { args, .. } => args.into_values().next().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(value("k argument"), json!("argument"));
    assert_eq!(value("k ['test']"), json!(["test"]));
    assert_eq!(value("k 1"), json!(1));
    assert_eq!(value("k 1.2"), json!(1.2));
    assert_eq!(value(r#"k {"a": "b"}"#), json!({"a": "b"}));
    assert_eq!(value("k hello   world"), json!("hello   world"));
    assert_eq!(value("k true"), json!(true));
    assert_eq!(value("k null"), json!(null));
    assert_eq!(value("k ~"), json!(null));
    assert_eq!(value("k # not a value"), json!("# not a value"));
    // Only brackets, braces and quotes make a list, map or string of YAML's; a plain value
    // with a comment, block syntax, anchors or tags is the text as written.
    assert_eq!(value("k 'a  b'"), json!("a  b"));
    assert_eq!(value(r#"k "x\ty""#), json!("x\ty"));
    assert_eq!(value("k {a: [1, 2]}"), json!({"a": [1, 2]}));
    assert_eq!(value("k 5 # five"), json!(5));
    // Only ASCII whitespace is trimmed: a no-break space at either end is part of the value.
    assert_eq!(value("k \u{a0}x\u{a0} "), json!("\u{a0}x\u{a0}"));
    for text in [
        "Note: disk full",
        "hello #1",
        "!!int \"5\"",
        "&a 5",
        "- a",
        "&anchor value",
        "!!str 5",
        "? key",
        "| text",
        "> text",
        "[unclosed",
        "'a' b",
        "{a: 1} tail",
    ] {
        assert_eq!(value(&format!("k {text}")), json!(text), "{text}");
    }
    // Nesting the parser would take minutes to refuse is refused at once.
    let deep = format!("k {}", "[".repeat(100_000));
    assert!(
        err("ARG", &deep).contains("ARG k VALUE: YAML nested too deep at line 1 column 1001"),
        "{}",
        err("ARG", &deep)
    );
    assert!(matches!(
        spec("ENV", "--extend-args E x").component,
        Component::Env { extend: true, .. }
    ));
}

#[test]
fn vars_override_options() {
    let vars = BTreeMap::from([
        ("stdout_arg".to_string(), json!("v")),
        ("skip_cache".to_string(), json!(true)),
        ("timeout".to_string(), json!(9)),
    ]);
    let s = spec_vars("RUN", "--stdout-arg x echo hi", vars);
    assert!(matches!(s.component, Component::Run { stdout_arg: Some(ref v), .. } if v == "v"));
    assert!(s.skip_cache);
    assert_eq!(s.timeout_secs, 9);
    let bad = BTreeMap::from([("chown".to_string(), json!("root"))]);
    let e = JobSpec::parse("RUN", "true", &bad).unwrap_err();
    assert!(e.contains("'chown' is not an option of RUN"), "{e}");
    // Directord's files (YAML 1.1) write flags as yes/no.
    let yes = BTreeMap::from([("skip_cache".to_string(), json!("yes"))]);
    assert!(spec_vars("RUN", "true", yes).skip_cache);
    let no = BTreeMap::from([("skip_cache".to_string(), json!("off"))]);
    assert!(!spec_vars("RUN", "--skip-cache true", no).skip_cache);
    let one = BTreeMap::from([("skip_cache".to_string(), json!(1))]);
    assert!(spec_vars("RUN", "true", one).skip_cache);
    let bad = BTreeMap::from([("skip_cache".to_string(), json!("maybe"))]);
    assert!(
        JobSpec::parse("RUN", "true", &bad)
            .unwrap_err()
            .contains("is a flag")
    );
}

#[test]
fn fingerprint_covers_fields_but_not_cache_flags() {
    let a = spec("RUN", "echo hi").fingerprint();
    assert_eq!(a, spec("RUN", "--skip-cache echo hi").fingerprint());
    assert_eq!(a, spec("RUN", "--force-lock echo hi").fingerprint());
    assert_ne!(a, spec("RUN", "echo  hi").fingerprint());
    assert_ne!(a, spec("RUN", "--timeout 5 echo hi").fingerprint());
    assert_ne!(a, spec("RUN", "--run-once echo hi").fingerprint());
    assert_ne!(a, spec("RUN", "--stdout-arg x echo hi").fingerprint());
    assert_ne!(a, spec("ECHO", "echo hi").fingerprint());
    // Stable across runs and machines: a fixed vector.
    assert_eq!(a.to_hex().len(), 64);
    assert_eq!(a, spec("RUN", "echo hi").fingerprint());
    assert!(a.matches_prefix(&a.to_hex()[..8].to_uppercase()));
}

#[test]
fn other_verbs() {
    assert_eq!(
        spec("WORKDIR", "--chown=0:0 --chmod=0777 /tmp/x").component,
        Component::Workdir {
            path: "/tmp/x".into(),
            owner: Some(Owner {
                user: Some("0".into()),
                group: Some("0".into())
            }),
            mode: Some(0o777)
        }
    );
    assert_eq!(
        spec("ECHO", "hello   world").component,
        Component::Echo {
            text: "hello world".into()
        }
    );
    assert_eq!(
        spec("CACHEEVICT", "all").component,
        Component::Cacheevict { tag: CacheTag::All }
    );
    assert_eq!(
        spec("QUEUESENTINEL", "true").component,
        Component::Queuesentinel
    );
    assert_eq!(
        spec("WAIT", "--cmd --retry 3 test -f /tmp/x").component,
        Component::Wait {
            wait: WaitFor::Command {
                command: "test -f /tmp/x".into(),
                retry: 3,
                retry_wait: 1.0
            }
        }
    );
    assert_eq!(
        spec("WAIT", "--seconds 1.5").component,
        Component::Wait {
            wait: WaitFor::Seconds(1.5)
        }
    );
}

#[test]
fn coordination_verbs() {
    assert_eq!(
        spec("QUERY", "--no-wait host_name").component,
        Component::Query {
            name: "host_name".into(),
            no_wait: true
        }
    );
    assert_eq!(
        spec("JOB_WAIT", "ABCDEF0123 --identity n1 --identity n2,n3,n1").component,
        Component::JobWait {
            fingerprint: "abcdef0123".into(),
            identities: vec!["n1".into(), "n2".into(), "n3".into()]
        }
    );
    // Directord's form: every node after one --identity.
    assert_eq!(
        spec("JOB_WAIT", "abcdef0123 --identity n1 n2 n3 --timeout 60").component,
        Component::JobWait {
            fingerprint: "abcdef0123".into(),
            identities: vec!["n1".into(), "n2".into(), "n3".into()]
        }
    );
    assert_eq!(
        spec("QUERY_WAIT", "x --identity n1 n2").component,
        Component::QueryWait {
            item: "x".into(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            identities: vec!["n1".into(), "n2".into()]
        }
    );
    // In vars, a list (Directord sets the option's value to it); the inline ones give way.
    let vars = BTreeMap::from([("identity".to_string(), json!(["n4", "n5"]))]);
    assert_eq!(
        spec_vars("JOB_WAIT", "abcdef0123 --identity n1", vars).component,
        Component::JobWait {
            fingerprint: "abcdef0123".into(),
            identities: vec!["n4".into(), "n5".into()]
        }
    );
    let vars = BTreeMap::from([("identity".to_string(), json!([["n4"]]))]);
    assert!(
        JobSpec::parse("JOB_WAIT", "abcdef0123", &vars)
            .unwrap_err()
            .contains("takes a list of NODEs")
    );
    // Names taken for nodes leave the fingerprint missing, and the error says how to write it.
    assert!(
        err("JOB_WAIT", "--identity n1 abcdef0123")
            .contains("usage: JOB_WAIT FINGERPRINT --identity NODE [NODE]...")
    );
    assert_eq!(
        spec("QUERY_WAIT", "x --query-timeout 5").component,
        Component::QueryWait {
            item: "x".into(),
            timeout_secs: 5,
            identities: vec![]
        }
    );
    assert!(err("JOB_WAIT", "abcdef0123").contains("at least one --identity"));
    assert!(err("JOB_WAIT", "xyz --identity a").contains("not a job fingerprint"));
    assert!(err("QUERY", "").contains("needs NAME"));
    assert!(err("QUERY_WAIT", "x --query-timeout 0").contains("--query-timeout"));
    // Plain-positional verbs take their options after the positional too.
    assert!(matches!(
        spec("WORKDIR", "/tmp/x --chmod 0700").component,
        Component::Workdir {
            mode: Some(0o700),
            ..
        }
    ));
}

#[test]
fn bad_jobs_say_why() {
    assert!(err("FROB", "x").contains("unknown verb 'FROB' (known: RUN"));
    // Paths on the nodes: absolute, or a template that may render to one.
    assert!(err("WORKDIR", "srv/x").contains("PATH 'srv/x' is not an absolute path"));
    assert!(err("CACHEFILE", "c.yaml").contains("PATH 'c.yaml' is not an absolute"));
    assert!(err("ADD", "a.txt dest").contains("DEST 'dest' is not an absolute path"));
    assert_eq!(spec("WORKDIR", "{{ base }}/x").verb(), Verb::Workdir);
    assert!(err("RUNN", "x").contains("(did you mean RUN? known:"));
    assert!(err("ehco", "x").contains("did you mean ECHO?"));
    assert_eq!(edit_distance("QUERYWAIT", "QUERY_WAIT"), 1);
    assert!(err("RUN", "").contains("RUN needs a command"));
    let long = format!("echo {}", "y".repeat(MAX_COMMAND_BYTES));
    assert!(err("RUN", &long).contains("put it in a file"));
    let fits = format!("echo {}", "y".repeat(MAX_COMMAND_BYTES - 10));
    assert!(JobSpec::parse("RUN", &fits, &Default::default()).is_ok());
    assert!(err("RUN", "--timeout abc true").contains("--timeout 'abc'"));
    assert!(err("RUN", "--timeout 0 true").contains("from 1 s to a year"));
    assert!(err("RUN", "--stdout-arg 9x true").contains("--stdout-arg '9x'"));
    assert!(
        err("WORKDIR", "--chown {{ u }} /srv/x").contains("is a template, which --chown does not")
    );
    assert!(
        err("RUN", "--no-block --stdout-arg x echo hi")
            .contains("--stdout-arg stores what the command printed, and --no-block")
    );
    assert!(err("ARG", "").contains("needs a KEY and a VALUE"));
    assert!(err("ARG", "k").contains("has no VALUE"));
    assert!(err("ARG", "bad-key v").contains("KEY 'bad-key'"));
    assert!(err("WORKDIR", "").contains("needs PATH"));
    assert!(err("WORKDIR", "a b").contains("takes one PATH"));
    assert!(err("WORKDIR", "--chmod 999 /x").contains("not an octal mode"));
    assert!(err("WORKDIR", "--chown : /x").contains("neither a user nor a group"));
    assert!(err("CACHEEVICT", "stuff").contains("unknown cache tag 'stuff'"));
    assert!(err("WAIT", "").contains("exactly one of --seconds and --cmd"));
    assert!(err("WAIT", "--seconds x").contains("--seconds 'x'"));
    assert!(
        err("WAIT", "--retry 3 --seconds 1")
            .contains("--retry and --retry-wait go with WAIT --cmd, not --seconds")
    );
    assert!(err("RUN", "echo 'unterminated").contains("unterminated single quote"));
}

#[test]
fn exec_help_prints_the_verb_help() {
    match JobSpec::parse("RUN", "--exec-help", &BTreeMap::new()).unwrap() {
        ParseOutcome::Help(h) => {
            assert!(
                h.contains("RUN [OPTIONS] COMMAND")
                    && h.contains("--stdout-arg NAME")
                    && h.contains("--timeout")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A file of `size` bytes whose pieces all differ.
fn content(size: u64) -> Vec<u8> {
    (0..size)
        .map(|i| ((i * 31 + i / 4093) % 251) as u8)
        .collect()
}

fn read(data: &[u8]) -> FileRef {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, data).unwrap();
    FileRef::read(&path).unwrap()
}

#[test]
fn a_files_chunk_list_adds_up_to_its_blake3_at_every_size() {
    let c = CHUNK_SIZE;
    for size in [
        0,
        1,
        1024,
        c - 1,
        c,
        c + 1,
        2 * c,
        2 * c + 1,
        3 * c,
        3 * c + 1023,
        4 * c,
        5 * c + 7,
        8 * c + 1,
    ] {
        let data = content(size);
        let file = read(&data);
        assert_eq!(file.size, size);
        assert_eq!(file.hash.0, *blake3::hash(&data).as_bytes(), "{size} bytes");
        assert_eq!(file.chunks.len() as u64, size.div_ceil(c));
        file.check().unwrap();
        for (index, piece) in data.chunks(c as usize).enumerate() {
            assert_eq!(
                FileRef::digest_of_chunk(index, file.chunks.len(), piece),
                file.chunks[index],
                "{size} bytes, chunk {index}"
            );
        }
    }
}

#[test]
fn a_chunk_list_that_makes_other_content_is_refused() {
    let real = read(&content(3 * CHUNK_SIZE + 5));
    let other = read(&content(3 * CHUNK_SIZE + 6)[1..]);
    assert_eq!(real.size, other.size);
    // Another file's pieces under this file's hash; two pieces swapped; one piece changed.
    let mut borrowed = real.clone();
    borrowed.chunks = other.chunks.clone();
    let mut swapped = real.clone();
    swapped.chunks.swap(0, 1);
    let mut changed = real.clone();
    changed.chunks[3] = other.chunks[3];
    // The plain hashes of the pieces (the list of releases before wire version 8).
    let mut plain = real.clone();
    plain.chunks = content(3 * CHUNK_SIZE + 5)
        .chunks(CHUNK_SIZE as usize)
        .map(|p| Fingerprint(*blake3::hash(p).as_bytes()))
        .collect();
    for forged in [borrowed, swapped, changed, plain] {
        let e = forged.check().unwrap_err();
        assert!(
            e.contains("does not add up to its blake3") && e.contains("older release"),
            "{e}"
        );
    }
    // One piece: its digest is the file's hash, or the description is refused.
    let small = read(b"small");
    let mut forged = small.clone();
    forged.chunks[0] = Fingerprint(*blake3::hash(b"other").as_bytes());
    assert!(forged.check().is_err());
    // A file whose metadata says 0 bytes while it has content is read again by its size.
    let proc = FileRef::read(std::path::Path::new("/proc/version")).unwrap();
    let content = std::fs::read("/proc/version").unwrap();
    assert!(!content.is_empty());
    assert_eq!(proc.size, content.len() as u64);
    assert_eq!(proc.hash.0, *blake3::hash(&content).as_bytes());
    proc.check().unwrap();
    // A list that does not fit the size is refused before any merging.
    let mut short = real.clone();
    short.chunks.pop();
    assert!(short.check().unwrap_err().contains("take 4 chunks"));
}

/// An ENV no process environment could hold is refused when parsed, naming it: NUL in its
/// value (escaped in YAML, or as it is), NUL or `=` in its name. An ARG may hold NUL (it is
/// no env), and an ENV of a list or map is passed as JSON, which escapes it.
#[test]
fn an_env_a_process_cannot_take_is_refused_by_name() {
    for inline in [r#"E "a\0b""#, "E a\0b", "E '\0'"] {
        let e = err("ENV", inline);
        assert!(
            e.starts_with("the value of env E holds a NUL byte"),
            "{inline:?}: {e}"
        );
    }
    assert!(err("ENV", "K\0X v").contains(r"KEY 'K\0X'"));
    assert!(err("ENV", "K=X v").contains("KEY 'K=X'"));
    assert!(matches!(
        spec("ARG", r#"k "a\0b""#).component,
        Component::Arg { .. }
    ));
    assert!(matches!(
        spec("ENV", r#"E ["a\0b"]"#).component,
        Component::Env { .. }
    ));
    assert_eq!(
        env_problem("", "v").as_deref(),
        Some("an env's name cannot be empty")
    );
    assert_eq!(env_problem("E", "v"), None);
}
