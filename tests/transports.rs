//! Stream transports and protocols against real sockets on 127.0.0.1 and temp Unix paths.
//! Ports come from port 0; every wait is bounded by a safety timer.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

mod net_support;

use loopd::{
    Address, ConnectOptions, Error, EventLoop, ExtraInfo, Protocol, Server, ServerOptions,
    Transport,
};
use net_support::{FNV_OFFSET, SAFETY, fnv, run, sleep, until};

// ---- helpers ------------------------------------------------------------------------

/// What a protocol saw, shared between the protocol and the test.
#[derive(Debug, Default)]
struct Record {
    transport: Option<Transport>,
    data: Vec<u8>,
    /// FNV-1a of every byte received, and how many (for streams too big to keep).
    hash: u64,
    received: usize,
    keep_data: bool,
    events: Vec<String>,
    echo: bool,
    keep_open_on_eof: bool,
    pause_on_connect: bool,
    /// Pause reading from `data_received` once this many bytes arrived.
    pause_after: Option<usize>,
    panic_on_data: bool,
}

type Shared = Rc<RefCell<Record>>;

/// A protocol that records into a shared [`Record`].
#[derive(Debug)]
struct Probe(Shared);

impl Protocol for Probe {
    fn connection_made(&mut self, transport: Transport) {
        let mut r = self.0.borrow_mut();
        if r.pause_on_connect {
            transport.pause_reading();
        }
        r.transport = Some(transport);
        r.events.push("made".into());
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut r = self.0.borrow_mut();
        if r.panic_on_data {
            panic!("bad data");
        }
        if r.hash == 0 {
            r.hash = FNV_OFFSET;
        }
        r.hash = fnv(r.hash, data);
        r.received += data.len();
        if r.keep_data {
            r.data.extend_from_slice(data);
        }
        if r.echo {
            if let Some(t) = &r.transport {
                t.write(data).unwrap();
            }
        }
        if r.pause_after.is_some_and(|limit| r.received >= limit) {
            if let Some(t) = &r.transport {
                t.pause_reading();
            }
        }
    }
    fn eof_received(&mut self) -> bool {
        let mut r = self.0.borrow_mut();
        r.events.push("eof".into());
        r.keep_open_on_eof
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let event = match error {
            None => "lost".to_string(),
            Some(err) => format!("lost: {err}"),
        };
        self.0.borrow_mut().events.push(event);
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().events.push("pause".into());
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().events.push("resume".into());
    }
}

fn record(setup: impl Fn(&mut Record)) -> Shared {
    let r = Rc::new(RefCell::new(Record {
        keep_data: true,
        ..Default::default()
    }));
    setup(&mut r.borrow_mut());
    r
}

/// A protocol factory whose protocols are all kept in `list`, each set up by `setup`.
fn probes(
    list: &Rc<RefCell<Vec<Shared>>>,
    setup: impl Fn(&mut Record) + 'static,
) -> impl Fn() -> Probe + 'static {
    let list = list.clone();
    move || {
        let r = record(&setup);
        list.borrow_mut().push(r.clone());
        Probe(r)
    }
}

fn inet(server: &Server) -> SocketAddr {
    match server.sockets().first() {
        Some(Address::Inet(addr)) => *addr,
        other => panic!("not an inet server: {other:?}"),
    }
}

fn events(r: &Shared) -> Vec<String> {
    r.borrow().events.clone()
}

fn transport(r: &Shared) -> Transport {
    r.borrow().transport.clone().expect("connection made")
}

fn tcp_server(
    lp: &EventLoop,
    list: &Rc<RefCell<Vec<Shared>>>,
    setup: impl Fn(&mut Record) + 'static,
) -> Server {
    let create = lp.create_server(
        probes(list, setup),
        "127.0.0.1",
        0,
        ServerOptions::default(),
    );
    run(lp, create).unwrap()
}

/// The pattern the 16 MiB stream carries.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

// ---- round trips ----------------------------------------------------------------------

