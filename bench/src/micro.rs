//! Micro's APIs under load (`micro-store-write`, `micro-store-read`, `micro-events-pub`),
//! through clients generated from the Micro-package protos, as an unmodified Micro service
//! calls them: the cost of the Micro edge, next to the native workloads it maps onto
//! (`kv-put`, `kv-get`, `stream-pub`) in the same run.

use anyhow::Context;
use strata_proto::micro::events as events_pb;
use strata_proto::micro::store as store_pb;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::{measure, Args, Measured};

/// The Micro workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroWorkload {
    StoreWrite,
    StoreRead,
    EventsPublish,
}

impl MicroWorkload {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "micro-store-write" => Some(Self::StoreWrite),
            "micro-store-read" => Some(Self::StoreRead),
            "micro-events-pub" => Some(Self::EventsPublish),
            _ => None,
        }
    }
}

/// Adds the access token to every call, when there is one.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Authorized = InterceptedService<Channel, Bearer>;

/// Client `index`'s connection, with the token when one was given.
async fn channel(args: &Args, index: usize) -> anyhow::Result<Authorized> {
    let endpoints: Vec<&str> = args.endpoint.split(',').map(str::trim).collect();
    let endpoint = if args.spread {
        endpoints[index % endpoints.len()]
    } else {
        endpoints[0]
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let token = args
        .token
        .as_ref()
        .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
        .transpose()?;
    Ok(InterceptedService::new(channel, Bearer(token)))
}

fn outcome<T>(result: Result<T, tonic::Status>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(status) => match status.code() {
            tonic::Code::Unavailable => "error_unavailable",
            tonic::Code::DeadlineExceeded => "error_timeout",
            tonic::Code::NotFound => "not_found",
            _ => "error_other",
        },
    }
}

fn write_request(args: &Args, key: String, value: &[u8]) -> store_pb::WriteRequest {
    store_pb::WriteRequest {
        record: Some(store_pb::Record {
            key,
            value: value.to_vec(),
            ..Default::default()
        }),
        options: Some(store_pb::WriteOptions {
            database: args.namespace.clone(),
            table: "bench".into(),
        }),
    }
}

pub async fn run(args: &Args, workload: MicroWorkload) -> anyhow::Result<Measured> {
    let value = std::sync::Arc::new(crate::value_bytes(args.value_size));
    let mut channels = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        channels.push(channel(args, index).await?);
    }
    if workload == MicroWorkload::StoreRead {
        let mut store = store_pb::store_client::StoreClient::new(channels[0].clone());
        for key in 0..args.keys {
            store
                .write(write_request(args, format!("key-{key:012}"), &value))
                .await
                .context("preloading keys")?;
        }
    }
    let topic = format!("bench.micro.{}", std::process::id());
    let clients = channels
        .into_iter()
        .map(|channel| {
            let (args, value, topic) = (args.clone(), value.clone(), topic.clone());
            let store = store_pb::store_client::StoreClient::new(channel.clone());
            let events = events_pb::stream_client::StreamClient::new(channel);
            move |op: u64, random: u64| {
                let (args, value, topic) = (args.clone(), value.clone(), topic.clone());
                let (mut store, mut events) = (store.clone(), events.clone());
                async move {
                    match workload {
                        MicroWorkload::StoreWrite => outcome(
                            store
                                .write(write_request(&args, format!("put-{op:012}"), &value))
                                .await,
                        ),
                        MicroWorkload::StoreRead => outcome(
                            store
                                .read(store_pb::ReadRequest {
                                    key: format!("key-{:012}", random % args.keys),
                                    options: Some(store_pb::ReadOptions {
                                        database: args.namespace.clone(),
                                        table: "bench".into(),
                                        ..Default::default()
                                    }),
                                })
                                .await,
                        ),
                        MicroWorkload::EventsPublish => outcome(
                            events
                                .publish(events_pb::PublishRequest {
                                    topic,
                                    payload: value.to_vec(),
                                    ..Default::default()
                                })
                                .await,
                        ),
                    }
                }
            }
        })
        .collect();
    measure(args, clients).await
}
