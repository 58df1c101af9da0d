//! Child watchers: asyncio's `AbstractChildWatcher`, which learns when child processes exit.
//!
//! A watcher reaps a child when it exits and calls the handler registered for it with
//! asyncio's `returncode`: the exit code, or `-N` when signal `N` killed the child.
//! [`PidfdChildWatcher`] (the default) waits on a pidfd in the loop's own poll;
//! [`ThreadedChildWatcher`] blocks one thread per child, for kernels without pidfd.
//!
//! # Where handlers live
//! Watchers are `Send + Sync`, because a policy hands one watcher to every thread, but an
//! [`EventLoop`] is not. So a watcher keeps no handlers: a handler lives in the loop passed
//! to [`ChildWatcher::add_child_handler`] and runs on that loop's thread, in a ready batch,
//! as asyncio's `loop.call_soon_threadsafe(callback, pid, returncode)` does. It need not be
//! `Send`.
//!
//! # Invariants
//! - A child is reaped only on its loop's thread, in the same step that takes it out of
//!   the loop's table of watched children. Until then its pid cannot be reused, so a
//!   handler never receives the status of another process that got the same pid.
//! - One watch per child per loop: adding a handler for a pid the loop already watches
//!   replaces the handler (asyncio's rule), whichever watcher started the watch.
//! - Removing a handler does not stop the watch: the child is still reaped when it exits,
//!   so it never stays a zombie; only the callback is dropped.
//! - Once a child is reaped its callback is scheduled: it can no longer be removed.
//! - Closing (or dropping) a loop drops its handlers; the children it still watched are
//!   reaped by a background thread when they exit, with a warning (asyncio's "loop that
//!   handles pid is closed"). No zombie is left behind.
//! - A child is watched by one loop. If two loops watch the same child, the one that
//!   reaps second reports [`UNKNOWN_RETURNCODE`], as asyncio does when a status was
//!   already collected elsewhere.

mod pidfd;
mod spawn;
mod subprocess;
mod threaded;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;

pub use pidfd::PidfdChildWatcher;
pub use spawn::{Stdio, SubprocessOptions};
pub use subprocess::{Output, PipeTransport, SubprocessProtocol, SubprocessTransport};
pub use threaded::ThreadedChildWatcher;

/// What a child watcher calls when a child exits: `callback(pid, returncode)`, on the
/// thread of the loop it was added to. `returncode` is the exit code, or `-N` when
/// signal `N` killed the child.
pub type ChildCallback = Box<dyn FnOnce(u32, i32) + 'static>;

/// The returncode reported when a child's status was collected by someone else (another
/// `waitpid` in the process): asyncio reports 255 then, with a warning.
pub const UNKNOWN_RETURNCODE: i32 = 255;

/// asyncio's `AbstractChildWatcher`: watches child processes and calls a handler when one
/// exits. asyncio's method names are kept.
///
/// Handlers belong to the loop passed to [`add_child_handler`](Self::add_child_handler),
/// which is why [`remove_child_handler`](Self::remove_child_handler) takes the loop too
/// (asyncio's takes only the pid and finds the running loop).
///
/// # Examples
/// ```
/// use std::process::Command;
/// use loopd::{ChildWatcher, EventLoop, PidfdChildWatcher};
///
/// let lp = EventLoop::new().unwrap();
/// # let safety = lp.clone();
/// # lp.call_later(std::time::Duration::from_secs(5), move || safety.stop()).unwrap();
/// let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
/// let stopper = lp.clone();
/// let watcher = PidfdChildWatcher::new();
/// watcher
///     .add_child_handler(&lp, child.id(), Box::new(move |_pid, returncode| {
///         assert_eq!(returncode, 3);
///         stopper.stop();
///     }))
///     .unwrap();
/// lp.run_forever().unwrap();
/// lp.close().unwrap();
/// ```
pub trait ChildWatcher: Send + Sync {
    /// Arranges for `callback(pid, returncode)` to run on `lp`'s thread when child `pid`
    /// exits; the watcher reaps the child. A second call for a pid the loop already
    /// watches replaces the earlier callback. A child that has already exited (but was
    /// not reaped) is reported in one of the next iterations.
    ///
    /// Fails with [`Error::ChildWatcherClosed`] after [`close`](Self::close),
    /// [`Error::Closed`] if `lp` is closed, [`Error::InvalidArgument`] for pid 0 or a pid
    /// above `i32::MAX`, [`Error::NoChildProcess`] if `pid` is not an unreaped child of
    /// this process, and [`Error::Io`]/[`Error::Register`] if the OS refuses.
    fn add_child_handler(&self, lp: &EventLoop, pid: u32, callback: ChildCallback) -> Result<()>;

    /// Removes the callback for `pid` from `lp`. Returns whether there was one; `false`
    /// once the child has been reaped (its callback is then already scheduled). The child
    /// is still reaped when it exits, so it does not stay a zombie.
    fn remove_child_handler(&self, lp: &EventLoop, pid: u32) -> bool {
        lp.remove_child_callback(pid)
    }

