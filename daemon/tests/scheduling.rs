//! Timers and callbacks through SchedulerService: order, FIFO ties, cancel, never early,
//! idempotency.

mod support;

use std::time::Instant;

use loopd_proto::SchedulerServiceClient;
use loopd_proto::pb;
use pb::call_later_request::After;
use support::{Daemon, collect, emit, fired, subscribe};

fn later(secs: f64, tag: &str) -> pb::CallLaterRequest {
    pb::CallLaterRequest {
        after: Some(After::DelaySeconds(secs)),
        action: emit(tag),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_hundred_random_timers_fire_in_deadline_order_and_never_early() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut whens = Vec::new();
    for i in 0..100 {
        let delay = rng.f64() * 0.3;
        let sent = Instant::now();
        let resp = client
            .call_later(later(delay, &i.to_string()))
            .await
            .unwrap()
            .into_inner();
        whens.push((resp.when, resp.handle_id, sent, delay));
    }
    let got = collect(&mut events, 100, |e| fired(e).is_some()).await;
    let order: Vec<u64> = got.iter().filter_map(fired).map(|f| f.handle_id).collect();
    let mut expected = whens.clone();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let expected: Vec<u64> = expected.iter().map(|w| w.1).collect();
    assert_eq!(order, expected, "timers fire by deadline, ties by id");
    let mut late_sum_ns = 0u64;
    for f in got.iter().filter_map(fired) {
        assert!(f.fired_time >= f.scheduled_time, "early: {f:?}");
        let lateness = f.lateness.expect("lateness");
        assert!(lateness.seconds >= 0 && lateness.nanos >= 0, "{lateness:?}");
        late_sum_ns += lateness.seconds as u64 * 1_000_000_000 + lateness.nanos as u64;
    }
    let metrics = loopd_proto::DaemonServiceClient::new(daemon.channel().await)
        .get_metrics(pb::GetMetricsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let default = &metrics.loops[0];
    assert_eq!(default.timers_fired, 100);
    let hist = default.timer_lateness.as_ref().unwrap();
    assert_eq!(hist.count, 100);
    assert_eq!(hist.counts.iter().sum::<u64>(), 100);
    assert_eq!(hist.counts.len(), hist.upper_bounds_ns.len() + 1);
    // Event lateness is rounded to whole ns per timer; the loop's sum is too.
    assert!(
        hist.sum_ns.abs_diff(late_sum_ns) <= 100,
        "{} vs {late_sum_ns}",
        hist.sum_ns
    );
}

#[tokio::test]
async fn equal_deadlines_fire_in_scheduling_order() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel.clone());
    let time = loopd_proto::LoopServiceClient::new(channel)
        .get_time(pb::GetTimeRequest::default())
        .await
        .unwrap()
        .into_inner()
        .time;
    let at = time + 0.2;
    let mut ids = Vec::new();
    for i in 0..20 {
        let resp = client
            .call_at(pb::CallAtRequest {
                when: at,
                action: emit(&i.to_string()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.when, at);
        ids.push(resp.handle_id);
    }
    // A batch: entries with the same delay share one deadline and keep list order.
    let entries = (0..10)
        .map(|i| pb::ScheduleEntry {
            when: Some(pb::schedule_entry::When::DelaySeconds(0.25)),
            action: emit(&format!("b{i}")),
            request_id: String::new(),
        })
        .collect();
    let batch = client
        .schedule_batch(pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries,
        })
        .await
        .unwrap()
        .into_inner();
    let batch_whens: Vec<_> = batch.results.iter().map(|r| r.when).collect();
    assert!(
        batch_whens.windows(2).all(|w| w[0] == w[1]),
        "{batch_whens:?}"
    );
    ids.extend(batch.results.iter().map(|r| r.handle_id));
    let got = collect(&mut events, 30, |e| fired(e).is_some()).await;
    let order: Vec<u64> = got.iter().filter_map(fired).map(|f| f.handle_id).collect();
    assert_eq!(order, ids);
}

#[tokio::test]
async fn a_cancelled_timer_never_fires_and_cancel_is_idempotent() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel);
    let doomed = client
        .call_later(later(0.05, "doomed"))
        .await
        .unwrap()
        .into_inner();
    let kept = client
        .call_later(later(0.1, "kept"))
        .await
        .unwrap()
        .into_inner();
    let infinite = client
        .call_later(later(f64::INFINITY, "never"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(infinite.when, f64::INFINITY);
    for id in [doomed.handle_id, infinite.handle_id] {
        let cancel = |id| pb::CancelHandleRequest {
            r#loop: String::new(),
            handle_id: id,
        };
        let first = client.cancel_handle(cancel(id)).await.unwrap().into_inner();
        assert!(first.cancelled);
        assert_eq!(
            first.handle.unwrap().state,
            pb::HandleState::Cancelled as i32
        );
        let second = client.cancel_handle(cancel(id)).await.unwrap().into_inner();
        assert!(!second.cancelled, "cancelling twice changes nothing");
    }
    let got = collect(&mut events, 1, |e| fired(e).is_some()).await;
    assert_eq!(fired(&got[0]).unwrap().handle_id, kept.handle_id);
    let info = client
        .get_handle(pb::GetHandleRequest {
            r#loop: String::new(),
            handle_id: kept.handle_id,
        })
        .await
        .unwrap()
        .into_inner()
        .handle
        .unwrap();
    assert_eq!(info.state, pb::HandleState::Fired as i32);
    assert!(info.fired_time.unwrap() >= info.when.unwrap());
    let listed = client
        .list_handles(pb::ListHandlesRequest {
            states: vec![pb::HandleState::Cancelled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<u64> = listed.handles.iter().map(|h| h.handle_id).collect();
    assert_eq!(ids, [doomed.handle_id, infinite.handle_id]);
}

#[tokio::test]
async fn a_timer_never_fires_before_its_delay_as_the_client_sees_it() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel);
    let sent = Instant::now();
    client.call_later(later(0.05, "x")).await.unwrap();
    collect(&mut events, 1, |e| fired(e).is_some()).await;
    assert!(sent.elapsed().as_secs_f64() >= 0.05, "{:?}", sent.elapsed());
}

#[tokio::test]
async fn a_retried_request_id_returns_the_original_handle() {
    let daemon = Daemon::start();
    let mut client = SchedulerServiceClient::new(daemon.channel().await);
    let mut req = later(10.0, "once");
    req.request_id = "retry-1".into();
    let first = client.call_later(req.clone()).await.unwrap().into_inner();
    let again = client.call_later(req.clone()).await.unwrap().into_inner();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!((first.handle_id, first.when), (again.handle_id, again.when));
    req.action = emit("other");
    let status = client.call_later(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("retry-1"), "{}", status.message());
}

#[tokio::test]
async fn call_soon_runs_in_order_and_the_schedule_stream_answers_each_batch() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel);
    let soon = |tag: &str| pb::ScheduleEntry {
        when: Some(pb::schedule_entry::When::Soon(())),
        action: emit(tag),
        request_id: String::new(),
    };
    let batches: Vec<_> = (0..3)
        .map(|b| pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: (0..5).map(|i| soon(&format!("{b}-{i}"))).collect(),
        })
        .collect();
    let mut answers = client
        .schedule(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        assert_eq!(answer.results.len(), 5);
        ids.extend(answer.results.iter().map(|r| r.handle_id));
    }
    assert_eq!(ids.len(), 15);
    let got = collect(&mut events, 15, |e| {
        matches!(e.kind, Some(pb::event::Kind::CallbackRun(_)))
    })
    .await;
    let order: Vec<u64> = got
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::event::Kind::CallbackRun(c)) => Some(c.handle_id),
            _ => None,
        })
        .collect();
    assert_eq!(order, ids);
}

