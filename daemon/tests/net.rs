//! NetService on real loopback sockets: echo and events servers fed by plain std
//! clients, writes from the API and from timers, the lossless stream's backpressure, and
//! bad input with the right status.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loopd_proto::pb;
use loopd_proto::{NetServiceClient, SchedulerServiceClient};
use pb::event::Kind;
use sha2::{Digest, Sha256};
use support::{Daemon, WAIT, collect, port_of, subscribe, tcp_server};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn net(channel: &Channel) -> NetServiceClient<Channel> {
    NetServiceClient::new(channel.clone())
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20)
}

fn peer(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream
}

/// The id of the transport of the next ConnectionMade event.
async fn made(events: &mut Streaming<pb::EventBatch>) -> pb::ConnectionMade {
    let event = collect(events, 1, |e| {
        matches!(e.kind, Some(Kind::ConnectionMade(_)))
    })
    .await;
    match &event[0].kind {
        Some(Kind::ConnectionMade(m)) => m.clone(),
        _ => unreachable!(),
    }
}

/// Opens a ReadTransport call with `credit`; returns the credit sender and the chunks.
async fn reader(
    channel: &Channel,
    id: u64,
    credit: u64,
) -> (
    mpsc::Sender<pb::ReadTransportRequest>,
    Streaming<pb::ByteChunk>,
) {
    use pb::read_transport_request::Kind as R;
    let (tx, rx) = mpsc::channel(64);
    let open = R::Open(pb::ReadTransportOpen {
        r#loop: String::new(),
        transport_id: id,
        from_offset: None,
        credit,
    });
    tx.send(pb::ReadTransportRequest { kind: Some(open) })
        .await
        .expect("send open");
    let chunks = net(channel)
        .read_transport(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("ReadTransport")
        .into_inner();
    (tx, chunks)
}

/// Opens a ReadTransport call from `from`, for its status.
async fn try_reader(
    channel: &Channel,
    id: u64,
    from: Option<u64>,
) -> Result<Streaming<pb::ByteChunk>, tonic::Status> {
    let open = pb::read_transport_request::Kind::Open(pb::ReadTransportOpen {
        r#loop: String::new(),
        transport_id: id,
        from_offset: from,
        credit: 0,
    });
    let first = pb::ReadTransportRequest { kind: Some(open) };
    net(channel)
        .read_transport(tokio_stream::iter(vec![first]))
        .await
        .map(tonic::Response::into_inner)
}

fn credit(bytes: u64) -> pb::ReadTransportRequest {
    pb::ReadTransportRequest {
        kind: Some(pb::read_transport_request::Kind::Credit(pb::StreamCredit {
            bytes,
        })),
    }
}

/// Reads chunks from stream offset `from` until `n` bytes arrived (or EOF); checks
/// offsets are contiguous.
async fn read_n(chunks: &mut Streaming<pb::ByteChunk>, from: u64, n: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(WAIT, chunks.message())
            .await
            .expect("chunk in time")
            .expect("stream ok")
            .expect("stream open");
        assert_eq!(chunk.offset, from + out.len() as u64, "contiguous offsets");
        out.extend_from_slice(&chunk.data);
        if chunk.eof {
            return (out, true);
        }
    }
    (out, false)
}

async fn transport(channel: &Channel, id: u64) -> pb::TransportInfo {
    net(channel)
        .get_transport(pb::GetTransportRequest {
            r#loop: String::new(),
            transport_id: id,
        })
        .await
        .expect("GetTransport")
        .into_inner()
        .transport
        .expect("transport")
}

async fn write(channel: &Channel, id: u64, data: &[u8]) -> Result<u64, tonic::Status> {
    net(channel)
        .write(pb::WriteRequest {
            r#loop: String::new(),
            transport_id: id,
            data: data.to_vec(),
        })
        .await
        .map(|r| r.into_inner().write_buffer_size)
}

fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).expect("peer reads");
    buf
}

#[tokio::test]
async fn an_echo_server_sends_back_what_it_gets() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Echo, 0).await;
    let got = tokio::task::spawn_blocking(move || {
        let mut stream = peer(port);
        let message: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        stream.write_all(&message).expect("write");
        (read_exact(&mut stream, message.len()), message)
    })
    .await
    .expect("peer thread");
    assert_eq!(got.0, got.1);
}

