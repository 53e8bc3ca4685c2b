//! `directord-mesh-sim`: runs scenarios against simulated or in-process meshes and reports
//! how they scale (a table on stdout, a CSV and a PNG plot in `--out`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Parser;
use simulations::{
    metrics::{self, Report, Summary},
    network::{Bandwidth, Latency, LossModel, NetworkModel, parse_duration},
    output, plot,
    scenario::{Scenario, Workload},
    tier1::Tier1,
    tier2::Tier2,
    tier3::{self, Tier3},
};

/// How the directord-mesh scales: runs scenarios on many nodes and measures delivery, latency
/// and traffic.
///
/// Tier 1 runs the real coordination state machines (the submitter's run tracker, each
/// target's result outbox, file downloads) on a seeded discrete-event model of the network and
/// of gossipsub: deterministic (same seed, same numbers), thousands of nodes in seconds.
/// Tier 2 starts real nodes (libp2p, gossipsub, request-response, stores) in this process over
/// libp2p's memory transport and runs the same scenarios in wall-clock time.
/// Tier 3 starts real daemons (the `directord-mesh` binary, one process each) and submits
/// through the CLI; with --netns each daemon has a network namespace of its own, so links can
/// be given latency and loss (tc netem) and the mesh split in two (partition needs it).
///
/// Every run reports: delivery ratio; time for 50/99/100 % of targets to have the job and for
/// the submitter to have 50/99/100 % of the results; messages and KiB sent per node (payload +
/// framing) and the gossip duplicate factor (copies a node received of each gossiped message,
/// averaged over the nodes that received it: the run's announce, each announce again and
/// QUERY's set are a message each), both tier 1 only; what the submitter uploaded; memory per
/// node (tiers 2 and 3). Times count from the submit.
///
/// Tier 2's nodes log to stderr as the daemon does when RUST_LOG is set (e.g.
/// RUST_LOG=node=debug).
#[derive(Parser, Debug)]
#[command(
    name = "directord-mesh-sim",
    version,
    after_long_help = SCENARIOS,
    // `--loss -0.1` is refused naming --loss, not as an unknown argument `-0.1`.
    allow_negative_numbers = true
)]
struct Args {
    /// 1: deterministic model (fast, thousands of nodes); 2: real nodes in this process;
    /// 3: real daemons, one process each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    tier: u8,
    /// Tier 3: the `directord-mesh` binary to run (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Tier 3: each daemon in a network namespace of its own, on bridges this program creates
    /// and removes (needs root, `ip` and `tc`); --latency and --loss then shape every link.
    #[arg(long)]
    netns: bool,
    /// Mesh sizes to run, comma-separated (e.g. 10,100,1000): 2 to 100 000 (tier 2: 2 000,
    /// tier 3: 200).
    #[arg(short, long, value_delimiter = ',', default_value = "100")]
    nodes: Vec<usize>,
    /// Scenarios to run, comma-separated, or `all` (see below).
    #[arg(short, long, value_delimiter = ',', default_value = "fanout")]
    scenario: Vec<ScenarioChoice>,
    /// Tier 1: seed of the network model (default 1). The same seed gives the same result.
    #[arg(long)]
    seed: Option<u64>,
    /// One-way latency of every link, fixed (20ms) or uniform in a range (10ms..30ms). Tier 1
    /// default: 20ms; tier 2 default: none (the memory transport as it is).
    #[arg(long)]
    latency: Option<Latency>,
    /// Probability that any one message (tier 2: any chunk read from a link) is lost (0 to
    /// below 1; e.g. 0.01).
    #[arg(long)]
    loss: Option<f64>,
    /// Tier 1: what a loss does. `retransmit` (the mesh's links are TCP): the message is resent
    /// after TCP's retransmission timeout (200 ms, doubling) and arrives late. `drop`: the
    /// message is gone, as a datagram would be; requests fail at their timeout and the
    /// protocol retries them.
    #[arg(long, value_enum)]
    loss_model: Option<LossModel>,
    /// Tier 1: each node's upload bandwidth (512kbit, 100mbit, 1gbit, 10gbit, unlimited; at
    /// least 1kbit).
    #[arg(long)]
    bandwidth: Option<Bandwidth>,
    /// Jobs per run in orchestration, churn, partition and late-join (default 100 for
    /// orchestration, 10 for the others).
    #[arg(long)]
    jobs: Option<usize>,
    /// Size of the file of the files scenario, in MiB.
    #[arg(long, default_value_t = 16)]
    file_mib: u64,
    /// query: pad each node's value to about this many bytes (0: a token of some 13 bytes).
    /// A set over gossip's 1 MiB is gossiped in parts, unless one value is over a part
    /// (1 MiB less 4 KiB): then it goes to each target directly. Over 8 MiB the daemon fails
    /// the QUERY on its targets (tiers 2 and 3; tier 1 sends such a set directly); in tiers 2
    /// and 3 a value over 3 MiB fails the RUN that prints it.
    #[arg(long, default_value_t = 0)]
    value_bytes: usize,
    /// How long each job runs on a target (default 5ms; 100ms for churn, partition and
    /// late-join, so that disruptions land while jobs run; 500ms for job-wait's awaited job).
    /// Tiers 2 and 3 run `WAIT --seconds` jobs of this length, or `ECHO` jobs for 0s.
    #[arg(long, value_parser = parse_duration)]
    job_time: Option<Duration>,
    /// churn: fraction of the nodes killed (each once, at a random moment of the run).
    #[arg(long, default_value_t = 0.1)]
    churn: f64,
    /// churn: how long a killed node stays down before it restarts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    downtime: Duration,
    /// partition: when the mesh splits, after the submit.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    partition_at: Duration,
    /// partition: how long the halves stay apart.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    partition_for: Duration,
    /// late-join: fraction of the nodes that join only after the announce.
    #[arg(long, default_value_t = 0.1)]
    late: f64,
    /// late-join: the late nodes join at random within this time after the submit.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    late_within: Duration,
    /// Give up on a run after this long from its submission (virtual time in tier 1,
    /// wall-clock in tiers 2 and 3; default 600s in tier 1, 300s in tiers 2 and 3). A run cut
    /// off shows its delivery below 100 % (see --require-complete). The mesh's formation
    /// before it is not counted (1 000 nodes of tier 2 take minutes to form): it fails once
    /// the submitter has seen nobody new alive for a minute (tier 2), or after two minutes
    /// (tier 3).
    #[arg(long, value_parser = parse_duration)]
    limit: Option<Duration>,
    /// Where the results go (created if missing): results.csv, one row per run, and
    /// results.png, time to 99 % and KiB per node against the number of nodes.
    #[arg(long, default_value = "sim-results")]
    out: PathBuf,
    /// Exit 1 if any run ends with a target that never got the job or a result missing.
    #[arg(long)]
    require_complete: bool,
}

