//! The echo load client and the blocking echo ceiling of `bench/net.sh`. Prints one JSON
//! object per figure on stdout,
//! `{"server": "loopd", "name": "rr_rps", "value": 100000.0, "unit": "req/s"}`.
//!
//! ```text
//! cargo bench --bench net -- blocking-server            # prints its port, echoes until killed
//! cargo bench --bench net -- epoll-server               # the same, one thread on one epoll
//! cargo bench --bench net -- rr --port 8888 --label loopd
//! cargo bench --bench net -- stream --port 8888 --connections 4 --label loopd
//! ```
//!
//! Modes:
//! - `blocking-server`: a plain blocking echo, one thread per connection (`read` into a
//!   256 KiB buffer, `write_all` back, TCP_NODELAY): the ceiling the event loops are held to.
//! - `epoll-server`: a bare single-threaded epoll echo (mio, edge-triggered, one `read` and
//!   one `write` per arrival, nothing else): the floor of what any single-threaded event
//!   loop's echo costs on the machine, so a run shows how close loopd is to it and how far
//!   above uvloop any such server can get here.
//! - `rr`: `--connections` (10) connections, each sends `--size` (1024) bytes, waits for
//!   all of them to come back, and repeats. Requests/s and p50/p99 round-trip latency.
//!   `--threads` (1) shares the connections out among that many client threads.
//! - `stream`: `--connections` (1) connections, each writes `--size` (65536) byte chunks
//!   as fast as the socket takes them while reading the echo back. MB/s (10^6 bytes) of
//!   echoed bytes received.
//!
//! Each mode also reports the CPU the client used in the window (`*_client_cpu`, in cores:
//! CPU seconds per second, all its threads), and with `--server-pid` the server's
//! (`*_server_cpu`, and `rr_server_us_per_req`: the server's CPU time per request), read
//! from `/proc/PID/stat` at the window's ends, so a run shows which side was busy.
//!
//! # Invariants
//! - The client is one thread on one epoll (mio, edge-triggered), whatever the number of
//!   connections (unless `rr --threads`): on a 2-core machine the server keeps a core. Per
//!   request it makes one `write` and one or two `read`s, plus a share of an `epoll_wait`.
//! - A figure is printed only for a run that did what it claims: every echoed byte is
//!   checked against what was sent (rr: the whole request; stream: a 251-periodic pattern
//!   at its stream offset), and a mismatch, an early EOF or an I/O error fails the run
//!   (exit 1).
//! - Figures cover `--seconds` (5) after a 0.5 s warm-up; rr latencies are those of the
//!   requests completed inside that window.
//! - Without `--bench` in argv (so under `cargo test --all-targets`) it does nothing and
//!   exits 0: measuring needs a server, which `bench/net.sh` starts.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

const WARM_UP: Duration = Duration::from_millis(500);

/// The stream pattern's period: prime, so it never lines up with a chunk or buffer size.
const PERIOD: usize = 251;

const READ_BUFFER: usize = 256 * 1024;

