//! TLS transports against real sockets on 127.0.0.1 and temp Unix paths, with
//! certificates made here by rcgen (a CA, and `localhost` signed by it). Ports come from
//! port 0; every wait is bounded by a safety timer.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use loopd::{
    Address, ConnectOptions, Error, EventLoop, ExtraInfo, Protocol, Server, ServerOptions,
    StartTlsOptions, TlsClientConfig, TlsContext, TlsServerConfig, Transport,
};
mod net_support;

use net_support::{FNV_OFFSET, SAFETY, fnv, run, run_until, sleep};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

// ---- certificates -------------------------------------------------------------------

/// A CA and a `localhost` (and 127.0.0.1) certificate it signed, as PEM and DER.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

fn pki() -> Pki {
    static CAS: AtomicUsize = AtomicUsize::new(0);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_name = format!("loopd test CA {}", CAS.fetch_add(1, Ordering::Relaxed));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    fn server(&self) -> TlsServerConfig {
        TlsServerConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }

    fn client(&self) -> TlsClientConfig {
        TlsClientConfig::with_ca_pem(self.ca_pem.as_bytes()).unwrap()
    }
}

// ---- helpers ------------------------------------------------------------------------

/// What a protocol saw, shared between the protocol and the test.
#[derive(Debug, Default)]
struct Record {
    transport: Option<Transport>,
    data: Vec<u8>,
    received: usize,
    hash: u64,
    events: Vec<String>,
    echo: bool,
    keep_open_on_eof: bool,
    /// Pause reading once this many bytes arrived (the test resumes it).
    pause_after: Option<usize>,
    /// Upgrade the connection when this line arrives: answer `OK\n`, then `start_tls`.
    starttls: Option<(TlsServerConfig, Shared)>,
    lost_error: Option<io::ErrorKind>,
}

type Shared = Rc<RefCell<Record>>;

struct Probe(Shared);

impl Protocol for Probe {
    fn connection_made(&mut self, transport: Transport) {
        let mut r = self.0.borrow_mut();
        r.transport = Some(transport);
        r.events.push("made".into());
    }
    fn data_received(&mut self, data: &[u8]) {
        let mut r = self.0.borrow_mut();
        if r.events.last().map(String::as_str) != Some("data") {
            r.events.push("data".into());
        }
        r.received += data.len();
        r.hash = fnv(if r.hash == 0 { FNV_OFFSET } else { r.hash }, data);
        if r.received <= 1 << 16 {
            r.data.extend_from_slice(data);
        }
        let transport = r.transport.clone().unwrap();
        if r.echo {
            transport.write(data).unwrap();
        }
        if r.pause_after.is_some_and(|n| r.received >= n) {
            transport.pause_reading();
        }
        if r.data == b"STARTTLS\n" {
            if let Some((config, upgraded)) = r.starttls.take() {
                transport.write(b"OK\n").unwrap();
                let lp = loopd::get_running_loop().unwrap();
                let upgrade = lp.start_tls(
                    &transport,
                    Rc::new(RefCell::new(Probe(upgraded.clone()))),
                    config,
                    StartTlsOptions::default(),
                );
                // The transport is upgraded in place: it is the one `upgrade` gives.
                upgraded.borrow_mut().transport = Some(transport.clone());
                let task = async move {
                    upgrade.await.unwrap();
                };
                lp.create_task(task, None).unwrap();
            }
        }
    }
    fn eof_received(&mut self) -> bool {
        let mut r = self.0.borrow_mut();
        r.events.push("eof".into());
        r.keep_open_on_eof
    }
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let mut r = self.0.borrow_mut();
        r.lost_error = error.as_ref().map(io::Error::kind);
        r.events.push(match error {
            None => "lost".into(),
            Some(_) => "lost with error".into(),
        });
    }
    fn pause_writing(&mut self) {
        self.0.borrow_mut().events.push("pause_writing".into());
    }
    fn resume_writing(&mut self) {
        self.0.borrow_mut().events.push("resume_writing".into());
    }
}

fn record(setup: impl Fn(&mut Record)) -> Shared {
    let r = Rc::new(RefCell::new(Record::default()));
    setup(&mut r.borrow_mut());
    r
}

/// A factory whose protocols record into `list`, each set up by `setup`.
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

fn events(r: &Shared) -> Vec<String> {
    r.borrow().events.clone()
}

