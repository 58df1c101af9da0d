//! SchedulerService: call_soon, call_later, call_at and batches, on a loop's thread.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use loopd_proto::SchedulerService;
use loopd_proto::pb;
use pb::schedule_entry::When as W;
use tonic::{Request, Response, Status, Streaming};

use super::{Api, caller_uid, entries, float_secs, wall_time};
use crate::local::When;
use crate::status::{Error, Result};

impl Api {
    /// Validates and schedules a batch on `loop_name` for `uid`.
    async fn schedule(
        &self,
        loop_name: &str,
        uid: u32,
        raw: Vec<pb::ScheduleEntry>,
    ) -> Result<Vec<pb::ScheduleResult>> {
        let entries = entries(raw, self.limits())?;
        let shared = self.daemon.registry.get(loop_name)?;
        shared.call(move |ctx| ctx.schedule(uid, entries)).await
    }

    /// Schedules one entry; a single RPC's error names no index.
    async fn schedule_single(
        &self,
        loop_name: &str,
        uid: u32,
        raw: pb::ScheduleEntry,
    ) -> Result<pb::ScheduleResult> {
        let results = self
            .schedule(loop_name, uid, vec![raw])
            .await
            .map_err(|err| match err {
                Error::Entry { source, .. } => *source,
                other => other,
            })?;
        results
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("a single entry gave no result".into()))
    }
}

fn single(when: W, action: Option<pb::Action>, request_id: String) -> pb::ScheduleEntry {
    pb::ScheduleEntry {
        when: Some(when),
        action,
        request_id,
    }
}

/// ListHandles' filters: known states (not UNSPECIFIED, which no handle is in) and a
/// known kind (UNSPECIFIED: both).
fn check_handle_filter(states: &[i32], kind: i32) -> Result<()> {
    for &state in states {
        if matches!(
            pb::HandleState::try_from(state),
            Ok(pb::HandleState::Unspecified) | Err(_)
        ) {
            return Err(Error::invalid(
                "states",
                format!("{state} (PENDING, CANCELLED or FIRED)"),
            ));
        }
    }
    if pb::HandleKind::try_from(kind).is_err() {
        return Err(Error::invalid(
            "kind",
            format!("{kind} (SOON, TIMER, or UNSPECIFIED for both)"),
        ));
    }
    Ok(())
}

type ScheduleStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::ScheduleBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SchedulerService for Api {
    async fn call_soon(
        &self,
        request: Request<pb::CallSoonRequest>,
    ) -> Result<Response<pb::CallSoonResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let entry = single(W::Soon(()), req.action, req.request_id);
        let result = self.schedule_single(&req.r#loop, uid, entry).await?;
        Ok(Response::new(pb::CallSoonResponse {
            handle_id: result.handle_id,
            duplicate: result.duplicate,
        }))
    }

    async fn call_later(
        &self,
        request: Request<pb::CallLaterRequest>,
    ) -> Result<Response<pb::CallLaterResponse>, Status> {
        use pb::call_later_request::After;
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let when = match req.after {
            Some(After::Delay(d)) => W::Delay(d),
            Some(After::DelaySeconds(s)) => W::DelaySeconds(s),
            None => Err(Error::invalid(
                "delay",
                "unset (set delay or delay_seconds)",
            ))?,
        };
        let entry = single(when, req.action, req.request_id);
        let result = self.schedule_single(&req.r#loop, uid, entry).await?;
        Ok(Response::new(pb::CallLaterResponse {
            handle_id: result.handle_id,
            when: result.when.unwrap_or_default(),
            duplicate: result.duplicate,
        }))
    }

    async fn call_at(
        &self,
        request: Request<pb::CallAtRequest>,
    ) -> Result<Response<pb::CallAtResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        // Checked here too, so that an error names this request's field.
        float_secs("when", req.when, When::At)?;
        let entry = single(W::At(req.when), req.action, req.request_id);
        let result = self.schedule_single(&req.r#loop, uid, entry).await?;
        Ok(Response::new(pb::CallAtResponse {
            handle_id: result.handle_id,
            when: result.when.unwrap_or_default(),
            duplicate: result.duplicate,
        }))
    }

    async fn call_at_wall_time(
        &self,
        request: Request<pb::CallAtWallTimeRequest>,
    ) -> Result<Response<pb::CallAtWallTimeResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let when = req
            .when
            .ok_or_else(|| Error::invalid("when", "unset (a Timestamp is required)"))?;
        wall_time("when", Some(&when))?;
        let entry = single(W::AtWallTime(when), req.action, req.request_id);
        let result = self.schedule_single(&req.r#loop, uid, entry).await?;
        Ok(Response::new(pb::CallAtWallTimeResponse {
            handle_id: result.handle_id,
            when: result.when.unwrap_or_default(),
            duplicate: result.duplicate,
        }))
    }

    async fn schedule_batch(
        &self,
        request: Request<pb::ScheduleBatchRequest>,
    ) -> Result<Response<pb::ScheduleBatchResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let results = self.schedule(&req.r#loop, uid, req.entries).await?;
        Ok(Response::new(pb::ScheduleBatchResponse { results }))
    }

    type ScheduleStream = ScheduleStream;

    async fn schedule(
        &self,
        request: Request<Streaming<pb::ScheduleBatchRequest>>,
    ) -> Result<Response<Self::ScheduleStream>, Status> {
        let uid = caller_uid(&request);
        let inbound = request.into_inner();
        let api = self.clone();
        let shutdown = self.daemon.shutdown.clone();
        let stream = futures_util::stream::unfold(Some(inbound), move |state| {
            let api = api.clone();
            let mut shutdown = shutdown.clone();
            async move {
                let mut inbound = state?;
                // Shutdown ends a stream whose client is idle, so draining cannot hang.
                let next = tokio::select! {
                    biased;
                    () = async { let _ = shutdown.wait_for(|down| *down).await; } => {
                        return Some((Err(Error::ShuttingDown.into()), None));
                    }
                    next = inbound.next() => next?,
                };
                let batch = match next {
                    Ok(batch) => batch,
                    Err(status) => return Some((Err(crate::status::inbound(status)), None)),
                };
                match api.schedule(&batch.r#loop, uid, batch.entries).await {
                    Ok(results) => Some((Ok(pb::ScheduleBatchResponse { results }), Some(inbound))),
                    Err(err) => Some((Err(err.into()), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_handle(
        &self,
        request: Request<pb::CancelHandleRequest>,
    ) -> Result<Response<pb::CancelHandleResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.handle_id;
        let (cancelled, handle) = shared.call(move |ctx| ctx.cancel_handle(id)).await?;
        Ok(Response::new(pb::CancelHandleResponse {
            cancelled,
            handle: Some(handle),
        }))
    }

    async fn get_handle(
        &self,
        request: Request<pb::GetHandleRequest>,
    ) -> Result<Response<pb::GetHandleResponse>, Status> {
        let req = request.into_inner();
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.handle_id;
        let handle = shared.call(move |ctx| ctx.get_handle(id)).await?;
        Ok(Response::new(pb::GetHandleResponse {
            handle: Some(handle),
        }))
    }

    async fn list_handles(
        &self,
        request: Request<pb::ListHandlesRequest>,
    ) -> Result<Response<pb::ListHandlesResponse>, Status> {
        let req = request.into_inner();
        check_handle_filter(&req.states, req.kind)?;
        let filters = (&req.states, req.kind);
        let (size, token) = (req.page_size, &req.page_token);
        let page = self.page("ListHandles", &req.r#loop, filters, size, token)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (states, kind) = (req.states, req.kind);
        let (handles, next) = shared
            .call(move |ctx| ctx.list_handles(page, &states, kind))
            .await?;
        Ok(Response::new(pb::ListHandlesResponse {
            handles,
            next_page_token: page.next_token(next),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_filters_take_known_values_only() {
        let (pending, timer) = (
            pb::HandleState::Pending as i32,
            pb::HandleKind::Timer as i32,
        );
        assert!(check_handle_filter(&[], 0).is_ok());
        assert!(check_handle_filter(&[pending], timer).is_ok());
        for (states, kind, want) in [
            (vec![0], 0, "invalid states: 0"),
            (vec![pending, 99], 0, "invalid states: 99"),
            (vec![], -1, "invalid kind: -1"),
            (vec![], 3, "invalid kind: 3"),
        ] {
            let err = check_handle_filter(&states, kind).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }
}
