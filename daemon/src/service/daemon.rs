//! DaemonService: who the daemon is, its limits, and per-loop metrics.

use std::time::SystemTime;

use futures_util::future::join_all;
use loopd_proto::DaemonService;
use loopd_proto::pb;
use tonic::{Request, Response, Status};

use super::Api;
use crate::loops::LoopShared;
use crate::status::{Error, Result};

async fn metrics(shared: &LoopShared) -> Result<Option<pb::LoopMetrics>> {
    match shared.call(|ctx| Ok(ctx.metrics())).await {
        Ok(m) => Ok(Some(m)),
        // A closed loop has no engine left to ask.
        Err(Error::LoopClosed(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

#[tonic::async_trait]
impl DaemonService for Api {
    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        let d = &self.daemon;
        d.registry.check_serving()?;
        let limits = self.limits();
        Ok(Response::new(pb::GetInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime: prost_types::Duration::try_from(d.started.elapsed()).ok(),
            started_at: Some(d.started_at.into()),
            socket_path: d.socket_path.display().to_string(),
            state_dir: d.state_dir.display().to_string(),
            loops: d.registry.all().iter().map(|l| l.name.clone()).collect(),
            limits: Some(pb::DaemonLimits {
                max_payload_bytes: limits.max_payload_bytes as u64,
                max_batch_entries: u32::try_from(limits.max_batch_entries).unwrap_or(u32::MAX),
                max_message_bytes: limits.max_message_bytes as u64,
                event_ring_capacity: limits.event_ring_capacity as u64,
            }),
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let registry = &self.daemon.registry;
        registry.check_serving()?;
        let wanted = request.into_inner().loops;
        let loops = if wanted.is_empty() {
            registry.all()
        } else {
            let mut found = wanted
                .iter()
                .map(|name| registry.get(name))
                .collect::<Result<Vec<_>>>()?;
            found.sort_by(|a, b| a.name.cmp(&b.name));
            found.dedup_by(|a, b| a.name == b.name);
            found
        };
        let snapshots = join_all(loops.iter().map(|l| metrics(l))).await;
        let mut out = Vec::new();
        for snapshot in snapshots {
            out.extend(snapshot?);
        }
        Ok(Response::new(pb::GetMetricsResponse {
            sampled_at: Some(SystemTime::now().into()),
            loops: out,
        }))
    }
}