#[derive(Debug)]
struct Args {
    mode: String,
    port: u16,
    label: String,
    connections: usize,
    threads: usize,
    server_pid: Option<u32>,
    size: Option<usize>,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        mode: String::new(),
        port: 0,
        label: "server".into(),
        connections: 0,
        threads: 0,
        server_pid: None,
        size: None,
        seconds: 5.0,
    };
    let mut argv = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = argv.next() {
        if !arg.starts_with("--") {
            if !args.mode.is_empty() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            args.mode = arg;
            continue;
        }
        let value = argv.next().ok_or(format!("{arg} needs a value"))?;
        let bad = || format!("{arg} {value:?} is not a valid number");
        match arg.as_str() {
            "--port" => args.port = value.parse().map_err(|_| bad())?,
            "--label" => args.label = value,
            "--connections" => args.connections = value.parse().map_err(|_| bad())?,
            "--threads" => args.threads = value.parse().map_err(|_| bad())?,
            "--server-pid" => args.server_pid = Some(value.parse().map_err(|_| bad())?),
            "--size" => args.size = Some(value.parse().map_err(|_| bad())?),
            "--seconds" => args.seconds = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown option {arg:?}")),
        }
    }
    if !args.mode.ends_with("-server") && args.port == 0 {
        return Err(format!("{:?} needs --port (the server's)", args.mode));
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(format!("--seconds {} must be positive", args.seconds));
    }
    if args.size == Some(0) {
        return Err("--size 0: nothing to echo".into());
    }
    Ok(args)
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        return; // `cargo test --all-targets`: no server to measure
    }
    let outcome = parse_args().and_then(|args| run(&args));
    if let Err(err) = outcome {
        eprintln!("net bench: {err}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let seconds = Duration::from_secs_f64(args.seconds);
    match args.mode.as_str() {
        "blocking-server" => blocking_server(args.port).map_err(|e| format!("serving: {e}")),
        "epoll-server" => epoll_server(args.port).map_err(|e| format!("serving: {e}")),
        "rr" => {
            let connections = nonzero(args.connections, 10);
            let size = args.size.unwrap_or(1024);
            let threads = nonzero(args.threads, 1).min(connections);
            let window = Window::after_warm_up(seconds);
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let share = connections / threads + usize::from(t < connections % threads);
                    std::thread::spawn(move || request_response(addr, share, size, window))
                })
                .collect();
            let cpu = window.measure_cpu(args.server_pid)?;
            let mut latencies = Vec::new();
            for worker in workers {
                let run = worker
                    .join()
                    .map_err(|_| "a client thread panicked".to_string())??;
                latencies.extend(run);
            }
            let run = RequestResponse { latencies };
            let requests = run.latencies.len() as f64;
            figure(
                &args.label,
                "rr_rps",
                requests / seconds.as_secs_f64(),
                "req/s",
            )?;
            figure(&args.label, "rr_p50_us", run.percentile(50.0), "us")?;
            figure(&args.label, "rr_p99_us", run.percentile(99.0), "us")?;
            if let Some(server) = cpu.server {
                let per_request = server.as_secs_f64() * 1e6 / requests.max(1.0);
                figure(&args.label, "rr_server_us_per_req", per_request, "us")?;
            }
            cpu.report(&args.label, "rr")
        }
        "stream" => {
            let connections = nonzero(args.connections, 1);
            let size = args.size.unwrap_or(64 * 1024);
            let window = Window::after_warm_up(seconds);
            let worker = std::thread::spawn(move || stream(addr, connections, size, window));
            let cpu = window.measure_cpu(args.server_pid)?;
            let (bytes, elapsed) = worker
                .join()
                .map_err(|_| "the client thread panicked".to_string())??;
            let name = format!("stream{connections}");
            let mbps = bytes as f64 / elapsed.as_secs_f64() / 1e6;
            figure(&args.label, &format!("{name}_mbps"), mbps, "MB/s")?;
            cpu.report(&args.label, &name)
        }
        other => Err(format!(
            "unknown mode {other:?} (known: blocking-server, epoll-server, rr, stream)"
        )),
    }
}

fn nonzero(n: usize, default: usize) -> usize {
    if n == 0 { default } else { n }
}

fn figure(label: &str, name: &str, value: f64, unit: &str) -> Result<(), String> {
    let line = format!(
        r#"{{"server": "{label}", "name": "{name}", "value": {value:.3}, "unit": "{unit}"}}"#
    );
    writeln!(io::stdout(), "{line}").map_err(|e| format!("printing a figure: {e}"))
}

// ---- the measuring window and CPU time -------------------------------------------------

/// The measured part of a run: `seconds` after the warm-up.
#[derive(Clone, Copy)]
struct Window {
    begin: Instant,
    end: Instant,
}

/// CPU time used in a [`Window`]: by the server (if its pid was given) and this client.
struct CpuUse {
    server: Option<Duration>,
    client: Duration,
    elapsed: Duration,
}

impl Window {
    fn after_warm_up(seconds: Duration) -> Window {
        let begin = Instant::now() + WARM_UP;
        Window {
            begin,
            end: begin + seconds,
        }
    }

    /// Sleeps through the window (the client runs on other threads), reading CPU times at
    /// its ends.
    fn measure_cpu(&self, server_pid: Option<u32>) -> Result<CpuUse, String> {
        std::thread::sleep(self.begin.saturating_duration_since(Instant::now()));
        let started = Instant::now();
        let server_before = server_pid.map(process_cpu).transpose()?;
        let client_before = process_cpu(std::process::id())?;
        std::thread::sleep(self.end.saturating_duration_since(Instant::now()));
        let server_after = server_pid.map(process_cpu).transpose()?;
        let client_after = process_cpu(std::process::id())?;
        Ok(CpuUse {
            server: server_before
                .zip(server_after)
                .map(|(before, after)| after.saturating_sub(before)),
            client: client_after.saturating_sub(client_before),
            elapsed: started.elapsed(),
        })
    }
}

impl CpuUse {
    /// Prints the cores used on average (CPU seconds per second) by server and client.
    fn report(&self, label: &str, mode: &str) -> Result<(), String> {
        let seconds = self.elapsed.as_secs_f64();
        if let Some(server) = self.server {
            let cores = server.as_secs_f64() / seconds;
            figure(label, &format!("{mode}_server_cpu"), cores, "cores")?;
        }
        let cores = self.client.as_secs_f64() / seconds;
        figure(label, &format!("{mode}_client_cpu"), cores, "cores")
    }
}

