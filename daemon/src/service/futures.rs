//! FutureService: asyncio futures shared between clients, kept on their loop's thread.

use std::time::Duration;

use loopd_proto::FutureService;
use loopd_proto::pb;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use super::{
    Api, caller_uid, check_message, check_payload, check_request_id, grpc_timeout, non_negative,
};
use crate::status::{Error, Result};

/// How much sooner than the call's own deadline WaitFuture answers DEADLINE_EXCEEDED:
/// tonic's timeout layer started its clock before this handler did, and answers
/// CANCELLED when it fires, so the handler must win the race by a margin.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

impl Api {
    async fn wait(
        &self,
        loop_name: &str,
        id: u64,
        timeout: Option<Duration>,
        deadline: Option<Duration>,
    ) -> Result<pb::FutureInfo> {
        let shared = self.daemon.registry.get(loop_name)?;
        let (tx, rx) = oneshot::channel();
        if let Some(done) = shared.call(move |ctx| ctx.wait_future(id, tx)).await? {
            return Ok(done);
        }
        let deadline = deadline.map(|d| d.saturating_sub(DEADLINE_MARGIN.min(d / 10)));
        let (limit, on_limit_get) = match (timeout, deadline) {
            (Some(t), Some(d)) if d < t => (Some(d), false),
            (Some(t), _) => (Some(t), true),
            (None, d) => (d, false),
        };
        let sleep = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let mut shutdown = self.daemon.shutdown.clone();
        tokio::select! {
            done = rx => done.map_err(|_| match shared.gone() {
                Error::LoopClosed(loop_name) => Error::ClosedWhileWaiting { loop_name, id },
                other => other,
            }),
            () = sleep => {
                if on_limit_get {
                    shared.call(move |ctx| ctx.get_future(id)).await
                } else {
                    Err(Error::DeadlineExceeded(limit.unwrap_or_default(), id))
                }
            }
            () = async { let _ = shutdown.wait_for(|down| *down).await; } => Err(Error::ShuttingDown),
        }
    }
}

#[tonic::async_trait]
impl FutureService for Api {
    async fn create_future(
        &self,
        request: Request<pb::CreateFutureRequest>,
    ) -> Result<Response<pb::CreateFutureResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        check_request_id(&req.request_id)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let key = req.request_id;
        let (future_id, duplicate) = shared.call(move |ctx| ctx.create_future(uid, &key)).await?;
        Ok(Response::new(pb::CreateFutureResponse {
            future_id,
            duplicate,
        }))
    }

    async fn set_result(
        &self,
        request: Request<pb::SetResultRequest>,
    ) -> Result<Response<pb::SetResultResponse>, Status> {
        let req = request.into_inner();
        check_payload("result", &req.result, self.limits())?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, value) = (req.future_id, req.result);
        let future = shared
            .call(move |ctx| ctx.finish_future(id, pb::FutureState::Result, value, ""))
            .await?;
        Ok(Response::new(pb::SetResultResponse {
            future: Some(future),
        }))
    }

    async fn set_exception(
        &self,
        request: Request<pb::SetExceptionRequest>,
    ) -> Result<Response<pb::SetExceptionResponse>, Status> {
        let req = request.into_inner();
        check_message("message", &req.message)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, message) = (req.future_id, req.message);
        let future = shared
            .call(move |ctx| {
                ctx.finish_future(id, pb::FutureState::Exception, Vec::new(), &message)
            })
            .await?;
        Ok(Response::new(pb::SetExceptionResponse {
            future: Some(future),
        }))
    }

    async fn cancel_future(
        &self,
        request: Request<pb::CancelFutureRequest>,
    ) -> Result<Response<pb::CancelFutureResponse>, Status> {
        let req = request.into_inner();
        check_message("message", &req.message)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, message) = (req.future_id, req.message);
        let (cancelled, future) = shared
            .call(move |ctx| ctx.cancel_future(id, &message))
            .await?;
        Ok(Response::new(pb::CancelFutureResponse {
            cancelled,
            future: Some(future),
        }))
    }

    async fn get_future(
        &self,
        request: Request<pb::GetFutureRequest>,
    ) -> Result<Response<pb::GetFutureResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.future_id;
        let future = shared.call(move |ctx| ctx.get_future(id)).await?;
        Ok(Response::new(pb::GetFutureResponse {
            future: Some(future),
        }))
    }

    async fn wait_future(
        &self,
        request: Request<pb::WaitFutureRequest>,
    ) -> Result<Response<pb::WaitFutureResponse>, Status> {
        let deadline = grpc_timeout(request.metadata());
        let req = request.into_inner();
        let timeout = req
            .timeout
            .as_ref()
            .map(|t| non_negative("timeout", t))
            .transpose()?;
        let future = self
            .wait(&req.r#loop, req.future_id, timeout, deadline)
            .await?;
        Ok(Response::new(pb::WaitFutureResponse {
            future: Some(future),
        }))
    }
}
