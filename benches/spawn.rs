//! loopd's side of `bench/proc.sh`: spawning children and reading their output through
//! [`EventLoop::subprocess_exec`]; `bench/proc_bench.py` runs the same on asyncio and
//! uvloop, `bench/proc_ceiling.c` on the bare C library.
//!
//! ```text
//! spawn --bench seq N PROGRAM       N children one after the other, each awaited
//! spawn --bench conc N K PROGRAM    N children, K in flight (a new one as one exits)
//! spawn --bench read BYTES ARGV...  one child (stdout a pipe), read to end of file
//! ```
//!
//! Prints one JSON object per figure on stdout: `{"loop","name","value","unit"}`, with the
//! names and units of the other two programs, so `bench/proc_table.py` can join them. The
//! spawn modes also print this process's CPU time (not its children's) per spawn.
//!
//! # Invariants
//! - Spawned children get stdin, stdout and stderr on `/dev/null` ([`Stdio::DevNull`]),
//!   as the others do with `DEVNULL`; the reader's child has stdout on a pipe to the loop.
//!   Each child is started from the protocol's `process_exited` of the one before (or on
//!   the loop before it runs), reaped by the default watcher, and must exit 0.
//! - The reader counts bytes in `pipe_data_received` (the engine's reused buffer, nothing
//!   copied) and fails unless it got exactly BYTES: a fast wrong answer is not a figure.
//! - Without `--bench` (so under `cargo test --all-targets`) it runs a few `true`s and a
//!   1 MB read instead: a check that the workloads run, not a measurement.

use std::cell::Cell;
use std::error::Error;
use std::rc::Rc;
use std::time::Instant;

use loopd::{EventLoop, Stdio, SubprocessOptions, SubprocessProtocol, SubprocessTransport};

type Res<T> = Result<T, Box<dyn Error>>;

fn emit(name: &str, value: f64, unit: &str) {
    println!(r#"{{"loop": "loopd", "name": "{name}", "value": {value:.1}, "unit": "{unit}"}}"#);
}

fn devnull() -> SubprocessOptions {
    SubprocessOptions {
        stdin: Stdio::DevNull,
        stdout: Stdio::DevNull,
        stderr: Stdio::DevNull,
        ..SubprocessOptions::default()
    }
}

/// Shared by the children of one spawn run.
struct Spawner {
    lp: EventLoop,
    program: String,
    total: u64,
    started: Cell<u64>,
    exited: Cell<u64>,
    failure: Cell<Option<String>>,
}

impl Spawner {
    /// Starts the next child if any are left; stops the loop on an error.
    fn start_next(self: &Rc<Self>) {
        if self.started.get() == self.total {
            return;
        }
        self.started.set(self.started.get() + 1);
        let child = Child {
            spawner: self.clone(),
            transport: None,
        };
        if let Err(err) = self.lp.subprocess_exec(child, &[&self.program], devnull()) {
            self.fail(format!("spawning {}: {err}", self.program));
        }
    }

    fn fail(&self, why: String) {
        self.failure.set(Some(why));
        self.lp.stop();
    }
}

struct Child {
    spawner: Rc<Spawner>,
    transport: Option<SubprocessTransport>,
}

impl SubprocessProtocol for Child {
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        self.transport = Some(transport.clone());
    }

    fn process_exited(&mut self) {
        let spawner = &self.spawner;
        let code = self.transport.take().and_then(|t| t.get_returncode());
        if code != Some(0) {
            return spawner.fail(format!("{} exited with {code:?}", spawner.program));
        }
        spawner.exited.set(spawner.exited.get() + 1);
        if spawner.exited.get() == spawner.total {
            spawner.lp.stop();
        } else {
            spawner.start_next();
        }
    }
}