fn echo_round_trip(
    lp: &EventLoop,
    server: &Server,
    client: Shared,
    connect: impl std::future::Future<Output = loopd::Result<(Transport, Rc<RefCell<Probe>>)>> + 'static,
) {
    let c = client.clone();
    let inner = lp.clone();
    run(lp, async move {
        let (transport, protocol) = connect.await.unwrap();
        assert!(
            Rc::ptr_eq(&protocol.borrow().0, &c),
            "the factory's protocol"
        );
        assert_eq!(
            events(&c),
            ["made"],
            "connection_made ran before the future resolved"
        );
        transport.writelines([&b"hello, "[..], b"world"]).unwrap();
        until(&inner, || c.borrow().data.len() == 12).await;
        assert_eq!(c.borrow().data, b"hello, world");
        let metrics = inner.net_metrics();
        assert_eq!(
            (metrics.open_servers, metrics.open_transports),
            (1, 2),
            "the server and both ends: {metrics:?}"
        );
        transport.close();
        assert!(transport.is_closing());
        until(&inner, || events(&c).len() == 2).await;
    });
    assert_eq!(events(&client), ["made", "lost"]);
    server.close();
    run(lp, server.wait_closed()).unwrap();
    assert_eq!(lp.open_transports(), 0, "the server side was closed too");
}

#[test]
fn set_protocol_redirects_later_events() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.echo = true);
    let port = inet(&server).port();
    let inner = lp.clone();
    run(&lp, async move {
        let connect = inner.create_connection(
            || Probe(record(|_| {})),
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        );
        let (t, first) = connect.await.unwrap();
        let current = t.get_protocol().unwrap();
        assert!(std::ptr::addr_eq(Rc::as_ptr(&current), Rc::as_ptr(&first)));
        let second = Rc::new(RefCell::new(Probe(record(|_| {}))));
        let after = second.borrow().0.clone();
        t.set_protocol(second);
        t.write(b"to the second").unwrap();
        until(&inner, || after.borrow().data == b"to the second").await;
        assert!(first.borrow().0.borrow().data.is_empty());
        assert!(
            events(&after).is_empty(),
            "no connection_made for a switched protocol"
        );
        t.close();
        until(&inner, || events(&after) == ["lost"]).await;
        assert!(t.get_protocol().is_none());
    });
    server.close();
}

#[test]
fn tcp_echo_round_trip() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.echo = true);
    let addr = inet(&server);
    let client = record(|_| {});
    let c = client.clone();
    let connect = lp.create_connection(
        move || Probe(c),
        "127.0.0.1",
        addr.port(),
        ConnectOptions::default(),
    );
    echo_round_trip(&lp, &server, client, connect);
    let server_side = servers.borrow()[0].clone();
    assert_eq!(
        events(&server_side),
        ["made", "eof", "lost"],
        "EOF closes by default"
    );
    let metrics = lp.net_metrics();
    assert_eq!(
        (metrics.open_transports, metrics.open_servers),
        (0, 0),
        "{metrics:?}"
    );
    assert_eq!(metrics.connections_accepted, 1);
    assert_eq!(
        (metrics.bytes_sent, metrics.bytes_received),
        (24, 24),
        "12 each way"
    );
}

#[test]
fn unix_echo_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let create = lp.create_unix_server(
        probes(&servers, |r| r.echo = true),
        &path,
        ServerOptions::default(),
    );
    let server = run(&lp, create).unwrap();
    assert_eq!(server.sockets(), [Address::Unix(Some(path.clone()))]);
    let client = record(|_| {});
    let c = client.clone();
    let connect = lp.create_unix_connection(move || Probe(c), &path);
    echo_round_trip(&lp, &server, client, connect);
    assert!(!path.exists(), "closing removed the socket file");
}

#[test]
fn a_stale_unix_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let lp = EventLoop::new().unwrap();
    let list = Rc::new(RefCell::new(Vec::new()));
    let create = lp.create_unix_server(probes(&list, |_| {}), &path, ServerOptions::default());
    let server = run(&lp, create).unwrap();
    std::os::unix::net::UnixStream::connect(&path).expect("the new server listens");
    // Someone else's file now sits at the path: closing must leave it alone.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"not ours").unwrap();
    server.close();
    assert_eq!(std::fs::read(&path).unwrap(), b"not ours");
}

