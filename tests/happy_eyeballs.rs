//! Happy Eyeballs (RFC 8305) in `create_connection`, and adopting connected sockets
//! (`connect_accepted_socket`, `create_connection_with_sock`). Loopback only: an address
//! that "never answers" is a listener whose accept queue is full, so the kernel drops the
//! SYNs sent to it.

mod net_support;

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

use loopd::{Address, ConnectOptions, Error, EventLoop, Family, Protocol, Transport};
use net_support::{run, run_until};
use socket2::{Domain, Socket, Type};

#[derive(Default)]
struct Probe {
    data: Rc<RefCell<Vec<u8>>>,
}

impl Protocol for Probe {
    fn data_received(&mut self, data: &[u8]) {
        self.data.borrow_mut().extend_from_slice(data);
    }
}

/// A listener that never completes another handshake: `listen(0)` and a full accept
/// queue. Returns it with the connections that fill it (kept open).
fn unanswering() -> (Socket, SocketAddr, Vec<Socket>) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..4)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into()); // EINPROGRESS, or completes into the queue
            std::thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    (listener, addr, fillers)
}

/// A port on 127.0.0.1 where nothing listens.
fn refusing() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn eyeballs(delay: Duration) -> ConnectOptions {
    ConnectOptions {
        happy_eyeballs_delay: Some(delay),
        ..Default::default()
    }
}

fn peer(t: &Transport) -> SocketAddr {
    match t.peername() {
        Some(Address::Inet(addr)) => addr,
        other => panic!("no inet peer: {other:?}"),
    }
}

#[test]
fn a_silent_first_address_gives_way_to_the_second_after_the_delay() {
    let (_silent, silent_addr, _fillers) = unanswering();
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let good_addr = good.local_addr().unwrap();
    let lp = EventLoop::new().unwrap();
    let delay = Duration::from_millis(200);
    let started = Instant::now();
    let connect = lp.create_connection_to(
        Probe::default,
        vec![silent_addr, good_addr],
        eyeballs(delay),
    );
    let (t, _) = run(&lp, connect).unwrap();
    let took = started.elapsed();
    assert_eq!(peer(&t), good_addr);
    assert!(
        took >= delay,
        "the second attempt waited for the delay: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "well before the first attempt would time out: {took:?}"
    );
    t.close();
    lp.close().unwrap();
}

#[test]
fn a_refused_first_address_starts_the_next_attempt_at_once() {
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let good_addr = good.local_addr().unwrap();
    let lp = EventLoop::new().unwrap();
    let started = Instant::now();
    let connect = lp.create_connection_to(
        Probe::default,
        vec![refusing(), good_addr],
        eyeballs(Duration::from_secs(30)),
    );
    let (t, _) = run(&lp, connect).unwrap();
    assert_eq!(peer(&t), good_addr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait 30 s"
    );
    lp.close().unwrap();
}

#[test]
fn the_first_to_connect_wins_and_the_others_are_closed() {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    ];
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let lp = EventLoop::new().unwrap();
    // A zero delay starts every attempt at once: both connect, one wins.
    let connect = lp.create_connection_to(Probe::default, addrs.clone(), eyeballs(Duration::ZERO));
    let (t, _) = run(&lp, connect).unwrap();
    let winner = addrs.iter().position(|a| *a == peer(&t)).unwrap();
    let mut accepted: Vec<TcpStream> = listeners.iter().map(|l| l.accept().unwrap().0).collect();
    for stream in &accepted {
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let mut buf = [0; 8];
    let loser = 1 - winner;
    assert_eq!(
        accepted[loser].read(&mut buf).unwrap(),
        0,
        "the loser was closed"
    );
    let err = accepted[winner].read(&mut buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ));
    accepted[winner].write_all(b"hi").unwrap();
    lp.close().unwrap();
}

#[test]
fn when_every_attempt_fails_the_errors_are_listed_in_order() {
    let (a, b) = (refusing(), refusing());
    let lp = EventLoop::new().unwrap();
    for options in [
        eyeballs(Duration::from_millis(50)),
        ConnectOptions::default(),
    ] {
        let connect = lp.create_connection_to(Probe::default, vec![a, b], options);
        let err = run(&lp, connect).map(|_| ()).unwrap_err();
        assert!(matches!(&err, Error::MultipleErrors(errors) if errors.len() == 2));
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            err.to_string(),
            format!(
                "multiple exceptions: connection to {a} refused: {refused}, \
                 connection to {b} refused: {refused}"
            )
        );
    }
    let one = lp.create_connection_to(Probe::default, vec![a], eyeballs(Duration::ZERO));
    let err = run(&lp, one).map(|_| ()).unwrap_err();
    assert_eq!(err.to_string(), format!("connection to {a} refused"));
    let none = lp.create_connection_to(Probe::default, vec![], ConnectOptions::default());
    assert!(matches!(run(&lp, none), Err(Error::InvalidArgument { .. })));
    lp.close().unwrap();
}

#[test]
fn host_names_resolve_and_family_filters_the_addresses() {
    let good = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = good.local_addr().unwrap().port();
    let lp = EventLoop::new().unwrap();
    let options = ConnectOptions {
        family: Family::Inet,
        ..eyeballs(Duration::from_millis(250))
    };
    let (t, _) = run(
        &lp,
        lp.create_connection(Probe::default, "localhost", port, options),
    )
    .unwrap();
    assert_eq!(peer(&t), good.local_addr().unwrap());
    let v6_only = ConnectOptions {
        family: Family::Inet6,
        ..Default::default()
    };
    let connect = lp.create_connection(Probe::default, "127.0.0.1", port, v6_only);
    let err = run(&lp, connect).map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }), "{err}");
    lp.close().unwrap();
}

#[test]
fn an_accepted_socket_becomes_a_transport() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, client_addr) = listener.accept().unwrap();
    let lp = EventLoop::new().unwrap();
    let (t, p) = run(&lp, lp.connect_accepted_socket(Probe::default, accepted)).unwrap();
    assert_eq!(peer(&t), client_addr);
    client.write_all(b"adopted").unwrap();
    let data = p.borrow().data.clone();
    run_until(&lp, move || data.borrow().as_slice() == b"adopted");
    t.write(b"back").unwrap();
    let mut buf = [0; 4];
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");

    let (unix_a, mut unix_b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (ut, up) = run(&lp, lp.create_connection_with_sock(Probe::default, unix_a)).unwrap();
    unix_b.write_all(b"unix").unwrap();
    let data = up.borrow().data.clone();
    run_until(&lp, move || data.borrow().as_slice() == b"unix");
    ut.close();

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = run(&lp, lp.create_connection_with_sock(Probe::default, udp))
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().ends_with("a stream socket was expected"),
        "{err}"
    );
    lp.close().unwrap();
}
