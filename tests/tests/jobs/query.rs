//! QUERY across nodes: aggregation on five nodes, concurrent submitters, targets that fail,
//! restart or time out, sets too large to send, and Directord's QUERY orchestration.

use super::*;

#[test]
fn query_aggregates_every_targets_value_across_five_nodes() {
    let root = root();
    let nodes = mesh_of(root.path(), 5);
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - QUERY: token\n\
         \x20 - QUERY_WAIT: token --identity n1 --identity n5 --query-timeout 5\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }} {{ query.values() | map(attribute='token') | unique | list | length }}\"\n",
    )
    .unwrap();
    let o = nodes[2].cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(&nodes[2]);
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let count = recs
        .iter()
        .find(|r| r["definition"].as_str().unwrap().contains("query | length"))
        .unwrap();
    let query = record(&recs, "QUERY: token");
    for n in names {
        // Every node saw all five values, and they differ (one per node).
        assert_eq!(stdout_on(count, n), "5 5", "{n}: {count}");
        assert!(
            stdout_on(query, n).starts_with("{\"token\":\"token-"),
            "{n}: {query}"
        );
    }
    // The cache of any node holds the whole set.
    let o = nodes[4].cli(&["manage", "--dump-cache"]);
    let cache: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        cache["args"]["query"].as_object().unwrap().len(),
        5,
        "{cache}"
    );
    // The same QUERY again on three of them: their jobs see the three values of this run,
    // not the two the others sent to the run before (still in the nodes' args), and a wait
    // for one of the others is not met by that earlier value.
    let again = root.path().join("again.yaml");
    std::fs::write(
        &again,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - QUERY: token\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }}\"\n\
         \x20 - QUERY_WAIT: token --identity n5 --query-timeout 2\n",
    )
    .unwrap();
    let mut args = vec!["orchestrate", again.to_str().unwrap(), "--poll"];
    for n in ["n1", "n2", "n3"] {
        args.extend(["--target", n]);
    }
    let o = nodes[2].cli(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(&nodes[2]);
    let newest = |definition: &str| {
        recs.iter()
            .rfind(|r| r["definition"] == definition)
            .unwrap_or_else(|| panic!("{definition}"))
    };
    let count = newest("RUN: --skip-cache echo \"{{ query | length }}\"");
    let wait = newest("QUERY_WAIT: token --identity n5 --query-timeout 2");
    for n in ["n1", "n2", "n3"] {
        assert_eq!(stdout_on(count, n), "3", "{n}: {count}");
        assert_eq!(wait["results"][n]["state"], "failed", "{n}: {wait}");
    }
}

/// Two submitters' runs with a QUERY each reach the nodes in different orders (each
/// submitter's own run first); a QUERY waiting for the others lends its node's queue, so
/// neither waits for the other.
#[test]
fn two_submitters_querying_at_once_do_not_hold_each_other_up() {
    let root = root();
    let nodes = mesh(root.path());
    let file = root.path().join("two.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache sleep 1; echo a\n\
         \x20 - QUERY: --timeout 30 qv\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let args = ["orchestrate", file, "--poll", "--check"];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| nodes[0].cli(&args));
        let b = s.spawn(|| nodes[1].cli(&args));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success(), "n1's run: {}", text(&a));
    assert!(b.status.success(), "n2's run: {}", text(&b));
}