/// Largest QUERY set `--value-bytes` may make (the simulator holds every value).
const MAX_SET_BYTES: usize = 64 << 20;

const SCENARIOS: &str = "\
Scenarios:
  fanout         one job to every node
  orchestration  --jobs jobs in one orchestration entry to every node; results come back in
                 batches
  files          one ADD of a --file-mib file to every node; the submitter feeds a tree of
                 targets, each feeding two others, chunk by chunk
  churn          --jobs jobs to every node while --churn of the nodes are killed (each at a
                 random moment) and restarted after --downtime; nothing may be lost (a job
                 cut short by its node's kill is reported failed, 'interrupted', never run
                 twice)
  partition      --jobs jobs to every node while the mesh is split in two halves from
                 --partition-at for --partition-for, then healed (tier 2: each node
                 refuses connections with the other half, which closes the open ones)
  late-join      --jobs jobs to every node while --late of the nodes join only within
                 --late-within after the announce (they miss the gossip)
  query          every node caches a value (a RUN with --stdout-arg), then a QUERY of it:
                 each node sends its value to the submitter, which gossips the set of all
                 N values (in parts over 1 MiB; nodes gossip missed get it directly after
                 2 s a part); a node's QUERY job ends when the set arrives (--value-bytes)
  job-wait       one node (node-1; node-0 alone) runs a job for --job-time while every
                 node's JOB_WAIT waits for it there: each registers with that node, which
                 tells every waiter when the job finished
  all            every scenario above

Tier 2 takes --latency and --loss on every link (a lost chunk arrives after TCP's
retransmission timeout); --bandwidth and --loss-model are tier 1's. Tier 3 takes a fixed
--latency and --loss with --netns (tc netem on each daemon's interface: a lost packet is
resent by TCP).