#[test]
fn server_protocol_receives_a_std_clients_data_and_eof() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.keep_open_on_eof = true);
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    std_client.write_all(b"from std").unwrap();
    std_client.shutdown(std::net::Shutdown::Write).unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || {
            list.borrow().first().is_some_and(|r| events(r).len() == 2)
        })
        .await;
    });
    let side = servers.borrow()[0].clone();
    assert_eq!(side.borrow().data, b"from std");
    assert_eq!(
        events(&side),
        ["made", "eof"],
        "kept open for writing (half-close)"
    );
    let t = transport(&side);
    assert!(!t.is_reading(), "nothing more to read after EOF");
    assert!(!t.is_closing());
    t.write(b"reply after eof").unwrap();
    t.close();
    let inner = lp.clone();
    let s = side.clone();
    run(
        &lp,
        async move { until(&inner, || events(&s).len() == 3).await },
    );
    let mut reply = Vec::new();
    std_client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"reply after eof");
    assert_eq!(events(&side), ["made", "eof", "lost"]);
}

#[test]
fn a_write_from_the_engine_reaches_a_std_client() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || !list.borrow().is_empty()).await;
        let t = transport(&list.borrow()[0]);
        t.write(b"greetings").unwrap();
        t.write_eof();
        assert!(t.can_write_eof());
        assert!(matches!(t.write(b"more"), Err(Error::WriteAfterEof)));
    });
    let mut got = Vec::new();
    std_client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"greetings");
}

// ---- flow control ---------------------------------------------------------------------

#[test]
fn a_paused_reader_blocks_the_peer_then_16_mib_arrive_intact() {
    const TOTAL: usize = 16 * 1024 * 1024;
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| {
        r.pause_on_connect = true;
        r.keep_data = false;
    });
    let addr = inet(&server);
    let written = Arc::new(AtomicUsize::new(0));
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        let data = pattern(TOTAL);
        let mut stream = TcpStream::connect(addr).unwrap();
        for chunk in data.chunks(64 * 1024) {
            stream.write_all(chunk).unwrap();
            progress.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        fnv(FNV_OFFSET, &data)
    });
    let list = servers.clone();
    let inner = lp.clone();
    let stalled_at = run(&lp, async move {
        until(&inner, || !list.borrow().is_empty()).await;
        let side = list.borrow()[0].clone();
        assert!(!transport(&side).is_reading());
        // The writer fills the kernel's buffers, then blocks.
        let mut last = usize::MAX;
        loop {
            sleep(&inner, Duration::from_millis(50)).await;
            let now = written.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        assert_eq!(side.borrow().received, 0, "nothing read while paused");
        transport(&side).resume_reading();
        assert!(transport(&side).is_reading());
        until(&inner, || side.borrow().received == TOTAL).await;
        last
    });
    assert!(stalled_at < TOTAL, "the peer blocked at {stalled_at} bytes");
    let expected = writer.join().unwrap();
    let side = servers.borrow()[0].clone();
    assert_eq!(
        side.borrow().hash,
        expected,
        "16 MiB arrived intact and in order"
    );
}

/// Records how many bytes arrived in each loop iteration.
struct PerIteration {
    lp: EventLoop,
    bytes: Rc<RefCell<std::collections::BTreeMap<u64, usize>>>,
}

impl Protocol for PerIteration {
    fn data_received(&mut self, data: &[u8]) {
        let iteration = self.lp.metrics().iterations;
        *self.bytes.borrow_mut().entry(iteration).or_default() += data.len();
    }
}

