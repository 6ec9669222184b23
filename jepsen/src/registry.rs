//! The `registry` workload: each client registers and deregisters nodes of its own service
//! (`svc-<process>`, nodes `n0`..`n2`, metadata `v` = a value unique to the operation) and sets
//! and deletes its own paths of one config document (`jepsen`, `p<process>.k<key>`), without
//! retries, while the nemesis works. A client's operations on one key are sequential, so
//! after the heal each key must hold what its last acknowledged operation left, or what an
//! indeterminate one did (which may take effect late, e.g. a forward held by a paused node).
//!
//! Anomalies: a key whose final state no acknowledged or indeterminate operation explains
//! (lost or phantom write), a node whose applied state does not converge to the leader's, and a
//! node whose watch history, replayed from revision 1, does not rebuild its state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::registry::{proto, Node, Service, WatchOptions};
use strata_client::{Client, Consistency, Error};

use crate::{Record, Rng, Verdict};

const TTL: Duration = Duration::from_secs(3_600);
const DOCUMENT: &str = "jepsen";
/// Keys per client: nodes n0..n2 and config paths k0..k2.
const KEYS: u64 = 3;
/// Config keys are recorded as 100 + key, registry nodes as the key itself.
const CONFIG_KEY_BASE: u64 = 100;
/// How long nodes get to converge and watches to replay after the heal.
const CONVERGE_LIMIT: Duration = Duration::from_secs(30);

fn service(process: usize, key: u64, value: u64) -> Service {
    Service {
        name: format!("svc-{process}"),
        version: "1".into(),
        nodes: vec![Node {
            id: format!("n{key}"),
            address: "jepsen.invalid:1".into(),
            metadata: [("v".to_string(), value.to_string())].into(),
        }],
        ..Default::default()
    }
}

/// One operation: fills in `record.op`, `key` and `value`.
pub async fn operate(
    client: &Client,
    process: usize,
    value: u64,
    rng: &mut Rng,
    record: &mut Record,
) -> Result<Option<u64>, Error> {
    let key = rng.below(KEYS);
    record.key = key;
    record.value = Some(value);
    match rng.below(6) {
        0..=2 => {
            record.op = "register";
            let registry = client.registry();
            registry
                .register(&service(process, key, value), TTL)
                .await
                .map(|_| None)
        }
        3 => {
            record.op = "deregister";
            client
                .registry()
                .deregister(&format!("svc-{process}"), "1", &[format!("n{key}")])
                .await
                .map(|_| None)
        }
        4 => {
            record.op = "config_set";
            record.key = CONFIG_KEY_BASE + key;
            client
                .config()
                .set(DOCUMENT, &format!("p{process}.k{key}"), &json!(value))
                .await
                .map(|_| None)
        }
        _ => {
            record.op = "config_delete";
            record.key = CONFIG_KEY_BASE + key;
            client
                .config()
                .delete(DOCUMENT, &format!("p{process}.k{key}"))
                .await
                .map(|_| None)
        }
    }
}

/// What a key holds: a value, or nothing.
type State = Option<u64>;