Examples:
  directord-mesh-sim --nodes 10,100,1000,10000 --scenario fanout
  directord-mesh-sim --nodes 10000 --loss 0.01 --latency 10ms..30ms
  directord-mesh-sim --tier 2 --nodes 10,100 --scenario fanout,orchestration
  directord-mesh-sim --tier 3 --netns --nodes 10,50 --scenario partition --latency 20ms
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ScenarioChoice {
    Fanout,
    Orchestration,
    Files,
    Churn,
    Partition,
    LateJoin,
    Query,
    JobWait,
    All,
}

impl ScenarioChoice {
    fn scenarios(&self) -> Vec<Scenario> {
        match self {
            ScenarioChoice::Fanout => vec![Scenario::Fanout],
            ScenarioChoice::Orchestration => vec![Scenario::Orchestration],
            ScenarioChoice::Files => vec![Scenario::Files],
            ScenarioChoice::Churn => vec![Scenario::Churn],
            ScenarioChoice::Partition => vec![Scenario::Partition],
            ScenarioChoice::LateJoin => vec![Scenario::LateJoin],
            ScenarioChoice::Query => vec![Scenario::Query],
            ScenarioChoice::JobWait => vec![Scenario::JobWait],
            ScenarioChoice::All => Scenario::ALL.to_vec(),
        }
    }
}

/// Options whose value may be given negative, to be refused with a message of its own.
const SIGNED_VALUES: [&str; 8] = [
    "--job-time",
    "--downtime",
    "--partition-at",
    "--partition-for",
    "--late-within",
    "--limit",
    "--latency",
    "--bandwidth",
];

