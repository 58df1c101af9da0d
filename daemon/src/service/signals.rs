//! SignalService: a loop's Unix signal handlers, running actions when the daemon gets
//! a signal (asyncio's add_signal_handler / remove_signal_handler).

use loopd_proto::SignalService;
use loopd_proto::pb;
use tonic::{Request, Response, Status};

use super::{Api, check_action};
use crate::process::{self, signals};
use crate::status::Result;

/// The signal a request names, checked against what the daemon keeps.
fn handleable(text: &str) -> Result<i32> {
    let sig = signals::parse(text)?;
    signals::check_handleable(sig, &process::signal_settings().handover)?;
    Ok(sig)
}

#[tonic::async_trait]
impl SignalService for Api {
    async fn add_signal_handler(
        &self,
        request: Request<pb::AddSignalHandlerRequest>,
    ) -> Result<Response<pb::AddSignalHandlerResponse>, Status> {
        let req = request.into_inner();
        let sig = handleable(&req.signal)?;
        check_action(req.action.as_ref(), self.limits())?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let action = req.action;
        let (handler, replaced) = shared
            .call(move |ctx| signals::add(ctx, sig, action))
            .await?;
        Ok(Response::new(pb::AddSignalHandlerResponse {
            handler: Some(handler),
            replaced,
        }))
    }

    async fn remove_signal_handler(
        &self,
        request: Request<pb::RemoveSignalHandlerRequest>,
    ) -> Result<Response<pb::RemoveSignalHandlerResponse>, Status> {
        let req = request.into_inner();
        let sig = signals::parse(&req.signal)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let removed = shared.call(move |ctx| signals::remove(ctx, sig)).await?;
        Ok(Response::new(pb::RemoveSignalHandlerResponse { removed }))
    }

    async fn list_signal_handlers(
        &self,
        request: Request<pb::ListSignalHandlersRequest>,
    ) -> Result<Response<pb::ListSignalHandlersResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let handlers = shared.call(|_| Ok(signals::list())).await?;
        Ok(Response::new(pb::ListSignalHandlersResponse { handlers }))
    }
}