fn transport(r: &Shared) -> Transport {
    r.borrow().transport.clone().expect("connection made")
}

fn port(server: &Server) -> u16 {
    match server.sockets().first() {
        Some(Address::Inet(addr)) => addr.port(),
        other => panic!("not an inet server: {other:?}"),
    }
}

fn tls_server(
    lp: &EventLoop,
    list: &Rc<RefCell<Vec<Shared>>>,
    options: ServerOptions,
    setup: impl Fn(&mut Record) + 'static,
) -> Server {
    run(
        lp,
        lp.create_server(probes(list, setup), "127.0.0.1", 0, options),
    )
    .unwrap()
}

fn tls_options(pki: &Pki) -> ServerOptions {
    ServerOptions {
        ssl: Some(pki.server()),
        ..Default::default()
    }
}

fn client_options(config: TlsClientConfig, name: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        ssl: Some(config),
        server_hostname: name.map(str::to_string),
        ..Default::default()
    }
}

/// Collects what reaches the exception handler.
fn collect_exceptions(lp: &EventLoop) -> Rc<RefCell<Vec<String>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &loopd::ExceptionContext| {
        let error = ctx
            .error
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        sink.borrow_mut().push(format!("{}: {error}", ctx.message));
    }));
    seen
}

fn connect(
    lp: &EventLoop,
    port: u16,
    options: ConnectOptions,
) -> Result<(Transport, Shared), Error> {
    let r = record(|_| {});
    let probe = r.clone();
    let connect = lp.create_connection(move || Probe(probe), "localhost", port, options);
    run(lp, connect).map(|(t, _)| (t, r))
}

// ---- tests --------------------------------------------------------------------------

#[test]
fn echo_round_trip_with_verification() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |r| r.echo = true);
    let (client, r) = connect(&lp, port(&server), client_options(pki.client(), None)).unwrap();
    assert_eq!(
        events(&r),
        ["made"],
        "connection_made ran before create_connection returned"
    );
    assert!(!client.can_write_eof());

    client.write(b"hello over tls").unwrap();
    run_until(&lp, {
        let r = r.clone();
        move || r.borrow().data.len() == 14
    });
    assert_eq!(r.borrow().data, b"hello over tls");
    let served = list.borrow()[0].clone();
    assert_eq!(served.borrow().data, b"hello over tls");

    client.close();
    run_until(&lp, {
        let (r, served) = (r.clone(), served.clone());
        move || events(&r).contains(&"lost".into()) && events(&served).contains(&"lost".into())
    });
    assert_eq!(events(&r), ["made", "data", "lost"]);
    assert_eq!(
        events(&served),
        ["made", "data", "eof", "lost"],
        "close_notify is eof"
    );
    server.close();
    assert_eq!(lp.open_transports(), 0);
}

#[test]
fn cipher_and_peercert_describe_the_session() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |_| {});
    let (client, _) = connect(&lp, port(&server), client_options(pki.client(), None)).unwrap();
    let Some(ExtraInfo::Cipher {
        name,
        protocol,
        secret_bits,
    }) = client.get_extra_info("cipher")
    else {
        panic!("no cipher: {:?}", client.get_extra_info("cipher"));
    };
    assert!(name.starts_with("TLS13_"), "{name}");
    assert_eq!(protocol, "TLSv1.3");
    assert!(secret_bits >= 128, "{secret_bits}");
    assert_eq!(
        client.get_extra_info("peercert"),
        Some(ExtraInfo::PeerCert(pki.cert_der.clone()))
    );
    assert!(matches!(
        client.get_extra_info("peername"),
        Some(ExtraInfo::Address(_))
    ));

    run_until(&lp, {
        let list = list.clone();
        move || !list.borrow().is_empty() && list.borrow()[0].borrow().transport.is_some()
    });
    let served = transport(&list.borrow()[0]);
    assert!(matches!(
        served.get_extra_info("cipher"),
        Some(ExtraInfo::Cipher { .. })
    ));
    assert_eq!(
        served.get_extra_info("peercert"),
        None,
        "no client certificate"
    );
    client.abort();
    server.close();
}

