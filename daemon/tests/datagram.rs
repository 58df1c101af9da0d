//! GetDatagramEndpoint and ListDatagramEndpoints on a real daemon: UDP and Unix datagram
//! endpoints show their addresses and counters after traffic both ways; ListDatagramEndpoints
//! walks 7 endpoints in pages of 3; a closed endpoint stays visible as CLOSED (listed only
//! with `include_closed`) until retention forgets it; unknown ids are NOT_FOUND naming the
//! id, bad tokens INVALID_ARGUMENT naming `page_token`.

mod support;

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use loopd_proto::NetServiceClient;
use loopd_proto::pb;
use pb::event::Kind;
use pb::net_address::Kind as Addr;
use support::{Daemon, WAIT, collect, subscribe};
use tonic::transport::Channel;
use tonic::{Code, Status};

fn net(channel: &Channel) -> NetServiceClient<Channel> {
    NetServiceClient::new(channel.clone())
}

async fn create(
    channel: &Channel,
    req: pb::CreateDatagramEndpointRequest,
) -> pb::DatagramEndpointInfo {
    net(channel)
        .create_datagram_endpoint(req)
        .await
        .expect("CreateDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
}

/// A UDP endpoint bound to 127.0.0.1 on a free port.
async fn udp(channel: &Channel) -> pb::DatagramEndpointInfo {
    create(
        channel,
        pb::CreateDatagramEndpointRequest {
            local_host: "127.0.0.1".into(),
            ..Default::default()
        },
    )
    .await
}

async fn get(
    channel: &Channel,
    loop_name: &str,
    id: u64,
) -> Result<pb::DatagramEndpointInfo, Status> {
    let r = net(channel)
        .get_datagram_endpoint(pb::GetDatagramEndpointRequest {
            r#loop: loop_name.into(),
            endpoint_id: id,
        })
        .await?
        .into_inner();
    Ok(r.endpoint.expect("endpoint"))
}

/// One page: the endpoints and the next token.
async fn list(
    channel: &Channel,
    include_closed: bool,
    page_size: u32,
    page_token: String,
) -> Result<(Vec<pb::DatagramEndpointInfo>, String), Status> {
    let r = net(channel)
        .list_datagram_endpoints(pb::ListDatagramEndpointsRequest {
            r#loop: String::new(),
            include_closed,
            page_size,
            page_token,
        })
        .await?
        .into_inner();
    Ok((r.endpoints, r.next_page_token))
}

fn ids(endpoints: &[pb::DatagramEndpointInfo]) -> Vec<u64> {
    endpoints.iter().map(|e| e.endpoint_id).collect()
}

fn inet_port(addr: Option<&pb::NetAddress>) -> u16 {
    match addr.and_then(|a| a.kind.as_ref()) {
        Some(Addr::Inet(inet)) => u16::try_from(inet.port).expect("a port"),
        other => panic!("not an inet address: {other:?}"),
    }
}

fn unix_path(addr: Option<&pb::NetAddress>) -> String {
    match addr.and_then(|a| a.kind.as_ref()) {
        Some(Addr::Unix(unix)) => unix.path.clone(),
        other => panic!("not a unix address: {other:?}"),
    }
}

async fn send(channel: &Channel, req: pb::SendDatagramRequest) {
    net(channel).send_datagram(req).await.expect("SendDatagram");
}

async fn close(channel: &Channel, id: u64) -> pb::DatagramEndpointInfo {
    net(channel)
        .close_datagram_endpoint(pb::CloseDatagramEndpointRequest {
            r#loop: String::new(),
            endpoint_id: id,
        })
        .await
        .expect("CloseDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint")
}

/// Waits for `n` DatagramReceived events of endpoint `id`.
async fn received(events: &mut tonic::Streaming<pb::EventBatch>, id: u64, n: usize) {
    collect(
        events,
        n,
        |e| matches!(&e.kind, Some(Kind::DatagramReceived(d)) if d.endpoint_id == id),
    )
    .await;
}

/// Polls GetDatagramEndpoint until `done` holds, or panics after [`WAIT`].
async fn get_until(
    channel: &Channel,
    id: u64,
    done: impl Fn(&pb::DatagramEndpointInfo) -> bool,
) -> pb::DatagramEndpointInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = get(channel, "", id).await.expect("GetDatagramEndpoint");
        if done(&info) {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_udp_endpoint_shows_its_addresses_and_counters() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let peer_port = peer.local_addr().expect("addr").port();

    let bound = udp(&channel).await;
    let port = inet_port(bound.sockname.as_ref());
    let connected = create(
        &channel,
        pb::CreateDatagramEndpointRequest {
            remote_host: "127.0.0.1".into(),
            remote_port: u32::from(peer_port),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(inet_port(connected.peername.as_ref()), peer_port);

    peer.send_to(b"hello", ("127.0.0.1", port)).expect("send");
    peer.send_to(b"", ("127.0.0.1", port)).expect("send");
    received(&mut events, bound.endpoint_id, 2).await;
    send(
        &channel,
        pb::SendDatagramRequest {
            endpoint_id: bound.endpoint_id,
            data: b"abc".to_vec(),
            host: "127.0.0.1".into(),
            port: u32::from(peer_port),
            ..Default::default()
        },
    )
    .await;
    send(
        &channel,
        pb::SendDatagramRequest {
            endpoint_id: connected.endpoint_id,
            data: b"to the remote".to_vec(),
            ..Default::default()
        },
    )
    .await;
    let mut buf = [0u8; 32];
    for _ in 0..2 {
        peer.recv_from(&mut buf).expect("both datagrams arrive");
    }

    let got = get(&channel, "", bound.endpoint_id).await.expect("Get");
    assert_eq!(got.r#loop, "default");
    assert_eq!(inet_port(got.sockname.as_ref()), port);
    assert_eq!(got.peername, None, "not connected");
    assert_eq!(got.state, pb::TransportState::Open as i32);
    assert!(!got.closed);
    // (datagrams received, bytes received, datagrams sent, bytes sent)
    let counters = |e: &pb::DatagramEndpointInfo| {
        (
            e.datagrams_received,
            e.bytes_received,
            e.datagrams_sent,
            e.bytes_sent,
        )
    };
    assert_eq!(counters(&got), (2, 5, 1, 3));
    assert_eq!(got.last_error, "");
    assert_eq!(got.write_buffer_size, 0);
    assert!(got.created_at.is_some());

    let got = get(&channel, "", connected.endpoint_id).await.expect("Get");
    assert_eq!(inet_port(got.peername.as_ref()), peer_port);
    assert_ne!(inet_port(got.sockname.as_ref()), 0);
    assert_eq!(counters(&got), (0, 0, 1, 13));

    let (listed, next) = list(&channel, false, 0, String::new()).await.expect("List");
    assert_eq!(ids(&listed), [bound.endpoint_id, connected.endpoint_id]);
    assert_eq!(
        listed[0],
        get(&channel, "", bound.endpoint_id).await.unwrap()
    );
    assert!(next.is_empty(), "{next:?}");
}

#[tokio::test]
async fn a_connected_endpoint_keeps_its_last_error() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    // A port nobody listens on: the ICMP port-unreachable comes back as ECONNREFUSED.
    let gone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let gone_port = gone.local_addr().expect("addr").port();
    drop(gone);
    let connected = create(
        &channel,
        pb::CreateDatagramEndpointRequest {
            remote_host: "127.0.0.1".into(),
            remote_port: u32::from(gone_port),
            ..Default::default()
        },
    )
    .await;
    let id = connected.endpoint_id;
    for _ in 0..3 {
        send(
            &channel,
            pb::SendDatagramRequest {
                endpoint_id: id,
                data: b"anyone?".to_vec(),
                ..Default::default()
            },
        )
        .await;
    }
    let got = get_until(&channel, id, |e| !e.last_error.is_empty()).await;
    assert!(got.last_error.contains("refused"), "{got:?}");
    assert_eq!(
        got.state,
        pb::TransportState::Open as i32,
        "errors do not close"
    );
}

#[tokio::test]
async fn a_unix_endpoint_shows_its_paths_and_counters() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut events = subscribe(&channel, "").await;
    let peer_path = daemon.dir.path().join("peer.sock");
    let peer = UnixDatagram::bind(&peer_path).expect("peer");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let peer_str = peer_path.display().to_string();
    let local = daemon.dir.path().join("local.sock");
    let local_str = local.display().to_string();

    let bound = create(
        &channel,
        pb::CreateDatagramEndpointRequest {
            local_path: local_str.clone(),
            ..Default::default()
        },
    )
    .await;
    let unnamed = create(
        &channel,
        pb::CreateDatagramEndpointRequest {
            remote_path: peer_str.clone(),
            ..Default::default()
        },
    )
    .await;

    peer.send_to(b"ping", &local).expect("send");
    received(&mut events, bound.endpoint_id, 1).await;
    send(
        &channel,
        pb::SendDatagramRequest {
            endpoint_id: bound.endpoint_id,
            data: b"pong!".to_vec(),
            path: peer_str.clone(),
            ..Default::default()
        },
    )
    .await;
    send(
        &channel,
        pb::SendDatagramRequest {
            endpoint_id: unnamed.endpoint_id,
            data: b"xy".to_vec(),
            ..Default::default()
        },
    )
    .await;
    let mut buf = [0u8; 16];
    for _ in 0..2 {
        peer.recv_from(&mut buf).expect("both datagrams arrive");
    }

    let got = get(&channel, "", bound.endpoint_id).await.expect("Get");
    assert_eq!(unix_path(got.sockname.as_ref()), local_str);
    assert_eq!(got.peername, None);
    assert_eq!(
        (
            got.datagrams_received,
            got.bytes_received,
            got.datagrams_sent,
            got.bytes_sent
        ),
        (1, 4, 1, 5)
    );
    let got = get(&channel, "", unnamed.endpoint_id).await.expect("Get");
    assert_eq!(unix_path(got.sockname.as_ref()), "", "an unnamed socket");
    assert_eq!(unix_path(got.peername.as_ref()), peer_str);
    assert_eq!((got.datagrams_sent, got.bytes_sent), (1, 2));
}

#[tokio::test]
async fn endpoints_are_listed_a_page_at_a_time() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(udp(&channel).await.endpoint_id);
    }
    let (mut walked, mut token, mut pages) = (Vec::new(), String::new(), Vec::new());
    loop {
        let (page, next) = list(&channel, false, 3, token).await.expect("a page");
        pages.push(page.len());
        walked.extend(ids(&page));
        if next.is_empty() {
            break;
        }
        assert!(pages.len() < 7, "pagination does not end");
        token = next;
    }
    assert_eq!(pages, [3, 3, 1]);
    assert_eq!(walked, created, "every id once, ascending");

    let (_, token) = list(&channel, false, 3, String::new()).await.unwrap();
    let other = list(&channel, true, 3, token).await;
    let garbage = list(&channel, false, 3, "garbage".into()).await;
    for (what, result) in [("include_closed's token", other), ("garbage", garbage)] {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("page_token"), "{what}: {err:?}");
    }
}