#[tokio::test]
async fn an_events_server_reports_bytes_as_events_and_in_the_stream_and_writes_reach_the_peer() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (server_id, port) = tcp_server(&channel, pb::ServerProtocol::Events, 0).await;
    let mut client = peer(port);
    let conn = made(&mut events).await;
    assert_eq!(conn.server_id, server_id);
    let id = conn.transport_id;

    client.write_all(b"ping").expect("write");
    let data = collect(&mut events, 1, |e| {
        matches!(e.kind, Some(Kind::DataReceived(_)))
    })
    .await;
    let Some(Kind::DataReceived(data)) = &data[0].kind else {
        unreachable!()
    };
    assert_eq!(
        (data.transport_id, &data.data[..], data.offset),
        (id, &b"ping"[..], 0)
    );

    let (_credits, mut chunks) = reader(&channel, id, 1 << 20).await;
    assert_eq!(read_n(&mut chunks, 0, 4).await.0, b"ping");

    write(&channel, id, b"pong").await.expect("Write");
    assert_eq!(read_exact(&mut client, 4), b"pong");

    client.shutdown(Shutdown::Write).expect("shutdown");
    let (rest, eof) = read_n(&mut chunks, 4, usize::MAX).await;
    assert!(rest.is_empty() && eof, "EOF ends the stream");
    let lost = collect(&mut events, 1, |e| {
        matches!(e.kind, Some(Kind::ConnectionLost(_)))
    })
    .await;
    assert!(matches!(&lost[0].kind, Some(Kind::ConnectionLost(l)) if l.transport_id == id));
}

/// Bytes the backpressure test sends: 256 MiB, as the issue asks (about 11 s with the
/// debug daemon under `cargo test`).
const FLOOD: usize = 256 << 20;

#[tokio::test]
async fn a_reader_without_credit_holds_the_peer_back_and_then_gets_every_byte() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let window = 1 << 20;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Events, window).await;
    let client = peer(port);
    let id = made(&mut events).await.transport_id;
    let (credits, mut chunks) = reader(&channel, id, 0).await;

    let sent = Arc::new(AtomicU64::new(0));
    let progress = sent.clone();
    let writer = std::thread::spawn(move || {
        let mut client = client;
        let mut hash = Sha256::new();
        let mut block = vec![0u8; 64 << 10];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..FLOOD / block.len() {
            for word in block.chunks_exact_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                word.copy_from_slice(&seed.to_le_bytes());
            }
            client.write_all(&block).expect("peer write");
            hash.update(&block);
            progress.fetch_add(block.len() as u64, Ordering::SeqCst);
        }
        client.shutdown(Shutdown::Write).expect("shutdown");
        hash.finalize()
    });

    // With no credit, the window fills and the transport stops reading ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let info = loop {
        let info = transport(&channel, id).await;
        if info.stream_paused {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paused: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!info.reading, "window full: reading paused");
    assert!(info.stream_buffered >= window, "{info:?}");
    // ... so the peer stalls once the kernel buffers are full too.
    let mut last = u64::MAX;
    let stalled = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break now;
        }
        last = now;
    };
    assert!(
        stalled < FLOOD as u64,
        "the peer is held back at {stalled} bytes"
    );
    assert!(transport(&channel, id).await.stream_paused, "still paused");

    credits.send(credit(u64::MAX / 2)).await.expect("credit");
    let mut hash = Sha256::new();
    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let chunk = tokio::time::timeout_at(deadline, chunks.message())
            .await
            .expect("the flood arrives in time")
            .expect("stream ok")
            .expect("stream open");
        assert_eq!(chunk.offset, received as u64, "contiguous, nothing dropped");
        received += chunk.data.len();
        hash.update(&chunk.data);
        if chunk.eof {
            assert!(chunk.error.is_empty(), "{}", chunk.error);
            break;
        }
    }
    let sent_hash = writer.join().expect("writer");
    assert_eq!(received, FLOOD);
    assert_eq!(hash.finalize(), sent_hash, "sha256 of every byte matches");
}

#[tokio::test]
async fn closing_a_server_leaves_its_connections_open() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (server_id, port) = tcp_server(&channel, pb::ServerProtocol::Events, 0).await;
    let mut client = peer(port);
    let id = made(&mut events).await.transport_id;
    let closed = net(&channel)
        .close_server(pb::CloseServerRequest {
            r#loop: String::new(),
            server_id,
        })
        .await
        .expect("CloseServer")
        .into_inner()
        .server
        .expect("server");
    assert!(closed.closed && !closed.serving);
    assert_eq!(closed.active_connections, 1);
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "no longer listening");

    write(&channel, id, b"still here").await.expect("Write");
    assert_eq!(read_exact(&mut client, 10), b"still here");
    client.write_all(b"me too").expect("write");
    let (_credits, mut chunks) = reader(&channel, id, 1 << 20).await;
    assert_eq!(read_n(&mut chunks, 0, 6).await.0, b"me too");
    assert_eq!(
        transport(&channel, id).await.state,
        pb::TransportState::Open as i32
    );
}

