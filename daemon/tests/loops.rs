//! LoopService: named loops stop, start and close as asyncio's do, and stay isolated.

mod support;

use std::time::Duration;

use loopd_proto::pb;
use loopd_proto::{LoopServiceClient, SchedulerServiceClient};
use pb::call_later_request::After;
use pb::event::Kind;
use support::{Daemon, collect, emit, fired, subscribe};
use tonic::Code;

fn create(name: &str) -> pb::CreateLoopRequest {
    pb::CreateLoopRequest {
        r#loop: name.into(),
        ..Default::default()
    }
}

fn later(loop_name: &str, secs: f64, tag: &str) -> pb::CallLaterRequest {
    pb::CallLaterRequest {
        r#loop: loop_name.into(),
        after: Some(After::DelaySeconds(secs)),
        action: emit(tag),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stopped_loop_answers_but_runs_nothing_until_started() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = LoopServiceClient::new(channel.clone());
    let mut sched = SchedulerServiceClient::new(channel.clone());
    let info = loops
        .create_loop(create("work"))
        .await
        .unwrap()
        .into_inner();
    assert!(info.loop_info.unwrap().running);
    let mut events = subscribe(&channel, "work").await;

    let stopped = loops
        .stop_loop(pb::StopLoopRequest {
            r#loop: "work".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    assert!(!stopped.running && !stopped.closed);
    let got = collect(&mut events, 1, |_| true).await;
    assert!(matches!(got[0].kind, Some(Kind::LoopStopped(_))));

    // While stopped: scheduling and describing still answer; nothing fires.
    let timer = sched
        .call_later(later("work", 0.0, "t"))
        .await
        .unwrap()
        .into_inner();
    let handle = sched
        .get_handle(pb::GetHandleRequest {
            r#loop: "work".into(),
            handle_id: timer.handle_id,
        })
        .await
        .unwrap()
        .into_inner()
        .handle
        .unwrap();
    assert_eq!(handle.state, pb::HandleState::Pending as i32);
    let quiet = tokio::time::timeout(Duration::from_millis(100), events.message()).await;
    assert!(quiet.is_err(), "a stopped loop ran something: {quiet:?}");

    let started = loops
        .start_loop(pb::StartLoopRequest {
            r#loop: "work".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    assert!(started.running);
    let got = collect(&mut events, 2, |_| true).await;
    assert!(matches!(got[0].kind, Some(Kind::LoopStarted(_))), "{got:?}");
    assert_eq!(fired(&got[1]).unwrap().handle_id, timer.handle_id);
}

#[tokio::test]
async fn close_needs_a_stopped_loop_and_ends_its_streams() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = LoopServiceClient::new(channel.clone());
    let mut sched = SchedulerServiceClient::new(channel.clone());
    loops.create_loop(create("closing")).await.unwrap();
    let close = || pb::CloseLoopRequest {
        r#loop: "closing".into(),
    };
    let running = loops.close_loop(close()).await.unwrap_err();
    assert_eq!(running.code(), Code::FailedPrecondition);
    assert!(
        running.message().contains("closing"),
        "{}",
        running.message()
    );

    let mut events = subscribe(&channel, "closing").await;
    sched
        .call_later(later("closing", 60.0, "dropped"))
        .await
        .unwrap();
    loops
        .stop_loop(pb::StopLoopRequest {
            r#loop: "closing".into(),
        })
        .await
        .unwrap();
    let closed = loops.close_loop(close()).await.unwrap().into_inner();
    let info = closed.loop_info.unwrap();
    assert!(info.closed && !info.running);
    let again = loops.close_loop(close()).await.unwrap().into_inner();
    assert!(
        again.loop_info.unwrap().closed,
        "closing twice changes nothing"
    );

    let got = collect(&mut events, 2, |_| true).await;
    assert!(matches!(got[1].kind, Some(Kind::LoopClosed(_))), "{got:?}");
    let end = tokio::time::timeout(support::WAIT, events.message())
        .await
        .unwrap();
    assert!(
        matches!(end, Ok(None)),
        "the stream ends OK after LoopClosed: {end:?}"
    );

    let refused = sched
        .call_later(later("closing", 1.0, "x"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("closing"),
        "{}",
        refused.message()
    );
    let listed = loops
        .list_loops(pb::ListLoopsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed
        .loops
        .iter()
        .map(|l| (l.name.as_str(), l.closed))
        .collect();
    assert_eq!(names, [("closing", true), ("default", false)]);

    // A closed loop's name can be reused.
    let fresh = loops
        .create_loop(create("closing"))
        .await
        .unwrap()
        .into_inner();
    assert!(fresh.loop_info.unwrap().running);
    let default = loops
        .close_loop(pb::CloseLoopRequest {
            r#loop: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(default.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_stop_loop_action_stops_its_loop_only() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = LoopServiceClient::new(channel.clone());
    let mut sched = SchedulerServiceClient::new(channel.clone());
    loops.create_loop(create("a")).await.unwrap();
    loops.create_loop(create("b")).await.unwrap();
    let mut a_events = subscribe(&channel, "a").await;
    let mut b_events = subscribe(&channel, "b").await;
    sched
        .call_soon(pb::CallSoonRequest {
            r#loop: "a".into(),
            action: Some(pb::Action {
                kind: Some(pb::action::Kind::StopLoop(pb::StopLoopAction {})),
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let b_timer = sched
        .call_later(later("b", 0.01, "b"))
        .await
        .unwrap()
        .into_inner();
    let got = collect(&mut a_events, 2, |_| true).await;
    assert!(matches!(got[1].kind, Some(Kind::LoopStopped(_))), "{got:?}");
    let got = collect(&mut b_events, 1, |_| true).await;
    assert_eq!(fired(&got[0]).unwrap().handle_id, b_timer.handle_id);
    let a = loops
        .get_loop(pb::GetLoopRequest { r#loop: "a".into() })
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    let b = loops
        .get_loop(pb::GetLoopRequest { r#loop: "b".into() })
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    assert!(!a.running && b.running);
    assert_eq!(b.last_event_seq, 2, "b saw its start and its timer only");
}

#[tokio::test]
async fn create_loop_checks_names_and_duplicates() {
    let daemon = Daemon::start();
    let mut loops = LoopServiceClient::new(daemon.channel().await);
    for (name, code) in [
        ("", Code::InvalidArgument),
        ("bad name", Code::InvalidArgument),
        ("default", Code::AlreadyExists),
    ] {
        let status = loops.create_loop(create(name)).await.unwrap_err();
        assert_eq!(status.code(), code, "{name:?}: {}", status.message());
    }
    loops.create_loop(create("twice")).await.unwrap();
    let status = loops.create_loop(create("twice")).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().contains("twice"));
}

#[tokio::test]
async fn the_loop_limit_counts_open_loops() {
    let daemon = Daemon::start_with("[limits]\nmax_loops = 2\n");
    let mut loops = LoopServiceClient::new(daemon.channel().await);
    loops.create_loop(create("second")).await.unwrap();
    let status = loops.create_loop(create("third")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains('2'), "{}", status.message());
    let name = || "second".to_string();
    loops
        .stop_loop(pb::StopLoopRequest { r#loop: name() })
        .await
        .unwrap();
    loops
        .close_loop(pb::CloseLoopRequest { r#loop: name() })
        .await
        .unwrap();
    loops
        .create_loop(create("third"))
        .await
        .expect("a closed loop frees its place");
    // Closed loops are kept, but no more than max_loops of them.
    for name in ["third", "fourth", "fifth"] {
        let name = || name.to_string();
        loops
            .stop_loop(pb::StopLoopRequest { r#loop: name() })
            .await
            .unwrap();
        loops
            .close_loop(pb::CloseLoopRequest { r#loop: name() })
            .await
            .unwrap();
        if name() != "fifth" {
            let next = if name() == "third" { "fourth" } else { "fifth" };
            loops.create_loop(create(next)).await.unwrap();
        }
    }
    let listed = loops
        .list_loops(pb::ListLoopsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.loops.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["default", "fifth", "fourth"],
        "the oldest closed loops go first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_stop_and_start_are_all_answered_and_run() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut loops = LoopServiceClient::new(channel.clone());
    loops.create_loop(create("churn")).await.unwrap();
    let mut events = subscribe(&channel, "churn").await;
    let flipper = {
        let mut loops = loops.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                let name = || "churn".to_string();
                loops
                    .stop_loop(pb::StopLoopRequest { r#loop: name() })
                    .await
                    .unwrap();
                loops
                    .start_loop(pb::StartLoopRequest { r#loop: name() })
                    .await
                    .unwrap();
            }
        })
    };
    let schedulers: Vec<_> = (0..4)
        .map(|_| {
            let mut sched = SchedulerServiceClient::new(channel.clone());
            tokio::spawn(async move {
                for _ in 0..100 {
                    let soon = pb::CallSoonRequest {
                        r#loop: "churn".into(),
                        ..Default::default()
                    };
                    sched.call_soon(soon).await.unwrap();
                }
            })
        })
        .collect();
    let all = async {
        flipper.await.unwrap();
        for s in schedulers {
            s.await.unwrap();
        }
    };
    tokio::time::timeout(support::WAIT, all)
        .await
        .expect("every request was answered");
    let ran = collect(&mut events, 400, |e| {
        matches!(e.kind, Some(Kind::CallbackRun(_)))
    })
    .await;
    assert_eq!(ran.len(), 400);
}

#[tokio::test]
async fn set_debug_changes_the_mode_and_threshold() {
    let daemon = Daemon::start();
    let mut loops = LoopServiceClient::new(daemon.channel().await);
    let slow = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    let info = loops
        .set_debug(pb::SetDebugRequest {
            r#loop: String::new(),
            debug: true,
            slow_callback_duration: slow(0, 5_000_000),
        })
        .await
        .unwrap()
        .into_inner()
        .loop_info
        .unwrap();
    assert!(info.debug);
    assert_eq!(info.slow_callback_duration, slow(0, 5_000_000));
    let status = loops
        .set_debug(pb::SetDebugRequest {
            r#loop: String::new(),
            debug: false,
            slow_callback_duration: slow(-2, 0),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("-2"), "{}", status.message());
}
