//! `loopctl` against a real daemon: output, `--json` lines, exit statuses.

mod support;

use std::io::Read;
use std::process::Stdio;

use serde_json::Value;
use support::{Daemon, json_lines, ok, stderr, stdout, wait_output};

/// The loop's newest event seq, read through `loopctl --json loop ls`.
fn last_seq(daemon: &Daemon) -> u64 {
    let loops = json_lines(&ok(daemon.loopctl(&["--json", "loop", "ls"])));
    loops[0]["last_event_seq"].as_u64().expect("last_event_seq")
}

/// Runs `loopctl events --json ARGS` until an event of `kind` shows up (bounded).
fn wait_for_event(daemon: &Daemon, kind: &str, since: u64) -> Value {
    let since = since.to_string();
    let args = [
        "--json", "events", "--follow", "--since", &since, "--kind", kind, "--limit", "1",
    ];
    let lines = json_lines(&ok(daemon.loopctl(&args)));
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap_or_default()
}

#[test]
fn timer_add_then_events_shows_timer_fired() {
    let daemon = Daemon::start();
    let since = last_seq(&daemon) + 1;
    let id = ok(daemon.loopctl(&[
        "timer",
        "add",
        "--in",
        "20ms",
        "--tag",
        "hello",
        "--payload",
        "world",
    ]));
    let id: u64 = id.trim().parse().expect("timer add prints the handle id");

    let fired = wait_for_event(&daemon, "timer_fired", since);
    assert_eq!(fired["handle_id"], id);
    assert_eq!(
        (fired["tag"].as_str(), fired["payload"].as_str()),
        (Some("hello"), Some("world"))
    );

    // Without --follow, events prints the ring and exits by itself.
    let text = ok(daemon.loopctl(&["events", "--kind", "timer_fired"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("timer_fired"), "{text}");
    assert!(
        lines[0].contains(&format!("handle={id} tag=\"hello\" payload=\"world\"")),
        "{text}"
    );

    let shown = ok(daemon.loopctl(&["timer", "show", &id.to_string()]));
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state") && l.ends_with("fired")),
        "{shown}"
    );
}

#[test]
fn exit_statuses_say_what_happened() {
    let daemon = Daemon::start();
    let success = daemon.loopctl(&["status"]);
    assert_eq!(success.status.code(), Some(0));
    assert!(stdout(&success).contains("version"), "{}", stdout(&success));

    let unknown = daemon.loopctl(&["timer", "show", "424242"]);
    assert_eq!(unknown.status.code(), Some(1));
    let err = stderr(&unknown);
    assert!(err.starts_with("loopctl: NOT_FOUND: "), "{err}");
    assert!(err.contains("424242"), "{err}");
    assert!(stdout(&unknown).is_empty());

    let bad_usage = daemon.loopctl(&["timer", "add", "--in", "5x"]);
    assert_eq!(bad_usage.status.code(), Some(2));
    assert!(
        stderr(&bad_usage).contains("'5x'"),
        "{}",
        stderr(&bad_usage)
    );

    let closed = daemon.loopctl(&["loop", "close", "default"]);
    assert_eq!(closed.status.code(), Some(1));
    assert!(
        stderr(&closed).starts_with("loopctl: FAILED_PRECONDITION: "),
        "{}",
        stderr(&closed)
    );

    let nowhere = daemon
        .loopctl_command(&["status"])
        .env("LOOPD_SOCKET", daemon.dir.path().join("absent.sock"))
        .spawn()
        .expect("spawn loopctl");
    let nowhere = wait_output(nowhere);
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(
        stderr(&nowhere).starts_with("loopctl: failed to connect to unix:"),
        "{}",
        stderr(&nowhere)
    );
}

#[test]
fn a_future_set_by_one_loopctl_is_awaited_by_another() {
    let daemon = Daemon::start();
    let id = ok(daemon.loopctl(&["future", "new"])).trim().to_owned();
    let waiter = daemon
        .loopctl_command(&["--json", "future", "wait", &id, "--timeout", "4s"])
        .spawn()
        .expect("spawn waiter");
    // The waiter is pending until the future is set; a set before it subscribes is
    // fine too, since wait answers at once for a done future.
    let set = ok(daemon.loopctl(&["future", "set", &id, "done"]));
    assert_eq!(set.trim(), format!("{id} result \"done\""));
    let waited = json_lines(&ok(wait_output(waiter)));
    assert_eq!(waited.len(), 1);
    assert_eq!(waited[0]["state"], "result");
    assert_eq!(waited[0]["result"], "done");
    assert_eq!(waited[0]["future_id"].to_string(), id);

    let pending = ok(daemon.loopctl(&["future", "new"])).trim().to_owned();
    let timed_out = ok(daemon.loopctl(&["future", "wait", &pending, "--timeout", "30ms"]));
    assert_eq!(timed_out.trim(), format!("{pending} pending"));
}

#[test]
fn json_output_is_one_object_per_line() {
    let daemon = Daemon::start();
    ok(daemon.loopctl(&["loop", "new", "worker"]));
    ok(daemon.loopctl(&["timer", "add", "--soon", "--loop", "worker", "--tag", "x"]));
    ok(daemon.loopctl(&["timer", "add", "--in", "1h", "--loop", "worker"]));
    let cases: &[(&[&str], usize, &str)] = &[
        (&["--json", "status"], 1, "version"),
        (&["--json", "loop", "ls"], 2, "name"),
        (&["--json", "time", "--loop", "worker"], 1, "time"),
        (&["--json", "metrics"], 2, "iterations"),
        (
            &["--json", "timer", "ls", "--loop", "worker"],
            2,
            "handle_id",
        ),
        (
            &["--json", "timer", "add", "--in", "1s", "--id", "k1"],
            1,
            "handle_id",
        ),
        (&["--json", "future", "new"], 1, "future_id"),
    ];
    for (args, count, key) in cases {
        let lines = json_lines(&ok(daemon.loopctl(args)));
        assert_eq!(lines.len(), *count, "{args:?}: {lines:?}");
        assert!(
            lines.iter().all(|l| l.get(key).is_some()),
            "{args:?}: {lines:?}"
        );
    }
    let retry = json_lines(&ok(
        daemon.loopctl(&["--json", "timer", "add", "--in", "1s", "--id", "k1"])
    ));
    assert_eq!(retry[0]["duplicate"], true);

    let events = json_lines(&ok(
        daemon.loopctl(&["--json", "events", "--loop", "worker"])
    ));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(
        kinds.contains(&"loop_started") && kinds.contains(&"callback_run"),
        "{kinds:?}"
    );
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs ascend: {seqs:?}"
    );
}

