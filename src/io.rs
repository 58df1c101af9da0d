//! Watching raw file descriptors: `add_reader`, `add_writer`, `remove_reader`, `remove_writer`.
//!
//! asyncio's selector loop watches an fd with one selector key holding a reader handle and a
//! writer handle; this module does the same on top of mio.
//!
//! # Invariants
//! - An fd has at most one entry here and one mio registration, shared by its reader and its
//!   writer. The registration's interest is exactly the callbacks present (READABLE,
//!   WRITABLE, or both); with neither, the entry and the registration are gone.
//! - Level-triggered, like asyncio's selector: mio's epoll is edge-triggered, so every time an
//!   fd's readiness becomes callbacks its registration is re-armed (`EPOLL_CTL_MOD`). epoll
//!   then reports it again at the next poll if, and only if, it is still ready by then
//!   (`epoll_wait` re-checks each entry before reporting it), i.e. after the callback ran.
//! - A callback cell is cancelled the moment it stops being the fd's reader or writer
//!   (removed, replaced, or the loop closed), so a copy already queued in this iteration
//!   does not run.
//! - Errors and hangups wake both the reader and the writer, as asyncio's selector does.
//! - Readiness only pushes callback cells onto the ready queue; user code runs in the batch.
//! - No borrow of the fd map is held while a callback cell is cancelled: cancelling drops the
//!   user's closure, whose `Drop` may call back into these methods.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, IoDispatch, Readiness};
use crate::handle::{Handle, RepeatingCell, Runnable, cancel_cell};

/// The fds watched by one loop (a field of the loop's core).
#[derive(Default)]
pub(crate) struct FdWatchers {
    watches: RefCell<HashMap<RawFd, Watch>>,
}

/// Which callback of an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// One watched fd: its mio token and its callbacks.
struct Watch {
    token: Token,
    reader: Option<Rc<dyn Runnable>>,
    writer: Option<Rc<dyn Runnable>>,
}

impl Watch {
    fn slot(&mut self, direction: Direction) -> &mut Option<Rc<dyn Runnable>> {
        match direction {
            Direction::Read => &mut self.reader,
            Direction::Write => &mut self.writer,
        }
    }

    /// The interest matching the callbacks present; `None` when there are none.
    fn interest(&self) -> Option<Interest> {
        interest_of(self.reader.is_some(), self.writer.is_some())
    }

    fn cancel_all(self) {
        for cell in [self.reader, self.writer].into_iter().flatten() {
            cancel_cell(&cell);
        }
    }
}

