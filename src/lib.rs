//! loopd's engine: an event loop with the semantics of Python's asyncio, on `mio`.
//!
//! The asyncio reference ("Event Loop" and "Policies") is the specification: where it states
//! an order, an error or an edge case, [`EventLoop`] does the same. This crate has no tokio
//! and no gRPC in it; the `loopd` daemon hosts these loops and drives them remotely.
//!
//! # Anatomy of the crate
//! - [`event_loop`]: [`EventLoop`] itself: the ready queue, `run_once`, run/stop/close.
//! - `handle`: [`Handle`] and [`TimerHandle`], what scheduling returns.
//! - `timer`: the timer heap (deadline, then FIFO) and the timerfd for sub-ms wake-ups.
//! - `io`: `add_reader`/`add_writer`: level-triggered watching of raw fds, as asyncio's.
//! - `remote`: [`LoopHandle`], the only door from other threads (`call_soon_threadsafe`).
//! - `exception`: the exception handler and its [`ExceptionContext`].
//! - `metrics`: per-loop counters ([`Metrics`]).
//! - `clock`: the one monotonic clock everything uses.
//! - `signal`: `add_signal_handler`/`remove_signal_handler`: Unix signals delivered into the poll.
//! - `future`: [`Future`], asyncio's future: a result set later, awaitable by tasks.
//! - `task`: [`Task`], a Rust future polled on the loop; `create_task`, `run_until_complete`.
//! - `executor`: the default [`ThreadPool`] and `run_in_executor` for blocking work.
//! - [`policy`]: event loop policies ([`EventLoopPolicy`]): the current loop per thread,
//!   the child watcher, and asyncio's module-level `get_event_loop` and friends.
//! - [`net`]: stream transports and protocols: [`Server`] (`create_server`,
//!   `create_unix_server`), `create_connection`, [`Transport`], [`Protocol`]; TLS with
//!   rustls ([`TlsServerConfig`], [`TlsClientConfig`], `start_tls`); datagram endpoints
//!   ([`DatagramTransport`]); pipe transports; getaddrinfo; sendfile; `sock_*`.
//! - [`process`]: child watchers ([`ChildWatcher`]): pidfd (default) and thread-per-child;
//!   subprocesses (`subprocess_exec`, [`SubprocessTransport`], [`SubprocessProtocol`]).
//!
//! # Stricter than asyncio
//! - Timers never fire early: inside a timer callback `loop.time() >= handle.when()`.
//!   (asyncio fires up to one clock resolution early; uvloop keeps whole milliseconds.)
//! - Timers with equal deadlines fire in the order they were scheduled.
//! - A timerfd wakes the poll at the deadline itself, so firing is sub-millisecond precise
//!   even though `epoll_wait` takes whole milliseconds.
//!
//! # Limitations
//! - Linux only (epoll, timerfd).
//! - `call_soon_threadsafe` returns no cancellable handle.
//! - Callbacks are Rust closures; the loop is `!Send` and lives on one thread.
//! - Networking covers TCP and Unix stream servers and connections (plain or TLS), UDP and
//!   Unix datagram endpoints, getaddrinfo/getnameinfo, Happy Eyeballs, sendfile, `sock_*`
//!   and pipe transports (see [`net`] for what is not there yet).

mod clock;
pub mod error;
pub mod event_loop;
mod exception;
mod executor;
mod future;
mod handle;
mod io;
mod metrics;
pub mod net;
pub mod policy;
pub mod process;
mod remote;
mod signal;
mod task;
mod timer;

pub use error::{Error, Result};
pub use event_loop::{DEFAULT_SLOW_CALLBACK, EventLoop, MAX_POLL_TIMEOUT, get_running_loop};
pub use exception::{ExceptionContext, ExceptionHandler, PanicError, SharedError};
pub use executor::{Executor, Job, JobLost, ThreadPool};
pub use future::{CallbackId, Future, Take};
pub use handle::{Handle, TimerHandle};
pub use metrics::{LATENESS_BUCKET_BOUNDS_NS, LatenessHistogram, Metrics};
pub use net::{
    AddrInfo, AddrInfoHints, DatagramAddr, DatagramOptions, DatagramProtocol, DatagramTransport,
    Family, ReadPipeProtocol, ReadPipeTransport, SockType, WritePipeProtocol, WritePipeTransport,
};
pub use net::{
    Address, ConnectOptions, ExtraInfo, Hosts, NetMetrics, Protocol, Server, ServerOptions,
    Transport,
};
pub use net::{StartTlsOptions, TlsClientConfig, TlsContext, TlsServerConfig};
pub use policy::{
    DefaultEventLoopPolicy, EventLoopPolicy, get_child_watcher, get_event_loop,
    get_event_loop_policy, new_event_loop, set_child_watcher, set_event_loop,
    set_event_loop_policy,
};
pub use process::{
    ChildCallback, ChildWatcher, Output, PidfdChildWatcher, PipeTransport, ProcessMetrics, Stdio,
    SubprocessOptions, SubprocessProtocol, SubprocessTransport, ThreadedChildWatcher,
    UNKNOWN_RETURNCODE,
};
pub use remote::LoopHandle;
pub use task::{ResultLost, Task, TaskBody, TaskFactory, TaskSpec};
