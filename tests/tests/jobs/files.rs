//! ADD and COPY: verified files with owner and mode on every node, blob retention, corrupt and
//! killed holders, copies waiting for holders, partial copies left by a restart.

use super::*;

#[test]
fn files_land_verified_with_owner_and_mode_on_every_node() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[1];
    let src = sources(root.path());
    let chunk = 1024 * 1024;
    std::fs::write(src.join("empty.bin"), b"").unwrap();
    std::fs::write(src.join("exact.bin"), vec![0xabu8; 2 * chunk]).unwrap();
    let odd: Vec<u8> = (0..3 * chunk + 7).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(src.join("odd.bin"), &odd).unwrap();
    std::fs::write(src.join("small.txt"), b"small file\n").unwrap();
    let all = ["n1", "n2", "n3"];
    run_on(d, &all, "mkdir -p /tmp/files");
    let pattern = format!("{}/* /tmp/files/", src.display());
    let o = d.cli(&[
        "exec", "--verb", "ADD", "--chown", "1:1", "--chmod", "0640", &pattern, "--poll", "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let recs = records(d);
    assert_eq!(recs.len(), 1 + 4, "one job per file");
    // Each tells which file it is, in its status line too.
    for name in ["empty.bin", "exact.bin", "odd.bin", "small.txt"] {
        let tail = format!("{pattern} (file {name})");
        let named = recs.iter().filter(|r| {
            r["definition"]
                .as_str()
                .is_some_and(|d| d.starts_with("ADD: ") && d.ends_with(&tail))
        });
        assert_eq!(named.count(), 1, "{tail}");
        assert!(text(&o).contains(&tail), "{}", text(&o));
    }
    for name in ["empty.bin", "exact.bin", "odd.bin", "small.txt"] {
        let same = run_on(
            d,
            &all,
            &format!(
                "cmp {}/{name} /tmp/files/{name} && stat -c '%u:%g %a' /tmp/files/{name}",
                src.display()
            ),
        );
        for n in all {
            assert_eq!(same[n], "1:1 640", "{name} on {n}");
        }
    }
    // Already there: nothing is transferred, but the new mode is applied.
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        "--chmod",
        "0600",
        &format!("{}/odd.bin /tmp/files/", src.display()),
        "--poll",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    for n in all {
        assert!(
            last["results"][n]["info"]
                .as_str()
                .unwrap()
                .contains("nothing to transfer"),
            "{last}"
        );
    }
    assert_eq!(
        run_on(d, &all, "stat -c %a /tmp/files/odd.bin")["n3"],
        "600"
    );
    // A secret for an owner a node lacks: the job fails with nothing at DEST or beside it,
    // and a file that lands with a mode is never readable by others, not while it lands either
    // (its temporary file is the owner's only). Without --chmod: the umask's mode.
    std::fs::write(src.join("secret.env"), b"PASSWORD=hunter2\n").unwrap();
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        "--chown",
        "no-such-user-xyz",
        "--chmod",
        "0600",
        &format!("{}/secret.env /tmp/files/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no user 'no-such-user-xyz'"),
        "{}",
        text(&o)
    );
    let left = run_on(d, &all, "ls -A /tmp/files | grep -c secret || true");
    for n in all {
        assert_eq!(
            left[n], "0",
            "{n}: the secret, or its temporary file, was left"
        );
    }
    let o = d.cli(&[
        "exec",
        "--verb",
        "COPY",
        &format!("{}/secret.env /tmp/files/plain.env", src.display()),
        "--poll",
        "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let modes = run_on(
        d,
        &all,
        "printf '%s %s' $(umask) $(stat -c %a /tmp/files/plain.env)",
    );
    for n in all {
        let (umask, mode) = modes[n].split_once(' ').unwrap();
        let umask = u32::from_str_radix(umask, 8).unwrap();
        assert_eq!(mode, format!("{:o}", 0o666 & !umask), "{n}: {modes:?}");
    }
    // A missing destination directory is a clear failure; nothing is left behind.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        &format!("{}/odd.bin /tmp/nowhere/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let last = records(d).into_iter().last().unwrap();
    assert!(
        last["results"]["n2"]["stderr"]
            .as_str()
            .unwrap()
            .contains("/tmp/nowhere does not exist"),
        "{last}"
    );
    // No match on the submitting side: bad input, nothing runs.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        &format!("{}/none-*.bin /tmp/", src.display()),
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no file matches"),
        "{}",
        text(&o)
    );
}

