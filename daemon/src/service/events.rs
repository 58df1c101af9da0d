//! EventService: a loop's events, streamed in batches from a cursor into its ring.

use std::pin::Pin;

use futures_util::Stream;
use loopd_proto::EventService;
use loopd_proto::pb;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::Api;
use crate::events::{Filter, SubscriberSlot, Subscription};
use crate::status::Error;

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::EventBatch, Status>> + Send>>;

/// Streams batches lazily: a batch is cut from the ring only when tonic asks for the next
/// item, so nothing piles up for a slow reader. Shutdown ends the stream with UNAVAILABLE.
fn stream(sub: Subscription, shutdown: watch::Receiver<bool>) -> EventStream {
    let stream = futures_util::stream::unfold(Some((sub, shutdown)), |state| async move {
        let (mut sub, mut shutdown) = state?;
        let next = tokio::select! {
            biased;
            () = async { let _ = shutdown.wait_for(|down| *down).await; } => Err(Error::ShuttingDown),
            batch = sub.next_batch() => Ok(batch),
        };
        match next {
            Err(err) => Some((Err(err.into()), None)),
            Ok(Some(batch)) => Some((Ok(batch), Some((sub, shutdown)))),
            Ok(None) => None,
        }
    });
    Box::pin(stream)
}

#[tonic::async_trait]
impl EventService for Api {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let registry = &self.daemon.registry;
        let shared = registry.get(&req.r#loop)?;
        let filter = Filter::new(&req.kinds, &req.handle_ids, &req.future_ids)?
            .with_net(&req.server_ids, &req.transport_ids, &req.endpoint_ids)
            .with_processes(&req.process_ids);
        let cursor = shared.ring.start_cursor(req.since_seq)?;
        let slot = SubscriberSlot::acquire(
            &registry.subscribers,
            self.limits().max_subscribers,
            &shared.ring,
        )?;
        let sub = Subscription::new(
            shared.ring.clone(),
            cursor,
            filter,
            req.max_batch_events,
            slot,
        );
        Ok(Response::new(stream(sub, self.daemon.shutdown.clone())))
    }
}
