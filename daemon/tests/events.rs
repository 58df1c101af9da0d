//! EventService: resuming from since_seq loses and repeats nothing; falling behind a
//! tiny ring gives an explicit Gap.

mod support;

use loopd_proto::pb;
use loopd_proto::{EventServiceClient, LoopServiceClient, SchedulerServiceClient};
use pb::event::Kind;
use support::{Daemon, collect, emit, subscribe, subscribe_since};
use tonic::Code;
use tonic::transport::Channel;

async fn soon_batch(channel: &Channel, n: usize, prefix: &str) -> Vec<u64> {
    let entries = (0..n)
        .map(|i| pb::ScheduleEntry {
            when: Some(pb::schedule_entry::When::Soon(())),
            action: emit(&format!("{prefix}{i}")),
            request_id: String::new(),
        })
        .collect();
    SchedulerServiceClient::new(channel.clone())
        .schedule_batch(pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries,
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .iter()
        .map(|r| r.handle_id)
        .collect()
}

fn callback_id(event: &pb::Event) -> Option<u64> {
    match &event.kind {
        Some(Kind::CallbackRun(c)) => Some(c.handle_id),
        _ => None,
    }
}

async fn last_seq(channel: &Channel) -> u64 {
    LoopServiceClient::new(channel.clone())
        .get_loop(pb::GetLoopRequest::default())
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap()
        .last_event_seq
}

#[tokio::test]
async fn resuming_after_the_last_seq_seen_loses_and_repeats_nothing() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut first = subscribe(&channel, "").await;
    let mut ids = soon_batch(&channel, 20, "a").await;
    let mut seen = collect(&mut first, 10, |e| callback_id(e).is_some()).await;
    seen.truncate(10); // pretend the client crashed after 10 events
    drop(first);
    let resume_from = seen.last().unwrap().seq + 1;
    ids.extend(soon_batch(&channel, 20, "b").await);

    let mut second = subscribe_since(&channel, "", resume_from).await;
    let rest = collect(&mut second, 30, |e| callback_id(e).is_some()).await;
    let all: Vec<u64> = seen.iter().chain(&rest).filter_map(callback_id).collect();
    assert_eq!(all, ids, "every callback once, in order");
    let seqs: Vec<u64> = seen.iter().chain(&rest).map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn a_subscriber_behind_a_tiny_ring_gets_a_gap_then_continues() {
    let daemon = Daemon::start_with("[limits]\nevent_ring_capacity = 8\n");
    let channel = daemon.channel().await;
    let before = last_seq(&channel).await;
    let ids = soon_batch(&channel, 50, "x").await;
    // Wait until all 50 ran, then read from the start.
    let deadline = std::time::Instant::now() + support::WAIT;
    while last_seq(&channel).await < before + 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the callbacks did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let newest = last_seq(&channel).await;
    assert_eq!(newest, before + 50);

    let mut late = subscribe_since(&channel, "", before + 1).await;
    let got = collect(&mut late, 9, |_| true).await;
    match &got[0].kind {
        Some(Kind::Gap(gap)) => {
            assert_eq!((gap.from_seq, gap.to_seq), (before + 1, newest - 8));
            assert_eq!(got[0].seq, gap.to_seq);
        }
        other => panic!("expected a gap first, got {other:?}"),
    }
    let kept: Vec<u64> = got[1..].iter().filter_map(callback_id).collect();
    assert_eq!(kept, ids[42..], "the 8 newest events follow the gap");

    let metrics = loopd_proto::DaemonServiceClient::new(channel.clone())
        .get_metrics(pb::GetMetricsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let default = &metrics.loops[0];
    assert_eq!(default.gaps, 1);
    assert_eq!(default.events_missed, newest - 8 - before);
    assert_eq!(default.subscribers, 1);
}

#[tokio::test]
async fn filters_and_bad_since_seq() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut client = EventServiceClient::new(channel.clone());
    let ids = soon_batch(&channel, 1, "warmup").await;
    let mut all = subscribe_since(&channel, "", 1).await;
    collect(&mut all, 1, |e| callback_id(e) == Some(ids[0])).await;

    let next = last_seq(&channel).await + 1;
    let status = client
        .subscribe(pb::SubscribeRequest {
            since_seq: next + 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains(&(next + 1).to_string()),
        "{}",
        status.message()
    );

    let ids = soon_batch(&channel, 5, "f").await;
    let mut only_third = client
        .subscribe(pb::SubscribeRequest {
            since_seq: next,
            handle_ids: vec![ids[2]],
            kinds: vec![pb::EventKind::CallbackRun as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = collect(&mut only_third, 1, |_| true).await;
    assert_eq!(got.len(), 1);
    assert_eq!(callback_id(&got[0]), Some(ids[2]));
}

#[tokio::test]
async fn the_subscriber_limit_is_enforced_and_released() {
    let daemon = Daemon::start_with("[limits]\nmax_subscribers = 1\n");
    let channel = daemon.channel().await;
    let first = subscribe(&channel, "").await;
    let mut client = EventServiceClient::new(channel.clone());
    let status = client
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains('1'), "{}", status.message());
    drop(first);
    // The server notices the cancelled stream asynchronously.
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        match client.subscribe(pb::SubscribeRequest::default()).await {
            Ok(_) => break,
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the slot was never released"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}