/// User plus system time of process `pid`, all its threads (`/proc/PID/stat`, in clock
/// ticks: 10 ms at the usual 100 Hz).
fn process_cpu(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(format!("{path}: no utime/stime fields"));
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Ok(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

// ---- the blocking echo ---------------------------------------------------------------

/// Accepts forever, one thread per connection; prints the bound port first.
fn blocking_server(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", listener.local_addr()?.port())?;
    stdout.flush()?;
    drop(stdout);
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(err) = echo_blocking(stream) {
                eprintln!("blocking echo: {err}");
            }
        });
    }
    Ok(())
}

fn echo_blocking(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; READ_BUFFER];
    loop {
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return hung_up(err),
        };
        if let Err(err) = stream.write_all(&buffer[..n]) {
            return hung_up(err);
        }
    }
}

// ---- the bare epoll echo ---------------------------------------------------------------

/// Accepts and echoes on one thread and one edge-triggered epoll (mio), with no loop,
/// callbacks or buffers beyond one read buffer: the least a single-threaded event loop's
/// echo can cost on this machine. A connection waits for readable edges only; a reply the
/// socket does not take at once is kept, and the connection then waits for the writable
/// edge instead (its reading paused) until the reply is out. Prints the bound port first.
fn epoll_server(port: u16) -> io::Result<()> {
    const LISTENER: Token = Token(usize::MAX);
    struct Conn {
        stream: mio::net::TcpStream,
        pending: Vec<u8>,
    }
    let mut listener = mio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port).into())?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{}", listener.local_addr()?.port())?;
    stdout.flush()?;
    drop(stdout);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                        Err(err) => return Err(err),
                    };
                    stream.set_nodelay(true)?;
                    let slot = conns.iter().position(Option::is_none).unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    poll.registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)?;
                    conns[slot] = Some(Conn {
                        stream,
                        pending: Vec::new(),
                    });
                }
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let was_pending = !conn.pending.is_empty();
            if echo_ready(&mut conn.stream, &mut conn.pending, &mut buffer).is_err() {
                let _ = poll.registry().deregister(&mut conn.stream);
                conns[slot] = None;
                continue;
            }
            // Writable edges only while a reply waits, as an event loop's transport asks
            // for them only while its write buffer holds bytes.
            let pending = !conn.pending.is_empty();
            if pending != was_pending {
                let interest = if pending {
                    Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry()
                    .reregister(&mut conn.stream, Token(slot), interest)?;
            }
        }
    }
}

/// Sends what is pending, then reads and echoes until the socket is drained or the peer
/// stops taking bytes; an error once the connection is over (EOF or a failure).
fn echo_ready(
    stream: &mut mio::net::TcpStream,
    pending: &mut Vec<u8>,
    buffer: &mut [u8],
) -> Result<(), ()> {
    loop {
        while !pending.is_empty() {
            match stream.write(pending) {
                Ok(n) => drop(pending.drain(..n)),
                Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        let n = match stream.read(buffer) {
            Ok(0) => return Err(()),
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(()),
        };
        let mut sent = 0;
        while sent < n {
            match stream.write(&buffer[sent..n]) {
                Ok(k) => sent += k,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        pending.extend_from_slice(&buffer[sent..n]);
        if n < buffer.len() && pending.is_empty() {
            // A short read drained the socket: the next byte brings a new edge.
            return Ok(());
        }
    }
}

/// A client that closes its end mid-stream (as the load client does at the end of a run)
/// is not an error of the server.
fn hung_up(err: io::Error) -> io::Result<()> {
    match err.kind() {
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Ok(()),
        _ => Err(err),
    }
}

// ---- the client ------------------------------------------------------------------------

/// Opens `n` non-blocking connections with TCP_NODELAY, registered for both directions.
fn connect_all(
    poll: &Poll,
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<mio::net::TcpStream>, String> {
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|e| format!("setting up connection {i}: {e}"))?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("registering connection {i}: {e}"))?;
        streams.push(stream);
    }
    Ok(streams)
}

/// `write` until `WouldBlock` or `data` is gone; the bytes written.
fn write_some(stream: &mut mio::net::TcpStream, data: &[u8]) -> Result<usize, String> {
    let mut written = 0;
    while written < data.len() {
        match stream.write(&data[written..]) {
            Ok(n) => written += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("write: {err}")),
        }
    }
    Ok(written)
}

/// One `read`: `Ok(None)` on `WouldBlock`, an error on EOF (the server hung up).
fn read_once(stream: &mut mio::net::TcpStream, buffer: &mut [u8]) -> Result<Option<usize>, String> {
    loop {
        return match stream.read(buffer) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(n) => Ok(Some(n)),
            Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => Err(format!("read: {err}")),
        };
    }
}