#[tokio::test]
async fn unknown_endpoints_and_loops_are_not_found() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let err = get(&channel, "", 616_161).await.expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("616161"), "{err:?}");
    let endpoint = udp(&channel).await;
    let err = get(&channel, "nope", endpoint.endpoint_id)
        .await
        .expect_err("unknown loop");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{err:?}");
    let err = net(&channel)
        .list_datagram_endpoints(pb::ListDatagramEndpointsRequest {
            r#loop: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown loop");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn a_closed_endpoint_stays_visible_as_closed() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let (open, closing) = (udp(&channel).await, udp(&channel).await);
    close(&channel, closing.endpoint_id).await;
    let got = get_until(&channel, closing.endpoint_id, |e| e.closed).await;
    assert_eq!(got.state, pb::TransportState::Closed as i32);
    assert_eq!(
        inet_port(got.sockname.as_ref()),
        inet_port(closing.sockname.as_ref()),
        "the address is kept for display"
    );

    let (listed, _) = list(&channel, false, 0, String::new()).await.unwrap();
    assert_eq!(ids(&listed), [open.endpoint_id], "closed ones are left out");
    let (listed, _) = list(&channel, true, 0, String::new()).await.unwrap();
    assert_eq!(ids(&listed), [open.endpoint_id, closing.endpoint_id]);
}

#[tokio::test]
async fn retention_forgets_closed_endpoints() {
    let daemon = Daemon::start_with("[limits]\nretention_secs = 0\n");
    let channel = daemon.channel().await;
    let endpoint = udp(&channel).await;
    let id = endpoint.endpoint_id;
    close(&channel, id).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let err = loop {
        match get(&channel, "", id).await {
            Err(err) => break err,
            Ok(info) => assert!(tokio::time::Instant::now() < deadline, "kept: {info:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let (listed, _) = list(&channel, true, 0, String::new()).await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}