#[tokio::test]
async fn timer_actions_write_to_and_close_a_transport() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Events, 0).await;
    let mut client = peer(port);
    let id = made(&mut events).await.transport_id;
    let mut scheduler = SchedulerServiceClient::new(channel.clone());
    let action = |kind| Some(pb::Action { kind: Some(kind) });
    scheduler
        .call_later(pb::CallLaterRequest {
            after: Some(pb::call_later_request::After::DelaySeconds(0.05)),
            action: action(pb::action::Kind::WriteTransport(pb::WriteTransportAction {
                transport_id: id,
                data: b"from a timer".to_vec(),
            })),
            ..Default::default()
        })
        .await
        .expect("CallLater write");
    scheduler
        .call_later(pb::CallLaterRequest {
            after: Some(pb::call_later_request::After::DelaySeconds(0.1)),
            action: action(pb::action::Kind::CloseTransport(pb::CloseTransportAction {
                transport_id: id,
                abort: false,
            })),
            ..Default::default()
        })
        .await
        .expect("CallLater close");
    let mut got = Vec::new();
    client.read_to_end(&mut got).expect("read to EOF");
    assert_eq!(got, b"from a timer", "written, then closed");

    let unknown = scheduler
        .call_later(pb::CallLaterRequest {
            after: Some(pb::call_later_request::After::DelaySeconds(0.05)),
            action: action(pb::action::Kind::WriteTransport(pb::WriteTransportAction {
                transport_id: 987_654,
                data: b"x".to_vec(),
            })),
            ..Default::default()
        })
        .await
        .expect_err("unknown transport");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("987654"),
        "{}",
        unknown.message()
    );
}

#[tokio::test]
async fn bad_input_gets_the_right_status_naming_the_value() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut api = net(&channel);
    let (discard_id, port) = tcp_server(&channel, pb::ServerProtocol::Discard, 0).await;

    let in_use = api
        .create_server(pb::CreateServerRequest {
            hosts: vec!["127.0.0.1".into()],
            port: u32::from(port),
            ..Default::default()
        })
        .await
        .expect_err("port in use");
    assert_eq!(in_use.code(), Code::AlreadyExists, "{in_use:?}");
    assert!(
        in_use.message().contains(&format!("127.0.0.1:{port}")),
        "{in_use:?}"
    );

    let malformed = api
        .open_connection(pb::OpenConnectionRequest {
            host: "not a host!".into(),
            port: 80,
            ..Default::default()
        })
        .await
        .expect_err("malformed host");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("not a host!"), "{malformed:?}");

    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let free_port = free.local_addr().expect("addr").port();
    drop(free);
    let refused = api
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port: u32::from(free_port),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("127.0.0.1:{free_port}")),
        "{refused:?}"
    );

    let conn = api
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..Default::default()
        })
        .await
        .expect("connect to the discard server")
        .into_inner()
        .transport
        .expect("transport");
    let id = conn.transport_id;
    write(&channel, id, b"to discard").await.expect("Write");
    api.close_transport(pb::CloseTransportRequest {
        r#loop: String::new(),
        transport_id: id,
    })
    .await
    .expect("CloseTransport");
    let closed = write(&channel, id, b"late").await.expect_err("closed");
    assert_eq!(closed.code(), Code::FailedPrecondition, "{closed:?}");
    assert!(closed.message().contains(&id.to_string()), "{closed:?}");

    // The discard server's end of that connection keeps no byte stream.
    let accepted = api
        .list_transports(pb::ListTransportsRequest {
            server_id: discard_id,
            include_closed: true,
            ..Default::default()
        })
        .await
        .expect("ListTransports")
        .into_inner()
        .transports;
    let accepted = accepted.first().expect("the accepted end").transport_id;
    let no_stream = try_reader(&channel, accepted, None)
        .await
        .expect_err("no stream");
    assert_eq!(no_stream.code(), Code::FailedPrecondition, "{no_stream:?}");
    assert!(
        no_stream.message().contains(&accepted.to_string()),
        "{no_stream:?}"
    );
    let beyond = try_reader(&channel, id, Some(1 << 40))
        .await
        .expect_err("beyond");
    assert_eq!(beyond.code(), Code::OutOfRange, "{beyond:?}");
    assert!(
        beyond.message().contains(&(1u64 << 40).to_string()),
        "{beyond:?}"
    );

    let unknown = write(&channel, 424_242, b"x").await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("424242"), "{unknown:?}");
    let unknown = api
        .get_server(pb::GetServerRequest {
            r#loop: String::new(),
            server_id: 434_343,
        })
        .await
        .expect_err("unknown server");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("434343"), "{unknown:?}");

    let tls = api
        .create_server(pb::CreateServerRequest {
            tls: Some(pb::TlsServerOptions::default()),
            ..Default::default()
        })
        .await
        .expect_err("TLS without a certificate");
    assert_eq!(tls.code(), Code::InvalidArgument);
    assert!(tls.message().contains("tls"), "{tls:?}");
    let udp = api
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest::default())
        .await
        .expect_err("no address");
    assert_eq!(udp.code(), Code::InvalidArgument, "{udp:?}");
}