fn main() -> ExitCode {
    let args = Args::parse_from(node::config::negative_values_joined(
        std::env::args_os(),
        &SIGNED_VALUES,
    ));
    // Tier 2's nodes log like the daemon when asked (RUST_LOG=node=debug,mesh=debug ...);
    // silent otherwise, since a thousand nodes' warnings would bury the table.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(&args) {
        Ok(complete) => {
            if args.require_complete && !complete {
                output::err_line(format_args!(
                    "error: at least one run did not deliver everything (see the table)"
                ));
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            output::err_line(format_args!("error: {e}"));
            // Stopped by Ctrl-C (or SIGTERM), as a shell reports it.
            if simulations::signals::interrupted() {
                ExitCode::from(130)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// The largest mesh any tier models.
const MAX_TIER1_NODES: usize = 100_000;

/// The longest a run's jobs may take one after another (--jobs × --job-time), as long as
/// the longest duration the options take.
const MAX_RUN: Duration = Duration::from_secs(1_000_000_000);

/// The most results a run may ask for (--jobs × the largest --nodes): each is held by the
/// simulator (about 120 bytes in tier 1; a ten times larger run took 12 GB before it was
/// stopped).
const MAX_RESULTS: usize = 10_000_000;

/// Tier 1's seed: the one given, else 1.
fn seed(args: &Args) -> u64 {
    args.seed.unwrap_or(1)
}

fn check(args: &Args) -> Result<(), String> {
    if args.nodes.iter().any(|&n| n < 2) {
        return Err("--nodes: every mesh needs at least 2 nodes".into());
    }
    if let Some(&n) = args.nodes.iter().find(|&&n| n > MAX_TIER1_NODES) {
        return Err(format!(
            "--nodes {n}: at most {MAX_TIER1_NODES} (tier 1 holds about 8 KB a node, and much \
             more in the orchestration scenario)"
        ));
    }
    for (name, v) in [("--churn", args.churn), ("--late", args.late)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} {v}: give a fraction between 0 and 1"));
        }
    }
    if let Some(loss) = args.loss
        && !(0.0..1.0).contains(&loss)
    {
        return Err(format!(
            "--loss {loss}: give a probability from 0 to below 1"
        ));
    }
    if args.jobs == Some(0) {
        return Err("--jobs: a run needs at least one job".into());
    }
    // Only the scenarios that take --jobs (see `workload`) ask for that many results.
    let any_takes_jobs = args
        .scenario
        .iter()
        .flat_map(ScenarioChoice::scenarios)
        .any(takes_jobs);
    if let (true, Some(jobs), Some(&nodes)) = (any_takes_jobs, args.jobs, args.nodes.iter().max())
        && jobs.saturating_mul(nodes) > MAX_RESULTS
    {
        return Err(format!(
            "--jobs {jobs} on {nodes} nodes: a run may ask for at most {MAX_RESULTS} results \
             (jobs × nodes); give fewer jobs or nodes"
        ));
    }
    // What each chosen scenario runs, its own number of jobs where --jobs is not given or
    // not taken (see `workload`).
    if args.jobs.is_some() || args.job_time.is_some() {
        for scenario in args.scenario.iter().flat_map(ScenarioChoice::scenarios) {
            for &nodes in &args.nodes {
                let w = workload(args, scenario, nodes);
                let too_long = u32::try_from(w.jobs)
                    .ok()
                    .and_then(|j| w.job_time.checked_mul(j))
                    .is_none_or(|total| total > MAX_RUN);
                if too_long {
                    return Err(format!(
                        "--job-time {:?} with {} jobs ({scenario} on {nodes} nodes): the \
                         jobs of a run may take {}s at most one after another",
                        w.job_time,
                        w.jobs,
                        MAX_RUN.as_secs()
                    ));
                }
            }
        }
    }
    let chosen = |wanted: ScenarioChoice| {
        args.scenario
            .iter()
            .any(|&s| s == wanted || s == ScenarioChoice::All)
    };
    // Settings under which a scenario's disruption would not happen.
    let undisrupted = [
        (
            ScenarioChoice::Churn,
            args.churn == 0.0,
            "--churn 0: the churn scenario would kill no node; give the fraction to kill (e.g. 0.1)",
        ),
        (
            ScenarioChoice::LateJoin,
            args.late == 0.0,
            "--late 0: the late-join scenario would have no late node; give the fraction that joins late (e.g. 0.1)",
        ),
        (
            ScenarioChoice::Partition,
            args.partition_for.is_zero(),
            "--partition-for 0s: the partition scenario would not split the mesh at all; give how long the halves stay apart (e.g. 5s)",
        ),
    ];
    if let Some((_, _, why)) = undisrupted
        .iter()
        .find(|(scenario, none, _)| *none && chosen(*scenario))
    {
        return Err((*why).into());
    }
    if chosen(ScenarioChoice::LateJoin) && args.late_within.is_zero() {
        return Err(
            "--late-within 0s: the late nodes would join at the submit and catch the gossip \
             like everyone else; give the window they join in (e.g. 3s)"
                .into(),
        );
    }
    if chosen(ScenarioChoice::Partition)
        && let Some(&n) = args.nodes.iter().find(|&&n| n < 3)
    {
        return Err(format!(
            "--nodes {n}: the partition scenario splits the nodes but the submitter in two \
             halves; it needs at least 3 nodes"
        ));
    }
    if args.limit.is_some_and(|l| l.is_zero()) {
        return Err(
            "--limit 0s: a run given no time ends at its submit; give how long to wait for \
             it (e.g. 60s)"
                .into(),
        );
    }
    if args.file_mib == 0 || args.file_mib > 64 * 1024 {
        return Err(format!("--file-mib {}: give 1 to 65536", args.file_mib));
    }
    let largest = args.nodes.iter().copied().max().unwrap_or(0);
    if args.value_bytes.saturating_mul(largest) > MAX_SET_BYTES {
        return Err(format!(
            "--value-bytes {} on {largest} nodes: a set of {} MiB, over the {} MiB the \
             simulator holds (the daemon fails a QUERY set over 8 MiB); give smaller values or \
             fewer nodes",
            args.value_bytes,
            args.value_bytes.saturating_mul(largest) >> 20,
            MAX_SET_BYTES >> 20
        ));
    }
    if args.tier != 3 && (args.netns || args.binary.is_some()) {
        return Err("--netns and --binary are tier 3's (real daemons): add --tier 3".into());
    }
    if args.tier == 3 {
        let partition = args
            .scenario
            .iter()
            .any(|s| matches!(s, ScenarioChoice::Partition | ScenarioChoice::All));
        if partition && !args.netns {
            return Err(
                "the partition scenario of tier 3 splits the mesh between network namespaces: \
                 add --netns (root)"
                    .into(),
            );
        }
        if (args.latency.is_some() || args.loss.is_some()) && !args.netns {
            return Err(
                "tier 3 shapes links only between network namespaces: add --netns (root)".into(),
            );
        }
        if matches!(args.latency, Some(Latency::Uniform(..))) {
            return Err("tier 3 takes a fixed --latency (e.g. 20ms)".into());
        }
        if let Some(&n) = args.nodes.iter().find(|&&n| n > tier3::MAX_NODES) {
            return Err(format!(
                "--nodes {n}: tier 3 starts a daemon process per node; at most {}",
                tier3::MAX_NODES
            ));
        }
    }
    if args.tier >= 2 {
        let tier1_only = [
            ("--loss-model", args.loss_model.is_some()),
            ("--bandwidth", args.bandwidth.is_some()),
            ("--seed", args.seed.is_some()),
        ];
        if let Some((name, _)) = tier1_only.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{name} shapes tier 1's model only; tier 2's and 3's links take --latency and \
                 --loss (a loss is resent as TCP resends it), have no bandwidth cap, and run on \
                 the wall clock (no seed repeats them)"
            ));
        }
    }
    if args.tier == 2
        && let Some(&n) = args
            .nodes
            .iter()
            .find(|&&n| n > simulations::tier2::MAX_NODES)
    {
        return Err(format!(
            "--nodes {n}: tier 2 starts real nodes in this process; use tier 1 above {}",
            simulations::tier2::MAX_NODES
        ));
    }
    Ok(())
}