#[test]
fn one_read_event_delivers_at_most_the_read_budget() {
    const TOTAL: usize = 8 * 1024 * 1024;
    let lp = EventLoop::new().unwrap();
    let bytes = Rc::new(RefCell::new(std::collections::BTreeMap::new()));
    let (b, inner) = (bytes.clone(), lp.clone());
    let factory = move || PerIteration {
        lp: inner.clone(),
        bytes: b.clone(),
    };
    let create = lp.create_server(factory, "127.0.0.1", 0, ServerOptions::default());
    let server = run(&lp, create).unwrap();
    let addr = inet(&server);
    let writer = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&pattern(TOTAL)).unwrap();
    });
    let (b, inner) = (bytes.clone(), lp.clone());
    run(&lp, async move {
        until(&inner, || b.borrow().values().sum::<usize>() == TOTAL).await;
    });
    writer.join().unwrap();
    let most = bytes.borrow().values().copied().max().unwrap();
    assert!(
        most <= loopd::net::READ_BUFFER_SIZE,
        "{most} bytes in one iteration"
    );
    server.close();
}

#[test]
fn write_buffer_limits_drive_pause_and_resume_writing() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| {
        r.pause_on_connect = true;
        r.keep_data = false;
    });
    let client = record(|_| {});
    let c = client.clone();
    let list = servers.clone();
    let inner = lp.clone();
    let port = inet(&server).port();
    run(&lp, async move {
        let connect = inner.create_connection(
            move || Probe(c),
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        );
        let (t, protocol) = connect.await.unwrap();
        assert_eq!(
            t.get_write_buffer_limits(),
            (16 * 1024, 64 * 1024),
            "asyncio's defaults"
        );
        let bad = t.set_write_buffer_limits(Some(1), Some(2)).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "invalid write buffer limits: high (1) must be >= low (2)"
        );
        t.set_write_buffer_limits(None, Some(1000)).unwrap();
        assert_eq!(t.get_write_buffer_limits(), (1000, 4000));
        t.set_write_buffer_limits(Some(128 * 1024), None).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while !events(&protocol.borrow().0).contains(&"pause".to_string()) {
            t.write(&chunk).unwrap();
            sent += chunk.len();
            assert!(sent < 256 * 1024 * 1024, "pause_writing never came");
        }
        assert!(
            t.get_write_buffer_size() > 128 * 1024,
            "paused above the high-water mark"
        );
        let side = list.borrow()[0].clone();
        transport(&side).resume_reading();
        until(&inner, || {
            events(&protocol.borrow().0).contains(&"resume".to_string())
        })
        .await;
        assert!(
            t.get_write_buffer_size() <= 32 * 1024,
            "resumed at the low-water mark"
        );
        until(&inner, || side.borrow().received == sent).await;
        assert_eq!(t.get_write_buffer_size(), 0);
    });
    assert_eq!(events(&client), ["made", "pause", "resume"]);
}

#[test]
fn pause_reading_inside_data_received_stops_delivery() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.pause_after = Some(1));
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    std_client.write_all(b"first").unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || {
            list.borrow()
                .first()
                .is_some_and(|r| r.borrow().received > 0)
        })
        .await;
        let side = list.borrow()[0].clone();
        assert_eq!(side.borrow().data, b"first");
        assert!(!transport(&side).is_reading());
        std_client.write_all(b"second").unwrap();
        sleep(&inner, Duration::from_millis(20)).await;
        assert_eq!(side.borrow().data, b"first", "paused: nothing delivered");
        side.borrow_mut().pause_after = None;
        transport(&side).resume_reading();
        until(&inner, || side.borrow().received == 11).await;
        assert_eq!(side.borrow().data, b"firstsecond");
    });
    server.close();
}

#[test]
fn a_busy_protocol_gets_pause_writing_from_the_ready_queue() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| {
        r.pause_on_connect = true;
        r.keep_data = false;
    });
    let port = inet(&server).port();
    let inner = lp.clone();
    run(&lp, async move {
        let connect = inner.create_connection(
            || Probe(record(|_| {})),
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        );
        let (t, protocol) = connect.await.unwrap();
        t.set_write_buffer_limits(Some(1), None).unwrap();
        let r = protocol.borrow().0.clone();
        let busy = protocol.borrow_mut(); // as if one of its methods were running
        let chunk = vec![0u8; 1024 * 1024];
        while t.get_write_buffer_size() <= 1 {
            t.write(&chunk).unwrap();
        }
        assert_eq!(events(&r), ["made"], "not called while borrowed");
        drop(busy);
        until(&inner, || events(&r).len() == 2).await;
        assert_eq!(events(&r), ["made", "pause"]);
        t.abort();
    });
    server.close();
}

