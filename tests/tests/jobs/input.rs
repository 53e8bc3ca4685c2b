//! Bad input and who may submit: orchestrations and arguments refused with the reason, unknown
//! targets, submitters a node does not allow.

use super::*;

#[test]
fn bad_orchestrations_and_arguments_exit_2_with_the_reason() {
    let bad = orchestrations().join("bad");
    let cases: &[(&str, &[&str])] = &[
        (
            "unknown-verb.yaml",
            &["entry 1, job 2 (FROB)", "unknown verb 'FROB'"],
        ),
        (
            "unknown-option.yaml",
            &["entry 1, job 1 (RUN)", "unknown option --bogus"],
        ),
        (
            "syntax.yaml",
            &["syntax.yaml: YAML syntax error at line 3 column 1"],
        ),
        ("no-jobs.yaml", &["entry 1", "missing `jobs:`"]),
        ("missing-value.yaml", &["job 1 (ARG)", "has no VALUE"]),
        ("bad-timeout.yaml", &["--timeout 'soon'"]),
        ("bad-mode.yaml", &["not an octal mode"]),
        ("unterminated-quote.yaml", &["unterminated double quote"]),
        (
            "missing-identity.yaml",
            &[
                "entry 1, job 1 (JOB_WAIT)",
                "--identity needs a value (NODE) before --timeout",
            ],
        ),
        ("not-a-list.yaml", &["expected a list of entries"]),
        ("bad-async.yaml", &["async: 'maybe' is not a boolean"]),
        ("bad-var.yaml", &["'chown' is not an option of RUN"]),
        ("bad-tag.yaml", &["unknown cache tag 'everything'"]),
        ("empty.yaml", &["the file is empty"]),
        ("bad-wait.yaml", &["exactly one of --seconds and --cmd"]),
        (
            "missing-source.yaml",
            &[
                "missing-source.yaml: entry 2, job 1 (ADD)",
                "no file matches",
            ],
        ),
        (
            "bad-template.yaml",
            &["entry 1, job 2 (RUN)", "the command: template syntax error"],
        ),
        ("binary.yaml", &["binary.yaml"]),
        (
            "does-not-exist.yaml",
            &["does-not-exist.yaml", "cannot read"],
        ),
    ];
    let state = root();
    for (file, needles) in cases {
        let path = bad.join(file);
        let o = e2e_tests::cli(&[
            "--state-dir",
            state.path().to_str().unwrap(),
            "orchestrate",
            path.to_str().unwrap(),
            "--poll",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file}: {}", text(&o));
        assert!(!err.contains("panicked"), "{file}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{file}: expected {n:?} in {err}");
        }
    }
    let args: &[(&[&str], &str)] = &[
        (&["exec", "--verb", "FROB", "x"], "unknown verb 'FROB'"),
        (&["exec", "--verb", "RUN"], "error: RUN needs a command"),
        (
            &["exec", "--verb", "RUN", "--timeout", "x", "true"],
            "--timeout 'x'",
        ),
        (&["exec", "--verb", "WORKDIR", "a", "b"], "takes one PATH"),
        (&["exec", "RUN", "true"], "--verb"),
        (&["orchestrate"], "FILE"),
    ];
    for (a, needle) in args {
        let mut all = vec!["--state-dir", state.path().to_str().unwrap()];
        all.extend_from_slice(a);
        let o = e2e_tests::cli(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {}", text(&o));
        assert!(err.contains(needle), "{a:?}: expected {needle:?} in {err}");
    }
    // ADD of several files to one file path, or of a directory, is refused before any daemon
    // is asked.
    let dir = orchestrations();
    for (inline, needle) in [
        (
            format!("{}/*.yaml /srv/one-file", dir.display()),
            "names one file: end DEST with /",
        ),
        (format!("{} /srv/", dir.display()), "names only directories"),
    ] {
        let sd = state.path().to_str().unwrap();
        let o = e2e_tests::cli(&["--state-dir", sd, "exec", "--verb", "ADD", &inline]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{inline}: {}", text(&o));
        assert!(
            err.contains(needle),
            "{inline}: expected {needle:?} in {err}"
        );
    }
    // --exec-help prints the verb's help and runs nothing (no daemon needed).
    let o = e2e_tests::cli(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "exec",
        "--verb",
        "RUN",
        "--exec-help",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--stdout-arg NAME"));
    // In a file, it says where, and that nothing of the files ran.
    let file = state.path().join("help.yaml");
    std::fs::write(
        &file,
        "- jobs:\n  - RUN: true\n  - RUN: --exec-help echo x\n",
    )
    .unwrap();
    let o = e2e_tests::cli(&[
        "--state-dir",
        state.path().to_str().unwrap(),
        "orchestrate",
        file.to_str().unwrap(),
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--stdout-arg NAME"));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("help.yaml: entry 1, job 2 (RUN): --exec-help: the verb's help is shown, and nothing was run"),
        "{}",
        text(&o)
    );
}

#[test]
fn unknown_targets_are_refused_before_anything_runs() {
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&[
        "exec", "--verb", "RUN", "--target", "nope", "true", "--poll",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown target 'nope'"),
        "{}",
        text(&o)
    );
    // Every unknown name is said at once.
    let o = nodes[0].cli(&[
        "exec", "--verb", "RUN", "--target", "web1", "--target", "n2", "--target", "web2", "true",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unknown targets 'web1', 'web2' (alive: n1, n2, n3)"),
        "{}",
        text(&o)
    );
    // A name that differs only in case is pointed at.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "N2", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean 'n2'?"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // A run no message can carry (9 MiB of text) is refused, not stored to wait forever.
    let big = root.path().join("big.yaml");
    let text9 = "x".repeat(9 * 1024 * 1024);
    std::fs::write(&big, format!("- jobs:\n  - ECHO: {text9}\n")).unwrap();
    let o = nodes[0].cli(&["orchestrate", big.to_str().unwrap(), "--poll"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("too large to send"),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // --finger-print runs nothing and needs no daemon.
    let file = orchestrations().join("functional.yaml");
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--finger-print"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("COUNT"));
    assert!(records(&nodes[0]).is_empty());
    // The hidden files a wildcard of ADD leaves out, as a shell does, are said.
    let conf = root.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), "a").unwrap();
    std::fs::write(conf.join(".env"), "secret").unwrap();
    std::os::unix::fs::symlink("/nowhere/db.conf", conf.join("db.conf")).unwrap();
    let hidden = root.path().join("hidden.yaml");
    std::fs::write(
        &hidden,
        format!("- jobs:\n  - ADD: {}/* /tmp/x/\n", conf.display()),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", hidden.to_str().unwrap(), "--finger-print"]);
    assert!(o.status.success(), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains(&format!(
            "hidden.yaml: entry 1, job 1 (ADD): its wildcard left out hidden files, as a shell \
             does: {}/.env (write their leading dot",
            conf.display()
        )),
        "{}",
        text(&o)
    );
    // So is what it matched that is no file to send.
    assert!(
        said.contains(&format!(
            "hidden.yaml: entry 1, job 1 (ADD): its pattern matched what ADD and COPY cannot \
             send, left out: {}/db.conf (a symbolic link to /nowhere/db.conf, which does not \
             exist)",
            conf.display()
        )),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("app.conf"),
        "{}",
        text(&o)
    );
    // A parent's own `targets:` are named where they were written.
    let named = root.path().join("named.yaml");
    std::fs::write(
        &named,
        "- jobs:\n  - RUN: true\n- targets: [n1, nope]\n  jobs:\n  - RUN: true\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", named.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("named.yaml: entry 2: unknown target 'nope'"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
    // A JOB_WAIT on n1 for a job that n1 runs only after it (a later synchronous entry) could
    // only wait until its timeout: refused before anything runs.
    let later = root.path().join("later.yaml");
    std::fs::write(&later, "- targets: [n1]\n  jobs:\n  - RUN: echo awaited\n").unwrap();
    let fp = fingerprint_of(&nodes[0], &later, "echo awaited");
    let backwards = root.path().join("backwards.yaml");
    std::fs::write(
        &backwards,
        format!(
            "- targets: [n1, n2]\n  jobs:\n  - JOB_WAIT: {fp} --identity n1\n\
             - targets: [n1]\n  jobs:\n  - RUN: echo awaited\n"
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", backwards.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("backwards.yaml: entry 1: JOB_WAIT")
            && err.contains("waits on 'n1' for a job that 'n1' runs only after it")
            && err.contains("backwards.yaml: entry 2: RUN: echo awaited"),
        "{}",
        text(&o)
    );
    assert!(records(&nodes[0]).is_empty(), "nothing was recorded");
}

/// A node started with `--allow-submitter` runs jobs from that submitter and its own; a run
/// from any other node is answered with its jobs failed as refused, and nothing runs.
#[test]
fn a_node_takes_jobs_only_from_the_submitters_it_allows() {
    let root = root();
    let n1 = Daemon::start_isolated(root.path(), "n1", &[]);
    let token = n1.join_token();
    let n2 = Daemon::start_isolated(root.path(), "n2", &["--token", &token]);
    let n1_id = n1.peer_id();
    let n3 = Daemon::start_isolated(
        root.path(),
        "n3",
        &["--token", &token, "--allow-submitter", &n1_id],
    );
    let all = ["n1", "n2", "n3"].map(String::from).to_vec();
    for d in [&n1, &n2, &n3] {
        wait_for(Duration::from_secs(20), "the mesh to form", || {
            (e2e_tests::alive_names(&d.status()?) == all).then_some(())
        });
    }
    let marker = root.path().join("ran");
    let command = format!("echo x >> {}", marker.display());
    for (d, allowed) in [(&n1, true), (&n3, true), (&n2, false)] {
        let mut args = run_args(&["n3"], &command);
        args.push("--poll".into());
        let o = d.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let last = records(d).into_iter().last().unwrap();
        let info = last["results"]["n3"]["info"].as_str().unwrap_or_default();
        if allowed {
            assert!(o.status.success(), "from {}: {}", d.name, text(&o));
        } else {
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(
                info.starts_with("refused: n3 takes jobs only from the submitters it lists"),
                "{last}"
            );
        }
    }
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(ran.lines().count(), 2, "only the allowed runs ran");
    // A job refused never ran: a JOB_WAIT for it from a run n3 takes is not answered by the
    // refusal (it was, at once, as a failure), and times out.
    let mut args = run_args(&["n3"], "echo refused-only");
    args.push("--poll".into());
    let o = n2.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let refused = records(&n2).into_iter().last().unwrap();
    let fingerprint = refused["fingerprint"].as_str().unwrap();
    let o = n1.cli(&[
        "exec",
        "--verb",
        "JOB_WAIT",
        "--target",
        "n1",
        &format!("--timeout 3 {} --identity n3", &fingerprint[..12]),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("0 of 1 nodes had finished it"),
        "{}",
        text(&o)
    );
    assert!(
        n3.log().contains("refused a run: its submitter is not one"),
        "{}",
        n3.log()
    );
}

/// A target that left the mesh is written off once the grace a goodbye gets is over, and
/// after that named as gone: a run for it is refused, and nothing is recorded.
#[test]
fn a_target_that_left_is_reported_as_gone() {
    let root = root();
    let mut nodes = mesh(root.path());
    let peer = nodes[2].peer_id();
    assert!(nodes[2].terminate().success());
    wait_for(Duration::from_secs(20), "n3 to be seen leaving", || {
        (e2e_tests::state_of(&nodes[0].status()?, &peer)? == "left").then_some(())
    });
    // Within the grace a goodbye gets, the run is taken (n3 may be restarting), and n3 is
    // written off once the grace is over.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "n3", "true", "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("note: targets that had just left the mesh (restarting?): n3")
            && said.contains("1 failed result is a target written off as unreachable (n3)"),
        "{}",
        text(&o)
    );
    assert_eq!(records(&nodes[0]).len(), 1);
    // After it, a run for n3 is refused: nothing is recorded.
    let o = nodes[0].cli(&["exec", "--verb", "RUN", "--target", "n3", "true", "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("target 'n3' has left the mesh"),
        "{}",
        text(&o)
    );
    assert_eq!(records(&nodes[0]).len(), 1, "nothing more was recorded");
}