/// The registry and config state as one map: ("n", process, key) or ("c", process, key).
type Snapshot = BTreeMap<(&'static str, usize, u64), u64>;

fn snapshot(services: &[proto::Service], document: Option<&Value>) -> anyhow::Result<Snapshot> {
    let mut out = Snapshot::new();
    for service in services {
        let Some(process) = service.name.strip_prefix("svc-") else {
            continue;
        };
        let process: usize = process.parse().context("service name")?;
        for node in &service.nodes {
            let key: u64 = node.id.trim_start_matches('n').parse().context("node id")?;
            let value: u64 = node.metadata["v"].parse().context("node value")?;
            out.insert(("n", process, key), value);
        }
    }
    if let Some(Value::Object(processes)) = document {
        for (name, keys) in processes {
            let process: usize = name
                .trim_start_matches('p')
                .parse()
                .context("config path")?;
            for (key, value) in keys.as_object().context("config object")? {
                let key: u64 = key.trim_start_matches('k').parse().context("config key")?;
                out.insert(("c", process, key), value.as_u64().context("config value")?);
            }
        }
    }
    Ok(out)
}

async fn read_state(client: &Client, consistency: Consistency) -> Result<Snapshot, String> {
    let services = client
        .registry()
        .list_services(consistency)
        .await
        .map_err(|e| e.to_string())?;
    let document = match client
        .config()
        .get_with(DOCUMENT, "", false, consistency)
        .await
    {
        Ok(value) => Some(value),
        Err(Error::NotFound(_)) => None,
        Err(error) => return Err(error.to_string()),
    };
    snapshot(&services, document.as_ref()).map_err(|e| e.to_string())
}

/// Rebuilds the state from the node's watch history (from revision 1) up to `revision`.
async fn replay(client: &Client, revision: u64) -> anyhow::Result<Snapshot> {
    let mut watch = client
        .registry()
        .watch(WatchOptions {
            start_revision: 1,
            progress_interval: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .await?;
    let mut state = Snapshot::new();
    while let Some(response) = tokio::time::timeout(CONVERGE_LIMIT, watch.next())
        .await
        .context("the registry watch stalled")?
    {
        let response = response?;
        for event in &response.events {
            let service = event.service.as_ref().context("event without service")?;
            let Some(process) = service.name.strip_prefix("svc-") else {
                continue;
            };
            let process: usize = process.parse()?;
            // A version's info change names no node; the workload never changes info.
            let Some(node) = service.nodes.first() else {
                continue;
            };
            let key: u64 = node.id.trim_start_matches('n').parse()?;
            if event.r#type == proto::event::Type::Delete as i32 {
                state.remove(&("n", process, key));
            } else {
                state.insert(("n", process, key), node.metadata["v"].parse()?);
            }
        }
        if response.revision >= revision {
            break;
        }
    }
    // Config: the last change's new value is the document as of now.
    let mut config = client.config().watch(DOCUMENT, "", 1, false).await?;
    let mut document = None;
    loop {
        match tokio::time::timeout(Duration::from_millis(1_500), config.next()).await {
            Ok(Some(change)) => {
                let change = change?;
                document = (!change.new.is_null()).then_some(change.new);
            }
            Ok(None) => break,
            Err(_) => break, // no change for 1.5 s: history replayed
        }
    }
    state.extend(snapshot(&[], document.as_ref())?);
    Ok(state)
}

/// The checks after the heal; `endpoints` are the nodes' gRPC addresses.
pub async fn check(
    client: &Client,
    endpoints: &[String],
    access: Option<&crate::cluster::Access>,
    history: &[Record],
) -> anyhow::Result<Verdict> {
    let mut anomalies = Vec::new();
    let final_state = read_state(client, Consistency::Linearizable)
        .await
        .map_err(|e| anyhow::anyhow!("reading the final state: {e}"))?;

    // 1. Each key ends as its last acknowledged operation left it, or as an indeterminate one.
    let mut ops: BTreeMap<(&'static str, usize, u64), Vec<&Record>> = BTreeMap::new();
    for record in history {
        let class = if record.op.starts_with("config") {
            ("c", record.process, record.key - CONFIG_KEY_BASE)
        } else {
            ("n", record.process, record.key)
        };
        ops.entry(class).or_default().push(record);
    }
    let effect = |r: &Record| -> State {
        match r.op {
            "register" | "config_set" => r.value,
            _ => None,
        }
    };
    let (mut checked, mut unexplained) = (0, Vec::new());
    for (key, records) in &ops {
        let last_ok = records.iter().rposition(|r| r.outcome == "ok");
        let mut allowed: BTreeSet<State> = records
            .iter()
            .filter(|r| r.outcome == "info")
            .map(|r| effect(r))
            .collect();
        match last_ok {
            Some(index) => allowed.insert(effect(records[index])),
            None => allowed.insert(None),
        };
        let actual = final_state.get(key).copied();
        checked += 1;
        if !allowed.contains(&actual) {
            unexplained.push(format!("{key:?} holds {actual:?}, allowed {allowed:?}"));
        }
    }
    let touched: BTreeSet<_> = ops.keys().collect();
    for key in final_state.keys() {
        if !touched.contains(key) {
            unexplained.push(format!("{key:?} present but never written"));
        }
    }
    if !unexplained.is_empty() {
        anomalies.push(format!(
            "{} keys whose final state no operation explains, e.g. {:?}",
            unexplained.len(),
            &unexplained[..unexplained.len().min(5)]
        ));
    }

    // 2. Every node converges to the same state, and its watch history rebuilds it.
    for endpoint in endpoints {
        let node = crate::cluster::client(access, endpoint.as_str())
            .request_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        let deadline = Instant::now() + CONVERGE_LIMIT;
        let local = loop {
            match read_state(&node, Consistency::Serializable).await {
                Ok(state) if state == final_state => break Some(state),
                _ if Instant::now() > deadline => break None,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        if local.is_none() {
            anomalies.push(format!(
                "node {endpoint} did not converge to the cluster's state"
            ));
            continue;
        }
        let (revision, _) = node
            .registry()
            .list_services_at(Consistency::Serializable)
            .await?;
        match replay(&node, revision).await {
            Ok(replayed) if replayed == final_state => {}
            Ok(replayed) => anomalies.push(format!(
                "node {endpoint}: the watch history rebuilds {} keys, the state has {} \
                 (first difference: {:?})",
                replayed.len(),
                final_state.len(),
                first_difference(&replayed, &final_state)
            )),
            Err(error) => anomalies.push(format!("node {endpoint}: replaying history: {error}")),
        }
    }
    println!(
        "  registry: {checked} keys checked, {} present at the end, {} nodes converged",
        final_state.len(),
        endpoints.len()
    );
    Ok(Verdict {
        valid: anomalies.is_empty(),
        anomalies,
    })
}

fn first_difference(a: &Snapshot, b: &Snapshot) -> Option<String> {
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .find(|k| a.get(k) != b.get(k))
        .map(|k| format!("{k:?}: {:?} vs {:?}", a.get(k), b.get(k)))
}
