//! [`PidfdChildWatcher`]: waits for children on pidfds in the loop's own poll.
//!
//! # Invariants
//! - A pidfd names one process for its whole life, so a reused pid can never be mistaken
//!   for the child (asyncio's `PidfdChildWatcher`, Linux 5.4+).
//! - The pidfd becomes readable when the child exits; the dispatch then reaps exactly
//!   that child with `waitid(P_PIDFD, WNOHANG)`, deregisters and closes the pidfd, and
//!   pushes the callback onto the ready queue. It runs no user code itself.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::{ChildCallback, ChildWatcher, Via};
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, IoDispatch};
use crate::handle::OnceCell;

/// asyncio's `PidfdChildWatcher`: one pidfd per child, registered in the loop's poll, so
/// no thread and no signal handler is needed. The default watcher where the kernel has
/// pidfds (see [`is_supported`](Self::is_supported)).
///
/// # Examples
/// ```
/// use loopd::{ChildWatcher, EventLoop, PidfdChildWatcher};
/// let lp = EventLoop::new().unwrap();
/// # let safety = lp.clone();
/// # lp.call_later(std::time::Duration::from_secs(5), move || safety.stop()).unwrap();
/// let child = std::process::Command::new("true").spawn().unwrap();
/// let stopper = lp.clone();
/// PidfdChildWatcher::new()
///     .add_child_handler(&lp, child.id(), Box::new(move |_, code| {
///         assert_eq!(code, 0);
///         stopper.stop();
///     }))
///     .unwrap();
/// lp.run_forever().unwrap();
/// ```
#[derive(Debug, Default)]
pub struct PidfdChildWatcher {
    closed: AtomicBool,
}

impl PidfdChildWatcher {
    /// A new, active watcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this kernel has `pidfd_open` (Linux 5.3) and `waitid(P_PIDFD)` (5.4).
    /// Probed once per process, like asyncio's `can_use_pidfd`.
    pub fn is_supported() -> bool {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        *SUPPORTED.get_or_init(probe)
    }
}

/// Opens a pidfd on this very process and asks `waitid` about it: `ECHILD` (we are not
/// our own child) means `P_PIDFD` is understood; older kernels say `EINVAL`.
fn probe() -> bool {
    // SAFETY: getpid has no preconditions.
    let Ok(fd) = pidfd_open(unsafe { libc::getpid() }) else {
        return false;
    };
    let id = fd.as_raw_fd() as libc::id_t;
    let answer = super::wait_exited(libc::P_PIDFD, id, libc::WNOHANG | libc::WNOWAIT);
    matches!(answer, Err(err) if err.raw_os_error() == Some(libc::ECHILD))
}

impl ChildWatcher for PidfdChildWatcher {
    fn add_child_handler(&self, lp: &EventLoop, pid: u32, callback: ChildCallback) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ChildWatcherClosed);
        }
        super::add_handler(lp, pid, callback, Via::Pidfd, |lp, raw_pid| {
            watch(lp, pid, raw_pid)
        })
    }

    fn is_active(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// One child's pidfd and its registration in the poll.
struct PidfdWatch {
    pid: u32,
    fd: OwnedFd,
    token: Cell<Option<Token>>,
}

/// Opens a pidfd for `pid`, checks it is our child, and registers it with `lp`'s poll.
fn watch(lp: &EventLoop, pid: u32, raw_pid: libc::pid_t) -> Result<()> {
    let fd = pidfd_open(raw_pid).map_err(|err| match err.raw_os_error() {
        Some(libc::ESRCH) => Error::NoChildProcess(pid),
        _ => Error::Io {
            op: "pidfd_open",
            source: err,
        },
    })?;
    let raw = fd.as_raw_fd();
    super::check_is_child(libc::P_PIDFD, raw as libc::id_t, pid)?;
    let watch = Rc::new(PidfdWatch {
        pid,
        fd,
        token: Cell::new(None),
    });
    let on_event = watch.clone();
    let dispatch: IoDispatch = Rc::new(move |lp, _readiness| on_readable(lp, &on_event));
    let token = lp
        .register_source(&mut SourceFd(&raw), Interest::READABLE, dispatch)
        .map_err(|source| Error::Register { fd: raw, source })?;
    watch.token.set(Some(token));
    Ok(())
}

/// The pidfd is readable: the child has exited. Reap it, release the pidfd, and schedule
/// the callback.
fn on_readable(lp: &EventLoop, watch: &PidfdWatch) {
    let id = watch.fd.as_raw_fd() as libc::id_t;
    let returncode = match super::wait_exited(libc::P_PIDFD, id, libc::WNOHANG) {
        Ok(Some(returncode)) => returncode,
        Ok(None) => return, // not exited after all: wait for the next edge
        Err(err) => super::unknown_returncode(watch.pid, &err),
    };
    deregister(lp, watch);
    let pid = watch.pid;
    if let Some(callback) = lp.take_child(pid) {
        lp.push_ready(OnceCell::new_rc(move || callback(pid, returncode)));
    }
}

/// Takes the pidfd out of the poll; it is closed when the dispatch holding it is dropped.
fn deregister(lp: &EventLoop, watch: &PidfdWatch) {
    let Some(token) = watch.token.take() else {
        return;
    };
    let raw = watch.fd.as_raw_fd();
    if let Err(err) = lp.deregister_source(&mut SourceFd(&raw), token) {
        tracing::warn!(target: "loopd", "deregistering pidfd {raw} of pid {}: {err}", watch.pid);
    }
}

/// `pidfd_open(2)`; glibc has no wrapper before 2.36, so through `syscall`.
fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