    /// asyncio's `attach_loop`. Handlers name their loop in `add_child_handler`, so the
    /// watchers here need no attached loop and do nothing; custom watchers may.
    fn attach_loop(&self, _lp: Option<&EventLoop>) -> Result<()> {
        Ok(())
    }

    /// Whether the watcher accepts new handlers (it was not closed).
    fn is_active(&self) -> bool;

    /// Stops accepting new handlers. Children already watched are still reaped and their
    /// callbacks still run. Idempotent.
    fn close(&self);
}

/// How a loop watches one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// A pidfd registered in the loop's poll (it closes with the loop).
    Pidfd,
    /// A thread blocked in `waitid` (it outlives the loop if need be).
    Thread,
}

struct Watched {
    callback: Option<ChildCallback>,
    via: Via,
}

/// The children a loop watches, by pid: part of the loop's state.
#[derive(Default)]
pub(crate) struct Children {
    watched: RefCell<HashMap<u32, Watched>>,
    /// Subprocess transports whose child was started and handed to a watcher.
    pub(crate) spawned: Cell<u64>,
    /// Subprocess transports whose child was reaped.
    pub(crate) exited: Cell<u64>,
}

/// A snapshot of one loop's subprocesses and signal handlers (see
/// [`EventLoop::process_metrics`]). Counters count from the loop's creation and only
/// grow; gauges are the value now.
///
/// Only children started by [`EventLoop::subprocess_exec`] (or `subprocess_shell`) are
/// counted; a pid merely handed to [`ChildWatcher::add_child_handler`] is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessMetrics {
    /// Counter: children started and handed to a child watcher. A child whose watcher
    /// refused it (it is killed at once) is not counted.
    pub spawned: u64,
    /// Gauge: children started and not reaped yet (`spawned - exited`).
    pub running: u64,
    /// Counter: children reaped while the loop was open, their exit reported to their
    /// transport. A child whose handler was taken away with
    /// [`ChildWatcher::remove_child_handler`] is reaped but not counted: it stays in
    /// `running`.
    pub exited: u64,
    /// Gauge: signals this loop has a handler for
    /// ([`add_signal_handler`](EventLoop::add_signal_handler)).
    pub signal_handlers: usize,
}

impl EventLoop {
    /// Counters and gauges of this loop's subprocesses and signal handlers: a cheap copy
    /// of a few cells, taken on the loop's thread. Never fails. On a closed loop the
    /// counters keep their last values (children still running at `close()` are reaped
    /// in the background, uncounted) and `signal_handlers` is 0.
    pub fn process_metrics(&self) -> ProcessMetrics {
        let children = &self.core.children;
        let (spawned, exited) = (children.spawned.get(), children.exited.get());
        ProcessMetrics {
            spawned,
            running: spawned.saturating_sub(exited),
            exited,
            signal_handlers: self.core.signals.borrow().handler_count(),
        }
    }
}

impl Children {
    /// Drops the handlers; children watched by a pidfd (which closes with the loop) get a
    /// thread that reaps them when they exit. Threaded watches reap by themselves.
    fn release(&self) {
        let watched = std::mem::take(&mut *self.watched.borrow_mut());
        for (&pid, watch) in &watched {
            if watch.via == Via::Pidfd {
                threaded::reap_orphan(pid);
            }
        }
        drop(watched);
    }
}

/// A loop dropped without `close()` leaves no zombie either.
impl Drop for Children {
    fn drop(&mut self) {
        self.release();
    }
}

/// Releases a closing loop's children (see [`Children::release`]).
pub(crate) fn close_loop(lp: &EventLoop) {
    lp.core.children.release();
}

impl EventLoop {
    /// Replaces the callback of a child this loop watches; gives `callback` back if the
    /// loop does not watch `pid`.
    fn replace_child_callback(
        &self,
        pid: u32,
        callback: ChildCallback,
    ) -> std::result::Result<(), ChildCallback> {
        let old = match self.core.children.watched.borrow_mut().get_mut(&pid) {
            Some(watch) => watch.callback.replace(callback),
            None => return Err(callback),
        };
        drop(old); // outside the borrow: dropping a closure may touch the loop
        Ok(())
    }

    /// Takes a reaped child out of the table, with its callback if it still has one.
    pub(crate) fn take_child(&self, pid: u32) -> Option<ChildCallback> {
        let watch = self.core.children.watched.borrow_mut().remove(&pid);
        watch.and_then(|watch| watch.callback)
    }

    /// Drops the callback of a watched child; the watch itself goes on.
    fn remove_child_callback(&self, pid: u32) -> bool {
        let old = self
            .core
            .children
            .watched
            .borrow_mut()
            .get_mut(&pid)
            .and_then(|watch| watch.callback.take());
        old.is_some()
    }
}