/// A target whose QUERY job never runs (an earlier job of its parent failed there) sends no
/// value: the other targets get the values that did come instead of waiting out their timeout.
#[test]
fn a_query_that_cannot_run_on_one_target_does_not_hold_up_the_others() {
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&[
        "exec", "--verb", "ARG", "--target", "n3", "broken", "yes", "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
         \x20 - RUN: --skip-cache test \"{{ broken | default('no') }}\" != yes\n\
         \x20 - QUERY: token --timeout 60\n\
         \x20 - RUN: --skip-cache echo \"{{ query | length }}\"\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let recs = records(&nodes[0]);
    let query = record(&recs, "QUERY: token --timeout 60");
    let count = record(&recs, "RUN: --skip-cache echo \"{{ query | length }}\"");
    assert_eq!(states(query)["n3"], "failed", "{query}");
    for n in ["n1", "n2"] {
        assert_eq!(states(query)[n], "success", "{n}: {query}");
        assert_eq!(stdout_on(count, n), "2", "{n}: {count}");
    }
}

/// A QUERY whose set is too large for any message (three values of 2.9 MB) fails on the
/// targets it cannot reach, saying why, instead of holding them until the job's timeout; the
/// submitter, which has the set, goes on.
#[test]
fn a_query_set_too_large_to_send_fails_its_targets_at_once() {
    let root = root();
    let nodes = mesh(root.path());
    let file = root.path().join("big.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache --stdout-arg big head -c 2200000 /dev/zero | base64 -w0\n\
         \x20 - QUERY: big --timeout 120\n\
         \x20 - RUN: --skip-cache echo after\n",
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        &text(&o)[..2000.min(text(&o).len())]
    );
    let recs = records(&nodes[0]);
    let query = record(&recs, "QUERY: big --timeout 120");
    let after = record(&recs, "RUN: --skip-cache echo after");
    assert_eq!(states(query)["n1"], "success");
    assert_eq!(stdout_on(after, "n1"), "after");
    for n in ["n2", "n3"] {
        let r = &query["results"][n];
        assert_eq!(r["state"], "failed", "{n}");
        let why = r["stderr"].as_str().unwrap();
        assert!(
            why.contains("cannot reach the other targets")
                && why.contains(&mesh::wire::MAX_JOB_DATA.to_string()),
            "{n}: {why}"
        );
        assert!(
            r["execution_secs"].as_f64().unwrap() < 100.0,
            "{n}: it failed before its timeout"
        );
    }
}

/// The submitter restarts in the middle of a QUERY: two values came before (its own and
/// n2's), n3's comes after. The values from before are kept on disk, so n2 and n3 still get
/// all three (before, the restarted submitter waited for a value that was never sent again);
/// the submitter's own QUERY job, cut by the crash, is reported interrupted and holds nobody.
#[test]
fn a_query_outlives_a_restart_of_its_submitter() {
    let root = root();
    let mut nodes = mesh(root.path());
    // n3 holds its first job until the test lets it go on, once the submitter is back.
    arg_per_node(
        &nodes[0],
        "hold",
        &[("n1", "no"), ("n2", "no"), ("n3", "yes")],
    );
    let gate = root.path().join("gate");
    let file = root.path().join("query.yaml");
    let count = "RUN: --skip-cache echo \"{{ query | length }}\"";
    let token = "RUN: --skip-cache --stdout-arg token echo \"token-$$\"";
    std::fs::write(
        &file,
        format!(
            "- jobs:\n\
             \x20 - RUN: --skip-cache test {{{{ hold }}}} = no || while [ ! -e {} ]; do sleep 0.1; done\n\
             \x20 - {token}\n\
             \x20 - QUERY: token --timeout 40\n\
             \x20 - {count}\n",
            gate.display()
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--target",
        "n1",
        "--target",
        "n2",
        "--target",
        "n3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // n1's and n2's values are in within a second of their QUERY jobs' start, right after
    // the jobs that make them, which nothing shows from outside (n1's own lands on its disk
    // with the next commit); n3 sends its own once the submitter has crashed and is back.
    wait_for_job(&nodes, token, "n1's and n2's values", |r| {
        reported(r, "n1") && reported(r, "n2")
    });
    std::thread::sleep(Duration::from_secs(2));
    written_to_disk(&nodes[0], "n2");
    crash_and_restart(&mut nodes[0]);
    std::fs::write(&gate, "").unwrap();
    let r = wait_for_job(&nodes, count, "the last job never reported thrice", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 3)
    });
    for n in ["n2", "n3"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
        assert_eq!(stdout_on(&r, n), "3", "{n}: {r}");
    }
    assert_eq!(r["results"]["n1"]["state"], "failed", "{r}");
    let query = record(&records(&nodes[0]), "QUERY: token --timeout 40").clone();
    let info = query["results"]["n1"]["info"].as_str().unwrap_or_default();
    assert!(info.starts_with("interrupted"), "{query}");
}

/// A target restarted cleanly (a goodbye, back within the grace) while a QUERY collects gives
/// its value after the restart, and every target's next job sees all three (before, the
/// goodbye ended the wait at once: n1 and n2 went on with two values).
#[test]
fn a_query_waits_for_a_target_restarting_within_the_grace() {
    let root = root();
    let mut nodes = mesh(root.path());
    // n3's QUERY waits in its queue behind a long sleep of another entry, which the restart
    // cuts; the queued jobs run after it.
    let marker = format!("sleep 47.{}1", std::process::id());
    let count = "RUN: --skip-cache echo \"{{ query | length }}\"";
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        format!(
            "- targets: [n3]\n  jobs:\n  - RUN: --skip-cache {marker}\n\
             - jobs:\n\
             \x20 - RUN: --skip-cache --stdout-arg token echo \"token-$$\"\n\
             \x20 - QUERY: token --timeout 60\n\
             \x20 - {count}\n"
        ),
    )
    .unwrap();
    // The second entry names no targets: every node (`--target` would set both entries').
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(Duration::from_secs(20), "the sleep to start", || {
        processes_running(&marker).then_some(())
    });
    // n1's and n2's values are sent as their QUERY jobs start, right after the jobs that
    // make them (and take moments to arrive).
    let token = "RUN: --skip-cache --stdout-arg token echo \"token-$$\"";
    wait_for_job(&nodes, token, "n1's and n2's values", |r| {
        reported(r, "n1") && reported(r, "n2")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(nodes[2].terminate().success());
    nodes[2].restart();
    let r = wait_for_job(&nodes, count, "the last job never reported thrice", |r| {
        r["results"].as_object().is_some_and(|m| m.len() == 3)
    });
    for n in ["n1", "n2", "n3"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
        assert_eq!(stdout_on(&r, n), "3", "{n}: {r}");
    }
}

/// A QUERY whose set does not come in time says why on each target: the submitter names the
/// targets whose values it still waits for, the others name the submitter to ask.
#[test]
fn a_query_that_times_out_says_whose_values_it_waited_for() {
    let root = root();
    let nodes = mesh(root.path());
    arg_per_node(
        &nodes[0],
        "delay",
        &[("n1", "0"), ("n2", "0"), ("n3", "12")],
    );
    let file = root.path().join("query.yaml");
    std::fs::write(
        &file,
        "- jobs:\n\
         \x20 - RUN: --skip-cache sleep {{ delay }}\n\
         \x20 - QUERY: delay --timeout 5\n",
    )
    .unwrap();
    let o = nodes[0].cli(&[
        "orchestrate",
        file.to_str().unwrap(),
        "--target",
        "n1",
        "--target",
        "n2",
        "--target",
        "n3",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = record(&records(&nodes[0]), "QUERY: delay --timeout 5").clone();
    let stderr = |n: &str| r["results"][n]["stderr"].as_str().unwrap_or_default();
    for n in ["n1", "n2"] {
        assert_eq!(r["results"][n]["state"], "failed", "{n}: {r}");
        assert!(
            stderr(n).starts_with("timed out waiting for the set of every target's value: "),
            "{n}: {r}"
        );
    }
    assert!(
        stderr("n1").contains("this node, the submitter, still waited for the value of n3 "),
        "{r}"
    );
    assert!(
        stderr("n2").contains("it comes from the submitter n1 once every target has sent"),
        "{r}"
    );
    // n3's value came late (n1's and n2's QUERY jobs had timed out 7 s before); its own
    // job had the set at once.
    assert_eq!(r["results"]["n3"]["state"], "success", "{r}");
}

#[test]
fn directord_query_orchestration() {
    let Some(file) = reference("functional-tests-query.yaml") else {
        return;
    };
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap(), "--poll", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    // The decoded /etc/hosts written on every node matches this machine's.
    let recs = records(&nodes[0]);
    assert!(recs.iter().all(|r| {
        r["results"]
            .as_object()
            .unwrap()
            .values()
            .all(|x| x["state"] != "failed")
    }));
    let check = nodes[0].cli(&[
        "exec",
        "--verb",
        "RUN",
        "--skip-cache",
        "cmp /tmp/base64-hosts /etc/hosts && echo same",
        "--poll",
    ]);
    assert!(check.status.success(), "{}", text(&check));
}
