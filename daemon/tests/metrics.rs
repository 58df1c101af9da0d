//! DaemonService.GetMetrics against real traffic: a TCP server fed by a std client, a UDP
//! endpoint fed by a std socket, a spawned child and a signal handler, each seen in the
//! loop's networking and process figures.

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use loopd_client::{Client, Command};
use loopd_proto::pb;
use loopd_proto::{DaemonServiceClient, NetServiceClient};
use support::{Daemon, WAIT, port_of, tcp_server};
use tonic::transport::Channel;

/// The default loop's metrics.
async fn default_loop(channel: &Channel) -> pb::LoopMetrics {
    let mut metrics = DaemonServiceClient::new(channel.clone())
        .get_metrics(pb::GetMetricsRequest {
            loops: vec!["default".into()],
        })
        .await
        .expect("GetMetrics")
        .into_inner()
        .loops;
    assert_eq!(metrics.len(), 1);
    metrics.remove(0)
}

/// Polls the default loop's metrics until `done` holds; panics after [`WAIT`].
async fn metrics_until(
    channel: &Channel,
    done: impl Fn(&pb::LoopMetrics) -> bool,
) -> pb::LoopMetrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = default_loop(channel).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never reached: {m:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The networking and process figures (fields 17 and up), in proto order.
fn figures(m: &pb::LoopMetrics) -> [u64; 12] {
    [
        m.open_servers,
        m.open_transports,
        m.open_datagram_endpoints,
        m.connections_accepted,
        m.bytes_received,
        m.bytes_sent,
        m.datagrams_received,
        m.datagrams_sent,
        m.processes_spawned,
        m.processes_running,
        m.processes_exited,
        m.signal_handlers,
    ]
}

#[tokio::test]
async fn a_tcp_echo_is_counted_in_servers_transports_and_bytes() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    assert_eq!(
        figures(&default_loop(&channel).await),
        [0; 12],
        "a new loop"
    );
    let (_, port) = tcp_server(&channel, pb::ServerProtocol::Echo, 0).await;
    let m = default_loop(&channel).await;
    assert_eq!((m.open_servers, m.open_transports), (1, 0));

    const N: usize = 100_000;
    let payload: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
    let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let reader = {
        let mut peer = peer.try_clone().expect("clone");
        std::thread::spawn(move || {
            let mut echoed = vec![0; N];
            peer.read_exact(&mut echoed).map(|()| echoed)
        })
    };
    peer.write_all(&payload).expect("write");
    let echoed = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join")
        .expect("echo");
    assert!(echoed == payload, "the echo came back intact");

    let m = default_loop(&channel).await;
    assert_eq!(
        (m.open_servers, m.open_transports, m.connections_accepted),
        (1, 1, 1),
        "{m:?}"
    );
    assert_eq!(
        (m.bytes_received, m.bytes_sent),
        (N as u64, N as u64),
        "every byte in and echoed out: {m:?}"
    );
    drop(peer);
    let m = metrics_until(&channel, |m| m.open_transports == 0).await;
    assert_eq!((m.open_servers, m.connections_accepted), (1, 1));
}

#[tokio::test]
async fn a_udp_endpoint_counts_datagrams_both_ways() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let endpoint = NetServiceClient::new(channel.clone())
        .create_datagram_endpoint(pb::CreateDatagramEndpointRequest {
            local_host: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("CreateDatagramEndpoint")
        .into_inner()
        .endpoint
        .expect("endpoint");
    let port = port_of(endpoint.sockname.as_ref());
    assert_eq!(default_loop(&channel).await.open_datagram_endpoints, 1);

    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    for datagram in [&b"one"[..], b"two", b"three"] {
        peer.send_to(datagram, ("127.0.0.1", port))
            .expect("send_to");
    }
    let m = metrics_until(&channel, |m| m.datagrams_received == 3).await;
    assert_eq!(m.datagrams_sent, 0);
    NetServiceClient::new(channel.clone())
        .send_datagram(pb::SendDatagramRequest {
            endpoint_id: endpoint.endpoint_id,
            data: b"back".to_vec(),
            host: "127.0.0.1".into(),
            port: u32::from(peer.local_addr().expect("addr").port()),
            ..Default::default()
        })
        .await
        .expect("SendDatagram");
    let mut buf = [0; 16];
    let n = peer.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"back");
    let m = default_loop(&channel).await;
    assert_eq!((m.datagrams_received, m.datagrams_sent), (3, 1), "{m:?}");
    assert_eq!((m.bytes_received, m.bytes_sent), (0, 0), "streams only");
}

#[tokio::test]
async fn a_spawned_child_and_a_signal_handler_are_counted() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let client = Client::from_channel(channel.clone());
    let child = client
        .spawn("", &Command::new("true"))
        .await
        .expect("spawn");
    let done = tokio::time::timeout(WAIT, client.wait_process("", child.process_id, None))
        .await
        .expect("exits in time")
        .expect("wait");
    assert_eq!(done.exit().expect("exited").returncode, 0);
    let m = default_loop(&channel).await;
    assert_eq!(
        (m.processes_spawned, m.processes_running, m.processes_exited),
        (1, 0, 1),
        "{m:?}"
    );

    let sleeper = client
        .spawn("", &Command::from_argv(["sleep", "10"]))
        .await
        .expect("spawn");
    let m = default_loop(&channel).await;
    assert_eq!(
        (m.processes_spawned, m.processes_running, m.processes_exited),
        (2, 1, 1)
    );
    client.kill("", sleeper.process_id).await.expect("kill");
    let m = metrics_until(&channel, |m| m.processes_running == 0).await;
    assert_eq!((m.processes_spawned, m.processes_exited), (2, 2));

    assert_eq!(m.signal_handlers, 0);
    client
        .add_signal_handler("", "SIGUSR2", None)
        .await
        .expect("add_signal_handler");
    assert_eq!(default_loop(&channel).await.signal_handlers, 1);
}
