use std::collections::HashMap;

use super::*;

/// Labels other nodes would not take are refused at start, with what is wrong.
#[test]
fn labels_past_what_nodes_take_are_refused() {
    let labels = |pairs: Vec<(String, String)>| pairs.into_iter().collect();
    assert!(validate_labels(&labels(vec![("role".into(), "web server".into())])).is_ok());
    let long = validate_labels(&labels(vec![("a".into(), "x".repeat(1025))]));
    assert!(
        long.unwrap_err()
            .to_string()
            .contains("label 'a': keys and values are at most 1024 bytes")
    );
    let many = validate_labels(&labels(
        (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
    ));
    assert!(
        many.unwrap_err()
            .to_string()
            .contains("65 labels: a node sends at most 64")
    );
    let control = validate_labels(&labels(vec![("a".into(), "x\x1b[2J".into())]));
    assert!(
        control
            .unwrap_err()
            .to_string()
            .contains("no control characters")
    );
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn layers(
    flags: JoinOptions,
    envs: &[(&str, &str)],
    file: &str,
) -> Result<NodeConfig, ConfigError> {
    let env = JoinOptions::from_env(env(envs))?;
    let file = JoinOptions::from_yaml(file, Path::new("/etc/dm.yaml"))?;
    flags
        .over(env.over(file))
        .resolve(PathBuf::from("/state"), "host-a")
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let file = "name: from-file\nheartbeat-interval: 7\nlisten: [\"/ip4/127.0.0.1/tcp/1000\"]\n";
    // Defaults only.
    let c = layers(JoinOptions::default(), &[], "").unwrap();
    assert_eq!(c.name, "host-a");
    assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT);
    assert_eq!(c.listen, vec![default_listen()]);
    assert_eq!(c.mesh_key_choice, MeshKeyChoice::FromStateOrNew);
    assert_eq!(c.control_socket, Some(PathBuf::from("/state/control.sock")));
    // File over defaults.
    let c = layers(JoinOptions::default(), &[], file).unwrap();
    assert_eq!(c.name, "from-file");
    assert_eq!(c.heartbeat_interval, Duration::from_secs(7));
    assert_eq!(c.listen, vec![parse_addr("127.0.0.1:1000").unwrap()]);
    // Env over file.
    let envs = [
        ("DIRECTORD_MESH_NAME", "from-env"),
        ("DIRECTORD_MESH_HEARTBEAT_INTERVAL", "2s"),
    ];
    let c = layers(JoinOptions::default(), &envs, file).unwrap();
    assert_eq!(c.name, "from-env");
    assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
    assert_eq!(c.listen, vec![parse_addr("127.0.0.1:1000").unwrap()]);
    // Flags over env.
    let flags = JoinOptions {
        name: Some("from-flag".into()),
        ..Default::default()
    };
    let c = layers(flags, &envs, file).unwrap();
    assert_eq!(c.name, "from-flag");
    assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
}

#[test]
fn token_brings_key_and_bootstrap_peers() {
    let key = mesh::MeshKey::generate();
    let addr: Multiaddr = "/ip4/10.0.0.1/tcp/7411".parse().unwrap();
    let token = JoinToken {
        mesh_key: Some(key),
        peers: vec![addr.clone()],
    };
    let envs = [("DIRECTORD_MESH_TOKEN", token.encode())];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = layers(JoinOptions::default(), &envs, "").unwrap();
    assert_eq!(c.mesh_key_choice, MeshKeyChoice::Key(key));
    assert_eq!(c.bootstrap, vec![addr]);
    // --open with a keyed token is a contradiction.
    let flags = JoinOptions {
        open: Some(true),
        ..Default::default()
    };
    assert!(matches!(
        layers(flags, &envs, ""),
        Err(ConfigError::Conflict(_))
    ));
}

#[test]
fn errors_name_the_setting_and_where_it_came_from() {
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_PEER", "nonsense")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DIRECTORD_MESH_PEER") && e.contains("peer") && e.contains("nonsense"),
        "{e}"
    );
    let e = layers(
        JoinOptions::default(),
        &[],
        "heartbeat-interval: 5 parsecs\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("/etc/dm.yaml") && e.contains("heartbeat-interval"),
        "{e}"
    );
    // What a setting got instead is said in words, under the setting's name.
    for (text, said) in [
        (
            "listen: {a: b}\n",
            "listen: expected a value or a list of them, found a mapping",
        ),
        (
            "listen: [true]\n",
            "listen: expected a value or a list of them, found the boolean true",
        ),
        (
            "allow-submitter: [[x]]\n",
            "allow-submitter: expected a value or a list of them, found a list",
        ),
        ("open: [1]\n", "open: expected a boolean, found a list"),
        (
            "blob-retention: {a: 1}\n",
            "blob-retention: expected a string or number, found a mapping",
        ),
    ] {
        let e = layers(JoinOptions::default(), &[], text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/dm.yaml") && e.contains(said),
            "{text}: {e}"
        );
        assert!(!e.contains("Mapping") && !e.contains("Sequence"), "{e}");
    }
    let e = layers(JoinOptions::default(), &[], "nmae: typo\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `nmae`"), "{e}");
    // A file that is not a mapping says what it should be, not a type of ours.
    let e = layers(JoinOptions::default(), &[], "- name: a\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected a mapping of settings"), "{e}");
    assert!(!e.contains("FileOptions"), "{e}");
    // `label`, as the flag is spelled, names the labels map too.
    let cfg = layers(JoinOptions::default(), &[], "label:\n  role: web\n").unwrap();
    assert_eq!(cfg.labels.get("role").map(String::as_str), Some("web"));
    let e = layers(JoinOptions::default(), &[], "name: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/dm.yaml") && e.contains("line"), "{e}");
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_OPEN", "maybe")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a boolean"), "{e}");
    // The file takes the words the environment takes.
    for (text, open) in [
        ("open: yes\n", true),
        ("open: off\n", false),
        ("open: true\n", true),
    ] {
        let cfg = layers(JoinOptions::default(), &[], text).unwrap();
        assert_eq!(cfg.mesh_key_choice == MeshKeyChoice::Open, open, "{text}");
    }
    let e = layers(JoinOptions::default(), &[], "open: maybe\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/dm.yaml") && e.contains("not a boolean"),
        "{e}"
    );
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_TOKEN", "dm1-xyz")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("join token") && e.contains("damaged"), "{e}");
    let flags = JoinOptions {
        name: Some("bad name!".into()),
        ..Default::default()
    };
    assert!(
        layers(flags, &[], "")
            .unwrap_err()
            .to_string()
            .contains("node name")
    );
}

