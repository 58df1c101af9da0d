//! The client library against a real daemon: every service, typed results, status codes.

mod support;

use std::time::Duration;

use loopd_client::{
    Action, Batch, Client, Code, Entry, Error, EventBody, EventKind, FutureId, FutureState,
    HandleFilter, HandleId, HandleState, LoopOptions, LoopState, SubscribeOptions, When,
};
use support::{Daemon, WAIT, bounded};
use tokio_stream::StreamExt;

/// Subscribes to `loop_name` from the next event on, race-free: from the loop's last
/// seq + 1, not "from now".
async fn subscribe_next(
    client: &Client,
    loop_name: &str,
    kinds: &[EventKind],
) -> loopd_client::EventStream {
    let last = client.get_loop(loop_name).await.unwrap().last_event_seq;
    let options = SubscribeOptions {
        since_seq: last + 1,
        kinds: kinds.to_vec(),
        ..SubscribeOptions::default()
    };
    client.subscribe(loop_name, &options).await.unwrap()
}

#[tokio::test]
async fn call_later_fires_and_the_stream_shows_timer_fired() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut events = subscribe_next(&client, "", &[EventKind::TimerFired]).await;
    let timer = client
        .call_later(
            "",
            Duration::from_millis(30),
            Action::emit("hello", b"world"),
        )
        .await
        .unwrap();
    assert!(timer.when.is_some() && !timer.duplicate);

    let event = bounded(events.next()).await.expect("stream ended").unwrap();
    let EventBody::TimerFired(ran, timing) = event.body else {
        panic!("expected TimerFired, got {event:?}");
    };
    assert_eq!(
        (ran.handle_id, ran.tag.as_str(), &ran.payload[..]),
        (timer.handle_id, "hello", &b"world"[..])
    );
    assert_eq!(Some(timing.scheduled_time), timer.when);
    assert!(
        timing.fired_time >= timing.scheduled_time,
        "fired early: {timing:?}"
    );
    assert_eq!(event.loop_name, "default");

    let handle = client.get_handle("", timer.handle_id).await.unwrap();
    assert_eq!(handle.state, HandleState::Fired);
    assert_eq!(handle.action, Action::emit("hello", b"world"));
}

#[tokio::test]
async fn a_future_set_by_one_client_is_awaited_by_another() {
    let daemon = Daemon::start();
    let (setter, waiter) = (daemon.client().await, daemon.client().await);
    let future = setter.create_future("", None).await.unwrap().future_id;

    let mut wait = tokio::spawn(async move { waiter.wait_future("", future, Some(WAIT)).await });
    // Still waiting: nothing has set the future yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut wait)
            .await
            .is_err()
    );

    let set = setter
        .set_result("", future, b"done".to_vec())
        .await
        .unwrap();
    assert_eq!(set.state, FutureState::Result(b"done".to_vec()));
    let waited = bounded(wait).await.unwrap().unwrap();
    assert_eq!(waited.future_id, future);
    assert_eq!(waited.state, FutureState::Result(b"done".to_vec()));
    assert!(waited.done_at.is_some());
}

#[tokio::test]
async fn a_bounded_wait_returns_the_pending_future() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let future = client.create_future("", None).await.unwrap().future_id;
    let info = client
        .wait_future("", future, Some(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(info.state, FutureState::Pending);
}

#[tokio::test]
async fn a_timer_resolves_a_future_and_outcomes_are_typed() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let resolved = client.create_future("", None).await.unwrap().future_id;
    client
        .call_later(
            "",
            Duration::from_millis(20),
            Action::resolve_future(resolved, b"v"),
        )
        .await
        .unwrap();
    let info = client.wait_future("", resolved, Some(WAIT)).await.unwrap();
    assert_eq!(info.state, FutureState::Result(b"v".to_vec()));

    let failed = client.create_future("", None).await.unwrap().future_id;
    let info = client.set_exception("", failed, "disk full").await.unwrap();
    assert_eq!(info.state, FutureState::Exception("disk full".into()));

    let cancelled = client.create_future("", None).await.unwrap().future_id;
    let first = client.cancel_future("", cancelled, "bye").await.unwrap();
    assert!(first.cancelled);
    assert_eq!(first.info.state, FutureState::Cancelled("bye".into()));
    let again = client.cancel_future("", cancelled, "").await.unwrap();
    assert!(!again.cancelled, "a done future is not cancelled again");

    let err = client
        .set_result("", failed, b"late".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
}

#[tokio::test]
async fn unknown_ids_and_bad_values_keep_their_status_code() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let cases: Vec<(Error, Code)> = vec![
        (
            client.get_handle("", HandleId(424_242)).await.unwrap_err(),
            Code::NotFound,
        ),
        (
            client.get_future("", FutureId(424_242)).await.unwrap_err(),
            Code::NotFound,
        ),
        (
            client.get_loop("no-such-loop").await.unwrap_err(),
            Code::NotFound,
        ),
        (
            client
                .create_loop("bad name!", &LoopOptions::default())
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            client
                .call_later_secs("", f64::NAN, Action::default())
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            client.close_loop("").await.unwrap_err(),
            Code::FailedPrecondition,
        ),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), Some(code), "{err}");
        assert!(
            err.to_string().starts_with(loopd_client::code_name(code)),
            "{err}"
        );
    }
    let err = client.get_handle("", HandleId(424_242)).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(
        err.to_string().contains("424242"),
        "the message names the id: {err}"
    );
}