/// Runs every (scenario, size); returns whether every run delivered everything.
fn run(args: &Args) -> Result<bool, String> {
    check(args)?;
    // Each size once, in the order given, as each scenario is.
    let mut sizes: Vec<usize> = Vec::new();
    for &n in &args.nodes {
        if !sizes.contains(&n) {
            sizes.push(n);
        }
    }
    let mut scenarios: Vec<Scenario> = Vec::new();
    for choice in &args.scenario {
        for s in choice.scenarios() {
            if !scenarios.contains(&s) {
                scenarios.push(s);
            }
        }
    }
    let mut network = NetworkModel::default();
    if let Some(l) = args.latency {
        network.latency = l;
    }
    if let Some(l) = args.loss {
        network.loss = l;
    }
    if let Some(m) = args.loss_model {
        network.loss_model = m;
    }
    if let Some(b) = args.bandwidth {
        network.uplink = b;
    }
    if args.out.exists() && !args.out.is_dir() {
        return Err(format!(
            "--out {}: not a directory (the results go into one: results.csv and results.png)",
            args.out.display()
        ));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("{}: cannot create: {e}", args.out.display()))?;
    // Both outputs can be written, before the sweep rather than after it.
    let csv_path = args.out.join("results.csv");
    let png_path = args.out.join("results.png");
    // A file made here for the check is removed again if the other cannot be written.
    let mut made = Vec::new();
    for path in [&csv_path, &png_path] {
        let existed = path.exists();
        if let Err(e) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            for made in made {
                let _ = std::fs::remove_file(made);
            }
            return Err(format!("{}: cannot write: {e}", path.display()));
        }
        if !existed {
            made.push(path);
        }
    }
    // Ctrl-C or SIGTERM stops the sweep at the run it is in: the rows of the runs before it
    // are written, and what a run of real nodes started is removed.
    simulations::signals::stop_on_signals();
    let mut rows: Vec<Summary> = Vec::new();
    let mut complete = true;
    let mut failure = None;
    'sweep: for &scenario in &scenarios {
        for &nodes in &sizes {
            let w = workload(args, scenario, nodes);
            output::err_line(format_args!(
                "tier {} {scenario} on {nodes} nodes{}...",
                args.tier,
                if args.tier == 1 {
                    format!(
                        " (seed {}, latency {}, loss {}, uplink {})",
                        seed(args),
                        network.latency,
                        network.loss,
                        network.uplink
                    )
                } else {
                    String::new()
                }
            ));
            let report = if simulations::signals::interrupted() {
                Err("interrupted".to_string())
            } else {
                run_one(args, w, &network)
            };
            let mut report = match report {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(format!(
                        "tier {} {scenario} on {nodes} nodes: {e}",
                        args.tier
                    ));
                    break 'sweep;
                }
            };
            if report.network.is_empty() {
                report.network = "memory transport".into();
            }
            for note in &report.notes {
                output::err_line(format_args!(
                    "warning: tier {} {scenario} on {nodes} nodes: {note}",
                    args.tier
                ));
            }
            let summary = report.summary();
            complete &= summary.delivery >= 1.0
                && summary.results_recorded == summary.expected_results
                && summary.failed == 0;
            rows.push(summary);
        }
    }
    if let Some(e) = &failure
        && rows.is_empty()
    {
        // The outputs made ready above hold nothing: not left as empty files.
        for path in [&csv_path, &png_path] {
            if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(path);
            }
        }
        return Err(e.clone());
    }
    // The runs finished before a failed one are kept: written first, then the error.
    let written = write_outputs(&rows, &csv_path, &png_path);
    match (failure, written) {
        (None, Ok(())) => Ok(complete),
        (None, Err(e)) => Err(e),
        (Some(e), Ok(())) => Err(format!(
            "{e} ({} before it in the table and {})",
            runs(rows.len()),
            csv_path.display()
        )),
        (Some(e), Err(written)) => Err(format!(
            "{e} ({} before it in the table; {written})",
            runs(rows.len())
        )),
    }
}

