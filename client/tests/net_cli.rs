//! `loopctl server`, `conn`, `conn cat`, `udp`, `dns` and `sendfile` against a real
//! daemon on loopback and temp Unix sockets.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{Daemon, WAIT, json_lines, ok, stderr, wait_output};

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
    let input: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
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

/// Asserts `loopctl` failed with status 1, naming `needle` and the gRPC `code`.
fn fails_naming(output: std::process::Output, code: &str, needle: &str) {
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains(code) && err.contains(needle), "{err}");
}

/// Runs `loopctl udp recv ID --count 1 ARGS` while `send` sends (every 20 ms, so that
/// the datagram that counts arrives once recv subscribed); returns its stdout.
fn recv_one(daemon: &Daemon, id: &str, json: bool, send: impl Fn()) -> String {
    let mut args = vec!["udp", "recv", id, "--count", "1"];
    if json {
        args.insert(0, "--json");
    }
    let mut child = daemon
        .loopctl_command(&args)
        .spawn()
        .expect("spawn udp recv");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        send();
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(wait_output(child))
}

#[test]
fn udp_bind_send_and_recv() {
    let daemon = Daemon::start();
    let text = ok(daemon.loopctl(&["udp", "bind", "--host", "127.0.0.1"]));
    assert!(
        text.starts_with("endpoint ") && text.contains(" on 127.0.0.1:"),
        "{text}"
    );
    let bound = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "udp",
        "bind",
        "--host",
        "127.0.0.1",
    ])));
    let id = bound[0]["endpoint_id"]
        .as_u64()
        .expect("endpoint_id")
        .to_string();
    let local: SocketAddr = bound[0]["sockname"]
        .as_str()
        .expect("sockname")
        .parse()
        .expect("an IP address and port");
    assert_ne!(local.port(), 0);

    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let peer_addr = peer.local_addr().expect("peer addr").to_string();
    let sent = ok(daemon.loopctl(&["udp", "send", &id, "ping", "--to", &peer_addr]));
    assert_eq!(sent, "");
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).expect("the datagram arrives");
    assert_eq!((&buf[..n], from), (&b"ping"[..], local));

    let line = recv_one(&daemon, &id, false, || {
        peer.send_to(b"pong", local).expect("send");
    });
    assert_eq!(line, format!("{peer_addr}  pong\n"));
    let json = json_lines(&recv_one(&daemon, &id, true, || {
        peer.send_to(b"again", local).expect("send");
    }));
    assert_eq!(json[0]["from"], peer_addr.as_str());

    fails_naming(
        daemon.loopctl(&["udp", "send", "987654", "x", "--to", &peer_addr]),
        "NOT_FOUND",
        "987654",
    );
    let bad = daemon.loopctl(&["udp", "send", &id, "x", "--to", "nowhere"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("nowhere"), "{}", stderr(&bad));
}

#[test]
fn udp_on_unix_datagram_sockets() {
    let daemon = Daemon::start();
    let local = daemon.dir.path().join("dgram.sock");
    let local_str = local.to_str().expect("utf-8").to_owned();
    let bound = json_lines(&ok(
        daemon.loopctl(&["--json", "udp", "bind", "--unix", &local_str])
    ));
    assert_eq!(bound[0]["sockname"], local_str.as_str());
    let id = bound[0]["endpoint_id"]
        .as_u64()
        .expect("endpoint_id")
        .to_string();

    let peer_path = daemon.dir.path().join("peer.sock");
    let peer = UnixDatagram::bind(&peer_path).expect("peer");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let peer_str = peer_path.to_str().expect("utf-8");
    ok(daemon.loopctl(&["udp", "send", &id, "over unix", "--to-unix", peer_str]));
    let mut buf = [0u8; 32];
    let (n, from) = peer.recv_from(&mut buf).expect("the datagram arrives");
    assert_eq!(&buf[..n], b"over unix");
    assert_eq!(from.as_pathname(), Some(local.as_path()));
    let line = recv_one(&daemon, &id, false, || {
        peer.send_to(b"back", &local).expect("send");
    });
    assert_eq!(line, format!("{peer_str}  back\n"));

    ok(daemon.loopctl(&["udp", "close", &id]));
    let deadline = Instant::now() + WAIT;
    while local.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!local.exists(), "closing removes the socket file");
}

