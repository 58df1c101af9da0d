//! Criterion bench of `loop.sendfile` (the kernel's `sendfile(2)`) against writing the same
//! file's bytes through the transport, both ends on one loop over loopback TCP. The two
//! write variants are the baseline measured in the same run: `write` sends bytes already
//! in memory, `read_write` reads the file first (what a user-space copy costs).
//!
//! # Invariants
//! - Each sample goes through the public API only and waits until the server's protocol
//!   has seen every byte.
//! - The file (8 MiB) is written once, outside the timed region; it stays in the page
//!   cache, so no variant measures the disk.
//!
//! Run with `cargo bench --bench sendfile`.

use std::cell::Cell;
use std::io::{Read, Seek, Write};
use std::rc::Rc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loopd::{Address, ConnectOptions, EventLoop, Protocol, ServerOptions, Transport};

const SIZE: usize = 8 << 20;

/// Counts what it receives.
struct Counter(Rc<Cell<usize>>);

impl Protocol for Counter {
    fn data_received(&mut self, data: &[u8]) {
        self.0.set(self.0.get() + data.len());
    }
}

struct Quiet;
impl Protocol for Quiet {}

/// Runs the loop one iteration at a time until `done` holds.
fn run_until(lp: &EventLoop, done: impl Fn() -> bool) {
    while !done() {
        lp.stop();
        lp.run_forever().expect("running the loop");
    }
}

/// A loop, a server counting bytes, and a client transport connected to it.
fn pair() -> (EventLoop, Transport, Rc<Cell<usize>>) {
    let lp = EventLoop::new().expect("loop");
    let bytes = Rc::new(Cell::new(0));
    let b = bytes.clone();
    let create = lp.create_server(
        move || Counter(b.clone()),
        "127.0.0.1",
        0,
        ServerOptions::default(),
    );
    let server = lp.run_until_complete(create).expect("run").expect("server");
    let Some(Address::Inet(addr)) = server.sockets().first().cloned() else {
        panic!("no inet socket");
    };
    let connect = lp.create_connection(
        || Quiet,
        "127.0.0.1",
        addr.port(),
        ConnectOptions::default(),
    );
    let (client, _) = lp
        .run_until_complete(connect)
        .expect("run")
        .expect("connect");
    (lp, client, bytes)
}

fn sendfile(c: &mut Criterion) {
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut file = tempfile::tempfile().expect("temp file");
    file.write_all(&data).expect("write the file");
    let mut group = c.benchmark_group("sendfile_8mib");
    group.throughput(Throughput::Bytes(SIZE as u64));
    let (lp, client, bytes) = pair();
    group.bench_function("write", |b| {
        b.iter(|| {
            let target = bytes.get() + SIZE;
            client.write(&data).expect("write");
            run_until(&lp, || bytes.get() >= target);
        });
    });
    group.bench_function("read_write", |b| {
        b.iter(|| {
            let target = bytes.get() + SIZE;
            let mut copy = Vec::with_capacity(SIZE);
            (&file).rewind().expect("rewind");
            (&file).read_to_end(&mut copy).expect("read");
            client.write(&copy).expect("write");
            run_until(&lp, || bytes.get() >= target);
        });
    });
    group.bench_function("sendfile", |b| {
        b.iter(|| {
            let target = bytes.get() + SIZE;
            let send = lp.sendfile(&client, &file, 0, None, false);
            let sent = lp.run_until_complete(send).expect("run").expect("sendfile");
            assert_eq!(sent, SIZE as u64);
            run_until(&lp, || bytes.get() >= target);
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = sendfile
}
criterion_main!(benches);