#[test]
fn a_repeatable_setting_in_a_file_may_be_one_value() {
    let c = layers(
        JoinOptions::default(),
        &[],
        "listen: 127.0.0.16:7411\npeer: [127.0.0.17:7411]\n",
    )
    .unwrap();
    assert_eq!(c.listen, vec![parse_addr("127.0.0.16:7411").unwrap()]);
    assert_eq!(c.bootstrap, vec![parse_addr("127.0.0.17:7411").unwrap()]);
}

#[test]
fn addresses_accept_host_port_shorthand() {
    assert_eq!(
        parse_addr("10.1.2.3:7411").unwrap().to_string(),
        "/ip4/10.1.2.3/tcp/7411"
    );
    assert_eq!(
        parse_addr("[::1]:7411").unwrap().to_string(),
        "/ip6/::1/tcp/7411"
    );
    assert_eq!(
        parse_addr("db1.example:7411").unwrap().to_string(),
        "/dns/db1.example/tcp/7411"
    );
    assert!(parse_addr("/ip4/1.2.3.4/tcp/x").is_err());
    assert!(parse_addr("nope").is_err());
    // What an operator gets wrong is named.
    let e = |text: &str, setting: &str| parse_addr_for(text, setting).unwrap_err();
    assert!(e("::1:7411", "listen").contains("[ADDRESS]:PORT"));
    assert!(e("127.0.0.1:99999", "peer").contains("out of range"));
    assert!(e("localhost:7411", "listen").contains("not a name"));
    // Said of the address as written, not of the multiaddr made of it.
    assert!(
        e("localhost:7411", "listen").starts_with("'localhost:7411': listen on an IP address"),
        "{}",
        e("localhost:7411", "listen")
    );
    assert!(e("/ip4/127.0.0.1/udp/7411", "peer").contains("only TCP"));
    assert!(parse_addr_for("localhost:7411", "peer").is_ok());
    assert!(parse_addr_for("[::]:7411", "listen").is_ok());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("5m 30s").unwrap(), Duration::from_secs(330));
    assert!(
        parse_duration("5m30x")
            .unwrap_err()
            .contains("unknown unit 'x'")
    );
    assert!(parse_duration("").is_err() && parse_duration("m").is_err());
    assert_eq!(
        parse_duration("7d").unwrap(),
        Duration::from_secs(7 * 86400)
    );
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
    // Too large for a duration: an error, not a panic.
    for huge in ["99999999999999999999999", "99999999999999999999d"] {
        let e = parse_duration(huge).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
    }
}