#[test]
#[allow(clippy::await_holding_refcell_ref)] // deliberately: that is what is tested
fn a_busy_protocol_gets_its_data_eof_and_loss_later_in_order() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let port = inet(&server).port();
    let (list, inner) = (servers.clone(), lp.clone());
    run(&lp, async move {
        let connect = inner.create_connection(
            || Probe(record(|_| {})),
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        );
        let (_t, protocol) = connect.await.unwrap();
        let r = protocol.borrow().0.clone();
        until(&inner, || !list.borrow().is_empty()).await;
        let side = transport(&list.borrow()[0]);
        let busy = protocol.borrow_mut(); // held across awaits, as a careless task might
        for word in ["one", "two", "three"] {
            side.write(word.as_bytes()).unwrap();
            sleep(&inner, Duration::from_millis(5)).await;
        }
        side.close();
        sleep(&inner, Duration::from_millis(5)).await;
        assert_eq!(events(&r), ["made"], "nothing reached the busy protocol");
        drop(busy);
        until(&inner, || events(&r).len() == 3).await;
        assert_eq!(r.borrow().data, b"onetwothree");
        assert_eq!(events(&r), ["made", "eof", "lost"]);
    });
    server.close();
}

#[test]
fn a_panicking_protocol_is_reported_and_its_transport_closed() {
    let lp = EventLoop::new().unwrap();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let seen = reports.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &loopd::ExceptionContext| {
        seen.borrow_mut().push(ctx.to_string());
    }));
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.panic_on_data = true);
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    std_client.write_all(b"boom").unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || {
            list.borrow().first().is_some_and(|r| events(r).len() == 2)
        })
        .await;
    });
    assert_eq!(
        events(&servers.borrow()[0]),
        ["made", "lost: panicked: bad data"]
    );
    assert_eq!(
        *reports.borrow(),
        ["fatal error: protocol.data_received() call failed; error: panicked: bad data"]
    );
    let mut rest = Vec::new();
    std_client.read_to_end(&mut rest).unwrap();
    server.close();
}

// ---- servers --------------------------------------------------------------------------

#[test]
fn server_close_leaves_connections_open_and_wait_closed_waits_for_them() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |r| r.echo = true);
    let addr = inet(&server);
    let client = record(|_| {});
    let c = client.clone();
    let inner = lp.clone();
    let srv = server.clone();
    run(&lp, async move {
        let connect = inner.create_connection(
            move || Probe(c.clone()),
            "127.0.0.1",
            addr.port(),
            ConnectOptions::default(),
        );
        let (t, protocol) = connect.await.unwrap();
        let c = protocol.borrow().0.clone();
        srv.close();
        srv.close(); // idempotent
        assert!(!srv.is_serving());
        assert!(srv.sockets().is_empty());
        let waiting = inner
            .create_task(srv.wait_closed(), Some("wait_closed"))
            .unwrap();
        t.write(b"still open").unwrap();
        until(&inner, || c.borrow().data == b"still open").await;
        assert!(!waiting.done(), "a connection is still open");
        let refused = inner
            .create_connection(
                || Probe(record(|_| {})),
                "127.0.0.1",
                addr.port(),
                ConnectOptions::default(),
            )
            .await;
        assert!(
            matches!(refused, Err(Error::ConnectionRefused { .. })),
            "{refused:?}"
        );
        t.close();
        waiting.take().await.unwrap().unwrap();
        srv.wait_closed().await.unwrap(); // at once, now
    });
    assert_eq!(events(&servers.borrow()[0]), ["made", "eof", "lost"]);
}