#[tokio::test]
async fn handles_are_listed_a_page_at_a_time() {
    let daemon = Daemon::start();
    let mut client = SchedulerServiceClient::new(daemon.channel().await);
    let mut ids = Vec::new();
    for i in 0..5 {
        let resp = client
            .call_later(later(60.0, &i.to_string()))
            .await
            .unwrap();
        ids.push(resp.into_inner().handle_id);
    }
    let mut listed = Vec::new();
    let mut token = String::new();
    for page in 0.. {
        assert!(page < 5, "pagination does not end");
        let resp = client
            .list_handles(pb::ListHandlesRequest {
                page_size: 2,
                page_token: token.clone(),
                kind: pb::HandleKind::Timer as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.handles.len() <= 2);
        listed.extend(resp.handles.iter().map(|h| h.handle_id));
        token = resp.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, ids);
    let bad = client
        .list_handles(pb::ListHandlesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("garbage"), "{}", bad.message());
}

#[tokio::test]
async fn a_wall_clock_timer_fires_at_its_time() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let mut client = SchedulerServiceClient::new(channel);
    let at = std::time::SystemTime::now() + std::time::Duration::from_millis(50);
    let resp = client
        .call_at_wall_time(pb::CallAtWallTimeRequest {
            when: Some(at.into()),
            action: emit("wall"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = collect(&mut events, 1, |e| fired(e).is_some()).await;
    assert_eq!(fired(&got[0]).unwrap().handle_id, resp.handle_id);
    assert!(
        std::time::SystemTime::now() >= at,
        "fired before its wall time"
    );
}

#[tokio::test]
async fn a_failing_batch_ends_the_schedule_stream_and_earlier_batches_stay() {
    let daemon = Daemon::start();
    let mut client = SchedulerServiceClient::new(daemon.channel().await);
    let entry = |secs: f64| pb::ScheduleEntry {
        when: Some(pb::schedule_entry::When::DelaySeconds(secs)),
        action: None,
        request_id: String::new(),
    };
    let batches = vec![
        pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: vec![entry(60.0)],
        },
        pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: vec![entry(60.0), entry(f64::NAN)],
        },
        pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: vec![entry(60.0)],
        },
    ];
    let mut answers = client
        .schedule(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let first = answers.message().await.unwrap().unwrap();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("entry 1") && status.message().contains("NaN"),
        "{}",
        status.message()
    );
    let kept = client
        .get_handle(pb::GetHandleRequest {
            r#loop: String::new(),
            handle_id: first.results[0].handle_id,
        })
        .await
        .unwrap()
        .into_inner()
        .handle
        .unwrap();
    assert_eq!(kept.state, pb::HandleState::Pending as i32);
    let listed = client
        .list_handles(pb::ListHandlesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.handles.len(),
        1,
        "the failed batch scheduled nothing"
    );
}