#[tokio::test]
async fn loops_go_through_their_lifecycle() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let options = LoopOptions {
        debug: true,
        slow_callback_duration: Some(Duration::from_millis(20)),
    };
    let created = client.create_loop("worker", &options).await.unwrap();
    assert_eq!(
        (created.name.as_str(), created.state, created.debug),
        ("worker", LoopState::Running, true)
    );
    assert_eq!(created.slow_callback_duration, Duration::from_millis(20));

    assert_eq!(
        client.stop_loop("worker").await.unwrap().state,
        LoopState::Stopped
    );
    assert_eq!(
        client.start_loop("worker").await.unwrap().state,
        LoopState::Running
    );
    assert!(!client.set_debug("worker", false, None).await.unwrap().debug);
    assert_eq!(
        client.stop_loop("worker").await.unwrap().state,
        LoopState::Stopped
    );
    assert_eq!(
        client.close_loop("worker").await.unwrap().state,
        LoopState::Closed
    );

    let names: Vec<String> = client
        .list_loops()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["default", "worker"]);
    let err = client
        .call_soon("worker", Action::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");

    let t1 = client.time("").await.unwrap();
    let t2 = client.time("").await.unwrap();
    assert!(t2.time >= t1.time, "loop time goes forward");
}

#[tokio::test]
async fn handles_are_cancelled_listed_and_deduplicated() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let hour = Duration::from_secs(3600);
    let timer = client
        .call_later("", hour, Action::emit("later", b""))
        .await
        .unwrap();
    let first = client.cancel_handle("", timer.handle_id).await.unwrap();
    assert!(first.cancelled);
    assert_eq!(first.info.state, HandleState::Cancelled);
    assert!(
        !client
            .cancel_handle("", timer.handle_id)
            .await
            .unwrap()
            .cancelled
    );

    let keyed = Action::emit("k", b"").with_request_id("retry-1");
    let original = client.call_later("", hour, keyed.clone()).await.unwrap();
    let retry = client.call_later("", hour, keyed).await.unwrap();
    assert_eq!(
        (retry.handle_id, retry.duplicate),
        (original.handle_id, true)
    );

    let filter = HandleFilter {
        states: vec![HandleState::Cancelled],
        ..HandleFilter::default()
    };
    let cancelled = client.list_all_handles("", &filter).await.unwrap();
    let ids: Vec<HandleId> = cancelled.iter().map(|h| h.handle_id).collect();
    assert_eq!(ids, [timer.handle_id]);
    let paged = HandleFilter {
        page_size: 1,
        ..HandleFilter::default()
    };
    let first_page = client.list_handles("", &paged).await.unwrap();
    assert_eq!(first_page.handles.len(), 1);
    assert!(first_page.next_page_token.is_some());
    assert_eq!(client.list_all_handles("", &paged).await.unwrap().len(), 2);
}