#[test]
fn unused_files_leave_the_blob_store_and_are_sent_again_when_needed() {
    let root = root();
    let retention = ["--blob-retention", "5s"];
    let nodes = e2e_tests::isolated_mesh_with(root.path(), 3, Duration::from_secs(20), &retention);
    let d = &nodes[0];
    let src = sources(root.path());
    // Over the inline limit: fetched in chunks and kept in each node's blob store.
    let data: Vec<u8> = (0..2 * 1024 * 1024 + 5)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let add = |dest: &str| {
        let o = d.cli(&[
            "exec",
            "--verb",
            "ADD",
            &format!("{}/big.bin {dest}", src.display()),
            "--poll",
            "--check",
        ]);
        assert!(o.status.success(), "{}", text(&o));
    };
    let blobs = |n: &Daemon| {
        std::fs::read_dir(n.state_dir.join("blobs"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    };
    add("/tmp/first.bin");
    for n in &nodes {
        assert_eq!(blobs(n), 1, "{} holds the file it just used", n.name);
    }
    for n in &nodes {
        e2e_tests::wait_for(Duration::from_secs(30), "the unused blob to go", || {
            (blobs(n) == 0).then_some(())
        });
    }
    // A later run needs it again: imported and fetched anew, and it lands intact.
    add("/tmp/second.bin");
    let same = run_on(
        d,
        &["n1", "n2", "n3"],
        &format!("cmp {}/big.bin /tmp/second.bin && echo same", src.display()),
    );
    assert!(same.values().all(|v| v == "same"), "{same:?}");
}

#[test]
fn a_corrupt_holder_is_routed_around_and_integrity_failures_leave_nothing() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let src = sources(root.path());
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let add = |target: &str, file: &str| {
        d.cli(&[
            "exec",
            "--verb",
            "ADD",
            "--ignore-cache",
            &format!("{}/{file} /tmp/", src.display()),
            "--target",
            target,
            "--poll",
        ])
    };
    // n2 gets the file from n1 and holds it from then on.
    let o = add("n2", "data.bin");
    assert!(o.status.success(), "{}", text(&o));
    // n1 starts corrupting every chunk it serves; n3 still gets the file intact, from n2.
    std::fs::write(d.state_dir.join("test-corrupt-blobs"), b"").unwrap();
    let o = add("n3", "data.bin");
    assert!(o.status.success(), "{}", text(&o));
    let same = run_on(
        d,
        &["n3"],
        &format!(
            "cmp {}/data.bin /tmp/data.bin && echo intact",
            src.display()
        ),
    );
    assert_eq!(same["n3"], "intact");
    // A file only n1 holds cannot be had intact: an integrity failure, and no file at DEST.
    let other: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(src.join("other.bin"), &other).unwrap();
    let o = add("n2", "other.bin");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    let err = last["results"]["n2"]["stderr"].as_str().unwrap();
    assert!(
        err.contains("integrity failure")
            && err.contains("expected digest")
            && err.contains("found"),
        "{err}"
    );
    let left = run_on(d, &["n2"], "ls -A /tmp | grep -c other || true");
    assert_eq!(left["n2"], "0", "no partial file at DEST or beside it");
}

/// A DEST that is a mount point (a file bind-mounted there, as into a container) cannot be
/// replaced by renaming the checked copy over it: the job fails saying so, and leaves the
/// file as it was and nothing beside it.
#[test]
fn a_dest_that_is_a_mount_point_fails_saying_so() {
    let root = root();
    let nodes = mesh(root.path());
    let d = &nodes[0];
    let src = sources(root.path());
    std::fs::write(src.join("app.conf"), b"new\n").unwrap();
    // In n2's own mount namespace, gone with it.
    run_on(
        d,
        &["n2"],
        "mkdir -p /tmp/m && echo old > /tmp/m/host.conf && touch /tmp/m/app.conf && \
         mount --bind /tmp/m/host.conf /tmp/m/app.conf",
    );
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        &format!("{}/app.conf /tmp/m/app.conf", src.display()),
        "--target",
        "n2",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let last = records(d).into_iter().last().unwrap();
    let said = format!(
        "{} {}",
        last["results"]["n2"]["stderr"].as_str().unwrap_or_default(),
        last["results"]["n2"]["info"].as_str().unwrap_or_default()
    );
    assert!(
        said.contains("/tmp/m/app.conf: it is busy, most likely a mount point"),
        "{said}"
    );
    let left = run_on(
        d,
        &["n2"],
        "echo $(cat /tmp/m/app.conf) $(ls -A /tmp/m | wc -l); umount /tmp/m/app.conf",
    );
    assert_eq!(left["n2"], "old 2", "the file as it was, nothing beside it");
}

/// A holder whose copy is damaged on disk serves bad chunks of it: the fetcher that got them
/// tells it, and it drops the damaged copy (until then it failed every fetcher, and kept it
/// until a job of its own used it). A holder told so whose copy is sound keeps it.
#[test]
fn a_holder_told_it_served_a_corrupt_chunk_drops_its_damaged_copy() {
    let root = root();
    let nodes = mesh(root.path());
    let (d, n2) = (&nodes[0], &nodes[1]);
    let src = sources(root.path());
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let hash = blake3::hash(&data).to_hex().to_string();
    let add = |target: &str| {
        d.cli(&[
            "exec",
            "--verb",
            "ADD",
            "--ignore-cache",
            &format!("{}/data.bin /tmp/", src.display()),
            "--target",
            target,
            "--poll",
        ])
    };
    let o = add("n2");
    assert!(o.status.success(), "{}", text(&o));
    let copy = |n: &Daemon| n.state_dir.join("blobs").join(&hash);
    assert!(copy(n2).exists(), "n2 holds the file it fetched");
    // n2's copy is damaged on disk in its second chunk; n1 serves corrupt chunks (its copy
    // on disk is sound). n3 gets the first, third and fourth chunks from n2, the second from
    // neither: the job fails, and both holders hear they served corrupt chunks.
    let mut damaged = std::fs::read(copy(n2)).unwrap();
    damaged[1024 * 1024 + 7] ^= 0xff;
    std::fs::write(copy(n2), &damaged).unwrap();
    std::fs::write(d.state_dir.join("test-corrupt-blobs"), b"").unwrap();
    let o = add("n3");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    wait_for(
        Duration::from_secs(30),
        "n2 to drop its damaged copy",
        || (!copy(n2).exists()).then_some(()),
    );
    wait_for(Duration::from_secs(30), "n1 to check its copy", || {
        d.log()
            .contains("served of a file did not match its digest")
            .then_some(())
    });
    assert_eq!(
        std::fs::read(copy(d)).unwrap(),
        data,
        "n1's sound copy stays"
    );
    // Told again within the minute (n3 tries once more and gets corrupt chunks from n1
    // alone, until its timeout): no second check of the same copy.
    let o = d.cli(&[
        "exec",
        "--verb",
        "ADD",
        "--ignore-cache",
        "--timeout",
        "3",
        &format!("{}/data.bin /tmp/", src.display()),
        "--target",
        "n3",
        "--poll",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let checks = d
        .log()
        .matches("served of a file did not match its digest")
        .count();
    assert_eq!(checks, 1, "one check of n1's copy a minute");
}

#[test]
fn a_holder_killed_mid_transfer_does_not_fail_the_job() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 4);
    let src = sources(root.path());
    let data: Vec<u8> = (0..80 * 1024 * 1024).map(|i| (i % 241) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    // The distribution tree is ordered by target key: the first target feeds the third.
    let key = |i: usize| coordination::TargetKey::of(&coordination::NodeId(nodes[i].peer_id()));
    let mut targets: Vec<(coordination::TargetKey, usize)> = (1..4).map(|i| (key(i), i)).collect();
    targets.sort();
    let (feeder, fed) = (targets[0].1, targets[2].1);
    std::fs::write(nodes[feeder].state_dir.join("test-slow-blobs"), b"").unwrap();
    let pattern = format!("{}/big.bin /tmp/", src.display());
    let names: Vec<String> = (1..4).map(|i| nodes[i].name.clone()).collect();
    let mut args: Vec<String> = ["exec", "--verb", "ADD", &pattern, "--poll"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for n in &names {
        args.extend(["--target".to_string(), n.clone()]);
    }
    let poll = nodes[0]
        .cli_command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the fed node has begun to receive (its partial copy is there): a fixed
    // wait let a fast machine finish the whole transfer first.
    wait_for(
        Duration::from_secs(30),
        "the fed node to begin receiving",
        || partial_copy(&nodes[fed]),
    );
    nodes[feeder].kill9();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let o = poll.wait_with_output().unwrap();
    let last = records(&nodes[0]).into_iter().last().unwrap();
    let fed_name = &nodes[fed].name;
    assert_eq!(
        last["results"][fed_name]["state"],
        "success",
        "{}\n{last}",
        text(&o)
    );
    // It was still receiving (from the slow feeder) when the feeder died.
    let finished = last["results"][fed_name]["finished_unix_ms"]
        .as_u64()
        .unwrap();
    assert!(
        finished > killed_at,
        "the fed node finished before its feeder was killed: {last}"
    );
    let same = run_on(
        &nodes[0],
        &[fed_name],
        &format!("cmp {}/big.bin /tmp/big.bin && echo intact", src.display()),
    );
    assert_eq!(same[fed_name], "intact");
}

/// Starts an ADD of a 40 MiB file from n1 (which serves it slowly, so the copy takes a while)
/// to `targets`, `options` before its arguments, DEST `dest`; returns the job id and the
/// file's bytes once n2 has begun to receive it.
fn slow_copy_under_way(
    nodes: &[Daemon],
    root: &Path,
    options: &str,
    dest: &str,
    targets: &[&str],
) -> (String, Vec<u8>) {
    let src = sources(root);
    let data: Vec<u8> = (0..40 * 1024 * 1024).map(|i| (i % 239) as u8).collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    std::fs::write(nodes[0].state_dir.join("test-slow-blobs"), b"").unwrap();
    let pattern = format!("{options}{}/big.bin {dest}", src.display());
    let mut args = vec!["exec", "--verb", "ADD", &pattern];
    for n in targets {
        args.extend(["--target", n]);
    }
    let o = nodes[0].cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = records(&nodes[0]).last().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(30), "n2 to begin receiving", || {
        partial_copy(&nodes[1])
    });
    (job_id, data)
}

/// Whether `d`'s blob store holds a file still being received.
fn partial_copy(d: &Daemon) -> Option<()> {
    std::fs::read_dir(d.state_dir.join("blobs"))
        .ok()?
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .then_some(())
}

/// The submitter, the only node holding the whole file, crashes while three targets receive
/// it (one of them from another target, down the distribution tree) and is back seconds
/// later: the targets wait for it, rather than failing the copy or stalling, and the copy
/// completes everywhere.
#[test]
fn a_copy_waits_for_its_only_holder_to_come_back() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 4);
    let (job_id, _) = slow_copy_under_way(&nodes, root.path(), "", "/tmp/", &["n2", "n3", "n4"]);
    nodes[0].kill9();
    std::thread::sleep(Duration::from_secs(3));
    nodes[0].restart();
    let r = wait_for_record(
        &nodes,
        &job_id,
        "the targets never reported the copy",
        |r| ["n2", "n3", "n4"].iter().all(|n| reported(r, n)),
    );
    for n in ["n2", "n3", "n4"] {
        assert_eq!(r["results"][n]["state"], "success", "{n}: {r}");
    }
    let same = run_on(
        &nodes[0],
        &["n2", "n3", "n4"],
        &format!(
            "cmp {}/big.bin /tmp/big.bin && echo intact",
            sources(root.path()).display()
        ),
    );
    assert!(same.values().all(|v| v == "intact"), "{same:?}");
}