#[test]
fn blob_retention_layers_and_limits() {
    let c = layers(JoinOptions::default(), &[], "").unwrap();
    assert_eq!(c.blob_retention, Some(DEFAULT_BLOB_RETENTION));
    let c = layers(JoinOptions::default(), &[], "blob-retention: 2h\n").unwrap();
    assert_eq!(c.blob_retention, Some(Duration::from_secs(7200)));
    let envs = [("DIRECTORD_MESH_BLOB_RETENTION", "0")];
    let c = layers(JoinOptions::default(), &envs, "blob-retention: 2h\n").unwrap();
    assert_eq!(c.blob_retention, None, "0 keeps blobs forever");
    assert_eq!(c.record_retention, Some(DEFAULT_RECORD_RETENTION));
    let envs = [("DIRECTORD_MESH_RECORD_RETENTION", "0")];
    let c = layers(JoinOptions::default(), &envs, "record-retention: 7d\n").unwrap();
    assert_eq!(c.record_retention, None, "0 keeps records until purged");
    let c = layers(JoinOptions::default(), &[], "record-retention: 7d\n").unwrap();
    assert_eq!(c.record_retention, Some(Duration::from_secs(7 * 86400)));
    let e = layers(JoinOptions::default(), &[], "record-retention: 5ms\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("record-retention") && e.contains("until purged"),
        "{e}"
    );
    let flags = JoinOptions {
        blob_retention: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let c = layers(flags, &envs, "").unwrap();
    assert_eq!(c.blob_retention, Some(Duration::from_secs(3)));
    let e = layers(JoinOptions::default(), &[], "blob-retention: 10ms\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/etc/dm.yaml") && e.contains("blob-retention") && e.contains("0 to keep"),
        "{e}"
    );
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_BLOB_RETENTION", "a week")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("DIRECTORD_MESH_BLOB_RETENTION"), "{e}");
}