#[tokio::test]
async fn batches_schedule_in_order() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut events = subscribe_next(
        &client,
        "",
        &[EventKind::TimerFired, EventKind::CallbackRun],
    )
    .await;
    let batch = Batch {
        loop_name: String::new(),
        entries: vec![
            Entry::new(
                When::Delay(Duration::from_millis(10)),
                Action::emit("b", b""),
            ),
            Entry::new(When::Soon, Action::emit("a", b"")),
            Entry::new(When::DelaySecs(0.01), Action::emit("c", b"")),
        ],
    };
    let results = client.schedule_batch(batch).await.unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1].when, None, "a soon entry has no due time");

    let mut tags = Vec::new();
    while tags.len() < 3 {
        let event = bounded(events.next()).await.expect("stream ended").unwrap();
        match event.body {
            EventBody::TimerFired(ran, _) | EventBody::CallbackRun(ran) => tags.push(ran.tag),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(tags, ["a", "b", "c"]);

    let batches = tokio_stream::iter([
        Batch {
            loop_name: String::new(),
            entries: vec![Entry::new(When::Soon, Action::default())],
        },
        Batch {
            loop_name: String::new(),
            entries: vec![Entry::new(When::At(0.0), Action::default()); 2],
        },
    ]);
    let answers: Vec<_> =
        bounded(client.schedule(batches).await.unwrap().collect::<Vec<_>>()).await;
    let sizes: Vec<usize> = answers.into_iter().map(|a| a.unwrap().len()).collect();
    assert_eq!(sizes, [1, 2]);
}

#[tokio::test]
async fn a_reader_behind_the_ring_gets_an_explicit_gap() {
    let daemon = Daemon::start_with(&["--event-ring-capacity", "4"]);
    let client = daemon.client().await;
    let entries = vec![Entry::new(When::Soon, Action::default()); 10];
    let results = client
        .schedule_batch(Batch {
            loop_name: String::new(),
            entries,
        })
        .await
        .unwrap();
    let last_handle = results.last().unwrap().handle_id;
    // Wait (bounded) until the last callback has run, so the ring has moved on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.get_handle("", last_handle).await.unwrap().state != HandleState::Fired {
        assert!(
            tokio::time::Instant::now() < deadline,
            "callbacks did not run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = client.get_loop("").await.unwrap().last_event_seq;
    assert!(last >= 11, "1 LoopStarted + 10 CallbackRun, got {last}");

    let options = SubscribeOptions {
        since_seq: 1,
        ..SubscribeOptions::default()
    };
    let mut events = client.subscribe("", &options).await.unwrap();
    let gap = bounded(events.next()).await.expect("stream ended").unwrap();
    assert_eq!(
        gap.body,
        EventBody::Gap {
            from_seq: 1,
            to_seq: last - 4
        }
    );
    assert_eq!(gap.seq, last - 4, "a gap's seq is its to_seq");
    let next = bounded(events.next()).await.expect("stream ended").unwrap();
    assert_eq!(
        next.seq,
        last - 3,
        "the oldest event in the ring follows the gap"
    );
}

#[tokio::test]
async fn info_and_metrics_describe_the_daemon() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let info = client.info().await.unwrap();
    assert_eq!(info.socket_path.as_deref(), Some(daemon.socket.as_path()));
    assert_eq!(info.loops, ["default"]);
    assert!(info.limits.event_ring_capacity > 0);

    client
        .call_later("", Duration::ZERO, Action::default())
        .await
        .unwrap();
    let metrics = client.metrics(&[]).await.unwrap();
    assert_eq!(metrics.loops.len(), 1);
    assert_eq!(metrics.loops[0].loop_name, "default");
    assert!(metrics.loops[0].iterations > 0);
    let err = client.metrics(&["nope"]).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}

#[tokio::test]
async fn connecting_to_nothing_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = Client::connect(path.to_str().unwrap()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
    let err = Client::connect("https://loopd.example:7443")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedTarget { .. }), "{err:?}");
}

#[tokio::test]
async fn datagram_endpoints_are_listed_and_described() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let e = client
            .create_datagram_endpoint("", Some(("127.0.0.1", 0)), None)
            .await
            .unwrap();
        ids.push(e.endpoint_id);
    }
    let listed = client.list_datagram_endpoints("", false).await.unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|e| e.endpoint_id).collect();
    assert_eq!(listed_ids, ids);
    let first = client
        .list_datagram_endpoints_page("", false, loopd_client::PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    assert!(first.next_page_token.is_some(), "a fourth follows");

    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = peer.local_addr().unwrap();
    let to_host = to.ip().to_string();
    client
        .send_datagram("", ids[0], b"12345".to_vec(), Some((&to_host, to.port())))
        .await
        .unwrap();
    let shown = client.get_datagram_endpoint("", ids[0]).await.unwrap();
    assert_eq!((shown.datagrams_sent, shown.bytes_sent), (1, 5));
    assert_eq!(shown.state, loopd_client::TransportState::Open);
    assert_eq!(shown.sockname, listed[0].sockname);

    client.close_datagram_endpoint("", ids[1]).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !client
        .get_datagram_endpoint("", ids[1])
        .await
        .unwrap()
        .closed
    {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let open = client.list_datagram_endpoints("", false).await.unwrap();
    assert!(open.iter().all(|e| e.endpoint_id != ids[1]), "{open:?}");
    let all = client.list_datagram_endpoints("", true).await.unwrap();
    assert_eq!(all.len(), 4);

    let err = client
        .get_datagram_endpoint("", loopd_client::EndpointId(727_272))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(err.to_string().contains("727272"), "{err}");
}

/// A daemon whose message limit is raised above tonic's default 4 MiB may send larger
/// responses; the client takes them (it used to refuse every service's but NetService's
/// with "decoded message length too large").
#[tokio::test]
async fn responses_above_four_mib_arrive_when_the_daemon_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("loopd.toml");
    std::fs::write(&config, "[limits]\nmax_message_bytes = 16777216\n").unwrap();
    let daemon = Daemon::start_with(&["--config", config.to_str().unwrap()]);
    let client = daemon.client().await;
    let payload = vec![7u8; 60 * 1024];
    let hour = Duration::from_secs(3600);
    for i in 0..100 {
        client
            .call_later("", hour, Action::emit(format!("big{i}"), &payload))
            .await
            .unwrap();
    }
    let page = client
        .list_handles("", &HandleFilter::default())
        .await
        .expect("a 6 MB page of handles");
    assert_eq!(page.handles.len(), 100);
    assert!(page.next_page_token.is_none());
    assert_eq!(page.handles[99].action, Action::emit("big99", &payload));
}
