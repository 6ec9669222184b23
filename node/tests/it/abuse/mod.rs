//! The `abuse` suite: what a hostile client, a damaged disk or a careless operator does to a
//! real node, with bounded sizes, asserting that the node refuses or survives and that every
//! acknowledged write is still there.

mod bounded;
mod clock;
mod damage;
mod disk;
mod membership;

/// `strata cluster status` shows `count` voters.
fn assert_voters(cluster: &crate::harness::Cluster, count: usize) {
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let voters = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, count, "{status}");
}
