//! FutureService: one client resolves, another waits; timeouts and deadlines.

mod support;

use std::time::Duration;

use loopd_proto::pb;
use loopd_proto::{FutureServiceClient, SchedulerServiceClient};
use support::Daemon;
use tonic::Code;

fn wait(id: u64, timeout: Option<Duration>) -> pb::WaitFutureRequest {
    pb::WaitFutureRequest {
        r#loop: String::new(),
        future_id: id,
        timeout: timeout.map(|t| t.try_into().unwrap()),
    }
}

#[tokio::test]
async fn a_future_resolved_by_one_client_wakes_another() {
    let daemon = Daemon::start();
    let mut creator = FutureServiceClient::new(daemon.channel().await);
    let mut waiter = FutureServiceClient::new(daemon.channel().await);
    let id = creator
        .create_future(pb::CreateFutureRequest::default())
        .await
        .unwrap()
        .into_inner()
        .future_id;
    let waiting = tokio::spawn(async move { waiter.wait_future(wait(id, None)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "the wait ended before the result was set"
    );
    creator
        .set_result(pb::SetResultRequest {
            r#loop: String::new(),
            future_id: id,
            result: b"42".to_vec(),
        })
        .await
        .unwrap();
    let done = tokio::time::timeout(support::WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner()
        .future
        .unwrap();
    assert_eq!(done.state, pb::FutureState::Result as i32);
    assert_eq!(done.result, b"42");

    let again = creator
        .set_result(pb::SetResultRequest {
            r#loop: String::new(),
            future_id: id,
            result: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let cancel = creator
        .cancel_future(pb::CancelFutureRequest {
            r#loop: String::new(),
            future_id: id,
            message: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!cancel.cancelled, "cancelling a done future answers false");
}

#[tokio::test]
async fn a_timer_can_resolve_a_future() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut futures = FutureServiceClient::new(channel.clone());
    let id = futures
        .create_future(pb::CreateFutureRequest::default())
        .await
        .unwrap()
        .into_inner()
        .future_id;
    SchedulerServiceClient::new(channel)
        .call_later(pb::CallLaterRequest {
            after: Some(pb::call_later_request::After::DelaySeconds(0.02)),
            action: Some(pb::Action {
                kind: Some(pb::action::Kind::ResolveFuture(pb::ResolveFutureAction {
                    future_id: id,
                    value: b"from a timer".to_vec(),
                })),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = futures
        .wait_future(wait(id, Some(support::WAIT)))
        .await
        .unwrap()
        .into_inner()
        .future
        .unwrap();
    assert_eq!(done.result, b"from a timer");
}

#[tokio::test]
async fn waits_end_at_the_timeout_or_the_deadline() {
    let daemon = Daemon::start();
    let mut futures = FutureServiceClient::new(daemon.channel().await);
    let create = pb::CreateFutureRequest {
        r#loop: String::new(),
        request_id: "same".into(),
    };
    let first = futures
        .create_future(create.clone())
        .await
        .unwrap()
        .into_inner();
    let retry = futures.create_future(create).await.unwrap().into_inner();
    assert!(retry.duplicate && retry.future_id == first.future_id);
    let id = first.future_id;

    let pending = futures
        .wait_future(wait(id, Some(Duration::from_millis(50))))
        .await
        .unwrap()
        .into_inner()
        .future
        .unwrap();
    assert_eq!(pending.state, pb::FutureState::Pending as i32);

    let mut request = tonic::Request::new(wait(id, None));
    request.set_timeout(Duration::from_millis(200));
    let status = futures.wait_future(request).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );

    let negative = futures
        .wait_future(pb::WaitFutureRequest {
            r#loop: String::new(),
            future_id: id,
            timeout: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("-1"), "{}", negative.message());
}

#[tokio::test]
async fn closing_the_loop_fails_a_pending_wait() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = loopd_proto::LoopServiceClient::new(channel.clone());
    let name = "brief";
    loops
        .create_loop(pb::CreateLoopRequest {
            r#loop: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut futures = FutureServiceClient::new(channel.clone());
    let id = futures
        .create_future(pb::CreateFutureRequest {
            r#loop: name.into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .future_id;
    let waiting = tokio::spawn(async move {
        futures
            .wait_future(pb::WaitFutureRequest {
                r#loop: name.into(),
                future_id: id,
                timeout: None,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    support::stop_and_close(&mut loops, name).await;
    let status = tokio::time::timeout(support::WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(&id.to_string()),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn exceptions_and_cancellations_are_reported_as_future_done_events() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = loopd_proto::EventServiceClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            kinds: vec![pb::EventKind::FutureDone as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut futures = FutureServiceClient::new(channel);
    let create = || {
        let mut futures = futures.clone();
        async move {
            futures
                .create_future(pb::CreateFutureRequest::default())
                .await
                .unwrap()
                .into_inner()
                .future_id
        }
    };
    let (failed, cancelled) = (create().await, create().await);
    let info = futures
        .set_exception(pb::SetExceptionRequest {
            r#loop: String::new(),
            future_id: failed,
            message: "boom".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .future
        .unwrap();
    assert_eq!(info.state, pb::FutureState::Exception as i32);
    assert!(info.done_at.is_some());
    let cancel = futures
        .cancel_future(pb::CancelFutureRequest {
            r#loop: String::new(),
            future_id: cancelled,
            message: "no longer needed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancel.cancelled);
    let got = support::collect(&mut events, 2, |_| true).await;
    let done: Vec<_> = got
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::FutureDone(d)) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 2, "{got:?}");
    assert_eq!(done[0].future_id, failed);
    assert_eq!(done[0].state, pb::FutureState::Exception as i32);
    assert_eq!(done[0].exception_message, "boom");
    assert_eq!(done[1].future_id, cancelled);
    assert_eq!(done[1].state, pb::FutureState::Cancelled as i32);
    assert_eq!(done[1].cancel_message, "no longer needed");
    let long = futures
        .set_exception(pb::SetExceptionRequest {
            r#loop: String::new(),
            future_id: cancelled,
            message: "x".repeat(5000),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert!(long.message().contains("5000"), "{}", long.message());
}