fn poll_until(poll: &mut Poll, events: &mut Events, end: Instant) -> Result<bool, String> {
    let now = Instant::now();
    if now >= end {
        return Ok(false);
    }
    match poll.poll(events, Some(end - now)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == ErrorKind::Interrupted => Ok(true),
        Err(err) => Err(format!("epoll_wait: {err}")),
    }
}

struct RequestResponse {
    /// Round-trip times of the requests completed in the window, in nanoseconds.
    latencies: Vec<u64>,
}

impl RequestResponse {
    /// The `p`th percentile in microseconds (nearest rank).
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1e3
    }
}

struct Exchange {
    stream: mio::net::TcpStream,
    sent: usize,
    received: usize,
    started: Instant,
}

/// Ping-pong on `connections` connections; the round-trip times (ns) of the requests
/// completed in `window`.
fn request_response(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    window: Window,
) -> Result<Vec<u64>, String> {
    let request: Vec<u8> = (0..size).map(|i| (i % PERIOD) as u8).collect();
    let mut reply = vec![0u8; size];
    let mut poll = Poll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let now = Instant::now();
    let mut exchanges: Vec<Exchange> = connect_all(&poll, addr, connections)?
        .into_iter()
        .map(|stream| Exchange {
            stream,
            sent: 0,
            received: 0,
            started: now,
        })
        .collect();
    let Window { begin, end } = window;
    let mut latencies = Vec::with_capacity(1 << 20);
    for exchange in &mut exchanges {
        exchange.sent = write_some(&mut exchange.stream, &request)?;
    }
    while poll_until(&mut poll, &mut events, end)? {
        for event in events.iter() {
            let exchange = &mut exchanges[event.token().0];
            loop {
                if exchange.sent < size {
                    exchange.sent += write_some(&mut exchange.stream, &request[exchange.sent..])?;
                    if exchange.sent < size {
                        break; // wait for a writable edge
                    }
                }
                let Some(n) = read_once(&mut exchange.stream, &mut reply[exchange.received..])?
                else {
                    break;
                };
                if reply[exchange.received..exchange.received + n]
                    != request[exchange.received..exchange.received + n]
                {
                    return Err(format!(
                        "the echo differs from the request at byte {}",
                        exchange.received
                    ));
                }
                exchange.received += n;
                if exchange.received < size {
                    continue;
                }
                let done = Instant::now();
                if done >= begin && done < end {
                    latencies.push((done - exchange.started).as_nanos() as u64);
                }
                // The whole echo is in: nothing more can come before the next request, so
                // send it and wait for its edge rather than read again.
                exchange.received = 0;
                exchange.started = done;
                exchange.sent = write_some(&mut exchange.stream, &request)?;
                if exchange.sent == size {
                    break;
                }
            }
        }
    }
    Ok(latencies)
}

struct Flow {
    stream: mio::net::TcpStream,
    sent: u64,
    received: u64,
}

/// Streams `size`-byte chunks both ways on `connections` connections; the echoed bytes
/// received in the window, and the window's exact length.
fn stream(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    window: Window,
) -> Result<(u64, Duration), String> {
    let pattern: Vec<u8> = (0..size.max(READ_BUFFER) + PERIOD)
        .map(|i| (i % PERIOD) as u8)
        .collect();
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut poll = Poll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut flows: Vec<Flow> = connect_all(&poll, addr, connections)?
        .into_iter()
        .map(|stream| Flow {
            stream,
            sent: 0,
            received: 0,
        })
        .collect();
    let Window { begin, end } = window;
    let mut at_begin: Option<(u64, Instant)> = None;
    while poll_until(&mut poll, &mut events, end)? {
        for event in events.iter() {
            let flow = &mut flows[event.token().0];
            if event.is_writable() {
                loop {
                    let offset = (flow.sent % PERIOD as u64) as usize;
                    let n = write_some(&mut flow.stream, &pattern[offset..offset + size])?;
                    flow.sent += n as u64;
                    if n < size {
                        break;
                    }
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                while let Some(n) = read_once(&mut flow.stream, &mut buffer)? {
                    let offset = (flow.received % PERIOD as u64) as usize;
                    if buffer[..n] != pattern[offset..offset + n] {
                        return Err(format!(
                            "the echo differs from what was sent near byte {}",
                            flow.received
                        ));
                    }
                    flow.received += n as u64;
                }
            }
        }
        let now = Instant::now();
        if at_begin.is_none() && now >= begin {
            at_begin = Some((flows.iter().map(|f| f.received).sum(), now));
        }
    }
    let (before, started) = at_begin.ok_or("the stream never reached the end of its warm-up")?;
    let total: u64 = flows.iter().map(|f| f.received).sum();
    Ok((total - before, started.elapsed()))
}
