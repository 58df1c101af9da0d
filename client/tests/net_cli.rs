//! `loopctl server`, `conn` and `conn cat` against a real daemon on loopback.

mod support;

use std::io::Write;
use std::process::Stdio;

use support::{Daemon, json_lines, ok, stderr, wait_output};

/// `loopctl --json server create ARGS`; returns the server's id and first address.
fn create_server(daemon: &Daemon, args: &[&str]) -> (u64, String) {
    let mut all = vec!["--json", "server", "create"];
    all.extend_from_slice(args);
    let server = json_lines(&ok(daemon.loopctl(&all)));
    let id = server[0]["server_id"].as_u64().expect("server_id");
    let addr = server[0]["addresses"][0]
        .as_str()
        .expect("address")
        .to_owned();
    (id, addr)
}

#[test]
fn server_create_ls_show_and_close() {
    let daemon = Daemon::start();
    let text = ok(daemon.loopctl(&[
        "server",
        "create",
        "--host",
        "127.0.0.1",
        "--protocol",
        "discard",
    ]));
    assert!(
        text.starts_with("server ") && text.contains("listening on 127.0.0.1:"),
        "{text}"
    );
    let (id, addr) = create_server(&daemon, &["--host", "127.0.0.1"]);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let listed = json_lines(&ok(daemon.loopctl(&["--json", "server", "ls"])));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let table = ok(daemon.loopctl(&["server", "ls"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("discard") && table.contains("events"),
        "{table}"
    );

    let shown = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "server",
        "show",
        &id.to_string(),
    ])));
    assert_eq!(shown[0]["state"], "serving");
    let closed = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "server",
        "close",
        &id.to_string(),
    ])));
    assert_eq!(closed[0]["state"], "closed");

    let unknown = daemon.loopctl(&["server", "show", "424242"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("NOT_FOUND") && stderr(&unknown).contains("424242"));
    let port = addr.rsplit_once(':').expect("port").1;
    let taken = create_server(&daemon, &["--host", "127.0.0.1"]).1;
    let taken_port = taken.rsplit_once(':').expect("port").1;
    let in_use = daemon.loopctl(&[
        "server",
        "create",
        "--host",
        "127.0.0.1",
        "--port",
        taken_port,
    ]);
    assert_eq!(in_use.status.code(), Some(1), "port {port} reuse");
    let err = stderr(&in_use);
    assert!(
        err.contains("ALREADY_EXISTS") && err.contains(&taken),
        "{err}"
    );
}

#[test]
fn conn_open_write_eof_and_read_through_an_echo_server() {
    let daemon = Daemon::start();
    let (_, addr) = create_server(&daemon, &["--host", "127.0.0.1", "--protocol", "echo"]);
    let id = ok(daemon.loopctl(&["conn", "open", &addr]));
    let id = id.trim();
    id.parse::<u64>()
        .expect("conn open prints the transport id");
    ok(daemon.loopctl(&["conn", "write", id, "hello, "]));
    ok(daemon.loopctl(&["conn", "write", id, "echo"]));
    ok(daemon.loopctl(&["conn", "eof", id]));
    let read = ok(daemon.loopctl(&["conn", "read", id]));
    assert_eq!(read, "hello, echo");
    let conns = json_lines(&ok(daemon.loopctl(&["--json", "conn", "ls", "--all"])));
    let ours = conns
        .iter()
        .find(|c| c["transport_id"].as_u64() == id.parse().ok())
        .expect("listed");
    assert_eq!(ours["bytes_written"], 11);

    let closed = daemon.loopctl(&["conn", "write", id, "late"]);
    assert_eq!(closed.status.code(), Some(1));
    assert!(
        stderr(&closed).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&closed)
    );
}

#[test]
fn conn_cat_is_netcat() {
    let daemon = Daemon::start();
    let (_, addr) = create_server(&daemon, &["--host", "127.0.0.1", "--protocol", "echo"]);
    let mut cat = daemon.loopctl_command(&["conn", "cat", &addr]);
    cat.stdin(Stdio::piped());
    let mut child = cat.spawn().expect("spawn loopctl conn cat");
    // Under the 64 KiB pipe buffer: the support helper reads stdout only at exit.
    let input: Vec<u8> = (0..30_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(&input))
    };
    let output = wait_output(child);
    writer.join().expect("writer").expect("stdin written");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(output.stdout.len(), input.len());
    assert!(output.stdout == input, "the echo came back byte for byte");
}