#[test]
fn allowed_submitters_layer_and_name_a_bad_id() {
    let (a, b) = (PeerId::random(), PeerId::random());
    let c = layers(JoinOptions::default(), &[], "").unwrap();
    assert!(c.allow_submitters.is_empty(), "default: any member");
    let file = format!("allow-submitter:\n  - {a}\n");
    let c = layers(JoinOptions::default(), &[], &file).unwrap();
    assert_eq!(c.allow_submitters, vec![a]);
    let both = format!("{a}, {b}");
    let envs = [("DIRECTORD_MESH_ALLOW_SUBMITTERS", both.as_str())];
    let c = layers(JoinOptions::default(), &envs, &file).unwrap();
    assert_eq!(c.allow_submitters, vec![a, b]);
    let flags = JoinOptions {
        allow_submitters: parse_submitter_flags(&[b.to_string()]).unwrap(),
        ..Default::default()
    };
    let c = layers(flags, &envs, &file).unwrap();
    assert_eq!(c.allow_submitters, vec![b]);
    let e = parse_submitter_flags(&["n1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("command line") && e.contains("allow-submitter") && e.contains("'n1'"),
        "{e}"
    );
    let e = layers(JoinOptions::default(), &[], "allow-submitter: [nope]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/dm.yaml") && e.contains("'nope'"), "{e}");
}

#[test]
fn state_dir_defaults() {
    let from_passwd = || Some(PathBuf::from("/home/from-passwd"));
    assert_eq!(
        default_state_dir(env(&[]), true, from_passwd),
        Ok(PathBuf::from("/var/lib/directord-mesh"))
    );
    assert_eq!(
        default_state_dir(
            env(&[("XDG_STATE_HOME", "/x/state"), ("HOME", "/home/u")]),
            false,
            from_passwd
        ),
        Ok(PathBuf::from("/x/state/directord-mesh"))
    );
    assert_eq!(
        default_state_dir(env(&[("HOME", "/home/u")]), false, from_passwd),
        Ok(PathBuf::from("/home/u/.local/state/directord-mesh"))
    );
}

/// Without HOME (a service started with a bare environment), the user's home comes from the
/// passwd database; without that either, nothing in a shared directory such as /tmp (anyone
/// could plant the control socket there): --state-dir is asked for.
#[test]
fn state_dir_without_home_is_the_passwd_home_or_none() {
    for unset in [&[][..], &[("HOME", "")][..]] {
        assert_eq!(
            default_state_dir(env(unset), false, || Some(PathBuf::from("/home/p"))),
            Ok(PathBuf::from("/home/p/.local/state/directord-mesh"))
        );
        let e = default_state_dir(env(unset), false, || None).unwrap_err();
        assert!(
            e.contains("HOME is not set") && e.contains("--state-dir"),
            "{e}"
        );
        let e = default_state_dir(env(unset), false, || Some(PathBuf::new())).unwrap_err();
        assert!(e.contains("--state-dir"), "{e}");
    }
}

/// The config file comes from --config, else from DIRECTORD_MESH_CONFIG; empty, the variable
/// names none, and a file it names that cannot be read is said to come from it.
#[test]
fn the_config_file_is_named_by_the_flag_or_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dm.yaml");
    std::fs::write(&file, "name: from-file\n").unwrap();
    assert_eq!(config_file(None, None), Ok(None));
    assert_eq!(config_file(None, Some("".into())), Ok(None));
    let (path, read) = config_file(None, Some(file.clone().into()))
        .unwrap()
        .unwrap();
    assert_eq!(
        (path, read.name.as_deref()),
        (file.clone(), Some("from-file"))
    );
    let (path, _) = config_file(Some(file.clone()), Some("/elsewhere.yaml".into()))
        .unwrap()
        .unwrap();
    assert_eq!(path, file);
    let missing = dir.path().join("missing.yaml");
    let e = config_file(None, Some(missing.clone().into()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DIRECTORD_MESH_CONFIG") && e.contains("missing.yaml"),
        "{e}"
    );
    let e = config_file(Some(missing), None).unwrap_err().to_string();
    assert!(
        e.contains("missing.yaml") && !e.contains("DIRECTORD_MESH_CONFIG"),
        "{e}"
    );
}