/// "the run" or "the N runs".
fn runs(n: usize) -> String {
    match n {
        1 => "the run".into(),
        n => format!("the {n} runs"),
    }
}

/// The table on stdout, the CSV and the plot.
fn write_outputs(rows: &[Summary], csv_path: &Path, png_path: &Path) -> Result<(), String> {
    output::line(format_args!("{}", metrics::table(rows)));
    std::fs::write(csv_path, metrics::csv(rows))
        .map_err(|e| format!("{}: {e}", csv_path.display()))?;
    match plot::draw(rows, png_path) {
        Ok(true) => {}
        Ok(false) => output::err_line(format_args!(
            "note: no TrueType font found ({} or $DIRECTORD_MESH_SIM_FONT): the plot has no labels",
            plot::FONT_PATHS[0]
        )),
        Err(e) => {
            output::line(format_args!("wrote {}", csv_path.display()));
            return Err(format!("{}: plot not drawn: {e}", png_path.display()));
        }
    }
    output::line(format_args!(
        "wrote {} and {}",
        csv_path.display(),
        png_path.display()
    ));
    Ok(())
}

/// One run of the sweep.
fn run_one(args: &Args, w: Workload, network: &NetworkModel) -> Result<Report, String> {
    Ok(if args.tier == 3 {
        let binary = match &args.binary {
            Some(b) => b.clone(),
            None => tier3::default_binary().ok_or(
                "tier 3 runs the directord-mesh binary: build it next to this one \
                 (cargo build --release -p directord-mesh) or give --binary",
            )?,
        };
        Tier3 {
            workload: w,
            binary,
            netns: args.netns,
            latency: match args.latency {
                Some(Latency::Fixed(d)) => Some(d),
                _ => None,
            },
            loss: args.loss.unwrap_or(0.0),
            limit: args.limit.unwrap_or(Duration::from_secs(300)),
        }
        .run()?
    } else if args.tier == 1 {
        let mut r = Tier1 {
            workload: w,
            network: network.clone(),
            seed: seed(args),
            limit: args.limit.unwrap_or(Duration::from_secs(600)),
        }
        .run()?;
        r.seed = Some(seed(args));
        r.network = format!(
            "latency {} loss {} ({}) uplink {}",
            network.latency, network.loss, network.loss_model, network.uplink
        );
        r
    } else {
        let link = (args.latency.is_some() || args.loss.is_some()).then(|| {
            args.latency
                .unwrap_or(Latency::Fixed(Duration::ZERO))
                .link_shape(args.loss.unwrap_or(0.0))
        });
        let mut r = Tier2 {
            workload: w,
            link,
            limit: args.limit.unwrap_or(Duration::from_secs(300)),
        }
        .run()?;
        if let Some(link) = link {
            r.network = format!(
                "memory transport, latency {}, loss {}",
                args.latency.unwrap_or(Latency::Fixed(Duration::ZERO)),
                f64::from(link.loss_ppm) / 1e6
            );
        }
        r
    })
}

/// Whether `scenario` runs `--jobs` jobs (the others run what they are about).
fn takes_jobs(scenario: Scenario) -> bool {
    !matches!(
        scenario,
        Scenario::Fanout | Scenario::Files | Scenario::Query | Scenario::JobWait
    )
}

fn workload(args: &Args, scenario: Scenario, nodes: usize) -> Workload {
    let mut w = Workload::new(scenario, nodes);
    if let Some(j) = args.jobs
        && takes_jobs(scenario)
    {
        w.jobs = j;
    }
    if let Some(t) = args.job_time {
        w.job_time = t;
    }
    w.file_bytes = args.file_mib << 20;
    w.value_bytes = args.value_bytes;
    w.churn = args.churn;
    w.downtime = args.downtime;
    w.partition_at = args.partition_at;
    w.partition_for = args.partition_for;
    w.late = args.late;
    w.late_within = args.late_within;
    w
}