#[test]
fn a_wrong_server_name_fails_the_handshake_naming_it() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let seen = collect_exceptions(&lp);
    let server = tls_server(&lp, &list, tls_options(&pki), |_| {});
    let options = client_options(pki.client(), Some("wrong.example"));
    let err = connect(&lp, port(&server), options).err().unwrap();
    assert!(matches!(err, Error::TlsHandshake { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("tls handshake with wrong.example (127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("\"wrong.example\""), "{message}");
    assert!(message.contains("not valid for name"), "{message}");

    // The server hears of it through the exception handler; no protocol saw anything.
    run_until(&lp, {
        let seen = seen.clone();
        move || !seen.borrow().is_empty()
    });
    assert!(
        seen.borrow()[0].starts_with("ssl handshake failed"),
        "{seen:?}"
    );
    assert!(list.borrow().iter().all(|r| events(r).is_empty()));
    run_until(&lp, {
        let lp = lp.clone();
        move || lp.open_transports() == 0
    });
    server.close();
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails() {
    let (pki, other, lp, list) = (pki(), pki(), EventLoop::new().unwrap(), Rc::default());
    let seen = collect_exceptions(&lp);
    let server = tls_server(&lp, &list, tls_options(&pki), |_| {});
    let err = connect(&lp, port(&server), client_options(other.client(), None))
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    run_until(&lp, {
        let seen = seen.clone();
        move || !seen.borrow().is_empty()
    });
    let seen = seen.borrow();
    assert!(seen[0].starts_with("ssl handshake failed: tls handshake with 127.0.0.1:"));
    assert!(list.borrow().iter().all(|r| events(r).is_empty()));
    server.close();
}

#[test]
fn start_tls_upgrades_both_ends_of_a_plain_connection() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let upgraded_server = record(|r| r.echo = true);
    let (config, upgraded) = (pki.server(), upgraded_server.clone());
    let server = run(
        &lp,
        lp.create_server(
            probes(&list, move |r| {
                r.starttls = Some((config.clone(), upgraded.clone()));
            }),
            "127.0.0.1",
            0,
            ServerOptions::default(),
        ),
    )
    .unwrap();
    let (plain, r) = connect(&lp, port(&server), ConnectOptions::default()).unwrap();
    plain.write(b"STARTTLS\n").unwrap();
    run_until(&lp, {
        let r = r.clone();
        move || r.borrow().data == b"OK\n"
    });

    let upgraded_client = record(|_| {});
    let protocol = Rc::new(RefCell::new(Probe(upgraded_client.clone())));
    let options = StartTlsOptions {
        server_hostname: Some("localhost".into()),
        ..Default::default()
    };
    let tls = run(&lp, lp.start_tls(&plain, protocol, pki.client(), options)).unwrap();
    upgraded_client.borrow_mut().transport = Some(tls.clone());
    assert!(matches!(
        tls.get_extra_info("cipher"),
        Some(ExtraInfo::Cipher { .. })
    ));
    assert!(!tls.can_write_eof());

    tls.write(b"secret").unwrap();
    run_until(&lp, {
        let r = upgraded_client.clone();
        move || r.borrow().data == b"secret"
    });
    assert_eq!(upgraded_server.borrow().data, b"secret");
    assert_eq!(
        events(&upgraded_server),
        ["data"],
        "no second connection_made"
    );
    assert_eq!(events(&upgraded_client), ["data"]);
    assert_eq!(
        events(&r),
        ["made", "data"],
        "the plain protocol hears nothing more"
    );

    let again = lp.start_tls(
        &tls,
        Rc::new(RefCell::new(Probe(record(|_| {})))),
        pki.client(),
        {
            StartTlsOptions {
                server_hostname: Some("localhost".into()),
                ..Default::default()
            }
        },
    );
    let err = run(&lp, again).err().unwrap();
    assert_eq!(err.to_string(), "invalid transport: it already uses tls");
    tls.close();
    run_until(&lp, {
        let r = upgraded_server.clone();
        move || events(&r).contains(&"lost".into())
    });
    server.close();
}

#[test]
fn a_peer_that_never_speaks_tls_times_the_handshake_out() {
    let lp = EventLoop::new().unwrap();
    let pki = pki();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap(); // the kernel accepts for it
    let options = ConnectOptions {
        ssl_handshake_timeout: Some(Duration::from_millis(200)),
        ..client_options(pki.client(), None)
    };
    let began = Instant::now();
    let err = connect(&lp, silent.local_addr().unwrap().port(), options)
        .err()
        .unwrap();
    let took = began.elapsed();
    assert!(matches!(err, Error::HandshakeTimeout { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with(") did not complete within 200ms"),
        "{err}"
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(lp.open_transports(), 0);
}

#[test]
fn a_server_drops_a_client_that_never_speaks_tls() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let seen = collect_exceptions(&lp);
    let options = ServerOptions {
        ssl_handshake_timeout: Some(Duration::from_millis(200)),
        ..tls_options(&pki)
    };
    let server = tls_server(&lp, &list, options, |_| {});
    let addr = SocketAddr::from(([127, 0, 0, 1], port(&server)));
    let mut silent = TcpStream::connect(addr).unwrap();
    run_until(&lp, {
        let seen = seen.clone();
        move || !seen.borrow().is_empty()
    });
    let seen = seen.borrow();
    assert!(
        seen[0].starts_with("ssl handshake failed: tls handshake with 127.0.0.1:"),
        "{seen:?}"
    );
    assert!(
        seen[0].ends_with("did not complete within 200ms"),
        "{seen:?}"
    );
    assert!(list.borrow().iter().all(|r| events(r).is_empty()));
    silent.set_read_timeout(Some(SAFETY)).unwrap();
    assert_eq!(
        silent.read(&mut [0; 16]).unwrap(),
        0,
        "the connection was dropped"
    );
    server.close();
}

#[test]
fn write_eof_sends_close_notify_and_the_peer_may_answer() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |r| r.keep_open_on_eof = true);
    let (client, r) = connect(&lp, port(&server), client_options(pki.client(), None)).unwrap();
    client.write(b"question").unwrap();
    client.write_eof();
    assert!(matches!(client.write(b"more"), Err(Error::WriteAfterEof)));
    run_until(&lp, {
        let list = list.clone();
        move || !list.borrow().is_empty() && events(&list.borrow()[0]).contains(&"eof".into())
    });
    let served = list.borrow()[0].clone();
    assert_eq!(served.borrow().data, b"question");
    let answer = transport(&served);
    answer.write(b"answer").unwrap();
    answer.close();
    run_until(&lp, {
        let r = r.clone();
        move || events(&r).contains(&"lost".into())
    });
    assert_eq!(r.borrow().data, b"answer");
    assert_eq!(events(&r), ["made", "data", "eof", "lost"]);
    assert_eq!(events(&served), ["made", "data", "eof", "lost"]);
    server.close();
}

#[test]
fn an_abort_without_close_notify_is_an_unexpected_eof() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |_| {});
    let (client, _) = connect(&lp, port(&server), client_options(pki.client(), None)).unwrap();
    client.write(b"x").unwrap();
    run_until(&lp, {
        let list = list.clone();
        move || !list.borrow().is_empty() && list.borrow()[0].borrow().received == 1
    });
    client.abort();
    let served = list.borrow()[0].clone();
    run_until(&lp, {
        let served = served.clone();
        move || {
            events(&served)
                .last()
                .is_some_and(|e| e.starts_with("lost"))
        }
    });
    assert_eq!(
        events(&served),
        ["made", "data", "lost with error"],
        "no eof_received"
    );
    assert_eq!(
        served.borrow().lost_error,
        Some(io::ErrorKind::UnexpectedEof)
    );
    server.close();
}