#[test]
fn serve_forever_twice_is_an_error_and_close_ends_it() {
    let lp = EventLoop::new().unwrap();
    let list = Rc::new(RefCell::new(Vec::new()));
    let options = ServerOptions {
        start_serving: false,
        ..Default::default()
    };
    let server = run(
        &lp,
        lp.create_server(probes(&list, |_| {}), "127.0.0.1", 0, options),
    )
    .unwrap();
    assert!(!server.is_serving());
    assert!(
        TcpStream::connect(inet(&server)).is_err(),
        "bound but not listening"
    );
    let inner = lp.clone();
    let srv = server.clone();
    run(&lp, async move {
        let forever = inner.create_task(srv.serve_forever(), None).unwrap();
        sleep(&inner, Duration::from_millis(5)).await;
        assert!(srv.is_serving());
        let second = srv.serve_forever().await;
        assert!(
            matches!(second, Err(Error::AlreadyServingForever)),
            "{second:?}"
        );
        assert_eq!(
            second.unwrap_err().to_string(),
            "server is already being awaited on serve_forever()"
        );
        srv.close();
        assert!(matches!(
            forever.take().await.unwrap(),
            Err(Error::Cancelled)
        ));
        assert!(matches!(
            srv.serve_forever().await,
            Err(Error::ServerClosed)
        ));
        assert!(matches!(srv.start_serving(), Err(Error::ServerClosed)));
    });
}

#[test]
fn several_hosts_each_get_a_socket() {
    let lp = EventLoop::new().unwrap();
    let list = Rc::new(RefCell::new(Vec::new()));
    let create = lp.create_server(
        probes(&list, |_| {}),
        ["127.0.0.1", "localhost"],
        0,
        ServerOptions::default(),
    );
    let server = run(&lp, create).unwrap();
    let sockets = server.sockets();
    assert!(!sockets.is_empty());
    for socket in &sockets {
        match socket {
            Address::Inet(addr) => assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}"),
            other => panic!("{other:?}"),
        }
    }
    server.close();

    let create = lp.create_server(probes(&list, |_| {}), None, 0, ServerOptions::default());
    let server = run(&lp, create).unwrap();
    let sockets = server.sockets();
    assert!(!sockets.is_empty() && sockets.len() <= 2, "0.0.0.0 and ::");
    for socket in &sockets {
        match socket {
            Address::Inet(addr) => assert!(addr.ip().is_unspecified() && addr.port() != 0),
            other => panic!("{other:?}"),
        }
    }
    server.close();
}

// ---- bad input ------------------------------------------------------------------------

#[test]
fn a_port_in_use_is_an_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let lp = EventLoop::new().unwrap();
    let list = Rc::new(RefCell::new(Vec::new()));
    let create = lp.create_server(
        probes(&list, |_| {}),
        "127.0.0.1",
        addr.port(),
        ServerOptions::default(),
    );
    let err = run(&lp, create).unwrap_err();
    assert!(matches!(err, Error::AddressInUse { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("address {addr} is already in use"));
}

#[test]
fn connecting_to_nobody_is_refused_naming_the_address() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lp = EventLoop::new().unwrap();
    let connect = lp.create_connection(
        || Probe(record(|_| {})),
        "127.0.0.1",
        port,
        ConnectOptions::default(),
    );
    let err = run(&lp, connect).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("connection to 127.0.0.1:{port} refused")
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    let connect = lp.create_unix_connection(|| Probe(record(|_| {})), &missing);
    let err = run(&lp, connect).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {}", missing.display())
    );
}

#[test]
fn local_addr_in_use_and_bad_host_names_are_errors() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let lp = EventLoop::new().unwrap();
    let options = ConnectOptions {
        local_addr: Some(taken.local_addr().unwrap()),
        ..Default::default()
    };
    let connect = lp.create_connection(|| Probe(record(|_| {})), "127.0.0.1", 1, options);
    let err = run(&lp, connect).unwrap_err();
    assert!(matches!(err, Error::AddressInUse { .. }), "{err:?}");

    let connect = lp.create_connection(
        || Probe(record(|_| {})),
        "no-such-host.invalid",
        80,
        ConnectOptions::default(),
    );
    let err = run(&lp, connect).unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-host.invalid"));
}

