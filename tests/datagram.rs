//! Datagram endpoints (`create_datagram_endpoint`) on 127.0.0.1 and temp Unix paths.

mod net_support;

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;
use std::time::Duration;

use loopd::{
    Address, DatagramOptions, DatagramProtocol, DatagramTransport, Error, EventLoop, ExtraInfo,
    Family,
};
use net_support::{run, run_until, sleep, until};

/// What a datagram protocol saw.
#[derive(Default)]
struct Record {
    transport: Option<DatagramTransport>,
    datagrams: Vec<(Vec<u8>, Address)>,
    errors: Vec<io::ErrorKind>,
    events: Vec<String>,
    echo: bool,
}

type Shared = Rc<RefCell<Record>>;

struct Probe(Shared);

impl DatagramProtocol for Probe {
    fn connection_made(&mut self, transport: DatagramTransport) {
        let mut r = self.0.borrow_mut();
        r.transport = Some(transport);
        r.events.push("made".into());
    }
    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        let mut r = self.0.borrow_mut();
        if r.echo {
            let t = r.transport.clone().unwrap();
            t.sendto(data, Some(addr.clone())).unwrap();
        }
        r.datagrams.push((data.to_vec(), addr));
    }
    fn error_received(&mut self, error: io::Error) {
        self.0.borrow_mut().errors.push(error.kind());
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let event = error.map_or("lost".to_string(), |e| format!("lost: {e}"));
        self.0.borrow_mut().events.push(event);
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().events.push("pause".into());
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().events.push("resume".into());
    }
}

fn probe(echo: bool) -> (Shared, impl FnOnce() -> Probe) {
    let r = Rc::new(RefCell::new(Record {
        echo,
        ..Default::default()
    }));
    let made = r.clone();
    (r, move || Probe(made))
}

fn endpoint(lp: &EventLoop, echo: bool, options: DatagramOptions) -> (DatagramTransport, Shared) {
    let (r, factory) = probe(echo);
    let (t, p) = run(lp, lp.create_datagram_endpoint(factory, options)).unwrap();
    assert!(Rc::ptr_eq(&p.borrow().0, &r));
    assert_eq!(r.borrow().events, ["made"], "connection_made ran first");
    (t, r)
}

fn local(addr: &str) -> DatagramOptions {
    DatagramOptions {
        local_addr: Some(addr.parse::<SocketAddr>().unwrap().into()),
        ..Default::default()
    }
}

fn inet(t: &DatagramTransport) -> SocketAddr {
    match t.sockname() {
        Some(Address::Inet(addr)) => addr,
        other => panic!("not an inet endpoint: {other:?}"),
    }
}

#[test]
fn udp_echo_round_trip_with_a_connected_client() {
    let lp = EventLoop::new().unwrap();
    let (server, s) = endpoint(&lp, true, local("127.0.0.1:0"));
    let server_addr = inet(&server);
    let (client, c) = endpoint(
        &lp,
        false,
        DatagramOptions {
            remote_addr: Some(("localhost", server_addr.port()).into()),
            family: Family::Inet,
            ..Default::default()
        },
    );
    assert_eq!(client.peername(), Some(Address::Inet(server_addr)));
    assert_eq!(lp.net_metrics().open_datagram_endpoints, 2);
    assert_eq!(
        client.get_extra_info("peername"),
        Some(ExtraInfo::Address(Address::Inet(server_addr)))
    );
    assert_eq!(server.get_extra_info("peername"), None, "not connected");
    assert!(matches!(
        client.get_extra_info("socket"),
        Some(ExtraInfo::Socket(_))
    ));
    let inner = lp.clone();
    let c2 = c.clone();
    run(&lp, async move {
        client.sendto(b"ping", None).unwrap();
        client.sendto(b"", None).unwrap(); // an empty datagram is a datagram
        client
            .sendto(b"pong", Some(Address::Inet(server_addr)))
            .unwrap();
        until(&inner, || c2.borrow().datagrams.len() == 3).await;
        client.close();
        assert!(client.is_closing());
        assert!(matches!(
            client.sendto(b"late", None),
            Err(Error::TransportClosing)
        ));
        until(&inner, || c2.borrow().events.len() == 2).await;
    });
    let got: Vec<_> = c.borrow().datagrams.iter().map(|d| d.0.clone()).collect();
    assert_eq!(got, [&b"ping"[..], b"", b"pong"]);
    assert!(
        c.borrow()
            .datagrams
            .iter()
            .all(|d| d.1 == Address::Inet(server_addr))
    );
    assert_eq!(c.borrow().events, ["made", "lost"]);
    let client_addr = s.borrow().datagrams[0].1.clone();
    assert!(matches!(client_addr, Address::Inet(a) if a.ip().is_loopback()));
    server.abort();
    run_until(&lp, move || s.borrow().events.len() == 2);
    let metrics = lp.net_metrics();
    assert_eq!(
        (
            metrics.datagrams_sent,
            metrics.datagrams_received,
            metrics.open_datagram_endpoints
        ),
        (6, 6, 0),
        "3 each way, echoed: {metrics:?}"
    );
    assert_eq!(
        (metrics.bytes_sent, metrics.bytes_received),
        (0, 0),
        "streams only"
    );
    lp.close().unwrap();
}