#[test]
fn sixteen_mib_cross_under_backpressure_intact() {
    // More than the kernel's buffers take while the reader is paused (about 4 MiB here).
    const SIZE: usize = 16 << 20;
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |r| {
        r.pause_after = Some(1 << 20)
    });
    let (client, r) = connect(&lp, port(&server), client_options(pki.client(), None)).unwrap();
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 4099) as u8).collect();
    client.write(&data).unwrap();
    assert!(
        client.get_write_buffer_size() > 64 * 1024,
        "plaintext is buffered"
    );
    assert_eq!(events(&r), ["made", "pause_writing"]);

    // The server reads 1 MiB and pauses: the client's buffer cannot drain.
    run_until(&lp, {
        let list = list.clone();
        move || !list.borrow().is_empty() && list.borrow()[0].borrow().received >= 1 << 20
    });
    let served = list.borrow()[0].clone();
    let waiter = lp.clone();
    run(&lp, async move {
        sleep(&waiter, Duration::from_millis(50)).await
    });
    let stuck = served.borrow().received;
    assert!(stuck < SIZE, "backpressure held the rest back");
    assert!(client.get_write_buffer_size() > 0);
    assert_eq!(events(&r), ["made", "pause_writing"]);

    served.borrow_mut().pause_after = None;
    transport(&served).resume_reading();
    run_until(&lp, {
        let served = served.clone();
        move || served.borrow().received == SIZE
    });
    assert_eq!(served.borrow().hash, fnv(FNV_OFFSET, &data));
    run_until(&lp, {
        let r = r.clone();
        move || events(&r).contains(&"resume_writing".into())
    });
    assert_eq!(client.get_write_buffer_size(), 0);
    assert_eq!(events(&r), ["made", "pause_writing", "resume_writing"]);
    client.close();
    server.close();
}