#[test]
fn timers_are_listed_and_cancelled() {
    let daemon = Daemon::start();
    let id = ok(daemon.loopctl(&["timer", "add", "--in", "1h", "--tag", "later"]))
        .trim()
        .to_owned();
    let listed = ok(daemon.loopctl(&["timer", "ls", "--state", "pending"]));
    let mut lines = listed.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("ID  KIND   STATE"),
        "{listed}"
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with(&format!("{id}   timer  pending")),
        "{listed}"
    );

    assert_eq!(
        ok(daemon.loopctl(&["timer", "cancel", &id])).trim(),
        format!("cancelled {id}")
    );
    let again = ok(daemon.loopctl(&["timer", "cancel", &id]));
    assert_eq!(again.trim(), format!("{id} was not pending: cancelled"));
    let pending = ok(daemon.loopctl(&["timer", "ls", "--state", "pending"]));
    assert_eq!(
        pending.lines().count(),
        1,
        "only the header is left: {pending}"
    );
}

#[test]
fn a_closed_stdout_exits_0_quietly() {
    let daemon = Daemon::start();
    // Enough events that their lines overflow a pipe buffer (64 KiB): loopctl must
    // meet the closed pipe, whenever the read end closes.
    fill_ring(&daemon, 2000);
    let mut child = daemon
        .loopctl_command(&["--json", "events"])
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let mut stderr_text = String::new();
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let output = wait_output(child);
    stderr_pipe
        .read_to_string(&mut stderr_text)
        .expect("read stderr");
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr_text}");
    assert!(stderr_text.is_empty(), "{stderr_text}");
}