/// The only holder of a file is gone for longer than the copy's timeout: the copy fails when
/// its timeout ends, saying so, and leaves no partial file behind.
#[test]
fn a_copy_whose_holders_stay_out_of_reach_ends_at_its_timeout() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    // The timeout leaves room for a loaded machine to see the copy under way and kill n1.
    let (job_id, _) = slow_copy_under_way(&nodes, root.path(), "--timeout 8 ", "/tmp/", &["n2"]);
    nodes[0].kill9();
    std::thread::sleep(Duration::from_secs(10));
    nodes[0].restart();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    let n2 = &r["results"]["n2"];
    assert_eq!(n2["state"], "failed", "{r}");
    assert!(
        n2["stderr"]
            .as_str()
            .unwrap()
            .contains("the job's timeout ended before the file arrived ("),
        "{r}"
    );
    assert!(
        n2["stderr"].as_str().unwrap().contains(" blake3 "),
        "the file is named with its hash: {r}"
    );
    assert!(
        partial_copy(&nodes[1]).is_none(),
        "a partial copy was left in n2's blob store"
    );
    // Its log says how far the copy got and whom it could not reach.
    let log = nodes[1].log();
    assert!(
        log.lines().any(|l| l.contains("file transfer given up")
            && l.contains("chunks had arrived")
            && l.contains("out of reach: n1")),
        "{log}"
    );
    let left = run_on(&nodes[0], &["n2"], "ls -A /tmp | grep -c big.bin || true");
    assert_eq!(left["n2"], "0", "no file at DEST");
}