#[test]
fn sendto_checks_the_address_as_asyncio() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (connected, _) = endpoint(
        &lp,
        false,
        DatagramOptions {
            remote_addr: Some(peer_addr.into()),
            ..Default::default()
        },
    );
    let other: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = connected
        .sendto(b"x", Some(Address::Inet(other)))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSendtoAddress { .. }));
    assert_eq!(
        err.to_string(),
        format!("invalid address 127.0.0.1:9: must be none or {peer_addr}")
    );
    connected
        .sendto(b"ok", Some(Address::Inet(peer_addr)))
        .unwrap();
    let mut buf = [0; 8];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(peer.recv(&mut buf).unwrap(), 2);

    let (unconnected, _) = endpoint(&lp, false, local("127.0.0.1:0"));
    let err = unconnected.sendto(b"x", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid address none: must be an address: the endpoint has no remote address"
    );
    lp.close().unwrap();
}

#[test]
fn bad_options_fail_with_named_errors() {
    let lp = EventLoop::new().unwrap();
    let cases: [(DatagramOptions, &str); 4] = [
        (
            DatagramOptions {
                reuse_address: true,
                ..local("127.0.0.1:0")
            },
            "passing `reuse_address=True` is no longer supported, as the usage of \
             SO_REUSEPORT in UDP poses a significant security concern",
        ),
        (
            DatagramOptions::default(),
            "invalid family: unspecified: unexpected address family without local_addr or \
             remote_addr",
        ),
        (
            DatagramOptions {
                local_addr: Some(("127.0.0.1", 0).into()),
                remote_addr: Some(("::1", 9).into()),
                ..Default::default()
            },
            "invalid datagram addresses: local 127.0.0.1:0 remote [::1]:9: can not get \
             address information",
        ),
        (
            DatagramOptions {
                local_addr: Some(("no-such-host.invalid", 0).into()),
                flags: libc::AI_NUMERICHOST, // fails without asking a name server
                ..Default::default()
            },
            "cannot resolve host \"no-such-host.invalid\"",
        ),
    ];
    for (options, message) in cases {
        let err = run(
            &lp,
            lp.create_datagram_endpoint(|| probe(false).1(), options),
        )
        .map(|_| ())
        .unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let taken = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _holder = UdpSocket::bind(taken);
    let err = run(
        &lp,
        lp.create_datagram_endpoint(|| probe(false).1(), local(&taken.to_string())),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
    lp.close().unwrap();
}

#[test]
fn a_refused_datagram_reaches_error_received_and_the_endpoint_stays_open() {
    let lp = EventLoop::new().unwrap();
    let closed_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (t, r) = endpoint(
        &lp,
        false,
        DatagramOptions {
            remote_addr: Some(closed_port.into()),
            ..Default::default()
        },
    );
    let inner = lp.clone();
    let r2 = r.clone();
    run(&lp, async move {
        // The ICMP port-unreachable comes back as ECONNREFUSED on the next receive (or
        // send); keep sending until it was seen.
        while r2.borrow().errors.is_empty() {
            t.sendto(b"anyone?", None).unwrap();
            sleep(&inner, Duration::from_millis(2)).await;
        }
        assert!(!t.is_closing());
    });
    assert_eq!(r.borrow().errors[0], io::ErrorKind::ConnectionRefused);
    assert_eq!(r.borrow().events, ["made"], "no connection_lost");
    lp.close().unwrap();
}

#[test]
fn a_full_unix_receiver_pauses_the_writer_and_draining_resumes_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receiver.sock");
    let receiver = UnixDatagram::bind(&path).unwrap();
    receiver.set_nonblocking(true).unwrap();
    let lp = EventLoop::new().unwrap();
    let (t, r) = endpoint(
        &lp,
        false,
        DatagramOptions {
            remote_addr: Some(path.clone().into()),
            ..Default::default()
        },
    );
    t.set_write_buffer_limits(Some(1024), Some(0)).unwrap();
    assert_eq!(t.get_write_buffer_limits(), (0, 1024));
    const COUNT: u32 = 5000;
    let mut sent = 0;
    while sent < COUNT && !r.borrow().events.contains(&"pause".to_string()) {
        t.sendto(&sent.to_be_bytes().repeat(64), None).unwrap();
        sent += 1;
    }
    assert!(
        r.borrow().events.contains(&"pause".to_string()),
        "the receiver's queue filled up after {sent} datagrams"
    );
    assert!(t.get_write_buffer_size() > 1024);
    let inner = lp.clone();
    let r2 = r.clone();
    let received = run(&lp, async move {
        let mut received = Vec::new();
        let mut buf = [0u8; 512];
        while received.len() < sent as usize {
            match receiver.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 256, "whole datagrams");
                    received.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sleep(&inner, Duration::from_millis(1)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        until(&inner, || {
            r2.borrow().events.contains(&"resume".to_string())
        })
        .await;
        received
    });
    assert_eq!(
        received,
        (0..sent).collect::<Vec<_>>(),
        "in order, none lost"
    );
    assert_eq!(t.get_write_buffer_size(), 0);
    assert_eq!(r.borrow().events, ["made", "pause", "resume"]);
    assert_eq!(
        lp.net_metrics().datagrams_sent,
        u64::from(sent),
        "sent at once or from the buffer"
    );
    lp.close().unwrap();
}

#[test]
fn unix_endpoints_exchange_datagrams_and_replace_a_stale_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let server_path = dir.path().join("server.sock");
    let client_path = dir.path().join("client.sock");
    drop(UnixDatagram::bind(&server_path).unwrap()); // a stale socket file
    let lp = EventLoop::new().unwrap();
    let (server, s) = endpoint(
        &lp,
        true,
        DatagramOptions {
            local_addr: Some(server_path.clone().into()),
            ..Default::default()
        },
    );
    let (client, c) = endpoint(
        &lp,
        false,
        DatagramOptions {
            local_addr: Some(client_path.clone().into()),
            remote_addr: Some(server_path.clone().into()),
            ..Default::default()
        },
    );
    assert_eq!(
        client.peername(),
        Some(Address::Unix(Some(server_path.clone())))
    );
    client.sendto(b"over unix", None).unwrap();
    run_until(&lp, move || c.borrow().datagrams.len() == 1);
    assert_eq!(
        s.borrow().datagrams[0],
        (b"over unix".to_vec(), Address::Unix(Some(client_path)))
    );
    server.close();
    client.close();
    lp.close().unwrap();
    assert!(server.is_closing() && client.is_closing());
}

#[test]
fn closing_the_loop_releases_open_endpoints() {
    let lp = EventLoop::new().unwrap();
    let (t, r) = endpoint(&lp, false, local("127.0.0.1:0"));
    let addr = inet(&t);
    lp.close().unwrap();
    assert!(t.is_closing());
    assert!(t.get_extra_info("socket").is_none());
    assert_eq!(
        r.borrow().events,
        ["made"],
        "no protocol calls on a closed loop"
    );
    drop(r);
    UdpSocket::bind(addr).expect("the port was released");
}

#[test]
fn an_existing_socket_becomes_an_endpoint() {
    let lp = EventLoop::new().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let own = UdpSocket::bind("127.0.0.1:0").unwrap();
    own.connect(peer_addr).unwrap();
    let own_addr = own.local_addr().unwrap();
    let (r, factory) = probe(false);
    let create = lp.create_datagram_endpoint_with_sock(factory, own);
    let (t, _) = run(&lp, create).unwrap();
    assert_eq!(t.peername(), Some(Address::Inet(peer_addr)));
    assert_eq!(t.sockname(), Some(Address::Inet(own_addr)));
    t.sendto(b"from an adopted socket", None).unwrap();
    let mut buf = [0; 64];
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"from an adopted socket"[..], own_addr)
    );
    peer.send_to(b"back", own_addr).unwrap();
    let waiting = r.clone();
    run_until(&lp, move || waiting.borrow().datagrams.len() == 1);
    assert_eq!(r.borrow().datagrams[0].0, b"back");

    let stream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = run(
        &lp,
        lp.create_datagram_endpoint_with_sock(|| probe(false).1(), stream),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(
        err.to_string().ends_with("a datagram socket was expected"),
        "{err}"
    );
    lp.close().unwrap();
}