/// CPU seconds (user + system) this process used so far; children not included.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; all zeroes is a valid start.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `total` children of `program`, `in_flight` at a time: spawns per second, and this
/// process's CPU microseconds per spawn.
fn spawn_run(total: u64, in_flight: u64, program: &str) -> Res<(f64, f64)> {
    let lp = EventLoop::new()?;
    let spawner = Rc::new(Spawner {
        lp: lp.clone(),
        program: program.to_owned(),
        total,
        started: Cell::new(0),
        exited: Cell::new(0),
        failure: Cell::new(None),
    });
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    for _ in 0..in_flight {
        spawner.start_next();
    }
    lp.run_forever()?;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    lp.close()?;
    if let Some(why) = spawner.failure.take() {
        return Err(why.into());
    }
    if spawner.exited.get() != total {
        return Err(format!("{} of {total} children exited", spawner.exited.get()).into());
    }
    Ok((total as f64 / elapsed, cpu / total as f64 * 1e6))
}

/// Counts what the child writes to stdout.
struct Counter {
    bytes: Rc<Cell<u64>>,
    transport: Option<SubprocessTransport>,
    returncode: Rc<Cell<Option<i32>>>,
}

impl SubprocessProtocol for Counter {
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        self.transport = Some(transport.clone());
    }

    fn pipe_data_received(&mut self, _fd: i32, data: &[u8]) {
        self.bytes.set(self.bytes.get() + data.len() as u64);
    }

    fn process_exited(&mut self) {
        let code = self.transport.take().and_then(|t| t.get_returncode());
        self.returncode.set(code);
        if let Ok(lp) = loopd::get_running_loop() {
            lp.stop();
        }
    }
}

/// Reads everything `argv` writes to stdout; MB (10^6 bytes) per second.
fn read_run(bytes: u64, argv: &[String]) -> Res<f64> {
    let lp = EventLoop::new()?;
    let counted = Rc::new(Cell::new(0));
    let returncode = Rc::new(Cell::new(None));
    let counter = Counter {
        bytes: counted.clone(),
        transport: None,
        returncode: returncode.clone(),
    };
    let options = SubprocessOptions {
        stdout: Stdio::Pipe,
        ..devnull()
    };
    let start = Instant::now();
    lp.subprocess_exec(counter, argv, options)?;
    lp.run_forever()?;
    let elapsed = start.elapsed().as_secs_f64();
    lp.close()?;
    if returncode.get() != Some(0) || counted.get() != bytes {
        let (got, code) = (counted.get(), returncode.get());
        return Err(format!("{argv:?}: read {got} bytes (want {bytes}), exit {code:?}").into());
    }
    Ok(bytes as f64 / elapsed / 1e6)
}

fn number(text: Option<&String>) -> Res<u64> {
    let text = text.ok_or("missing a number")?;
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("not a positive number: {text:?}").into()),
    }
}

fn main() -> Res<()> {
    let bench = std::env::args().any(|arg| arg == "--bench");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if !bench {
        spawn_run(5, 1, "true")?;
        spawn_run(10, 3, "true")?;
        read_run(
            1_000_000,
            &[
                "head".into(),
                "-c".into(),
                "1000000".into(),
                "/dev/zero".into(),
            ],
        )?;
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("seq") if args.len() == 3 => {
            let (rate, cpu) = spawn_run(number(args.get(1))?, 1, &args[2])?;
            emit("spawn_seq", rate, "spawns/s");
            emit("spawn_seq_cpu", cpu, "us");
        }
        Some("conc") if args.len() == 4 => {
            let (n, k) = (number(args.get(1))?, number(args.get(2))?);
            let (rate, cpu) = spawn_run(n, k, &args[3])?;
            emit("spawn_conc", rate, "spawns/s");
            emit("spawn_conc_cpu", cpu, "us");
        }
        Some("read") if args.len() >= 3 => {
            emit(
                "read_throughput",
                read_run(number(args.get(1))?, &args[2..])?,
                "MB/s",
            );
        }
        _ => {
            return Err("usage: spawn --bench seq N PROGRAM | conc N K PROGRAM | \
                        read BYTES ARGV..."
                .into());
        }
    }
    Ok(())
}