/// Submits from n1 a run of one parent on n2, its jobs in order: one that marks it has
/// started (`<name>.started` under `root`) and then waits for the gate `<name>.gate`, then
/// an ADD of `src` to `dest` that may take 10 minutes. Returns the gate and the ADD's job id
/// once the first job runs on n2.
fn copy_behind_a_gate(
    nodes: &[Daemon],
    root: &Path,
    name: &str,
    src: &Path,
    dest: &Path,
) -> (PathBuf, String) {
    let started = root.join(format!("{name}.started"));
    let gate = root.join(format!("{name}.gate"));
    let add = format!("ADD: --timeout 600 {} {}", src.display(), dest.display());
    let file = root.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "- targets: [n2]\n  jobs:\n  - RUN: --skip-cache touch {}; \
             while [ ! -e {} ]; do sleep 0.1; done\n  - {add}\n",
            started.display(),
            gate.display()
        ),
    )
    .unwrap();
    let o = nodes[0].cli(&["orchestrate", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let job_id = record(&records(&nodes[0]), &add)["job_id"]
        .as_str()
        .expect("a record has a job id")
        .to_string();
    wait_for(
        Duration::from_secs(20),
        "the gated job to start on n2",
        || started.exists().then_some(()),
    );
    (gate, job_id)
}

/// The submitter's copy of a file is removed from its blob store while the run that sends it
/// waits on its target, and no other member holds it: the copy fails as soon as the
/// submitter answers it does not hold the file, naming its hash, not at the end of its 10
/// minutes, and nothing lands at DEST. With the copy kept, the same run succeeds.
#[test]
fn a_copy_of_a_file_no_member_holds_fails_naming_it_without_waiting_out_its_timeout() {
    let root = root();
    let nodes = mesh_of(root.path(), 2);
    let src = sources(root.path());
    let dest = root.path().join("landed");
    std::fs::create_dir_all(&dest).unwrap();
    // Over the inline limit: fetched from n1's blob store, not carried inside the run. Two
    // contents, so that n2 does not hold the second from the first copy.
    let content = |seed: usize| -> Vec<u8> {
        (0..256 * 1024)
            .map(|i| ((i * 13 + seed) % 251) as u8)
            .collect()
    };
    let (kept, lost) = (content(1), content(2));
    std::fs::write(src.join("kept.bin"), &kept).unwrap();
    std::fs::write(src.join("lost.bin"), &lost).unwrap();
    let (kept_at, lost_at) = (dest.join("kept.bin"), dest.join("lost.bin"));

    let (gate, job_id) =
        copy_behind_a_gate(&nodes, root.path(), "kept", &src.join("kept.bin"), &kept_at);
    std::fs::write(&gate, "").unwrap();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    assert_eq!(r["results"]["n2"]["state"], "success", "{r}");
    assert_eq!(std::fs::read(&kept_at).unwrap(), kept);

    let (gate, job_id) =
        copy_behind_a_gate(&nodes, root.path(), "lost", &src.join("lost.bin"), &lost_at);
    let hash = blake3::hash(&lost).to_hex().to_string();
    let blob = nodes[0].state_dir.join("blobs").join(&hash);
    std::fs::remove_file(&blob)
        .unwrap_or_else(|e| panic!("n1 keeps the file to send at {}: {e}", blob.display()));
    std::fs::write(&gate, "").unwrap();
    // Within wait_for_record's three minutes: the copy's timeout is ten.
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    let n2 = &r["results"]["n2"];
    assert_eq!(n2["state"], "failed", "{r}");
    let stderr = n2["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("no member holds")
            && stderr.contains(&format!("(blake3 {hash})"))
            && stderr.contains("its originator n1 answered it does not hold it"),
        "{r}"
    );
    assert!(!lost_at.exists(), "the lost file landed at DEST");
    let beside: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("lost"))
        .collect();
    assert!(beside.is_empty(), "left beside DEST: {beside:?}");
}