#[test]
fn writing_to_a_closed_transport_is_an_error() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let port = inet(&server).port();
    let client = record(|_| {});
    let c = client.clone();
    let inner = lp.clone();
    run(&lp, async move {
        let connect = inner.create_connection(
            move || Probe(c),
            "127.0.0.1",
            port,
            ConnectOptions::default(),
        );
        let (t, protocol) = connect.await.unwrap();
        t.write(b"").unwrap();
        t.abort();
        assert!(t.is_closing());
        assert!(matches!(t.write(b"x"), Err(Error::TransportClosing)));
        let p = protocol.borrow().0.clone();
        until(&inner, || events(&p).len() == 2).await;
        assert!(
            matches!(t.write(b"x"), Err(Error::TransportClosing)),
            "after connection_lost"
        );
        t.close(); // harmless
    });
    assert_eq!(
        events(&client),
        ["made", "lost"],
        "connection_lost exactly once"
    );
    server.close();
}

#[test]
fn get_extra_info_names_both_ends() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let addr = inet(&server);
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        let connect = inner.create_connection(
            || Probe(record(|_| {})),
            "127.0.0.1",
            addr.port(),
            ConnectOptions::default(),
        );
        let (t, _) = connect.await.unwrap();
        assert_eq!(
            t.get_extra_info("peername"),
            Some(ExtraInfo::Address(Address::Inet(addr)))
        );
        let Some(ExtraInfo::Address(Address::Inet(local))) = t.get_extra_info("sockname") else {
            panic!("no sockname");
        };
        until(&inner, || !list.borrow().is_empty()).await;
        let side = transport(&list.borrow()[0]);
        assert_eq!(side.peername(), Some(Address::Inet(local)));
        assert_eq!(side.sockname(), Some(Address::Inet(addr)));
        assert!(matches!(t.get_extra_info("socket"), Some(ExtraInfo::Socket(fd)) if fd >= 0));
        assert_eq!(t.get_extra_info("compression"), None);
        t.close();
        until(&inner, || t.get_extra_info("socket").is_none()).await;
        assert_eq!(t.peername(), Some(Address::Inet(addr)), "kept after close");
    });
    server.close();
}

#[test]
fn closing_the_loop_releases_servers_and_transports() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let addr = inet(&server);
    let mut std_client = TcpStream::connect(addr).unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || !list.borrow().is_empty()).await
    });
    assert_eq!(lp.open_transports(), 1);
    lp.close().unwrap();
    assert_eq!(lp.open_transports(), 0);
    let mut rest = Vec::new();
    std_client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the server side was closed");
    assert!(TcpStream::connect(addr).is_err(), "the listener was closed");
}

#[test]
fn dropping_the_loop_frees_connections_held_by_their_protocols() {
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || !list.borrow().is_empty()).await
    });
    let record = Rc::downgrade(&servers.borrow()[0]);
    servers.borrow_mut().clear();
    drop((server, lp));
    assert!(
        record.upgrade().is_none(),
        "the protocol (holding its transport) was freed"
    );
    let mut rest = Vec::new();
    std_client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the server side was closed");
}

#[test]
fn data_and_eof_arriving_together_after_a_short_read_both_reach_the_protocol() {
    // A short read ends a read callback without waiting for EAGAIN; the peer's data and
    // FIN landing in one edge afterwards must still give data_received, then eof_received.
    let lp = EventLoop::new().unwrap();
    let servers = Rc::new(RefCell::new(Vec::new()));
    let server = tcp_server(&lp, &servers, |_| {});
    let mut std_client = TcpStream::connect(inet(&server)).unwrap();
    std_client.write_all(b"first").unwrap();
    let list = servers.clone();
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || {
            list.borrow()
                .first()
                .is_some_and(|r| r.borrow().data == b"first")
        })
        .await;
    });
    // The loop is not running: both arrive before its next poll.
    std_client.write_all(b" and last").unwrap();
    std_client.shutdown(std::net::Shutdown::Write).unwrap();
    let side = servers.borrow()[0].clone();
    let inner = lp.clone();
    let s = side.clone();
    run(&lp, async move {
        until(&inner, || events(&s).iter().any(|e| e == "lost")).await
    });
    assert_eq!(side.borrow().data, b"first and last");
    assert_eq!(events(&side), ["made", "eof", "lost"]);
}

