//! `strata.namespace.v1`: what each namespace holds and the limits it is held to. Usage is
//! read from this node's applied state (exact as of its applied index); limits change through
//! the log. Setting limits is for super-tenant admins (the identity layer refuses others);
//! a namespace's own admins may read its usage.

use strata_proto::namespace::v1 as pb;
use strata_raft::RaftNode;
use strata_storage::quota::{
    Limits, NamespaceQuota, Quota, QuotaCommand, QuotaResponse, Usage, DEFAULTS_NAMESPACE,
};
use tonic::{Request, Response, Status};

use super::identity::permission_denied;
use super::metrics::Metrics;
use super::namespace::{self, ALL};
use super::{status, validate};

/// Most namespaces in one answer.
const MAX_PAGE: usize = 1_000;

pub struct NamespacesService {
    node: RaftNode,
    metrics: Metrics,
}

impl NamespacesService {
    pub fn new(node: RaftNode, metrics: Metrics) -> Self {
        Self { node, metrics }
    }
}

fn quotas(value: impl Fn(Quota) -> u64) -> pb::Quotas {
    pb::Quotas {
        keys: value(Quota::Keys),
        bytes: value(Quota::Bytes),
        topics: value(Quota::Topics),
        stream_bytes: value(Quota::StreamBytes),
        nodes: value(Quota::Nodes),
        requests_per_second: value(Quota::RequestsPerSecond),
    }
}

fn usage_of(usage: &Usage) -> pb::Quotas {
    quotas(|quota| usage.get(quota))
}

fn limits_of(limits: &Limits) -> pb::Quotas {
    quotas(|quota| limits.get(quota))
}

fn entry(quota: NamespaceQuota) -> pb::NamespaceUsage {
    pb::NamespaceUsage {
        usage: Some(usage_of(&quota.usage)),
        limits: Some(limits_of(&quota.effective)),
        own_limits: quota.own.is_some(),
        namespace: quota.namespace,
    }
}

/// The limits a request changes, in quota order; at least one.
fn changes(limits: Option<pb::LimitChanges>) -> Result<Vec<(Quota, u64)>, Status> {
    let limits = limits.unwrap_or_default();
    let changes: Vec<(Quota, u64)> = [
        (Quota::Keys, limits.keys),
        (Quota::Bytes, limits.bytes),
        (Quota::Topics, limits.topics),
        (Quota::StreamBytes, limits.stream_bytes),
        (Quota::Nodes, limits.nodes),
        (Quota::RequestsPerSecond, limits.requests_per_second),
    ]
    .into_iter()
    .filter_map(|(quota, limit)| limit.map(|limit| (quota, limit)))
    .collect();
    if changes.is_empty() {
        return Err(validate::invalid(
            "limits: name at least one limit to change (0 removes one)".into(),
        ));
    }
    Ok(changes)
}

#[tonic::async_trait]
impl pb::namespaces_server::Namespaces for NamespacesService {
    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        self.metrics
            .observed("namespace.Usage", async {
                let caller = namespace::caller(&request)?.clone();
                let request = request.into_inner();
                if !request.all {
                    let namespace = caller.namespace.clone();
                    if namespace == ALL {
                        return Err(validate::invalid(
                            "namespace \"*\": ask with all = true for every namespace".into(),
                        ));
                    }
                    if !caller.may_administer(&namespace) {
                        return Err(permission_denied(format!(
                            "the usage of namespace {namespace:?} is for its admins"
                        )));
                    }
                    return Ok(pb::UsageResponse {
                        namespaces: vec![entry(self.node.quota().namespace(&namespace))],
                        next: String::new(),
                    });
                }
                if !caller.super_admin {
                    return Err(permission_denied(
                        "every namespace's usage is for admins of the super-tenant",
                    ));
                }
                let limit = match request.limit {
                    0 => MAX_PAGE,
                    n => (n as usize).min(MAX_PAGE),
                };
                let mut page: Vec<NamespaceQuota> = self
                    .node
                    .quota()
                    .all()
                    .into_iter()
                    .filter(|q| request.start_after.is_empty() || q.namespace > request.start_after)
                    .take(limit + 1)
                    .collect();
                let next = if page.len() > limit {
                    page.truncate(limit);
                    page.last().map(|q| q.namespace.clone()).unwrap_or_default()
                } else {
                    String::new()
                };
                Ok(pb::UsageResponse {
                    namespaces: page.into_iter().map(entry).collect(),
                    next,
                })
            })
            .await
    }

    async fn set_limits(
        &self,
        request: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        self.metrics
            .observed("namespace.SetLimits", async {
                let caller = namespace::caller(&request)?.clone();
                if !caller.super_admin {
                    return Err(permission_denied(
                        "namespace limits are for admins of the super-tenant",
                    ));
                }
                let request = request.into_inner();
                let namespace = match request.namespace.as_str() {
                    "" => caller.namespace.clone(),
                    named => named.to_string(),
                };
                if namespace != DEFAULTS_NAMESPACE {
                    validate::name("namespace", &namespace)?;
                }
                let changes = changes(request.limits)?;
                let command = QuotaCommand::SetLimits {
                    namespace: namespace.clone(),
                    changes,
                };
                let QuotaResponse::LimitsSet { revision, limits } = self
                    .node
                    .write_quota(command)
                    .await
                    .map_err(status::write)?;
                tracing::info!(%namespace, ?limits, "namespace limits set");
                Ok(pb::SetLimitsResponse {
                    revision,
                    limits: Some(limits_of(&limits)),
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_named_limits_change() {
        assert!(changes(None).is_err());
        assert!(changes(Some(pb::LimitChanges::default())).is_err());
        let named = changes(Some(pb::LimitChanges {
            topics: Some(0),
            requests_per_second: Some(50),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            named,
            vec![(Quota::Topics, 0), (Quota::RequestsPerSecond, 50)]
        );
    }
}