#[tokio::test]
async fn the_transport_quota_refuses_new_connections() {
    let daemon = Daemon::start_with("[limits]\nmax_transports_per_caller = 1\n");
    let channel = daemon.channel().await;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Discard, 0).await;
    let first = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut api = net(&channel);
    // The accepted connection counts against the server's creator (this caller).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = api
            .list_transports(pb::ListTransportsRequest::default())
            .await
            .expect("ListTransports")
            .into_inner()
            .transports;
        if open.len() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "accepted in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let over = api
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port: u32::from(port),
            ..Default::default()
        })
        .await
        .expect_err("over the quota");
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("quota is 1"), "{over:?}");
    drop(first);
}

/// A CA and a certificate for `localhost` signed by it, as PEM: (ca, cert, key).
fn pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_tls_echo_server_and_a_tls_connection_talk() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let (ca, cert, key) = pki();
    let server = tls_echo_server(&channel, &cert, &key).await;
    assert!(server.tls);
    let port = inet_port(&server);
    let conn = tls_connect(&channel, port, "localhost", &ca)
        .await
        .expect("OpenConnection with TLS")
        .into_inner()
        .transport
        .expect("transport");
    assert!(conn.tls_version.starts_with("TLSv1."), "{conn:?}");
    assert!(!conn.tls_cipher.is_empty(), "{conn:?}");
    let id = conn.transport_id;
    let (_credits, mut chunks) = reader(&channel, id, 1 << 20).await;
    write(&channel, id, b"over tls").await.expect("Write");
    assert_eq!(read_n(&mut chunks, 0, 8).await.0, b"over tls");

    let wrong_name = tls_connect(&channel, port, "not-localhost", &pki().0)
        .await
        .expect_err("another CA");
    assert_eq!(wrong_name.code(), Code::Unavailable, "{wrong_name:?}");
}

