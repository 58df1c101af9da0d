//! A `timerfd` in the poll, so timers fire with sub-millisecond precision.
//!
//! `epoll_wait` takes whole milliseconds (mio rounds up), so a loop that only used the
//! poll timeout would fire up to ~1 ms late. The timerfd is armed at the earliest
//! deadline on the same `CLOCK_MONOTONIC` the loop reads, with `TFD_TIMER_ABSTIME`; its
//! expiry wakes the poll at the deadline itself. The poll timeout stays as a backstop.
//!
//! # Invariants
//! - Re-armed only when the earliest deadline changes: one syscall per new deadline,
//!   none per iteration.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::clock::Nanos;

pub(crate) struct TimerFd {
    fd: OwnedFd,
    armed: Cell<Option<Nanos>>,
}

impl TimerFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(TimerFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: Cell::new(None),
        })
    }

    /// Makes the timerfd expire at `deadline` (absolute `CLOCK_MONOTONIC` nanoseconds).
    pub(crate) fn arm(&self, deadline: Nanos) -> io::Result<()> {
        if self.armed.get() == Some(deadline) {
            return Ok(());
        }
        let deadline = deadline.max(1); // an all-zero it_value would disarm it
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec and the fd is ours; old value not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed.set(Some(deadline));
        Ok(())
    }

    /// Consumes an expiry after the poll reported the fd readable.
    pub(crate) fn acknowledge(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                expirations.as_mut_ptr().cast(),
                expirations.len(),
            )
        };
        self.armed.set(None);
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