/// The steps every watcher's `add_child_handler` shares. `start` begins watching a child
/// the loop does not watch yet; the child joins the table only if it succeeds.
fn add_handler(
    lp: &EventLoop,
    pid: u32,
    callback: ChildCallback,
    via: Via,
    start: impl FnOnce(&EventLoop, libc::pid_t) -> Result<()>,
) -> Result<()> {
    lp.check_open()?;
    let raw_pid = checked_pid(pid)?;
    let Err(callback) = lp.replace_child_callback(pid, callback) else {
        return Ok(());
    };
    start(lp, raw_pid)?;
    let watch = Watched {
        callback: Some(callback),
        via,
    };
    lp.core.children.watched.borrow_mut().insert(pid, watch);
    Ok(())
}

/// A pid as the kernel takes it. 0 and values that do not fit a `pid_t` would make
/// `waitid` wait for other processes, so they are refused.
fn checked_pid(pid: u32) -> Result<libc::pid_t> {
    match libc::pid_t::try_from(pid) {
        Ok(raw) if raw > 0 => Ok(raw),
        _ => Err(Error::InvalidArgument {
            what: "pid",
            value: pid.to_string(),
        }),
    }
}

/// `waitid(2)` with `WEXITED`, restarted on `EINTR`: `Some(returncode)` once the child
/// has exited, `None` while it still runs (possible only with `WNOHANG`).
fn wait_exited(
    idtype: libc::idtype_t,
    id: libc::id_t,
    flags: libc::c_int,
) -> io::Result<Option<i32>> {
    loop {
        // SAFETY: siginfo_t is a plain C struct for which all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid and writable for the duration of the call.
        if unsafe { libc::waitid(idtype, id, &mut info, libc::WEXITED | flags) } == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(returncode(&info));
    }
}

/// asyncio's returncode from what `waitid` reported, `None` if no child had exited.
fn returncode(info: &libc::siginfo_t) -> Option<i32> {
    // SAFETY: after a successful waitid, `info` is zeroed or describes a SIGCHLD event,
    // so the sigchld fields are the ones to read.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    match info.si_code {
        _ if pid == 0 => None,
        libc::CLD_EXITED => Some(status),
        _ => Some(-status), // CLD_KILLED or CLD_DUMPED: status is the signal
    }
}

/// Checks that `pid` is an unreaped child of this process without reaping it.
fn check_is_child(idtype: libc::idtype_t, id: libc::id_t, pid: u32) -> Result<()> {
    match wait_exited(idtype, id, libc::WNOHANG | libc::WNOWAIT) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ECHILD) => Err(Error::NoChildProcess(pid)),
        Err(source) => Err(Error::Io {
            op: "waitid",
            source,
        }),
    }
}

/// The returncode for a child whose status could not be read, with asyncio's warning.
fn unknown_returncode(pid: u32, err: &io::Error) -> i32 {
    tracing::warn!(
        target: "loopd",
        "child process pid {pid} exit status already read: will report returncode 255 ({err})"
    );
    UNKNOWN_RETURNCODE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(code: libc::c_int, pid: libc::pid_t, status: libc::c_int) -> libc::siginfo_t {
        // Lay out the kernel's SIGCHLD siginfo by hand: si_signo, si_errno, si_code, then
        // (after padding to 8 bytes on 64-bit) si_pid, si_uid, si_status.
        let mut words = [0i32; 32];
        words[2] = code;
        let base = if cfg!(target_pointer_width = "64") {
            4
        } else {
            3
        };
        words[base] = pid;
        words[base + 2] = status;
        // SAFETY: siginfo_t is 128 bytes of plain data, the size of `words`.
        unsafe { std::mem::transmute::<[i32; 32], libc::siginfo_t>(words) }
    }

    #[test]
    fn returncode_is_the_exit_code_or_minus_the_signal() {
        let cases = [
            (libc::CLD_EXITED, 42, 0, Some(0)),
            (libc::CLD_EXITED, 42, 3, Some(3)),
            (libc::CLD_KILLED, 42, libc::SIGKILL, Some(-9)),
            (libc::CLD_DUMPED, 42, libc::SIGSEGV, Some(-11)),
            (0, 0, 0, None), // WNOHANG and nothing exited
        ];
        for (code, pid, status, want) in cases {
            assert_eq!(
                returncode(&info(code, pid, status)),
                want,
                "{code} {status}"
            );
        }
    }

    #[test]
    fn pids_that_waitid_would_misread_are_refused() {
        let cases = [
            (0, false),
            (1, true),
            (i32::MAX as u32, true),
            (i32::MAX as u32 + 1, false),
            (u32::MAX, false),
        ];
        for (pid, ok) in cases {
            let got = checked_pid(pid);
            assert_eq!(got.is_ok(), ok, "pid {pid}");
            if !ok {
                assert!(matches!(
                    got,
                    Err(Error::InvalidArgument { what: "pid", .. })
                ));
            }
        }
    }

    #[test]
    fn a_non_child_is_refused_without_waiting() {
        // pid 1 exists but is never our child.
        assert!(matches!(
            check_is_child(libc::P_PID, 1, 1),
            Err(Error::NoChildProcess(1))
        ));
    }
}