/// The submitter loses its copy (removed from its blob store) while two targets hold part of
/// the file: the copy fails on each, naming the file and a chunk none of them has, long
/// before its timeout (it waited for the timeout, the targets answering each other "not yet"
/// for ever).
#[test]
fn a_copy_whose_parts_are_all_that_is_left_fails_without_waiting_out_its_timeout() {
    let root = root();
    let nodes = mesh_of(root.path(), 3);
    let (job_id, data) = slow_copy_under_way(&nodes, root.path(), "", "/tmp/", &["n2", "n3"]);
    let hash = blake3::hash(&data).to_hex().to_string();
    std::fs::remove_file(nodes[0].state_dir.join("blobs").join(&hash)).unwrap();
    let (r, _) = wait_for(Duration::from_secs(300), "both targets to report", || {
        let o = nodes[0].cli(&["manage", "--job-info", &job_id, "--json"]);
        let r: Value = serde_json::from_slice(&o.stdout).ok()?;
        ["n2", "n3"].iter().all(|t| reported(&r, t)).then_some(r)
    });
    // The first to fail finds a chunk missing from the other's part; the other may then find
    // that part gone too (given up with its copy), and no copy at all.
    let mut parts_only = 0;
    for t in ["n2", "n3"] {
        let result = &r["results"][t];
        assert_eq!(result["state"], "failed", "{r}");
        let stderr = result["stderr"].as_str().unwrap_or_default();
        assert!(
            stderr.contains("no member holds")
                && stderr.contains(&format!("big.bin (blake3 {hash})"))
                && stderr.contains("its originator n1 answered it does not hold it"),
            "{t}: {r}"
        );
        if stderr.contains("is missing from the one node that holds part of it") {
            parts_only += 1;
        }
    }
    assert!(parts_only >= 1, "{r}");
}

