//! QUERY, QUERY_WAIT and JOB_WAIT: the verbs that wait on other nodes, through the node's
//! [`Coordinator`](super::Coordinator), lending their queue while they wait.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{Context, Finished};

/// What a QUERY job's success prints: the value it sent, `{NAME: value}` as JSON.
fn query_output(name: &str, value: &Value) -> String {
    serde_json::json!({ name: value }).to_string()
}

/// The value a QUERY job's success says it sent (its output, see [`query_output`]); none if
/// the output is not that (cut short, or of another release).
pub fn query_value_sent(stdout: &str) -> Option<(String, Value)> {
    let Value::Object(map) = serde_json::from_str(stdout.trim()).ok()? else {
        return None;
    };
    let mut entries = map.into_iter();
    match (entries.next(), entries.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

pub(super) async fn query(name: &str, no_wait: bool, ctx: &Context<'_>) -> Finished {
    let Some(coordinator) = ctx.coordinator else {
        return Finished::fail("QUERY needs a mesh to ask", "");
    };
    // The value as this run sees it (its own ARG, whatever another run set since).
    let value = ctx.args().get(name).cloned().unwrap_or(Value::Null);
    let own = query_output(name, &value);
    let lent = (!no_wait).then(|| ctx.lend_queue());
    let asked = coordinator.query(ctx.job_id, name, value, !no_wait);
    let Ok(answer) = tokio::time::timeout_at(ctx.deadline, asked).await else {
        drop(lent);
        let why = match coordinator.query_waiting(ctx.job_id).await {
            Some(why) => format!(": {why}"),
            None => String::new(),
        };
        return Finished::fail(
            format!("timed out waiting for the set of every target's value{why}"),
            format!("QUERY {name} gave up after its timeout"),
        );
    };
    drop(lent);
    match answer {
        Ok(None) => Finished::ok(own, "value sent; not waiting for the others (--no-wait)"),
        Ok(Some(aggregate)) => {
            let nodes = aggregate
                .get("query")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            // The run's later jobs here render with this set, whatever another run's QUERY
            // of the same name merges into the node's args meanwhile.
            ctx.cache.keep_run_query(ctx.run_id, &aggregate);
            // Each node's value replaces what the node's args held for it (a list is not
            // extended by itself at every run, see `Cache::merge_args`).
            if let Value::Object(map) = aggregate {
                ctx.cache.merge_args(map, true);
            }
            Finished::ok(own, format!("query of {nodes} nodes merged into the args"))
        }
        Err(e) => Finished::fail(e, format!("QUERY {name} failed")),
    }
}

pub(super) async fn query_wait(
    item: &str,
    timeout_secs: u64,
    identities: &[String],
    ctx: &Context<'_>,
) -> Finished {
    let by_query_timeout = Instant::now() + crate::spec::bounded_secs(timeout_secs);
    let until = ctx.deadline.min(by_query_timeout);
    // The message names the limit that ended the wait: `--query-timeout` or the job's own.
    let limit = if by_query_timeout <= ctx.deadline {
        format!("Timeout after {timeout_secs} seconds")
    } else {
        let job_secs = ctx.deadline.saturating_duration_since(Instant::now());
        format!(
            "Timeout after {:.0} seconds (the job's --timeout, shorter than --query-timeout \
             {timeout_secs})",
            job_secs.as_secs_f64()
        )
    };
    let _lent = ctx.lend_queue();
    loop {
        // Looked at, then let go before the sleep: held meanwhile, every ARG or QUERY on the
        // node would copy the args. As this run sees them: of a name its own QUERY collects,
        // only the nodes of its sets count (not a value an earlier run gathered).
        let (found, missing) = {
            let args = ctx.args();
            let query = args.get("query").and_then(Value::as_object);
            let has = |node: &str| {
                query
                    .and_then(|q| q.get(node))
                    .and_then(|v| v.get(item))
                    .is_some()
            };
            let found = if identities.is_empty() {
                query.is_some_and(|q| q.values().any(|v| v.get(item).is_some()))
            } else {
                identities.iter().all(|id| has(id))
            };
            let missing: Vec<&str> = identities
                .iter()
                .filter(|id| !has(id))
                .map(String::as_str)
                .collect();
            (found, missing)
        };
        if found {
            let what = if identities.is_empty() {
                "Item found"
            } else {
                "Item found in all identities"
            };
            return Finished::ok(what, format!("query item {item}"));
        }
        if Instant::now() >= until {
            let who = if missing.is_empty() {
                "any node".to_string()
            } else {
                missing.join(", ")
            };
            return Finished::fail(limit, format!("query item {item} was not found for {who}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn job_wait(
    fingerprint: &str,
    identities: &[String],
    ctx: &Context<'_>,
) -> Finished {
    // A node named twice is one node to hear from (one answer comes from it).
    let mut unique: Vec<String> = Vec::with_capacity(identities.len());
    for id in identities {
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    let identities = unique.as_slice();
    let Some(coordinator) = ctx.coordinator else {
        return Finished::fail("JOB_WAIT needs a mesh to ask", "");
    };
    let _lent = ctx.lend_queue();
    // Bounded by the job's timeout: the node may look for a name it does not know yet.
    let asked = tokio::time::timeout_at(
        ctx.deadline,
        coordinator.job_wait(ctx.job_id, fingerprint, identities),
    );
    let mut updates = match asked.await {
        Ok(Ok(rx)) => rx,
        Ok(Err(e)) => return Finished::fail(e, format!("JOB_WAIT {fingerprint} failed")),
        Err(_) => {
            return Finished::fail(
                format!(
                    "JOB_WAIT: timed out before every node it names was found in the mesh ({})",
                    identities.join(", ")
                ),
                format!("JOB_WAIT {fingerprint} failed"),
            );
        }
    };
    let mut done: Vec<(String, String)> = Vec::new();
    // The node closed the updates before every answer came: it stopped waiting (it is
    // shutting down), the timeout did not end the wait.
    let mut stopped = false;
    while done.len() < identities.len() {
        match tokio::time::timeout_at(ctx.deadline, updates.recv()).await {
            Ok(Some((node, state))) => {
                if !done.iter().any(|(n, _)| *n == node) {
                    done.push((node, state));
                }
            }
            Ok(None) => {
                stopped = true;
                break;
            }
            Err(_) => break,
        }
    }
    let missing: Vec<&str> = identities
        .iter()
        .filter(|id| !done.iter().any(|(n, _)| n == *id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() && stopped {
        return Finished::fail(
            format!(
                "this node stopped waiting for job {fingerprint} to finish on {} before the \
                 timeout: it is shutting down",
                missing.join(", ")
            ),
            format!(
                "JOB_WAIT ended before its timeout (the node is shutting down); {} of {} nodes \
                 had finished it",
                done.len(),
                identities.len()
            ),
        );
    }
    if missing.is_empty() {
        let states: Vec<String> = done.iter().map(|(n, s)| format!("{n}: {s}")).collect();
        Finished::ok(
            format!("Job completed, found fingerprint [ {fingerprint} ]"),
            format!(
                "completed on all coordinated targets: {}",
                states.join(", ")
            ),
        )
    } else {
        let missing: Vec<String> = missing.iter().map(|m| m.to_string()).collect();
        let seen = coordinator.nodes_seen(&missing).await;
        let seen = if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join("; "))
        };
        Finished::fail(
            format!(
                "timed out waiting for job {fingerprint} to finish on {}{seen}",
                missing.join(", ")
            ),
            format!(
                "JOB_WAIT gave up after its timeout; {} of {} nodes had finished it",
                done.len(),
                identities.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::Value;
    use tokio::sync::mpsc;

    use super::*;

    /// A QUERY's success says its value as `{NAME: value}`, read back as it was sent;
    /// anything else says none.
    #[test]
    fn the_value_a_query_sent_is_read_from_its_output() {
        let sent = serde_json::json!([1, "a"]);
        assert_eq!(
            query_value_sent(&format!("{}\n", query_output("release", &sent))),
            Some(("release".to_string(), sent))
        );
        assert_eq!(
            query_value_sent(&query_output("n", &Value::Null)),
            Some(("n".to_string(), Value::Null))
        );
        for not_one in ["", "{}", "{\"a\":1,\"b\":2}", "[1]", "{\"a\":1", "3"] {
            assert_eq!(query_value_sent(not_one), None, "{not_one}");
        }
    }
    use crate::{
        cache::{Cache, DEFAULT_TTL},
        components::{BoxFuture, Coordinator},
        spec::{FileRef, Fingerprint},
    };

    /// A node whose JOB_WAIT hears from `n1`, then stops waiting (it is shutting down).
    struct Stopping;

    impl Coordinator for Stopping {
        fn query(
            &self,
            _: &str,
            _: &str,
            _: Value,
            _: bool,
        ) -> BoxFuture<'static, Result<Option<Value>, String>> {
            Box::pin(async { Err("no QUERY here".to_string()) })
        }

        fn job_wait(
            &self,
            _: &str,
            _: &str,
            _: &[String],
        ) -> BoxFuture<'static, Result<mpsc::Receiver<(String, String)>, String>> {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(("n1".to_string(), "success".to_string()));
            Box::pin(async move { Ok(rx) })
        }

        fn fetch_blob(&self, _: &str, _: &FileRef) -> BoxFuture<'static, Result<PathBuf, String>> {
            Box::pin(async { Err("no files here".to_string()) })
        }

        fn discard_blob(&self, _: Fingerprint) {}
    }

    /// A JOB_WAIT whose node stops waiting before its timeout says so, not that it timed out.
    #[tokio::test]
    async fn a_job_wait_the_node_stops_says_so_not_that_it_timed_out() {
        let cache = Cache::in_memory(DEFAULT_TTL);
        let ctx = Context {
            job_id: "job",
            run_id: "run",
            cache: &cache,
            sink: None,
            deadline: Instant::now() + Duration::from_secs(600),
            coordinator: Some(&Stopping),
            processes: None,
            queue: None,
            landing_lock: None,
        };
        let asked = Instant::now();
        let f = job_wait("abcdef", &["n1".into(), "n2".into()], &ctx).await;
        assert!(asked.elapsed() < Duration::from_secs(60));
        assert!(!f.success, "{f:?}");
        assert_eq!(
            f.stderr,
            "this node stopped waiting for job abcdef to finish on n2 before the timeout: it is \
             shutting down"
        );
        assert_eq!(
            f.info,
            "JOB_WAIT ended before its timeout (the node is shutting down); 1 of 2 nodes had \
             finished it"
        );
    }
}