/// An empty variable (`VAR=` in an EnvironmentFile) says nothing, whichever it is: the
/// settings of the layers below stand, and nothing fails.
#[test]
fn empty_variables_count_as_unset() {
    let file = "name: from-file\nlisten: 127.0.0.1:1000\nopen: true\nheartbeat-interval: 7\n\
                blob-retention: 2h\nrecord-retention: 7d\nsocket-group: wheel\nmax-peers: 30\n\
                stop-grace: 3s\n";
    for value in ["", "  "] {
        let unset: Vec<(&str, &str)> = JOIN_ENV.iter().map(|k| (*k, value)).collect();
        assert_eq!(
            JoinOptions::from_env(env(&unset)).unwrap(),
            JoinOptions::default(),
            "{value:?}"
        );
        let c = layers(JoinOptions::default(), &unset, file).unwrap();
        assert_eq!(c.name, "from-file");
        assert_eq!(c.listen, vec![parse_addr("127.0.0.1:1000").unwrap()]);
        assert_eq!(c.mesh_key_choice, MeshKeyChoice::Open);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(7));
        assert_eq!(c.blob_retention, Some(Duration::from_secs(7200)));
        assert_eq!(c.record_retention, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(c.socket_group.as_deref(), Some("wheel"));
        assert_eq!(c.connection_budget.max_peers, 30);
        assert_eq!(c.stop_grace, Duration::from_secs(3));
    }
}

/// `open` and a token with a key contradict each other wherever each was set: the error names
/// both places, as the operator wrote them.
#[test]
fn open_and_a_keyed_token_are_named_where_each_was_set() {
    let token = JoinToken {
        mesh_key: Some(mesh::MeshKey::generate()),
        peers: vec!["/ip4/10.0.0.1/tcp/7411".parse().unwrap()],
    };
    let flag_token = JoinOptions {
        token: Some(token.clone()),
        ..Default::default()
    };
    let e = layers(flag_token, &[], "open: true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config file /etc/dm.yaml") && e.contains("--token"),
        "{e}"
    );
    assert!(!e.contains("--open"), "{e}");

    let file_token = format!("token: {}\n", token.encode());
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_OPEN", "yes")],
        &file_token,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DIRECTORD_MESH_OPEN") && e.contains("config file /etc/dm.yaml"),
        "{e}"
    );

    let flag_open = JoinOptions {
        open: Some(true),
        ..Default::default()
    };
    let encoded = token.encode();
    let e = layers(flag_open, &[("DIRECTORD_MESH_TOKEN", &encoded)], "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--open") && e.contains("DIRECTORD_MESH_TOKEN"),
        "{e}"
    );
}

/// `max-peers` sets the connection budget from any layer, the first that says winning; the
/// default is the mesh's, and the idle time stays the mesh's.
#[test]
fn max_peers_layers_into_the_connection_budget() {
    let c = layers(JoinOptions::default(), &[], "").unwrap();
    assert_eq!(
        c.connection_budget,
        mesh::network::ConnectionBudget::default()
    );
    let c = layers(JoinOptions::default(), &[], "max-peers: 200\n").unwrap();
    assert_eq!(c.connection_budget.max_peers, 200);
    assert_eq!(
        c.connection_budget.idle_after,
        mesh::network::DEFAULT_IDLE_AFTER
    );
    // Spelled as the flag or with `_`, as a number or a string.
    let c = layers(JoinOptions::default(), &[], "max_peers: \"30\"\n").unwrap();
    assert_eq!(c.connection_budget.max_peers, 30);
    let envs = [("DIRECTORD_MESH_MAX_PEERS", " 16 ")];
    let c = layers(JoinOptions::default(), &envs, "max-peers: 200\n").unwrap();
    assert_eq!(c.connection_budget.max_peers, 16);
    let flags = JoinOptions {
        max_peers: Some(parse_max_peers("1000").unwrap()),
        ..Default::default()
    };
    let c = layers(flags, &envs, "max-peers: 200\n").unwrap();
    assert_eq!(c.connection_budget.max_peers, 1000);
    // The bounds themselves are taken.
    assert_eq!(parse_max_peers("12"), Ok(MAX_PEERS_FLOOR));
    assert_eq!(parse_max_peers("16384"), Ok(MAX_PEERS_CEILING));
}