/// Writes `blob` when the connection is made, then echoes; records pause/resume, and
/// raises `paused` at the first pause_writing.
struct BlobThenEcho {
    blob: Vec<u8>,
    transport: Option<Transport>,
    flow: Rc<RefCell<Vec<&'static str>>>,
    paused: Arc<AtomicBool>,
}

impl Protocol for BlobThenEcho {
    fn connection_made(&mut self, transport: Transport) {
        transport.write(&self.blob).unwrap();
        self.transport = Some(transport);
    }
    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            t.write(data).unwrap();
        }
    }
    fn pause_writing(&mut self) {
        self.flow.borrow_mut().push("pause");
        self.paused.store(true, Ordering::SeqCst);
    }
    fn resume_writing(&mut self) {
        self.flow.borrow_mut().push("resume");
    }
}

#[test]
fn writes_behind_a_draining_buffer_keep_their_order() {
    // The server's buffer holds most of an 8 MiB blob; the client reads it and answers
    // every read with one byte, so readable and writable edges come together, and the
    // echo is written while the buffer drains. Every echoed byte must follow the blob.
    // The client starts reading only once the protocol is paused: a client reading
    // from the start may take the whole blob within the first write, with no pause.
    const BLOB: usize = 8 * 1024 * 1024;
    let lp = EventLoop::new().unwrap();
    let flow = Rc::new(RefCell::new(Vec::new()));
    let recorded = flow.clone();
    let paused = Arc::new(AtomicBool::new(false));
    let raised = paused.clone();
    let create = lp.create_server(
        move || BlobThenEcho {
            blob: pattern(BLOB),
            transport: None,
            flow: recorded.clone(),
            paused: raised.clone(),
        },
        "127.0.0.1",
        0,
        ServerOptions::default(),
    );
    let server = run(&lp, create).unwrap();
    let addr = inet(&server);
    let done = Arc::new(AtomicUsize::new(0));
    let finished = done.clone();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(SAFETY)).unwrap();
        let waiting = std::time::Instant::now();
        while !paused.load(Ordering::SeqCst) {
            // Unread, the blob cannot fit in the kernel's buffers: the pause must come.
            assert!(waiting.elapsed() < SAFETY, "no pause_writing");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut received = Vec::with_capacity(BLOB + 4096);
        let mut answers = 0;
        let mut buffer = vec![0; 64 * 1024];
        while received.len() < BLOB + answers {
            let n = stream.read(&mut buffer).unwrap();
            assert_ne!(n, 0, "EOF after {} bytes", received.len());
            received.extend_from_slice(&buffer[..n]);
            if received.len() < BLOB {
                stream.write_all(b"x").unwrap();
                answers += 1;
            }
        }
        finished.store(1, Ordering::SeqCst);
        (received, answers)
    });
    let inner = lp.clone();
    run(&lp, async move {
        until(&inner, || done.load(Ordering::SeqCst) == 1).await
    });
    let (received, answers) = client.join().unwrap();
    assert!(answers > 1, "the client answered {answers} reads");
    assert_eq!(received.len(), BLOB + answers, "no byte lost or repeated");
    assert!(
        received[..BLOB] == pattern(BLOB)[..],
        "the blob first, intact"
    );
    assert!(
        received[BLOB..].iter().all(|&b| b == b'x'),
        "then the echoes"
    );
    // All sent: the last pause_writing has had its resume_writing, or gets it now.
    let inner = lp.clone();
    let settled = flow.clone();
    run(&lp, async move {
        until(&inner, || settled.borrow().last() == Some(&"resume")).await
    });
    let flow = flow.borrow();
    assert!(!flow.is_empty(), "an 8 MiB write pauses the protocol");
    for (i, event) in flow.iter().enumerate() {
        let expected = if i % 2 == 0 { "pause" } else { "resume" };
        assert_eq!(*event, expected, "pause/resume alternate: {flow:?}");
    }
    server.close();
}