/// Runs `n` call_soon callbacks on the default loop and waits (bounded) until they ran.
fn fill_ring(daemon: &Daemon, n: usize) {
    use loopd_client::{Action, Batch, Entry, HandleState, When};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = daemon.client().await;
        let entries = vec![Entry::new(When::Soon, Action::emit("fill", b"")); n];
        let batch = Batch {
            loop_name: String::new(),
            entries,
        };
        let last = client
            .schedule_batch(batch)
            .await
            .expect("batch")
            .pop()
            .expect("results");
        let deadline = tokio::time::Instant::now() + support::WAIT;
        while client
            .get_handle("", last.handle_id)
            .await
            .expect("handle")
            .state
            != HandleState::Fired
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "callbacks did not run"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn completions_need_no_daemon() {
    let daemon = Daemon::start();
    let script = daemon
        .loopctl_command(&["completions", "bash"])
        .env("LOOPD_SOCKET", "/nonexistent/loopd.sock")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let script = ok(wait_output(script));
    assert!(script.contains("loopctl"), "{script}");
}

#[test]
fn timer_add_takes_every_kind_of_time_and_action() {
    let daemon = Daemon::start();
    let future = ok(daemon.loopctl(&["future", "new"])).trim().to_owned();
    let now = ok(daemon.loopctl(&["--json", "time"]));
    let loop_time = json_lines(&now)[0]["time"].as_f64().expect("time");
    let soon_at = format!("{}", loop_time + 0.02);
    let past = "2000-01-01T01:00:00+01:00";
    let cases: &[&[&str]] = &[
        &["timer", "add", "--at", past, "--tag", "wall"],
        &[
            "timer",
            "add",
            "--loop-time",
            &soon_at,
            "--tag",
            "loop-time",
        ],
        &[
            "timer",
            "add",
            "--in",
            "10ms",
            "--resolve-future",
            &future,
            "--payload",
            "via-timer",
        ],
    ];
    for args in cases {
        let id = ok(daemon.loopctl(args));
        assert!(id.trim().parse::<u64>().is_ok(), "{args:?} printed {id:?}");
    }
    let waited = ok(daemon.loopctl(&["future", "wait", &future, "--timeout", "4s"]));
    assert_eq!(waited.trim(), format!("{future} result \"via-timer\""));
    let args = [
        "--json",
        "events",
        "--follow",
        "--since",
        "1",
        "--kind",
        "timer_fired",
        "--limit",
        "3",
    ];
    let fired = json_lines(&ok(daemon.loopctl(&args)));
    let tags: Vec<&str> = fired.iter().filter_map(|e| e["tag"].as_str()).collect();
    assert_eq!(tags.len(), 3, "{fired:?}");
    assert!(
        tags.contains(&"wall") && tags.contains(&"loop-time"),
        "{tags:?}"
    );
    let actions: Vec<&str> = fired.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"resolve_future"), "{actions:?}");
}

#[test]
fn loops_are_managed_from_the_command_line() {
    let daemon = Daemon::start();
    let created = ok(daemon.loopctl(&["loop", "new", "worker", "--debug", "--slow", "20ms"]));
    let row = created.lines().nth(1).unwrap_or_default().to_owned();
    assert!(row.starts_with("worker  running  on"), "{created}");
    ok(daemon.loopctl(&[
        "timer",
        "add",
        "--in",
        "1h",
        "--stop-loop",
        "--loop",
        "worker",
    ]));
    let debug_off = json_lines(&ok(
        daemon.loopctl(&["--json", "loop", "debug", "worker", "off"])
    ));
    assert_eq!(debug_off[0]["debug"], false);
    assert_eq!(debug_off[0]["slow_callback_seconds"], 0.02);
    let stopped = json_lines(&ok(daemon.loopctl(&["--json", "loop", "stop", "worker"])));
    assert_eq!(stopped[0]["state"], "stopped");
    let closed = json_lines(&ok(daemon.loopctl(&["--json", "loop", "close", "worker"])));
    assert_eq!(closed[0]["state"], "closed");
    let again = daemon.loopctl(&["timer", "add", "--soon", "--loop", "worker"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).starts_with("loopctl: FAILED_PRECONDITION: "),
        "{}",
        stderr(&again)
    );
    let listed = ok(daemon.loopctl(&["loop", "ls"]));
    assert_eq!(
        listed.lines().count(),
        3,
        "header, default, worker: {listed}"
    );
}