/// A TLS echo server for `localhost` on `channel`'s daemon.
async fn tls_echo_server(channel: &Channel, cert: &str, key: &str) -> pb::ServerInfo {
    net(channel)
        .create_server(pb::CreateServerRequest {
            hosts: vec!["127.0.0.1".into()],
            protocol: pb::ServerProtocol::Echo as i32,
            tls: Some(pb::TlsServerOptions {
                cert_pem: cert.as_bytes().to_vec(),
                key_pem: key.as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("CreateServer with TLS")
        .into_inner()
        .server
        .expect("server")
}

/// The port of a server's first (TCP) address.
fn inet_port(server: &pb::ServerInfo) -> u32 {
    port_of(server.addresses.first()).into()
}

/// OpenConnection over TLS to 127.0.0.1:`port`, expecting the certificate to name `name`
/// and trusting `ca` (PEM; empty: the daemon's default trust).
async fn tls_connect(
    channel: &Channel,
    port: u32,
    name: &str,
    ca: &str,
) -> Result<tonic::Response<pb::OpenConnectionResponse>, tonic::Status> {
    net(channel)
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port,
            tls: Some(pb::TlsClientOptions {
                server_name: name.into(),
                ca_pem: ca.as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn a_tls_connection_without_a_ca_trusts_the_daemons_default() {
    // `[tls] ca_file` names the CA: a request without one trusts it.
    let (ca, cert, key) = pki();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("ca file");
    let config = format!("[tls]\nca_file = {:?}\n", ca_file.display().to_string());
    let daemon = Daemon::start_with(&config);
    let channel = daemon.channel().await;
    let port = inet_port(&tls_echo_server(&channel, &cert, &key).await);
    let conn = tls_connect(&channel, port, "localhost", "")
        .await
        .expect("trusted through tls.ca_file")
        .into_inner()
        .transport
        .expect("transport");
    assert!(conn.tls_version.starts_with("TLSv1."), "{conn:?}");

    // By default, the system's trust store: it does not know this test's CA.
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let port = inet_port(&tls_echo_server(&channel, &cert, &key).await);
    let refused = tls_connect(&channel, port, "localhost", "")
        .await
        .expect_err("a private CA is not a system root");
    match refused.code() {
        Code::Unavailable => assert!(refused.message().contains("UnknownIssuer"), "{refused:?}"),
        // A machine without any system CA bundle.
        Code::FailedPrecondition => assert!(
            refused.message().contains("no default trust"),
            "{refused:?}"
        ),
        _ => panic!("{refused:?}"),
    }
}

#[tokio::test]
async fn resolve_and_reverse_resolve_on_the_loop() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let found = net(&channel)
        .resolve(pb::ResolveRequest {
            host: "127.0.0.1".into(),
            port: 80,
            ..Default::default()
        })
        .await
        .expect("Resolve")
        .into_inner()
        .addresses;
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(matches!(&found[0].kind,
        Some(pb::net_address::Kind::Inet(i)) if i.ip == "127.0.0.1" && i.port == 80));
    let named = net(&channel)
        .reverse_resolve(pb::ReverseResolveRequest {
            ip: "127.0.0.1".into(),
            port: 80,
            numeric_host: true,
            ..Default::default()
        })
        .await
        .expect("ReverseResolve")
        .into_inner();
    assert!(
        !named.host.is_empty() && !named.service.is_empty(),
        "{named:?}"
    );
    let bad = net(&channel)
        .resolve(pb::ResolveRequest {
            host: "not a host!".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_datagram_endpoint_receives_as_events_and_sends() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let endpoint = net(&channel)
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            local_host: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("CreateDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint");
    let Some(pb::net_address::Kind::Inet(local)) =
        endpoint.sockname.as_ref().and_then(|a| a.kind.clone())
    else {
        panic!("no local address: {endpoint:?}")
    };
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    peer.send_to(b"dgram", ("127.0.0.1", local.port as u16))
        .expect("send");
    let got = collect(&mut events, 1, |e| {
        matches!(e.kind, Some(Kind::DatagramReceived(_)))
    })
    .await;
    let Some(Kind::DatagramReceived(d)) = &got[0].kind else {
        unreachable!()
    };
    assert_eq!(
        (d.endpoint_id, &d.data[..]),
        (endpoint.endpoint_id, &b"dgram"[..])
    );

    let peer_port = peer.local_addr().expect("addr").port();
    net(&channel)
        .send_datagram(pb::SendDatagramRequest {
            endpoint_id: endpoint.endpoint_id,
            data: b"reply".to_vec(),
            host: "127.0.0.1".into(),
            port: u32::from(peer_port),
            ..Default::default()
        })
        .await
        .expect("SendDatagram");
    let mut buf = [0u8; 16];
    let (n, _) = peer.recv_from(&mut buf).expect("reply arrives");
    assert_eq!(&buf[..n], b"reply");

    let closed = net(&channel)
        .close_datagram_endpoint(pb::CloseDatagramEndpointRequest {
            r#loop: String::new(),
            endpoint_id: endpoint.endpoint_id,
        })
        .await
        .expect("Close")
        .into_inner()
        .endpoint
        .expect("endpoint");
    assert_eq!(closed.datagrams_received, 1);
    let unknown = net(&channel)
        .send_datagram(pb::SendDatagramRequest {
            endpoint_id: 515_151,
            data: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("unknown endpoint");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("515151"), "{unknown:?}");
}

#[tokio::test]
async fn sendfile_sends_a_file_the_daemon_reads() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Events, 0).await;
    let mut client = peer(port);
    let id = made(&mut events).await.transport_id;
    let content: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = daemon.dir.path().join("payload.bin");
    std::fs::write(&path, &content).expect("write the file");
    let sent = net(&channel)
        .sendfile(pb::SendfileRequest {
            transport_id: id,
            path: path.display().to_string(),
            offset: 1000,
            ..Default::default()
        })
        .await
        .expect("Sendfile")
        .into_inner()
        .bytes_sent;
    assert_eq!(sent, content.len() as u64 - 1000);
    let (got, client) = tokio::task::spawn_blocking(move || {
        let got = read_exact(&mut client, sent as usize);
        (got, client)
    })
    .await
    .expect("reader");
    assert!(got == content[1000..], "the file's bytes from offset 1000");

    let missing = net(&channel)
        .sendfile(pb::SendfileRequest {
            transport_id: id,
            path: "/nonexistent/loopd-file".into(),
            ..Default::default()
        })
        .await
        .expect_err("missing file");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        missing.message().contains("/nonexistent/loopd-file"),
        "{missing:?}"
    );
    drop(client);
}

// ---- StartTls ------------------------------------------------------------------------

/// A relay between a client and 127.0.0.1:`to` that keeps every byte the client sends;
/// returns its port and what it saw so far.
fn relay(to: u16) -> (u16, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
    let port = listener.local_addr().expect("relay addr").port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        let (mut client, _) = listener.accept().expect("relay accept");
        let mut server = TcpStream::connect(("127.0.0.1", to)).expect("relay connect");
        let (mut client_r, mut server_w) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut server, &mut client);
        });
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_r.read(&mut buf) {
            kept.lock().expect("relay log").extend_from_slice(&buf[..n]);
            if server_w.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_w.shutdown(Shutdown::Write);
    });
    (port, seen)
}

type StartTlsAnswer = Result<tonic::Response<pb::StartTlsResponse>, tonic::Status>;

/// A STARTTLS exchange with a new CA and a certificate for `localhost`: the server's
/// side answers "OK" in the step that starts TLS, and the client's side starts, expecting
/// `name`, once it read the OK. The CA, and both sides' answers.
async fn starttls(
    channel: &Channel,
    (server_side, client_side): (u64, u64),
    client_chunks: &mut Streaming<pb::ByteChunk>,
    name: &str,
) -> (String, StartTlsAnswer, StartTlsAnswer) {
    let (ca, cert, key) = pki();
    let mut request = start_tls_server(server_side, &cert, &key);
    request.write_first = b"OK\n".to_vec();
    let mut a = net(channel);
    let server_up = tokio::spawn(async move { a.start_tls(request).await });
    assert_eq!(read_n(client_chunks, 0, 3).await.0, b"OK\n");
    let client_up = net(channel)
        .start_tls(start_tls_client(client_side, name, &ca))
        .await;
    let server_up = server_up.await.expect("the server's StartTls");
    (ca, server_up, client_up)
}

/// PauseReading (`reading` false) or ResumeReading on a transport.
async fn set_reading(channel: &Channel, id: u64, reading: bool) {
    let mut net = net(channel);
    if reading {
        let request = pb::ResumeReadingRequest {
            transport_id: id,
            ..Default::default()
        };
        net.resume_reading(request).await.expect("ResumeReading");
    } else {
        let request = pb::PauseReadingRequest {
            transport_id: id,
            ..Default::default()
        };
        net.pause_reading(request).await.expect("PauseReading");
    }
}

fn start_tls_client(id: u64, name: &str, ca: &str) -> pb::StartTlsRequest {
    pb::StartTlsRequest {
        transport_id: id,
        side: Some(pb::start_tls_request::Side::Client(pb::TlsClientOptions {
            server_name: name.into(),
            ca_pem: ca.as_bytes().to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn start_tls_server(id: u64, cert: &str, key: &str) -> pb::StartTlsRequest {
    pb::StartTlsRequest {
        transport_id: id,
        side: Some(pb::start_tls_request::Side::Server(pb::TlsServerOptions {
            cert_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An events server and a connection to it through [`relay`]: (server side, client side,
/// the relay's log).
async fn plain_pair(
    channel: &Channel,
    events: &mut Streaming<pb::EventBatch>,
) -> (u64, u64, Arc<std::sync::Mutex<Vec<u8>>>) {
    let (server_id, port) = tcp_server(channel, pb::ServerProtocol::Events, 0).await;
    let (relay_port, seen) = relay(port);
    let client = net(channel)
        .open_connection(pb::OpenConnectionRequest {
            host: "127.0.0.1".into(),
            port: u32::from(relay_port),
            ..Default::default()
        })
        .await
        .expect("OpenConnection")
        .into_inner()
        .transport
        .expect("transport")
        .transport_id;
    let made = collect(events, 2, |e| {
        matches!(e.kind, Some(Kind::ConnectionMade(_)))
    })
    .await;
    let accepted = made
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::ConnectionMade(m)) if m.server_id == server_id => Some(m.transport_id),
            _ => None,
        })
        .expect("the server's ConnectionMade");
    (accepted, client, seen)
}

#[tokio::test]
async fn start_tls_upgrades_both_ends_of_a_plain_connection_in_place() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (server_side, client_side, seen) = plain_pair(&channel, &mut events).await;
    let (_s, mut server_chunks) = reader(&channel, server_side, 1 << 20).await;
    let (_c, mut client_chunks) = reader(&channel, client_side, 1 << 20).await;
    write(&channel, client_side, b"STARTTLS\n")
        .await
        .expect("Write");
    assert_eq!(read_n(&mut server_chunks, 0, 9).await.0, b"STARTTLS\n");
    // The server's side pauses reading; the handshake still completes, and the pause
    // holds afterwards.
    set_reading(&channel, server_side, false).await;

    let (ca, server_up, client_up) = starttls(
        &channel,
        (server_side, client_side),
        &mut client_chunks,
        "localhost",
    )
    .await;
    for (up, id) in [(server_up, server_side), (client_up, client_side)] {
        let info = up
            .expect("StartTls")
            .into_inner()
            .transport
            .expect("transport");
        assert_eq!(info.transport_id, id, "the transport keeps its id");
        assert!(info.tls_version.starts_with("TLSv1."), "{info:?}");
        assert!(!info.tls_cipher.is_empty(), "{info:?}");
        assert_eq!(
            info.reading,
            id != server_side,
            "a pause survives StartTls: {info:?}"
        );
    }
    set_reading(&channel, server_side, true).await;

    write(&channel, client_side, b"secret up")
        .await
        .expect("Write");
    write(&channel, server_side, b"secret down")
        .await
        .expect("Write");
    let up = read_n(&mut server_chunks, 9, 9).await.0;
    let down = read_n(&mut client_chunks, 3, 11).await.0;
    assert_eq!(
        (&up[..], &down[..]),
        (&b"secret up"[..], &b"secret down"[..])
    );
    let wire = seen.lock().expect("relay log").clone();
    assert!(
        wire.starts_with(b"STARTTLS\n"),
        "the clear part went in clear"
    );
    assert!(wire.len() > 9 + 9, "the handshake and a record followed");
    assert!(
        !wire.windows(9).any(|w| w == b"secret up"),
        "after StartTls the bytes on the wire are encrypted"
    );
    let made = collect(&mut events, 0, |_| false).await;
    assert!(made.is_empty(), "{made:?}");

    let written = transport(&channel, client_side).await.bytes_written;
    let mut again = start_tls_client(client_side, "localhost", &ca);
    again.write_first = b"not sent".to_vec();
    let again = net(&channel)
        .start_tls(again)
        .await
        .expect_err("already TLS");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(
        transport(&channel, client_side).await.bytes_written,
        written,
        "a refused StartTls writes nothing"
    );
    assert!(
        again
            .message()
            .contains(&format!("transport {client_side} already speaks tls")),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_start_tls_refused_for_its_arguments_sends_no_write_first() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (_server_side, client_side, _) = plain_pair(&channel, &mut events).await;
    let (ca, _, _) = pki();
    let written = transport(&channel, client_side).await.bytes_written;
    let mut bad_name = start_tls_client(client_side, "not a name!", &ca);
    bad_name.write_first = b"go ahead".to_vec();
    let err = net(&channel)
        .start_tls(bad_name)
        .await
        .expect_err("an invalid server name");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not a name!"), "{err:?}");
    let info = transport(&channel, client_side).await;
    assert_eq!(info.bytes_written, written, "nothing went out in clear");
    assert_eq!(info.state, pb::TransportState::Open as i32, "{info:?}");
}

#[tokio::test]
async fn start_tls_with_the_wrong_server_name_fails_and_closes_the_transport() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (server_side, client_side, _) = plain_pair(&channel, &mut events).await;
    let (_c, mut client_chunks) = reader(&channel, client_side, 1 << 20).await;
    let (_, server_up, client_up) = starttls(
        &channel,
        (server_side, client_side),
        &mut client_chunks,
        "wrong.example",
    )
    .await;
    let err = client_up.expect_err("a certificate for localhost only");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("wrong.example"), "{err:?}");
    let err = server_up.expect_err("the client's alert ends the handshake");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let lost = collect(
        &mut events,
        1,
        |e| matches!(&e.kind, Some(Kind::ConnectionLost(l)) if l.transport_id == client_side),
    )
    .await;
    let Some(Kind::ConnectionLost(lost)) = &lost[0].kind else {
        unreachable!()
    };
    assert!(lost.error.contains("wrong.example"), "{lost:?}");
    let info = transport(&channel, client_side).await;
    assert_eq!(info.state, pb::TransportState::Closed as i32, "{info:?}");
}

#[tokio::test]
async fn start_tls_refuses_bad_input_with_the_right_status() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Events, 0).await;
    let quiet_peer = peer(port);
    let id = made(&mut events).await.transport_id;
    let (ca, cert, key) = pki();
    let status =
        |r: Result<tonic::Response<pb::StartTlsResponse>, tonic::Status>| r.expect_err("refused");

    let unknown = status(
        net(&channel)
            .start_tls(start_tls_client(919_191, "localhost", &ca))
            .await,
    );
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("919191"), "{unknown:?}");
    let no_side = status(
        net(&channel)
            .start_tls(pb::StartTlsRequest {
                transport_id: id,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(no_side.code(), Code::InvalidArgument, "{no_side:?}");
    let bad_key = status(
        net(&channel)
            .start_tls(start_tls_server(id, &cert, "junk"))
            .await,
    );
    assert_eq!(bad_key.code(), Code::InvalidArgument, "{bad_key:?}");
    assert!(bad_key.message().contains("server.key_pem"), "{bad_key:?}");
    let bad_ca = status(
        net(&channel)
            .start_tls(start_tls_client(id, "localhost", "junk"))
            .await,
    );
    assert_eq!(bad_ca.code(), Code::InvalidArgument, "{bad_ca:?}");
    assert!(bad_ca.message().contains("client.ca_pem"), "{bad_ca:?}");
    let no_name = status(net(&channel).start_tls(start_tls_client(id, "", &ca)).await);
    assert_eq!(no_name.code(), Code::InvalidArgument, "{no_name:?}");
    assert!(no_name.message().contains("server_name"), "{no_name:?}");

    // The peer never says hello: the handshake times out.
    let mut slow = start_tls_server(id, &cert, &key);
    if let Some(pb::start_tls_request::Side::Server(tls)) = &mut slow.side {
        tls.handshake_timeout = Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        });
    }
    let timed_out = status(net(&channel).start_tls(slow).await);
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    assert!(
        timed_out.message().contains(&format!("transport {id}")),
        "{timed_out:?}"
    );

    let closed = status(
        net(&channel)
            .start_tls(start_tls_server(id, &cert, &key))
            .await,
    );
    assert_eq!(closed.code(), Code::FailedPrecondition, "{closed:?}");
    assert!(closed.message().contains(&id.to_string()), "{closed:?}");
    drop(quiet_peer);
}

// ---- Unix datagram endpoints ---------------------------------------------------------

async fn unix_endpoint(channel: &Channel, local: &str, remote: &str) -> pb::DatagramEndpointInfo {
    net(channel)
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            local_path: local.into(),
            remote_path: remote.into(),
            ..Default::default()
        })
        .await
        .expect("CreateDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
}

/// The next DatagramReceived: (sender path, data).
async fn datagram(events: &mut Streaming<pb::EventBatch>) -> (String, Vec<u8>) {
    let got = collect(events, 1, |e| {
        matches!(e.kind, Some(Kind::DatagramReceived(_)))
    })
    .await;
    let Some(Kind::DatagramReceived(d)) = &got[0].kind else {
        unreachable!()
    };
    match d.addr.as_ref().and_then(|a| a.kind.clone()) {
        Some(pb::net_address::Kind::Unix(u)) => (u.path, d.data.clone()),
        other => panic!("not a unix sender: {other:?}"),
    }
}

#[tokio::test]
async fn a_unix_datagram_endpoint_talks_to_named_and_unnamed_peers() {
    use std::os::unix::net::UnixDatagram;
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let local = daemon.dir.path().join("endpoint.sock");
    drop(UnixDatagram::bind(&local).expect("a stale socket file"));
    let local_str = local.display().to_string();
    let endpoint = unix_endpoint(&channel, &local_str, "").await;
    assert!(
        matches!(endpoint.sockname.as_ref().and_then(|a| a.kind.clone()),
            Some(pb::net_address::Kind::Unix(u)) if u.path == local_str),
        "{endpoint:?}"
    );

    let peer_path = daemon.dir.path().join("peer.sock");
    let peer = UnixDatagram::bind(&peer_path).expect("peer bind");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    peer.send_to(b"named", &local).expect("send");
    assert_eq!(
        datagram(&mut events).await,
        (peer_path.display().to_string(), b"named".to_vec())
    );
    let unnamed = UnixDatagram::unbound().expect("unnamed");
    unnamed.send_to(b"anonymous", &local).expect("send");
    assert_eq!(
        datagram(&mut events).await,
        (String::new(), b"anonymous".to_vec()),
        "an unnamed sender has an empty path"
    );

    let send = |data: &[u8], host: &str, path: &str| pb::SendDatagramRequest {
        endpoint_id: endpoint.endpoint_id,
        data: data.to_vec(),
        host: host.into(),
        port: if host.is_empty() { 0 } else { 9 },
        path: path.into(),
        ..Default::default()
    };
    let peer_str = peer_path.display().to_string();
    net(&channel)
        .send_datagram(send(b"reply", "", &peer_str))
        .await
        .expect("SendDatagram to a path");
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).expect("reply arrives");
    assert_eq!(&buf[..n], b"reply");
    assert_eq!(from.as_pathname(), Some(local.as_path()));
    let both = net(&channel)
        .send_datagram(send(b"x", "127.0.0.1", &peer_str))
        .await
        .expect_err("a host and a path");
    assert_eq!(both.code(), Code::InvalidArgument, "{both:?}");
    assert!(both.message().contains("path"), "{both:?}");

    let mixed = net(&channel)
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            local_path: local_str.clone(),
            local_port: 9,
            ..Default::default()
        })
        .await
        .expect_err("a path and a port");
    assert_eq!(mixed.code(), Code::InvalidArgument, "{mixed:?}");
    assert!(mixed.message().contains("local_path"), "{mixed:?}");

    net(&channel)
        .close_datagram_endpoint(pb::CloseDatagramEndpointRequest {
            r#loop: String::new(),
            endpoint_id: endpoint.endpoint_id,
        })
        .await
        .expect("Close");
    let deadline = std::time::Instant::now() + WAIT;
    while local.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !local.exists(),
        "the daemon removes the socket file it bound"
    );
    assert!(peer_path.exists(), "and only that one");
}

#[tokio::test]
async fn a_connected_unix_datagram_endpoint_sends_without_an_address() {
    use std::os::unix::net::UnixDatagram;
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let peer_path = daemon.dir.path().join("peer.sock");
    let peer = UnixDatagram::bind(&peer_path).expect("peer bind");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let endpoint = unix_endpoint(&channel, "", &peer_path.display().to_string()).await;
    assert!(
        matches!(endpoint.peername.as_ref().and_then(|a| a.kind.clone()),
            Some(pb::net_address::Kind::Unix(u)) if u.path == peer_path.display().to_string()),
        "{endpoint:?}"
    );
    net(&channel)
        .send_datagram(pb::SendDatagramRequest {
            endpoint_id: endpoint.endpoint_id,
            data: b"to the remote".to_vec(),
            ..Default::default()
        })
        .await
        .expect("SendDatagram");
    let mut buf = [0u8; 32];
    let (n, from) = peer.recv_from(&mut buf).expect("arrives");
    assert_eq!(&buf[..n], b"to the remote");
    assert!(from.is_unnamed(), "no local path: an unnamed socket");

    let missing = net(&channel)
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            remote_path: "/nonexistent/loopd-dgram.sock".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such socket");
    assert_eq!(missing.code(), Code::Unavailable, "{missing:?}");
    assert!(
        missing.message().contains("/nonexistent/loopd-dgram.sock"),
        "{missing:?}"
    );
}