fn interest_of(read: bool, write: bool) -> Option<Interest> {
    match (read, write) {
        (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
        (true, false) => Some(Interest::READABLE),
        (false, true) => Some(Interest::WRITABLE),
        (false, false) => None,
    }
}

/// Which callbacks a readiness report wakes, as `(reader, writer)`. asyncio's epoll selector
/// turns every bit but `EPOLLOUT` into a read event and every bit but `EPOLLIN` into a write
/// event, so `EPOLLERR` and `EPOLLHUP` wake both.
fn wakes(readiness: Readiness) -> (bool, bool) {
    let reader = readiness.readable || readiness.read_closed || readiness.error;
    let writer = readiness.writable || readiness.write_closed || readiness.error;
    (reader, writer)
}

/// asyncio raises `ValueError("Invalid file descriptor: -1")` for a negative fd.
fn check_fd(fd: RawFd) -> Result<()> {
    if fd < 0 {
        return Err(Error::InvalidArgument {
            what: "file descriptor",
            value: fd.to_string(),
        });
    }
    Ok(())
}

impl EventLoop {
    /// Calls `callback` in every iteration in which `fd` is readable (level-triggered, as
    /// asyncio: a callback that does not drain the fd is called again in the next iteration),
    /// until [`remove_reader`](Self::remove_reader). An fd that already has a reader gets
    /// `callback` instead; the old reader's handle is cancelled. Cancelling the returned
    /// handle removes the reader the next time `fd` is readable.
    ///
    /// The loop does not own `fd`: keep it open while it is watched, and remove the reader
    /// before closing it.
    ///
    /// Fails with [`Error::Closed`] if the loop is closed, [`Error::InvalidArgument`] if `fd`
    /// is negative, and [`Error::Register`] if epoll refuses it (`EBADF`: not open; `EPERM`:
    /// a regular file; `EEXIST`: already registered by another part of the loop, such as a
    /// transport).
    ///
    /// # Examples
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let lp = loopd::EventLoop::new().unwrap();
    /// let (mut rsock, mut wsock) = UnixStream::pair().unwrap();
    /// let fd = rsock.as_raw_fd();
    /// let inner = lp.clone();
    /// lp.add_reader(fd, move || {
    ///     let mut buf = [0; 16];
    ///     let n = rsock.read(&mut buf).unwrap();
    ///     assert_eq!(&buf[..n], b"abc");
    ///     inner.remove_reader(fd).unwrap();
    ///     inner.stop();
    /// })
    /// .unwrap();
    /// wsock.write_all(b"abc").unwrap();
    /// lp.run_forever().unwrap();
    /// lp.close().unwrap();
    /// ```
    pub fn add_reader(&self, fd: RawFd, callback: impl FnMut() + 'static) -> Result<Handle> {
        self.add_watch(fd, Direction::Read, RepeatingCell::new_rc(callback))
    }

    /// Stops watching `fd` for reading. Returns whether a reader was registered; its handle
    /// is cancelled, so it does not run even if it was already queued in this iteration.
    /// A closed loop returns `Ok(false)`, as asyncio does.
    ///
    /// Fails with [`Error::InvalidArgument`] if `fd` is negative.
    pub fn remove_reader(&self, fd: RawFd) -> Result<bool> {
        self.remove_watch(fd, Direction::Read)
    }

    /// Calls `callback` in every iteration in which `fd` is writable (level-triggered), until
    /// [`remove_writer`](Self::remove_writer). Same rules and errors as
    /// [`add_reader`](Self::add_reader); a reader and a writer on one fd are independent.
    pub fn add_writer(&self, fd: RawFd, callback: impl FnMut() + 'static) -> Result<Handle> {
        self.add_watch(fd, Direction::Write, RepeatingCell::new_rc(callback))
    }

    /// Stops watching `fd` for writing. Returns whether a writer was registered; same rules
    /// and errors as [`remove_reader`](Self::remove_reader).
    pub fn remove_writer(&self, fd: RawFd) -> Result<bool> {
        self.remove_watch(fd, Direction::Write)
    }

    fn add_watch(&self, fd: RawFd, direction: Direction, cell: Rc<dyn Runnable>) -> Result<Handle> {
        self.check_open()?;
        check_fd(fd)?;
        let handle = Handle { cell: cell.clone() };
        let existing = self.core.fd_watchers.watches.borrow().contains_key(&fd);
        if existing {
            self.replace_callback(fd, direction, cell)?;
        } else {
            self.register_fd(fd, direction, cell)?;
        }
        Ok(handle)
    }

    /// First callback for `fd`: a new registration.
    fn register_fd(&self, fd: RawFd, direction: Direction, cell: Rc<dyn Runnable>) -> Result<()> {
        let interest = match direction {
            Direction::Read => Interest::READABLE,
            Direction::Write => Interest::WRITABLE,
        };
        let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, readiness| {
            lp.dispatch_fd(fd, readiness);
        });
        let token = self
            .register_source(&mut SourceFd(&fd), interest, dispatch)
            .map_err(|source| Error::Register { fd, source })?;
        let mut watch = Watch {
            token,
            reader: None,
            writer: None,
        };
        *watch.slot(direction) = Some(cell);
        self.core.fd_watchers.watches.borrow_mut().insert(fd, watch);
        Ok(())
    }

    /// `fd` is already watched: set its `direction` callback and widen the interest. If epoll
    /// refuses (the fd was closed behind our back), the stale entry is dropped, as asyncio's
    /// selector does, so a retry registers afresh.
    fn replace_callback(
        &self,
        fd: RawFd,
        direction: Direction,
        cell: Rc<dyn Runnable>,
    ) -> Result<()> {
        let (old, token, interest) = {
            let mut watches = self.core.fd_watchers.watches.borrow_mut();
            let Some(watch) = watches.get_mut(&fd) else {
                drop(watches);
                return self.register_fd(fd, direction, cell);
            };
            let old = watch.slot(direction).replace(cell);
            (old, watch.token, watch.interest())
        };
        let rearmed = self.rearm(fd, token, interest);
        if let Some(old) = old {
            cancel_cell(&old);
        }
        rearmed.map_err(|source| {
            self.drop_watch(fd);
            Error::Register { fd, source }
        })
    }

    fn remove_watch(&self, fd: RawFd, direction: Direction) -> Result<bool> {
        if self.is_closed() {
            return Ok(false);
        }
        check_fd(fd)?;
        let (old, token, remaining) = {
            let mut watches = self.core.fd_watchers.watches.borrow_mut();
            let Some(watch) = watches.get_mut(&fd) else {
                return Ok(false);
            };
            let old = watch.slot(direction).take();
            let (token, remaining) = (watch.token, watch.interest());
            if remaining.is_none() {
                watches.remove(&fd);
            }
            (old, token, remaining)
        };
        if remaining.is_some() {
            if let Err(err) = self.rearm(fd, token, remaining) {
                // The fd was closed while watched: the kernel already forgot it.
                tracing::debug!(target: "loopd", "dropping watch of fd {fd}: {err}");
                self.drop_watch(fd);
            }
        } else {
            self.forget_fd(fd, token);
        }
        let removed = old.is_some();
        if let Some(old) = old {
            cancel_cell(&old);
        }
        Ok(removed)
    }

    /// Re-registers `fd` with `interest` (which also makes a still-ready fd reported again).
    fn rearm(&self, fd: RawFd, token: Token, interest: Option<Interest>) -> io::Result<()> {
        match interest {
            Some(interest) => self.reregister_source(&mut SourceFd(&fd), token, interest),
            None => Ok(()),
        }
    }

    /// Deregisters `fd`. Errors are ignored: epoll forgets an fd by itself when it is closed.
    fn forget_fd(&self, fd: RawFd, token: Token) {
        if let Err(err) = self.deregister_source(&mut SourceFd(&fd), token) {
            tracing::debug!(target: "loopd", "deregistering fd {fd}: {err}");
        }
    }

    /// Removes `fd`'s entry entirely and cancels both its callbacks.
    fn drop_watch(&self, fd: RawFd) {
        let watch = self.core.fd_watchers.watches.borrow_mut().remove(&fd);
        if let Some(watch) = watch {
            self.forget_fd(fd, watch.token);
            watch.cancel_all();
        }
    }

    /// Turns `fd`'s readiness into ready callbacks (asyncio's `_process_events`): a cancelled
    /// handle is removed instead of run; then the registration is re-armed.
    fn dispatch_fd(&self, fd: RawFd, readiness: Readiness) {
        let (wake_reader, wake_writer) = wakes(readiness);
        let (reader, writer) = {
            let watches = self.core.fd_watchers.watches.borrow();
            let Some(watch) = watches.get(&fd) else {
                return;
            };
            let pick = |wake: bool, cell: &Option<Rc<dyn Runnable>>| cell.clone().filter(|_| wake);
            (
                pick(wake_reader, &watch.reader),
                pick(wake_writer, &watch.writer),
            )
        };
        let mut queued = false;
        for (cell, direction) in [(reader, Direction::Read), (writer, Direction::Write)] {
            let Some(cell) = cell else { continue };
            if cell.header().is_cancelled() {
                // Only fails for a negative fd, which is never registered.
                let _ = self.remove_watch(fd, direction);
            } else {
                self.push_ready(cell);
                queued = true;
            }
        }
        if queued {
            self.rearm_after_dispatch(fd);
        }
    }

    fn rearm_after_dispatch(&self, fd: RawFd) {
        let current = self
            .core
            .fd_watchers
            .watches
            .borrow()
            .get(&fd)
            .map(|watch| (watch.token, watch.interest()));
        if let Some((token, interest)) = current {
            if let Err(err) = self.rearm(fd, token, interest) {
                tracing::debug!(target: "loopd", "re-arming fd {fd}: {err}");
            }
        }
    }

    /// Releases every fd registration and cancels their callbacks (called by `close()`).
    pub(crate) fn release_fd_watchers(&self) {
        let watches = std::mem::take(&mut *self.core.fd_watchers.watches.borrow_mut());
        for (fd, watch) in watches {
            self.forget_fd(fd, watch.token);
            watch.cancel_all();
        }
    }

    /// The interest `fd` is registered with, if it is watched.
    #[cfg(test)]
    fn watched_interest(&self, fd: RawFd) -> Option<Option<Interest>> {
        let watches = self.core.fd_watchers.watches.borrow();
        watches.get(&fd).map(Watch::interest)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn ready(bits: &str) -> Readiness {
        Readiness {
            readable: bits.contains('r'),
            writable: bits.contains('w'),
            error: bits.contains('e'),
            read_closed: bits.contains('R'),
            write_closed: bits.contains('W'),
        }
    }

    #[test]
    fn readiness_wakes_like_asyncios_epoll_selector() {
        let cases = [
            // (reported, reader woken, writer woken)
            ("r", true, false),
            ("w", false, true),
            ("rw", true, true),
            ("rR", true, false), // EPOLLIN|EPOLLRDHUP: peer shut down writing
            ("RW", true, true),  // EPOLLHUP
            ("eW", true, true),  // EPOLLERR
            ("weW", true, true), // EPOLLOUT|EPOLLERR
            ("", false, false),
        ];
        for (bits, reader, writer) in cases {
            assert_eq!(wakes(ready(bits)), (reader, writer), "readiness {bits:?}");
        }
    }

    #[test]
    fn interest_follows_the_callbacks_present() {
        let lp = EventLoop::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let both = Interest::READABLE | Interest::WRITABLE;
        let steps: [(&str, Option<Option<Interest>>); 5] = [
            ("+r", Some(Some(Interest::READABLE))),
            ("+w", Some(Some(both))),
            ("-r", Some(Some(Interest::WRITABLE))),
            ("+r", Some(Some(both))),
            ("-w", Some(Some(Interest::READABLE))),
        ];
        for (step, expected) in steps {
            match step {
                "+r" => drop(lp.add_reader(fd, || {}).unwrap()),
                "+w" => drop(lp.add_writer(fd, || {}).unwrap()),
                "-r" => assert!(lp.remove_reader(fd).unwrap()),
                _ => assert!(lp.remove_writer(fd).unwrap()),
            }
            assert_eq!(lp.watched_interest(fd), expected, "after {step}");
        }
        assert!(lp.remove_reader(fd).unwrap());
        assert_eq!(
            lp.watched_interest(fd),
            None,
            "no callbacks: no registration"
        );
        assert!(lp.core.fd_watchers.watches.borrow().is_empty());
    }

    #[test]
    fn a_removed_fd_can_be_watched_again() {
        let lp = EventLoop::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        lp.add_reader(fd, || {}).unwrap();
        assert!(lp.remove_reader(fd).unwrap());
        // The mio registration was dropped too, or this would be EEXIST.
        lp.add_reader(fd, || {}).unwrap();
        assert_eq!(lp.watched_interest(fd), Some(Some(Interest::READABLE)));
    }

    #[test]
    fn close_releases_registrations_and_callbacks() {
        let lp = EventLoop::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let captured = Rc::new(());
        let c = captured.clone();
        let fd = a.as_raw_fd();
        let handle = lp
            .add_reader(fd, move || assert!(Rc::strong_count(&c) > 1))
            .unwrap();
        lp.close().unwrap();
        assert!(handle.cancelled());
        assert_eq!(Rc::strong_count(&captured), 1, "the closure was dropped");
        assert!(lp.core.fd_watchers.watches.borrow().is_empty());
        // Deregistered from epoll: registering it again is not EEXIST.
        let dispatch: IoDispatch = Rc::new(|_: &EventLoop, _| {});
        lp.register_source(&mut SourceFd(&fd), Interest::READABLE, dispatch)
            .unwrap();
    }
}