/// A budget that is no number, or one no node could keep or reach, is refused with the value
/// and the range, named where it was set; nothing panics on a number past what a usize holds.
#[test]
fn max_peers_out_of_range_or_not_a_number_is_refused() {
    assert_eq!(MAX_PEERS_FLOOR, mesh::tuning::MESH_N_HIGH);
    let range = "from 12 to 16384";
    for (text, said) in [
        ("0", "0 is too few"),
        ("11", "11 is too few"),
        ("-5", "-5 is too few"),
        ("-0", "-0 is too few"),
        ("16385", "16385 is too many"),
        ("99999999999999999999999999", "is too many"),
        ("lots", "'lots' is not a number of peers"),
        ("64.5", "'64.5' is not a number of peers"),
        ("1e3", "'1e3' is not a number of peers"),
        ("-", "'-' is not a number of peers"),
        ("", "'' is not a number of peers"),
    ] {
        let e = parse_max_peers(text).unwrap_err();
        assert!(e.contains(said) && e.contains(range), "{text}: {e}");
    }
    let e = parse_max_peers("3").unwrap_err();
    assert!(e.contains("gossip alone keeps up to 12 peers"), "{e}");
    // Named where it was set: the variable, the file.
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_MAX_PEERS", "none")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DIRECTORD_MESH_MAX_PEERS")
            && e.contains("max-peers")
            && e.contains("'none' is not a number of peers"),
        "{e}"
    );
    for (text, said) in [
        ("max-peers: -3\n", "-3 is too few"),
        ("max-peers: 8\n", "8 is too few"),
        ("max-peers: 100000\n", "100000 is too many"),
        ("max-peers: 64.0\n", "'64.0' is not a number of peers"),
        (
            "max-peers: [64]\n",
            "max-peers: expected a string or number, found a list",
        ),
        (
            "max-peers: true\n",
            "max-peers: expected a string or number, found the boolean true",
        ),
    ] {
        let e = layers(JoinOptions::default(), &[], text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config file /etc/dm.yaml") && e.contains("max-peers") && e.contains(said),
            "{text}: {e}"
        );
    }
}

/// `stop-grace` comes from any layer, the first that says winning; 0 is taken (jobs are asked
/// to end at once), the default is 10 s.
#[test]
fn stop_grace_layers_and_defaults_to_ten_seconds() {
    let c = layers(JoinOptions::default(), &[], "").unwrap();
    assert_eq!(c.stop_grace, DEFAULT_STOP_GRACE);
    assert_eq!(DEFAULT_STOP_GRACE, Duration::from_secs(10));
    let c = layers(JoinOptions::default(), &[], "stop-grace: 2m\n").unwrap();
    assert_eq!(c.stop_grace, Duration::from_secs(120));
    let c = layers(JoinOptions::default(), &[], "stop_grace: 45\n").unwrap();
    assert_eq!(c.stop_grace, Duration::from_secs(45));
    let envs = [("DIRECTORD_MESH_STOP_GRACE", "0")];
    let c = layers(JoinOptions::default(), &envs, "stop-grace: 2m\n").unwrap();
    assert_eq!(c.stop_grace, Duration::ZERO);
    let flags = JoinOptions {
        stop_grace: Some(parse_stop_grace("1h30m").unwrap()),
        ..Default::default()
    };
    let c = layers(flags, &envs, "stop-grace: 2m\n").unwrap();
    assert_eq!(c.stop_grace, Duration::from_secs(5400));
    assert_eq!(parse_stop_grace("24h"), Ok(MAX_STOP_GRACE));
}