/// A target killed while it copies a file: once back, it reports the job interrupted and
/// removes what the copy left beside DEST.
#[test]
fn a_file_job_cut_short_leaves_nothing_beside_its_dest_after_the_restart() {
    let root = root();
    let mut nodes = mesh_of(root.path(), 2);
    let dest = root.path().join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let (job_id, data) = slow_copy_under_way(
        &nodes,
        root.path(),
        "",
        &format!("{}/", dest.display()),
        &["n2"],
    );
    let pid = nodes[1].pid();
    nodes[1].kill9();
    // What daemons of releases before, killed while they landed the file, left beside DEST
    // two hours ago (the kill came while it fetched the file here: its landing is too quick
    // to catch), and the temporary file of a copy in progress, which stays. (Names without a
    // host are judged by age: whose they are cannot be told; today's names are in the unit
    // tests of `is_leftover`.)
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 3600);
    let left_at = |path: &std::path::Path| {
        std::fs::write(path, &data[..1024]).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(two_hours_ago).unwrap();
    };
    let stale = dest.join(format!(".big.bin.{pid}-3.dm-tmp"));
    left_at(&stale);
    // As a release before that named them (one name per process).
    let stale_before = dest.join(format!(".big.bin.{pid}.dm-tmp"));
    left_at(&stale_before);
    let live = dest.join(format!(".big.bin.{}-0.dm-tmp", std::process::id()));
    std::fs::write(&live, b"another daemon's copy in progress").unwrap();
    nodes[1].restart();
    let r = wait_for_record(&nodes, &job_id, "n2 never reported the copy", |r| {
        reported(r, "n2")
    });
    assert_eq!(r["results"]["n2"]["state"], "failed", "{r}");
    assert!(
        r["results"]["n2"]["info"]
            .as_str()
            .unwrap()
            .starts_with("interrupted: the job had started when its node stopped"),
        "{r}"
    );
    for stale in [&stale, &stale_before] {
        assert!(
            !stale.exists(),
            "the partial copy {} is still beside DEST: {}",
            stale.display(),
            nodes[1].log()
        );
    }
    assert!(live.exists(), "a live process's copy was removed");
    assert!(!dest.join("big.bin").exists());
}