#[test]
fn tls_over_unix_sockets_needs_a_server_name() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.sock");
    let server = run(
        &lp,
        lp.create_unix_server(probes(&list, |r| r.echo = true), &path, tls_options(&pki)),
    )
    .unwrap();

    let r = record(|_| {});
    let probe = r.clone();
    let options = client_options(pki.client(), Some("localhost"));
    let connect = lp.create_unix_connection_with(move || Probe(probe), &path, options);
    let (client, _) = run(&lp, connect).unwrap();
    client.write(b"over unix").unwrap();
    run_until(&lp, {
        let r = r.clone();
        move || r.borrow().data == b"over unix"
    });
    client.close();

    let connect = lp.create_unix_connection_with(
        || Probe(record(|_| {})),
        &path,
        client_options(pki.client(), None),
    );
    let err = run(&lp, connect).err().unwrap();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                what: "server_hostname",
                ..
            }
        ),
        "{err:?}"
    );
    server.close();
}

#[test]
fn tls_options_without_ssl_and_bad_pem_files_are_errors() {
    let lp = EventLoop::new().unwrap();
    let options = ConnectOptions {
        server_hostname: Some("localhost".into()),
        ..Default::default()
    };
    let connect = lp.create_connection(|| Probe(record(|_| {})), "127.0.0.1", 1, options);
    let err = run(&lp, connect).err().unwrap();
    assert_eq!(
        err.to_string(),
        "invalid server_hostname: only meaningful with ssl"
    );

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (pki, other_pki) = (pki(), pki());
    std::fs::File::create(&cert)
        .and_then(|mut f| f.write_all(pki.cert_pem.as_bytes()))
        .unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let err = TlsServerConfig::from_pem_files(&cert, &key).err().unwrap();
    assert!(
        matches!(
            err,
            Error::TlsConfig {
                what: "private key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );
    std::fs::write(&key, other_pki.key_pem).unwrap();
    let err = TlsServerConfig::from_pem_files(&cert, &key).err().unwrap();
    assert!(
        matches!(
            err,
            Error::TlsConfig {
                what: "certificate and key",
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::write(&key, &pki.key_pem).unwrap();
    assert!(TlsServerConfig::from_pem_files(&cert, &key).is_ok());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    assert!(TlsClientConfig::with_ca_pem_file(&ca).is_ok());
}

#[test]
fn a_close_that_cannot_flush_is_aborted_after_the_shutdown_timeout() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, tls_options(&pki), |r| r.pause_after = Some(1));
    let options = ConnectOptions {
        ssl_shutdown_timeout: Some(Duration::from_millis(200)),
        ..client_options(pki.client(), None)
    };
    let (client, r) = connect(&lp, port(&server), options).unwrap();
    client.write(&vec![0; 32 << 20]).unwrap(); // more than the kernel's buffers hold
    let began = Instant::now();
    client.close();
    run_until(&lp, {
        let r = r.clone();
        move || events(&r).last().is_some_and(|e| e.starts_with("lost"))
    });
    let took = began.elapsed();
    assert_eq!(r.borrow().lost_error, Some(io::ErrorKind::TimedOut));
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    for served in list.borrow().iter() {
        transport(served).abort();
    }
    server.close();
}

#[test]
fn cancelling_a_connection_during_its_handshake_aborts_it() {
    let (pki, lp) = (pki(), EventLoop::new().unwrap());
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let connect = lp.create_connection(
        || Probe(record(|_| {})),
        "127.0.0.1",
        port,
        client_options(pki.client(), None),
    );
    let task = lp
        .create_task(async move { connect.await.map(|_| ()) }, None)
        .unwrap();
    run_until(&lp, {
        let lp = lp.clone();
        move || lp.open_transports() == 1 // connected, handshaking
    });
    assert!(task.cancel());
    run_until(&lp, {
        let lp = lp.clone();
        move || lp.open_transports() == 0
    });
    let (mut accepted, _) = silent.accept().unwrap();
    accepted.set_read_timeout(Some(SAFETY)).unwrap();
    let mut hello = Vec::new();
    accepted.read_to_end(&mut hello).unwrap();
    assert_eq!(
        hello.first(),
        Some(&0x16),
        "a TLS handshake record came, then EOF"
    );
}

#[test]
fn hand_built_rustls_configs_do_mutual_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = |pem: &str| vec![CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()];
    let key = |pem: &str| PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs(&pki.ca_pem).remove(0)).unwrap();
    let roots = Arc::new(roots);

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&pki.cert_pem), key(&pki.key_pem))
        .unwrap();
    // The client presents the server's own certificate: the CA signed it, that suffices.
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(&pki.cert_pem), key(&pki.key_pem))
        .unwrap();

    let options = ServerOptions {
        ssl: Some(TlsServerConfig::new(Arc::new(server_config))),
        ..Default::default()
    };
    let server = tls_server(&lp, &list, options, |_| {});
    let client_options = client_options(TlsClientConfig::new(Arc::new(client_config)), None);
    let (client, _) = connect(&lp, port(&server), client_options).unwrap();
    run_until(&lp, {
        let list = list.clone();
        move || !list.borrow().is_empty() && list.borrow()[0].borrow().transport.is_some()
    });
    let served = transport(&list.borrow()[0]);
    assert_eq!(
        served.get_extra_info("peercert"),
        Some(ExtraInfo::PeerCert(pki.cert_der.clone()))
    );

    // Without a client certificate, the server refuses the handshake.
    let seen = collect_exceptions(&lp);
    let _ = connect(&lp, port(&server), self::client_options(pki.client(), None));
    run_until(&lp, {
        let seen = seen.clone();
        move || !seen.borrow().is_empty()
    });
    assert!(
        seen.borrow()[0].contains("peer sent no certificates"),
        "{seen:?}"
    );
    client.close();
    server.close();
}