#[test]
fn udp_ls_and_show() {
    let daemon = Daemon::start();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let bound = json_lines(&ok(daemon.loopctl(&[
            "--json",
            "udp",
            "bind",
            "--host",
            "127.0.0.1",
        ])));
        ids.push(bound[0]["endpoint_id"].as_u64().expect("endpoint_id"));
    }
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    let peer_addr = peer.local_addr().expect("peer addr").to_string();
    let first = ids[0].to_string();
    ok(daemon.loopctl(&["udp", "send", &first, "hello", "--to", &peer_addr]));

    for size in ["1", "3", "0"] {
        let listed = json_lines(&ok(daemon.loopctl(&[
            "--json",
            "udp",
            "ls",
            "--page-size",
            size,
        ])));
        let got: Vec<_> = listed.iter().map(|e| e["endpoint_id"].as_u64()).collect();
        let want: Vec<_> = ids.iter().map(|id| Some(*id)).collect();
        assert_eq!(got, want, "--page-size {size}");
    }
    let table = ok(daemon.loopctl(&["udp", "ls"]));
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(
        table.contains("open") && table.contains("127.0.0.1:"),
        "{table}"
    );

    let shown = json_lines(&ok(daemon.loopctl(&["--json", "udp", "show", &first])));
    assert_eq!(shown[0]["endpoint_id"].as_u64(), Some(ids[0]));
    assert_eq!(shown[0]["state"], "open");
    assert_eq!(shown[0]["datagrams_sent"], 1);
    assert_eq!(shown[0]["bytes_sent"], 5);
    let text = ok(daemon.loopctl(&["udp", "show", &first]));
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {text}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("BYTES OUT"),
        "{text}"
    );
    let cells: Vec<_> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], first, "{text}");
    assert_eq!(cells[1], "open", "{text}");
    assert_eq!(cells[3], "-", "not connected: {text}");

    let second = ids[1].to_string();
    ok(daemon.loopctl(&["udp", "close", &second]));
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = json_lines(&ok(daemon.loopctl(&["--json", "udp", "show", &second])));
        if shown[0]["state"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "never closed: {shown:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = json_lines(&ok(daemon.loopctl(&["--json", "udp", "ls"])));
    assert_eq!(open.len(), 3, "{open:?}");
    let all = json_lines(&ok(daemon.loopctl(&["--json", "udp", "ls", "--all"])));
    assert_eq!(all.len(), 4, "{all:?}");

    fails_naming(
        daemon.loopctl(&["udp", "show", "989898"]),
        "NOT_FOUND",
        "989898",
    );
}

