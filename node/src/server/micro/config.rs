//! `config.Config` (shared/MICRO_API.md §6.3) over the native config documents: Micro's one
//! document per namespace N is the native document `N` in namespace N, so both APIs read and
//! write the same JSON (dotted paths, deep merge of objects, sealed secrets masked as
//! `"[secret]"`). Unlike Micro's read-modify-write, a Set is merged in apply through the log,
//! so concurrent Sets never lose each other's keys.

use strata_proto::micro::config as pb;
use tonic::{Request, Response, Status};

use super::{authorize_admin, caller_of, tenant};
use crate::server::config::ConfigService;
use crate::server::metrics::Metrics;
use crate::server::status;
use crate::server::validate;

#[derive(Clone)]
pub struct MicroConfigService {
    config: ConfigService,
    metrics: Metrics,
}

impl MicroConfigService {
    pub fn new(config: ConfigService, metrics: Metrics) -> Self {
        Self { config, metrics }
    }

    /// The namespace a call names (default `micro`), authorized as `AuthorizeAdmin`; its
    /// document has the namespace's own name.
    fn namespace<T>(request: &Request<T>, namespace: &str) -> Result<String, Status> {
        let caller = caller_of(request)?;
        let namespace = tenant("namespace", namespace)?;
        authorize_admin(&caller, &namespace)?;
        Ok(namespace)
    }

    /// Micro's 404 for a namespace without a document.
    fn exists(&self, namespace: &str) -> Result<(), Status> {
        self.config
            .document(namespace, namespace)
            .map(|_| ())
            .map_err(|_| Status::not_found("Not found"))
    }

    async fn value_text(
        &self,
        namespace: &str,
        path: &str,
        secrets: bool,
    ) -> Result<String, Status> {
        self.config
            .node()
            .linearizable_barrier()
            .await
            .map_err(status::read)?;
        match self.config.value_at(namespace, namespace, path, secrets) {
            Ok((value, _)) => Ok(value.to_string()),
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(Status::not_found("Not found"))
            }
            Err(status) => Err(status),
        }
    }
}

#[tonic::async_trait]
impl pb::config_server::Config for MicroConfigService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.metrics
            .observed("config.Get", async {
                let namespace = Self::namespace(&request, &request.get_ref().namespace)?;
                let req = request.into_inner();
                let secrets = req.options.is_some_and(|o| o.secret);
                let data = self.value_text(&namespace, &req.path, secrets).await?;
                Ok(pb::GetResponse {
                    value: Some(pb::Value {
                        data,
                        format: "json".into(),
                    }),
                })
            })
            .await
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        self.metrics
            .observed("config.Set", async {
                let namespace = Self::namespace(&request, &request.get_ref().namespace)?;
                let req = request.into_inner();
                let value = req
                    .value
                    .ok_or_else(|| validate::invalid("invalid change".into()))?;
                let secret = req.options.is_some_and(|o| o.secret);
                self.config
                    .set_at(namespace.clone(), namespace, &req.path, &value.data, secret)
                    .await?;
                Ok(pb::SetResponse {})
            })
            .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.metrics
            .observed("config.Delete", async {
                let namespace = Self::namespace(&request, &request.get_ref().namespace)?;
                let req = request.into_inner();
                self.config
                    .node()
                    .linearizable_barrier()
                    .await
                    .map_err(status::read)?;
                self.exists(&namespace)?;
                self.config
                    .delete_at(namespace.clone(), namespace, &req.path)
                    .await?;
                Ok(pb::DeleteResponse {})
            })
            .await
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.metrics
            .observed("config.Read", async {
                let namespace = Self::namespace(&request, &request.get_ref().namespace)?;
                let req = request.into_inner();
                let data = self.value_text(&namespace, &req.path, false).await?;
                Ok(pb::ReadResponse {
                    change: Some(pb::Change {
                        namespace,
                        path: req.path,
                        change_set: Some(pb::ChangeSet {
                            data,
                            format: "json".into(),
                            ..Default::default()
                        }),
                    }),
                })
            })
            .await
    }
}