#[test]
fn metrics_show_traffic_and_processes() {
    use std::io::Write;
    use std::net::TcpStream;

    let daemon = Daemon::start();
    let server = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "server",
        "create",
        "--host",
        "127.0.0.1",
        "--protocol",
        "echo",
    ])));
    let addr = server[0]["addresses"][0].as_str().expect("address");
    const N: usize = 4096;
    let mut peer = TcpStream::connect(addr).expect("connect");
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    peer.write_all(&[7; N]).expect("write");
    let mut echoed = [0; N];
    peer.read_exact(&mut echoed).expect("echo");
    let id = ok(daemon.loopctl(&["proc", "spawn", "--", "true"]));
    ok(daemon.loopctl(&["proc", "wait", id.trim()]));

    let loops = json_lines(&ok(daemon.loopctl(&["--json", "metrics"])));
    let m = &loops[0];
    let cases = [
        ("open_servers", 1),
        ("open_transports", 1),
        ("open_datagram_endpoints", 0),
        ("connections_accepted", 1),
        ("bytes_received", N as u64),
        ("bytes_sent", N as u64),
        ("datagrams_received", 0),
        ("datagrams_sent", 0),
        ("processes_spawned", 1),
        ("processes_running", 0),
        ("processes_exited", 1),
        ("signal_handlers", 0),
    ];
    for (key, want) in cases {
        assert_eq!(m[key].as_u64(), Some(want), "{key}: {m}");
    }

    let text = ok(daemon.loopctl(&["metrics"]));
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let column = |name: &str| {
        let at = lines[0].iter().position(|h| *h == name);
        lines[1][at.unwrap_or_else(|| panic!("no {name} column: {text}"))]
    };
    let n = N.to_string();
    let cases = [
        ("SERVERS", "1"),
        ("TRANSPORTS", "1"),
        ("ACCEPTED", "1"),
        ("BYTES_IN", n.as_str()),
        ("BYTES_OUT", n.as_str()),
        ("SPAWNED", "1"),
        ("RUNNING", "0"),
        ("EXITED", "1"),
    ];
    for (name, want) in cases {
        assert_eq!(column(name), want, "{name}: {text}");
    }
}

#[test]
fn ls_follows_the_daemons_pages() {
    let daemon = Daemon::start();
    let mut spawned = Vec::new();
    for _ in 0..7 {
        let id = ok(daemon.loopctl(&["proc", "spawn", "--", "true"]));
        spawned.push(id.trim().parse::<u64>().expect("a process id"));
    }
    for _ in 0..4 {
        ok(daemon.loopctl(&["server", "create", "--host", "127.0.0.1"]));
    }
    let cases: &[(&[&str], usize, &str)] = &[
        (
            &["--json", "proc", "ls", "--page-size", "3"],
            7,
            "process_id",
        ),
        (&["--json", "proc", "ls"], 7, "process_id"),
        (
            &["--json", "server", "ls", "--page-size", "3"],
            4,
            "server_id",
        ),
        (
            &["--json", "server", "ls", "--page-size", "1"],
            4,
            "server_id",
        ),
    ];
    for (args, count, key) in cases {
        let lines = json_lines(&ok(daemon.loopctl(args)));
        let ids: Vec<u64> = lines.iter().filter_map(|l| l[key].as_u64()).collect();
        assert_eq!(ids.len(), *count, "{args:?}: {lines:?}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{args:?}: {ids:?}");
        if *key == "process_id" {
            assert_eq!(ids, spawned, "{args:?}");
        }
    }
    let table = ok(daemon.loopctl(&["proc", "ls", "--page-size", "2"]));
    assert_eq!(
        table.lines().count(),
        1 + 7,
        "a header and every process: {table}"
    );
}