#[test]
fn dns_resolve_and_reverse() {
    let daemon = Daemon::start();
    let text = ok(daemon.loopctl(&["dns", "resolve", "localhost", "--port", "80"]));
    let addrs: Vec<SocketAddr> = text
        .lines()
        .map(|l| l.parse().expect("one address per line"))
        .collect();
    assert!(!addrs.is_empty(), "{text}");
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80),
        "{text}"
    );
    let json = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "dns",
        "resolve",
        "127.0.0.1",
    ])));
    assert_eq!(json.len(), 1, "{json:?}");
    assert_eq!(json[0]["address"], "127.0.0.1:0");

    let named = ok(daemon.loopctl(&["dns", "reverse", "127.0.0.1"]));
    let (host, service) = named.trim_end().split_once(' ').expect("HOST SERVICE");
    assert!(!host.is_empty() && host != "127.0.0.1", "a name: {named:?}");
    assert_eq!(service, "0");
    let json = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "dns",
        "reverse",
        "127.0.0.1:80",
    ])));
    assert_eq!(json[0]["host"], host);
    assert!(
        !json[0]["service"].as_str().unwrap_or("").is_empty(),
        "{json:?}"
    );

    fails_naming(
        daemon.loopctl(&["dns", "resolve", "not a host!"]),
        "INVALID_ARGUMENT",
        "not a host!",
    );
    let bad = daemon.loopctl(&["dns", "reverse", "localhost"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

#[test]
fn sendfile_sends_a_file_to_a_peer() {
    let daemon = Daemon::start();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr").to_string();
    let id = ok(daemon.loopctl(&["conn", "open", &addr]));
    let id = id.trim();
    let (mut peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let path = daemon.dir.path().join("payload.bin");
    std::fs::write(&path, &content).expect("write the file");
    let path = path.to_str().expect("utf-8");

    let sent = ok(daemon.loopctl(&["sendfile", id, path]));
    assert_eq!(sent, format!("{}\n", content.len()));
    let mut got = vec![0u8; content.len()];
    peer.read_exact(&mut got).expect("the file's bytes arrive");
    assert!(got == content, "byte for byte");
    let json = json_lines(&ok(daemon.loopctl(&[
        "--json", "sendfile", id, path, "--offset", "1000", "--count", "10",
    ])));
    assert_eq!(json[0]["bytes_sent"], 10);
    let mut tail = [0u8; 10];
    peer.read_exact(&mut tail).expect("the slice arrives");
    assert_eq!(tail, content[1000..1010]);

    fails_naming(
        daemon.loopctl(&["sendfile", "987654", path]),
        "NOT_FOUND",
        "987654",
    );
    fails_naming(
        daemon.loopctl(&["sendfile", id, "/nonexistent/loopd-payload"]),
        "NOT_FOUND",
        "/nonexistent/loopd-payload",
    );
}

/// A CA and a `localhost` certificate it signed, written as PEM files in `dir`:
/// (ca, cert, key) paths.
fn pki_files(dir: &std::path::Path) -> [String; 3] {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let files = [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write pem");
        path.to_str().expect("utf-8").to_owned()
    })
}

#[test]
fn conn_starttls_upgrades_both_ends() {
    let daemon = Daemon::start();
    let [ca, cert, key] = pki_files(daemon.dir.path());
    let (server_id, addr) = create_server(&daemon, &["--host", "127.0.0.1"]);
    let client_id = ok(daemon.loopctl(&["conn", "open", &addr]))
        .trim()
        .to_owned();
    let accepted = json_lines(&ok(daemon.loopctl(&[
        "--json",
        "conn",
        "ls",
        "--server",
        &server_id.to_string(),
    ])));
    let server_side = accepted[0]["transport_id"]
        .as_u64()
        .expect("id")
        .to_string();

    let server_args = [
        "--json",
        "conn",
        "starttls",
        &server_side,
        "--server-side",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--write-first",
        "OK",
    ];
    let server_up = daemon.loopctl_command(&server_args).spawn().expect("spawn");
    // The client starts TLS once the server's go-ahead arrived, as STARTTLS protocols do.
    let deadline = Instant::now() + WAIT;
    let got_ok = || {
        let shown = json_lines(&ok(daemon.loopctl(&["--json", "conn", "show", &client_id])));
        shown[0]["bytes_received"] == 2
    };
    while !got_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let client_up = daemon.loopctl(&[
        "--json",
        "conn",
        "starttls",
        &client_id,
        "--server-name",
        "localhost",
        "--ca",
        &ca,
    ]);
    let server_up = json_lines(&ok(wait_output(server_up)));
    let client_up = json_lines(&ok(client_up));
    for (up, id) in [(&server_up[0], &server_side), (&client_up[0], &client_id)] {
        assert_eq!(up["transport_id"].to_string(), *id, "{up}");
        assert!(
            up["tls_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("TLSv1.")),
            "{up}"
        );
    }
    ok(daemon.loopctl(&["conn", "write", &client_id, "over tls"]));
    ok(daemon.loopctl(&["conn", "eof", &client_id]));
    assert_eq!(
        ok(daemon.loopctl(&["conn", "read", &server_side])),
        "over tls"
    );

    fails_naming(
        daemon.loopctl(&[
            "conn",
            "starttls",
            &client_id,
            "--server-name",
            "localhost",
            "--ca",
            &ca,
        ]),
        "FAILED_PRECONDITION",
        &client_id,
    );
    fails_naming(
        daemon.loopctl(&[
            "conn",
            "starttls",
            "987654",
            "--server-name",
            "localhost",
            "--ca",
            &ca,
        ]),
        "NOT_FOUND",
        "987654",
    );
}

#[test]
fn conn_starttls_names_bad_material() {
    let daemon = Daemon::start();
    fails_naming(
        daemon.loopctl(&[
            "conn",
            "starttls",
            "987654",
            "--server-name",
            "localhost",
            "--ca",
            "/nonexistent/loopd-ca.pem",
        ]),
        "INVALID_ARGUMENT",
        "client.ca_path",
    );
    fails_naming(
        daemon.loopctl(&[
            "conn",
            "starttls",
            "987654",
            "--server-side",
            "--tls-cert",
            "/nonexistent/loopd-cert.pem",
            "--tls-key",
            "/nonexistent/loopd-key.pem",
        ]),
        "INVALID_ARGUMENT",
        "server.cert_path",
    );
    let usage = daemon.loopctl(&["conn", "starttls", "5", "--server-side"]);
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));
    assert!(stderr(&usage).contains("--tls-cert"), "{}", stderr(&usage));
}
