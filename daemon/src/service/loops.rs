//! LoopService: the daemon's loop policy (create, start, stop, close, inspect).

use std::time::SystemTime;

use futures_util::future::join_all;
use loopd_proto::LoopService;
use loopd_proto::pb;
use tonic::{Request, Response, Status};

use super::{Api, caller_uid, non_negative};
use crate::loops::LoopSettings;
use crate::status::{Error, Result};

/// Reads `CLOCK_MONOTONIC` in seconds, as the engine's `time()` does; for closed loops.
fn monotonic_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

impl Api {
    async fn loop_info(&self, name: &str) -> Result<pb::LoopInfo> {
        self.daemon.registry.get(name)?.info().await
    }
}

#[tonic::async_trait]
impl LoopService for Api {
    async fn list_loops(
        &self,
        _request: Request<pb::ListLoopsRequest>,
    ) -> Result<Response<pb::ListLoopsResponse>, Status> {
        self.daemon.registry.check_serving()?;
        let loops = self.daemon.registry.all();
        let infos = join_all(loops.iter().map(|shared| shared.info())).await;
        let loops = infos.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ListLoopsResponse { loops }))
    }

    async fn create_loop(
        &self,
        request: Request<pb::CreateLoopRequest>,
    ) -> Result<Response<pb::CreateLoopResponse>, Status> {
        let creator_uid = caller_uid(&request);
        let req = request.into_inner();
        let slow_callback = req
            .slow_callback_duration
            .as_ref()
            .map(|d| non_negative("slow_callback_duration", d))
            .transpose()?;
        let settings = LoopSettings {
            debug: req.debug,
            slow_callback,
            creator_uid,
        };
        let shared = self.daemon.registry.create(&req.r#loop, settings).await?;
        let info = shared.info().await?;
        Ok(Response::new(pb::CreateLoopResponse {
            loop_info: Some(info),
        }))
    }

    async fn get_loop(
        &self,
        request: Request<pb::GetLoopRequest>,
    ) -> Result<Response<pb::GetLoopResponse>, Status> {
        let info = self.loop_info(&request.into_inner().r#loop).await?;
        Ok(Response::new(pb::GetLoopResponse {
            loop_info: Some(info),
        }))
    }

    async fn start_loop(
        &self,
        request: Request<pb::StartLoopRequest>,
    ) -> Result<Response<pb::StartLoopResponse>, Status> {
        let shared = self.daemon.registry.get(&request.into_inner().r#loop)?;
        let info = shared
            .call_later(|ctx, answer| ctx.request_start(answer))
            .await?;
        Ok(Response::new(pb::StartLoopResponse {
            loop_info: Some(info),
        }))
    }

    async fn stop_loop(
        &self,
        request: Request<pb::StopLoopRequest>,
    ) -> Result<Response<pb::StopLoopResponse>, Status> {
        let shared = self.daemon.registry.get(&request.into_inner().r#loop)?;
        let info = shared
            .call_later(|ctx, answer| ctx.request_stop(answer))
            .await?;
        Ok(Response::new(pb::StopLoopResponse {
            loop_info: Some(info),
        }))
    }

    async fn close_loop(
        &self,
        request: Request<pb::CloseLoopRequest>,
    ) -> Result<Response<pb::CloseLoopResponse>, Status> {
        let shared = self.daemon.registry.get(&request.into_inner().r#loop)?;
        if shared.name == crate::loops::DEFAULT_LOOP {
            return Err(Error::CloseDefault.into());
        }
        let info = match shared.call(|ctx| ctx.request_close()).await {
            // Closing a closed loop changes nothing.
            Err(Error::LoopClosed(name)) => shared.final_info().ok_or(Error::LoopClosed(name))?,
            other => other?,
        };
        self.daemon.registry.forget_closed();
        Ok(Response::new(pb::CloseLoopResponse {
            loop_info: Some(info),
        }))
    }

    async fn set_debug(
        &self,
        request: Request<pb::SetDebugRequest>,
    ) -> Result<Response<pb::SetDebugResponse>, Status> {
        let req = request.into_inner();
        let slow = req
            .slow_callback_duration
            .as_ref()
            .map(|d| non_negative("slow_callback_duration", d))
            .transpose()?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let debug = req.debug;
        let info = shared
            .call(move |ctx| {
                ctx.check_open()?;
                ctx.lp.set_debug(debug);
                if let Some(slow) = slow {
                    ctx.lp.set_slow_callback_duration(slow);
                }
                Ok(ctx.info())
            })
            .await?;
        Ok(Response::new(pb::SetDebugResponse {
            loop_info: Some(info),
        }))
    }

    async fn get_time(
        &self,
        request: Request<pb::GetTimeRequest>,
    ) -> Result<Response<pb::GetTimeResponse>, Status> {
        let shared = self.daemon.registry.get(&request.into_inner().r#loop)?;
        let time = match shared.call(|ctx| Ok(ctx.lp.time())).await {
            Err(Error::LoopClosed(_)) => monotonic_secs(),
            other => other?,
        };
        Ok(Response::new(pb::GetTimeResponse {
            time,
            wall_time: Some(SystemTime::now().into()),
        }))
    }
}
