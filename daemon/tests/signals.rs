//! SignalService against a real daemon: signals sent to the daemon's pid arrive as
//! events; the daemon's own signals and uncatchable ones are refused by name.

mod support;

use std::time::Duration;

use loopd_client::{Action, ActionKind, Client, Code, EventBody, EventKind, SubscribeOptions};
use support::{Daemon, WAIT};
use tokio_stream::StreamExt;

async fn client(daemon: &Daemon) -> Client {
    Client::from_channel(daemon.channel().await)
}

fn kill(pid: u32, sig: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits for the next SignalReceived event: (signal, name, tag).
async fn next_signal(events: &mut loopd_client::EventStream) -> (i32, String, String) {
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("a signal event in time")
            .expect("stream open")
            .expect("event");
        if let EventBody::SignalReceived { signal, name, ran } = event.body {
            assert_eq!(ran.action, ActionKind::EmitEvent);
            assert_eq!(ran.error, None);
            return (signal, name, ran.tag);
        }
    }
}

fn signal_events() -> SubscribeOptions {
    SubscribeOptions {
        kinds: vec![EventKind::SignalReceived],
        ..SubscribeOptions::default()
    }
}

#[tokio::test]
async fn a_signal_sent_to_the_daemon_arrives_as_an_event() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let mut events = client
        .subscribe("", &signal_events())
        .await
        .expect("subscribe");
    let (handler, replaced) = client
        .add_signal_handler("", "SIGUSR1", Some(Action::emit("usr1", b"")))
        .await
        .expect("add");
    assert_eq!(
        (handler.signal, handler.name.as_str(), replaced),
        (libc::SIGUSR1, "SIGUSR1", false)
    );
    kill(daemon.pid(), libc::SIGUSR1);
    let got = next_signal(&mut events).await;
    assert_eq!(got, (libc::SIGUSR1, "SIGUSR1".into(), "usr1".into()));

    // Replacing: the new action runs, not the old one.
    let (_, replaced) = client
        .add_signal_handler("", "usr1", Some(Action::emit("second", b"")))
        .await
        .expect("replace");
    assert!(replaced);
    kill(daemon.pid(), libc::SIGUSR1);
    assert_eq!(next_signal(&mut events).await.2, "second");

    let listed = client.list_signal_handlers("").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].runs, 1, "runs of the current handler");
    assert!(
        client
            .remove_signal_handler("", "10")
            .await
            .expect("remove")
    );
    assert!(
        !client
            .remove_signal_handler("", "SIGUSR1")
            .await
            .expect("again")
    );
    assert!(
        client
            .list_signal_handlers("")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn the_daemons_own_and_uncatchable_signals_are_refused_by_name() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cases = [
        ("SIGKILL", Code::InvalidArgument),
        ("STOP", Code::InvalidArgument),
        ("11", Code::InvalidArgument),
        ("SIGTERM", Code::FailedPrecondition),
        ("INT", Code::FailedPrecondition),
        ("SIGPIPE", Code::FailedPrecondition),
        ("SIGNOPE", Code::InvalidArgument),
        ("0", Code::InvalidArgument),
    ];
    for (signal, want) in cases {
        let err = client
            .add_signal_handler("", signal, None)
            .await
            .expect_err(signal);
        assert_eq!(err.code(), Some(want), "{signal}: {err}");
        let shown = signal.trim_start_matches("SIG");
        assert!(err.to_string().contains(shown), "{signal}: {err}");
    }
    // Removing a signal the daemon keeps changes nothing: SIGTERM still shuts it down.
    assert!(
        !client
            .remove_signal_handler("", "SIGTERM")
            .await
            .expect("remove")
    );
    let mut daemon = daemon;
    daemon.sigterm();
    let status = daemon.wait_exit(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_handed_over_sigint_is_an_event_not_a_shutdown() {
    let mut daemon = Daemon::start_with("[signals]\nhandover = [\"SIGINT\"]\n");
    let client = client(&daemon).await;
    let mut events = client
        .subscribe("", &signal_events())
        .await
        .expect("subscribe");
    client
        .add_signal_handler("", "SIGINT", Some(Action::emit("int", b"")))
        .await
        .expect("SIGINT is handed over");
    kill(daemon.pid(), libc::SIGINT);
    assert_eq!(next_signal(&mut events).await.1, "SIGINT");
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_none(),
        "still serving"
    );
    client.info().await.expect("still answers");
    let err = client
        .add_signal_handler("", "SIGTERM", None)
        .await
        .expect_err("kept");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
}