#[test]
fn directord_functional_tests_in_full() {
    let Some(file) = reference("functional-tests.yaml") else {
        return;
    };
    let dir = file.parent().unwrap().to_path_buf();
    let root = root();
    let nodes = mesh(root.path());
    let o = nodes[1].cli_in(
        &dir,
        &["orchestrate", "functional-tests.yaml", "--poll", "--check"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Modes and owners on every node, as the file asks.
    let modes = run_on(
        &nodes[1],
        &["n1", "n2", "n3"],
        "stat -c '%a %u:%g' /tmp/test/test-cache.yaml-mode /tmp/test/test-cache.yaml-0-0 | tr '\\n' ' '",
    );
    for n in ["n1", "n2", "n3"] {
        assert_eq!(modes[n], "664 0:0 644 0:0", "{n}");
    }
    for name in [
        "functional-tests-async.yaml",
        "functional-tests-async-race.yaml",
        "functional-tests-async-transfer.yaml",
    ] {
        let o = nodes[0].cli_in(&dir, &["orchestrate", name, "--poll", "--check"]);
        assert!(o.status.success(), "{name}: {}", text(&o));
    }
    let copies = run_on(
        &nodes[0],
        &["n1", "n2", "n3"],
        "ls /tmp/test*-* | wc -l; cmp /etc/services /tmp/test2-9 && echo same",
    );
    for n in ["n1", "n2", "n3"] {
        assert!(copies[n].ends_with("same"), "{n}: {}", copies[n]);
    }
}