#[test]
fn start_tls_refuses_transports_that_cannot_speak_it() {
    let (pki, lp, list) = (pki(), EventLoop::new().unwrap(), Rc::default());
    let server = tls_server(&lp, &list, ServerOptions::default(), |r| {
        r.keep_open_on_eof = true;
    });
    let options = || StartTlsOptions {
        server_hostname: Some("localhost".into()),
        ..Default::default()
    };
    let protocol = || Rc::new(RefCell::new(Probe(record(|_| {})))) as Rc<RefCell<dyn Protocol>>;

    let (plain, _) = connect(&lp, port(&server), ConnectOptions::default()).unwrap();
    plain.write_eof();
    let err = run(
        &lp,
        lp.start_tls(&plain, protocol(), pki.client(), options()),
    );
    assert!(matches!(err, Err(Error::WriteAfterEof)), "{err:?}");
    plain.close();
    let err = run(
        &lp,
        lp.start_tls(&plain, protocol(), pki.client(), options()),
    );
    assert!(matches!(err, Err(Error::TransportClosing)), "{err:?}");

    let (plain, _) = connect(&lp, port(&server), ConnectOptions::default()).unwrap();
    let client = TlsContext::from(pki.client());
    assert!(lp.check_start_tls(&plain, &client, &options()).is_ok());
    let checked = lp.check_start_tls(&plain, &client, &StartTlsOptions::default());
    assert!(
        matches!(
            checked,
            Err(Error::InvalidArgument {
                what: "server_hostname",
                ..
            })
        ),
        "check_start_tls refuses what start_tls refuses: {checked:?}"
    );
    let err = run(
        &lp,
        lp.start_tls(&plain, protocol(), pki.client(), StartTlsOptions::default()),
    );
    let err = err.err().unwrap();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                what: "server_hostname",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !plain.is_closing(),
        "a refused upgrade leaves the transport alone"
    );
    plain.close();
    server.close();
}