/// A grace that is no duration, or longer than a day, is refused and named where it was set.
#[test]
fn stop_grace_not_a_duration_or_too_long_is_refused() {
    for (text, said) in [
        ("forever", "'forever' is not a duration"),
        ("-5", "'-5' is not a duration"),
        ("25h", "25h is longer than 24 h"),
        ("2d", "2d is longer than 24 h"),
    ] {
        let e = parse_stop_grace(text).unwrap_err();
        assert!(e.contains(said), "{text}: {e}");
    }
    let e = layers(
        JoinOptions::default(),
        &[("DIRECTORD_MESH_STOP_GRACE", "soon")],
        "",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("DIRECTORD_MESH_STOP_GRACE")
            && e.contains("stop-grace")
            && e.contains("'soon' is not a duration"),
        "{e}"
    );
    let e = layers(JoinOptions::default(), &[], "stop-grace: [10]\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config file /etc/dm.yaml")
            && e.contains("stop-grace: expected a string or number, found a list"),
        "{e}"
    );
}

#[test]
fn an_address_to_listen_on_given_twice_is_listened_on_once() {
    let file = "listen: [\"127.0.0.1:1000\", \"/ip4/127.0.0.1/tcp/1000\", \"127.0.0.2:1000\"]\n";
    let c = layers(JoinOptions::default(), &[], file).unwrap();
    assert_eq!(
        c.listen,
        vec![
            parse_addr("127.0.0.1:1000").unwrap(),
            parse_addr("127.0.0.2:1000").unwrap()
        ]
    );
}

#[test]
fn a_config_file_that_starts_with_a_byte_order_mark_reads_as_without() {
    let c = layers(JoinOptions::default(), &[], "\u{feff}name: bom\n").unwrap();
    assert_eq!(c.name, "bom");
    let e = layers(JoinOptions::default(), &[], "\u{feff}[unclosed\n").unwrap_err();
    let plain = layers(JoinOptions::default(), &[], "[unclosed\n").unwrap_err();
    assert_eq!(e.to_string(), plain.to_string());
}

/// A config file past its cap (a device that never ends) is refused once past it, naming
/// the file; one that is not UTF-8 is named by line.
#[test]
fn config_files_are_read_up_to_a_cap_and_as_text() {
    let e = JoinOptions::from_file(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/dev/zero") && e.contains("larger than 1 MiB"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, b"name: a\nlisten: \xff\n").unwrap();
    let e = JoinOptions::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("not UTF-8 text: line 2, byte 9"), "{e}");
}

/// A control character and nesting too deep are named by line and column before the parser
/// reads the file (nesting 200 000 deep took it two minutes).
#[test]
fn a_config_file_the_parser_is_not_handed_is_named_by_line_and_column() {
    let e = layers(JoinOptions::default(), &[], "name: a\u{1}b\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1 column 8: a control character (U+0001)"),
        "{e}"
    );
    let deep = format!("name: a\nlisten: {}\n", "[".repeat(200_000));
    let e = layers(JoinOptions::default(), &[], &deep)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested too deep at line 2 column 1009"), "{e}");
}

/// A negative value after one of the named options is joined to it; anything else is left
/// as it was, an option after one of them too.
#[test]
fn negative_values_are_joined_to_their_options() {
    let joined = |line: &str| -> Vec<String> {
        negative_values_joined(
            line.split(' ').map(std::ffi::OsString::from),
            &["--stop-grace", "--limit"],
        )
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
    };
    assert_eq!(
        joined("dm join --stop-grace -5s --name n1"),
        ["dm", "join", "--stop-grace=-5s", "--name", "n1"]
    );
    assert_eq!(joined("sim --limit -.5s"), ["sim", "--limit=-.5s"]);
    // Another option's negative value, an option where a value is, a positive value.
    assert_eq!(
        joined("dm join --nodes -1"),
        ["dm", "join", "--nodes", "-1"]
    );
    assert_eq!(
        joined("dm join --stop-grace --name n1"),
        ["dm", "join", "--stop-grace", "--name", "n1"]
    );
    assert_eq!(
        joined("dm join --stop-grace 5s"),
        ["dm", "join", "--stop-grace", "5s"]
    );
}
