//! Criterion benches of TLS transports against plain ones, both ends on one loop over
//! loopback TCP: streaming 1 MiB client -> server, and connecting (with the handshake) then
//! closing. The plain figures are the baseline measured in the same run.
//!
//! # Invariants
//! - Each sample goes through the public API only (`create_connection`, `write`, `close`),
//!   and waits until the server's protocol has seen every byte (or the connection made).
//! - Certificates are made once, outside the timed region (rcgen, ECDSA P-256).
//!
//! Run with `cargo bench --bench tls`; one group with `cargo bench --bench tls -- stream`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loopd::{
    Address, ConnectOptions, EventLoop, Protocol, Server, ServerOptions, TlsClientConfig,
    TlsServerConfig, Transport,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const STREAM: usize = 1 << 20;

/// Counts what it receives, and connections made.
struct Counter(Rc<Cell<usize>>, Rc<Cell<usize>>);

impl Protocol for Counter {
    fn connection_made(&mut self, _: Transport) {
        self.1.set(self.1.get() + 1);
    }
    fn data_received(&mut self, data: &[u8]) {
        self.0.set(self.0.get() + data.len());
    }
}

struct Quiet;
impl Protocol for Quiet {}

/// A server config for `localhost` and a client config trusting its CA.
fn configs() -> (TlsServerConfig, TlsClientConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let server = TlsServerConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .expect("server config");
    let client = TlsClientConfig::with_ca_pem(ca.pem().as_bytes()).expect("client config");
    (server, client)
}

/// A loop with a server counting bytes and connections; its port.
fn serve(
    ssl: Option<TlsServerConfig>,
) -> (EventLoop, Server, u16, Rc<Cell<usize>>, Rc<Cell<usize>>) {
    let lp = EventLoop::new().expect("loop");
    let (bytes, made) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let (b, m) = (bytes.clone(), made.clone());
    let options = ServerOptions {
        ssl,
        ..Default::default()
    };
    let create = lp.create_server(
        move || Counter(b.clone(), m.clone()),
        "127.0.0.1",
        0,
        options,
    );
    let server = lp.run_until_complete(create).expect("run").expect("server");
    let Some(Address::Inet(addr)) = server.sockets().first().cloned() else {
        panic!("no inet socket");
    };
    (lp, server, addr.port(), bytes, made)
}

fn connect(lp: &EventLoop, port: u16, ssl: Option<TlsClientConfig>) -> Transport {
    let options = ConnectOptions {
        ssl,
        ..Default::default()
    };
    let connect = lp.create_connection(|| Quiet, "localhost", port, options);
    let (transport, _) = lp
        .run_until_complete(connect)
        .expect("run")
        .expect("connect");
    transport
}

/// Runs the loop one iteration at a time until `done` holds.
fn run_until(lp: &EventLoop, done: impl Fn() -> bool) {
    while !done() {
        lp.stop();
        lp.run_forever().expect("running the loop");
    }
}

fn stream(c: &mut Criterion) {
    let (server_config, client_config) = configs();
    let mut group = c.benchmark_group("stream_1mib");
    group.throughput(Throughput::Bytes(STREAM as u64));
    let data = vec![7u8; STREAM];
    for (name, tls) in [("plain", false), ("tls", true)] {
        let (lp, server, port, bytes, _) = serve(tls.then(|| server_config.clone()));
        let client = connect(&lp, port, tls.then(|| client_config.clone()));
        group.bench_function(name, |b| {
            b.iter(|| {
                let target = bytes.get() + STREAM;
                client.write(&data).expect("write");
                run_until(&lp, || bytes.get() >= target);
            });
        });
        client.close();
        server.close();
    }
    group.finish();
}

fn connect_close(c: &mut Criterion) {
    let (server_config, client_config) = configs();
    let mut group = c.benchmark_group("connect_close");
    group.throughput(Throughput::Elements(1));
    for (name, tls) in [("plain", false), ("tls", true)] {
        let (lp, server, port, _, made) = serve(tls.then(|| server_config.clone()));
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let began = Instant::now();
                for _ in 0..iterations {
                    let target = made.get() + 1;
                    let client = connect(&lp, port, tls.then(|| client_config.clone()));
                    run_until(&lp, || made.get() >= target);
                    client.close();
                }
                began.elapsed()
            });
        });
        server.close();
        run_until(&lp, || lp.open_transports() == 0);
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = stream, connect_close
}
criterion_main!(benches);
