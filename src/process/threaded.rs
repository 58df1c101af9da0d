//! [`ThreadedChildWatcher`]: one thread per child, blocked until the child exits.
//!
//! # Invariants
//! - The thread waits with `WNOWAIT`: it learns that the child exited but leaves it a
//!   zombie, so its pid stays reserved. The loop thread reaps it, in the callback the
//!   thread sent with `call_soon_threadsafe`, in the same step that takes it out of the
//!   loop's table.
//! - If the loop is closed by then, the delivery is dropped unrun and its `Drop` reaps the
//!   child on the waiting thread, with asyncio's warning. Either way no zombie is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::{ChildCallback, ChildWatcher, Via};
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, get_running_loop};
use crate::remote::LoopHandle;

/// A waiting thread only blocks in `waitid`: a small stack is plenty.
const WAITER_STACK: usize = 64 * 1024;

/// asyncio's `ThreadedChildWatcher`: a thread per child blocks until the child exits and
/// hands the news to the loop with `call_soon_threadsafe`. Works on any kernel; costs a
/// thread per running child. Prefer [`PidfdChildWatcher`](super::PidfdChildWatcher)
/// where it [is supported](super::PidfdChildWatcher::is_supported).
#[derive(Debug, Default)]
pub struct ThreadedChildWatcher {
    closed: AtomicBool,
}

impl ThreadedChildWatcher {
    /// A new, active watcher.
    pub fn new() -> Self {
        Self::default()
    }
}

impl ChildWatcher for ThreadedChildWatcher {
    fn add_child_handler(&self, lp: &EventLoop, pid: u32, callback: ChildCallback) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ChildWatcherClosed);
        }
        super::add_handler(lp, pid, callback, Via::Thread, |lp, raw_pid| {
            super::check_is_child(libc::P_PID, raw_pid as libc::id_t, pid)?;
            spawn_waiter(pid, lp.handle()).map_err(Error::io("spawning a child waiter thread"))
        })
    }

    fn is_active(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Reaps a child of a closed loop when it exits, on a thread of its own.
pub(super) fn reap_orphan(pid: u32) {
    let spawned = waiter_thread(pid).spawn(move || {
        let reaped = super::wait_exited(libc::P_PID, pid as libc::id_t, 0);
        tracing::warn!(target: "loopd", "loop that handles pid {pid} is closed ({reaped:?})");
    });
    if let Err(err) = spawned {
        tracing::warn!(target: "loopd", "cannot reap pid {pid} of a closed loop: {err}");
    }
}

fn waiter_thread(pid: u32) -> thread::Builder {
    thread::Builder::new()
        .name(format!("loopd-wait-{pid}"))
        .stack_size(WAITER_STACK)
}

fn spawn_waiter(pid: u32, handle: LoopHandle) -> std::io::Result<()> {
    waiter_thread(pid)
        .spawn(move || wait_then_deliver(pid, handle))
        .map(drop)
}

/// The waiting thread: block until `pid` exits (without reaping it), then send it to the
/// loop.
fn wait_then_deliver(pid: u32, handle: LoopHandle) {
    if let Err(err) = super::wait_exited(libc::P_PID, pid as libc::id_t, libc::WNOWAIT) {
        // Reaped elsewhere (ECHILD): the loop will report 255.
        tracing::debug!(target: "loopd", "waiting for pid {pid}: {err}");
    }
    let delivery = Delivery { pid, pending: true };
    // On a closed loop the closure comes back dropped, and `Delivery::drop` reaps here.
    let _ = handle.call_soon_threadsafe(move || delivery.deliver());
}

/// A child that exited, on its way to the loop. Reaps the child if dropped undelivered.
struct Delivery {
    pid: u32,
    pending: bool,
}

impl Delivery {
    /// Runs on the loop thread: reap, take the child out of the table, call back.
    fn deliver(mut self) {
        let Ok(lp) = get_running_loop() else {
            return; // not run by a loop: `drop` reaps
        };
        self.pending = false;
        let pid = self.pid;
        let Some(returncode) = reap(pid) else {
            // Still running: only if the pid was reaped elsewhere and reused. Wait again.
            if let Err(err) = spawn_waiter(pid, lp.handle()) {
                tracing::warn!(target: "loopd", "cannot wait for pid {pid} again: {err}");
            }
            return;
        };
        if let Some(callback) = lp.take_child(pid) {
            callback(pid, returncode);
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.pending {
            tracing::warn!(target: "loopd", "loop that handles pid {} is closed", self.pid);
            reap(self.pid);
        }
    }
}

/// Reaps `pid` if it has exited: `Some(returncode)`, 255 if its status was already read.
fn reap(pid: u32) -> Option<i32> {
    match super::wait_exited(libc::P_PID, pid as libc::id_t, libc::WNOHANG) {
        Ok(returncode) => returncode,
        Err(err) => Some(super::unknown_returncode(pid, &err)),
    }
}
