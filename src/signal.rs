//! Unix signal handlers: [`EventLoop::add_signal_handler`] and
//! [`EventLoop::remove_signal_handler`], as asyncio's.
//!
//! # How a signal reaches a callback
//! 1. A loop that handles a signal registers one `signal-hook` action for it. The action
//!    runs in signal context and does two async-signal-safe things only: it sets the
//!    signal's bit in the loop's `pending` mask and, if that bit was clear, sends the signal
//!    number as one byte into the loop's socketpair.
//! 2. The socketpair's read end is registered in the loop's poll. Its dispatch reads the
//!    bytes, clears each signal's bit, and pushes that signal's callback onto the ready
//!    queue: the callback runs with the ready batch, like any other callback.
//!
//! # Invariants
//! - A signal's bit is set exactly while its byte is queued or being read, so at most one
//!   byte per signal (at most 64 bytes) is ever queued: the socket cannot fill up and no
//!   delivery is lost. Deliveries that arrive before the loop reads the byte coalesce into
//!   one callback run, as they may in asyncio.
//! - Every loop handling a signal gets its own delivery, whatever thread it runs on:
//!   signal-hook runs every action registered for the signal.
//! - Unregistering an action waits until no signal handler still runs it (signal-hook's
//!   read-copy-update), so a loop's socket outlives every write into it.
//! - The disposition of a signal is signal-hook's handler while at least one loop in the
//!   process handles it, and `SIG_DFL` once the last one removed its handler or closed.
//!
//! # Restoring the default disposition
//! signal-hook's `unregister` leaves its own handler installed, so the signal would be
//! silently ignored. Instead, when the last loop lets go of a signal, this module sets
//! `SIG_DFL` itself (`sigaction` swaps it in atomically) and parks the handler it replaced.
//! When a loop handles that signal again, the parked handler is reinstalled: signal-hook
//! installs its handler only on the first registration of a signal in the process, so
//! without this the new action would never run. Keeping the handler installed and calling
//! `emulate_default_handler` when no loop wants the signal was rejected: the process would
//! still catch the signal (as `sigaction` and `/proc/self/status` report), a default-ignored
//! signal such as `SIGCHLD` would still interrupt blocking calls elsewhere (`epoll_wait`
//! fails with `EINTR` even under `SA_RESTART`), and it does not know real-time signals.
//!
//! # Limitations
//! - The loops own the dispositions of the signals they handle: do not combine them with
//!   other handlers for the same signal (signal-hook used directly, `sigaction`). When the
//!   last loop removes its handler the signal gets `SIG_DFL` whatever else was there, as
//!   asyncio's `remove_signal_handler` does with `signal.signal(sig, SIG_DFL)`.
//! - Restoring `SIG_DFL` is meant literally: after handling `SIGPIPE` (which Rust programs
//!   ignore from startup) and removing the handler, a write to a closed pipe kills the
//!   process, as it does in Python.

use std::collections::HashMap;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mio::net::UnixStream;
use mio::{Interest, Token};
use signal_hook::SigId;

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, IoDispatch};
use crate::handle::{Handle, RepeatingCell, Runnable, cancel_cell};

/// The highest signal number handled: one bit of the `u64` pending mask per signal.
const MAX_SIGNAL: i32 = 64;

/// One loop's signal handlers (a field of the loop's core).
#[derive(Default)]
pub(crate) struct LoopSignals {
    /// Declared first so its hooks are unregistered before the socket closes.
    handlers: HashMap<i32, Installed>,
    /// Created by the first `add_signal_handler`.
    channel: Option<Channel>,
}

impl LoopSignals {
    /// How many signals have a handler.
    pub(crate) fn handler_count(&self) -> usize {
        self.handlers.len()
    }
}

/// The loop's end of the delivery socketpair.
struct Channel {
    reader: UnixStream,
    token: Token,
    shared: Arc<Shared>,
}

/// What a loop's signal-context actions touch: nothing else.
struct Shared {
    writer: UnixStream,
    /// Bit `sig - 1` is set while a byte for `sig` is queued or being read.
    pending: AtomicU64,
}

/// The handler of one signal in one loop.
struct Installed {
    cell: Rc<dyn Runnable>,
    hook: Hook,
}

/// One signal-hook action; dropping it unregisters the action.
struct Hook {
    sig: i32,
    id: Option<SigId>,
}

/// The process-wide state of one signal.
struct Disposition {
    /// How many loops handle the signal now.
    loops: usize,
    /// signal-hook's handler, replaced by `SIG_DFL` when `loops` fell to zero.
    parked: Option<libc::sigaction>,
}

/// Indexed by signal number; only ever locked on loop threads, never in signal context.
static DISPOSITIONS: Mutex<[Disposition; MAX_SIGNAL as usize + 1]> = Mutex::new(
    [const {
        Disposition {
            loops: 0,
            parked: None,
        }
    }; MAX_SIGNAL as usize + 1],
);

fn dispositions() -> MutexGuard<'static, [Disposition; MAX_SIGNAL as usize + 1]> {
    // Nothing panics while the lock is held; if it ever did, the counts are still whole.
    DISPOSITIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventLoop {
    /// Runs `callback` on this loop whenever signal `sig` arrives (asyncio's
    /// `add_signal_handler`). Adding a handler for a signal that already has one replaces
    /// it: the previous callback is cancelled and never runs again.
    ///
    /// Deliveries of the same signal that arrive before the loop reads them coalesce into
    /// one run. Cancelling the returned [`Handle`] removes the handler (restoring the
    /// default disposition) when the signal next arrives, as asyncio does. Any thread's
    /// loop may handle signals; each loop handling a signal gets its own delivery.
    ///
    /// Fails with [`Error::InvalidSignal`] if `sig` is not a signal number of this system
    /// (0, negative, above `SIGRTMAX`, or reserved by the C library), then with
    /// [`Error::Closed`] if the loop is closed, with [`Error::UncatchableSignal`] for
    /// `SIGKILL` and `SIGSTOP` (and for `SIGILL`, `SIGFPE`, `SIGSEGV`, see below), and with
    /// [`Error::Io`] or [`Error::Register`] if the system refuses.
    ///
    /// `SIGILL`, `SIGFPE` and `SIGSEGV` are refused although asyncio accepts them: they
    /// report a fault of the instruction that raised them, which re-runs (and faults again)
    /// as soon as a handler that merely records the signal returns.
    ///
    /// # Examples
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// let lp = loopd::EventLoop::new().unwrap();
    /// let (got, stopper) = (Rc::new(Cell::new(false)), lp.clone());
    /// let seen = got.clone();
    /// lp.add_signal_handler(libc::SIGUSR2, move || {
    ///     seen.set(true);
    ///     stopper.stop();
    /// })
    /// .unwrap();
    /// lp.call_soon(|| unsafe { libc::raise(libc::SIGUSR2); }).unwrap();
    /// lp.run_forever().unwrap();
    /// assert!(got.get());
    /// assert!(lp.remove_signal_handler(libc::SIGUSR2).unwrap());
    /// lp.close().unwrap();
    /// ```
    pub fn add_signal_handler(&self, sig: i32, callback: impl FnMut() + 'static) -> Result<Handle> {
        check_signal(sig)?;
        self.check_open()?;
        check_catchable(sig)?;
        let cell = RepeatingCell::new_rc(callback);
        let replaced = self
            .core
            .signals
            .borrow_mut()
            .handlers
            .get_mut(&sig)
            .map(|installed| std::mem::replace(&mut installed.cell, cell.clone()));
        if let Some(previous) = replaced {
            cancel_cell(&previous);
            return Ok(Handle { cell });
        }
        let hook = Hook::register(sig, self.signal_channel()?)?;
        let installed = Installed {
            cell: cell.clone(),
            hook,
        };
        self.core
            .signals
            .borrow_mut()
            .handlers
            .insert(sig, installed);
        Ok(Handle { cell })
    }

    /// Removes the handler of signal `sig` (asyncio's `remove_signal_handler`); returns
    /// whether there was one. Its callback is cancelled: it does not run even for a
    /// delivery already read. When no loop of the process handles `sig` any more, its
    /// disposition goes back to `SIG_DFL` (also for `SIGINT`, where Python would restore
    /// its `KeyboardInterrupt` handler).
    ///
    /// Fails with [`Error::InvalidSignal`] as [`add_signal_handler`](Self::add_signal_handler),
    /// and with [`Error::Io`] if `SIG_DFL` could not be restored (the handler is removed
    /// anyway). On a closed loop it returns `Ok(false)`: closing removed every handler.
    pub fn remove_signal_handler(&self, sig: i32) -> Result<bool> {
        check_signal(sig)?;
        let removed = self.core.signals.borrow_mut().handlers.remove(&sig);
        let Some(mut installed) = removed else {
            return Ok(false);
        };
        cancel_cell(&installed.cell);
        installed
            .hook
            .release()
            .map_err(Error::io("restoring the default signal disposition"))?;
        Ok(true)
    }

    /// Removes every signal handler of this loop, restoring default dispositions; called
    /// once by `close()`.
    pub(crate) fn close_signal_handlers(&self) {
        let LoopSignals { handlers, channel } =
            std::mem::take(&mut *self.core.signals.borrow_mut());
        for (sig, mut installed) in handlers {
            cancel_cell(&installed.cell);
            if let Err(err) = installed.hook.release() {
                tracing::warn!(target: "loopd", "restoring SIG_DFL for signal {sig} failed: {err}");
            }
        }
        if let Some(mut channel) = channel {
            // Closing the socket would also drop it from the epoll set; this is just tidy.
            let _ = self.deregister_source(&mut channel.reader, channel.token);
        }
    }

    /// The loop's delivery socketpair, created and registered on first use.
    fn signal_channel(&self) -> Result<Arc<Shared>> {
        if let Some(channel) = &self.core.signals.borrow().channel {
            return Ok(channel.shared.clone());
        }
        let (mut reader, writer) = UnixStream::pair().map_err(Error::io("socketpair"))?;
        let dispatch: IoDispatch = Rc::new(|lp: &EventLoop, _| lp.dispatch_signals());
        let token = self
            .register_source(&mut reader, Interest::READABLE, dispatch)
            .map_err(|source| Error::Register {
                fd: reader.as_raw_fd(),
                source,
            })?;
        let shared = Arc::new(Shared {
            writer,
            pending: AtomicU64::new(0),
        });
        let channel = Channel {
            reader,
            token,
            shared: shared.clone(),
        };
        self.core.signals.borrow_mut().channel = Some(channel);
        Ok(shared)
    }

    /// The socket's dispatch: reads every queued signal number (the poll is
    /// edge-triggered, so until `WouldBlock`) and queues the handlers.
    fn dispatch_signals(&self) {
        let mut buf = [0u8; 2 * MAX_SIGNAL as usize];
        loop {
            match self.read_signal_numbers(&mut buf) {
                Ok(0) => return,
                Ok(n) => buf[..n]
                    .iter()
                    .for_each(|&sig| self.deliver(i32::from(sig))),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    tracing::warn!(target: "loopd", "reading signal numbers failed: {err}");
                    return;
                }
            }
        }
    }

    fn read_signal_numbers(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.core.signals.borrow().channel {
            Some(channel) => (&channel.reader).read(buf),
            None => Ok(0),
        }
    }

    /// Queues the handler of one delivered signal, as asyncio's `_handle_signal`.
    fn deliver(&self, sig: i32) {
        let cell = {
            let signals = self.core.signals.borrow();
            if let Some(channel) = &signals.channel {
                channel.shared.acknowledge(sig);
            }
            signals
                .handlers
                .get(&sig)
                .map(|installed| installed.cell.clone())
        };
        match cell {
            // Removed after the signal arrived: nothing to run.
            None => {}
            Some(cell) if cell.header().is_cancelled() => {
                if let Err(err) = self.remove_signal_handler(sig) {
                    tracing::warn!(target: "loopd", "removing cancelled handler of signal {sig}: {err}");
                }
            }
            Some(cell) => self.push_ready(cell),
        }
    }
}

/// asyncio's `_check_signal`: `sig` must be in `signal.valid_signals()`, which is what
/// `sigfillset` fills (glibc leaves out the signals it reserves for threads, 32 and 33).
fn check_signal(sig: i32) -> Result<()> {
    let in_range = (1..=MAX_SIGNAL.min(libc::SIGRTMAX())).contains(&sig);
    if in_range && is_in_full_set(sig) {
        Ok(())
    } else {
        Err(Error::InvalidSignal(sig))
    }
}

fn is_in_full_set(sig: i32) -> bool {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigfillset` initialises the set it is given; `sigismember` only reads it.
    unsafe { libc::sigfillset(set.as_mut_ptr()) == 0 && libc::sigismember(set.as_ptr(), sig) == 1 }
}

/// SIGKILL and SIGSTOP cannot be caught; signal-hook also forbids the synchronous fault
/// signals (its `register` panics on any of them).
fn check_catchable(sig: i32) -> Result<()> {
    if signal_hook::consts::FORBIDDEN.contains(&sig) {
        Err(Error::UncatchableSignal(sig))
    } else {
        Ok(())
    }
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

impl Shared {
    /// The signal-context action. Async-signal-safe: one atomic read-modify-write and one
    /// non-blocking `send(2)`; no allocation, no lock.
    fn notify(&self, sig: u8) {
        let bit = bit(i32::from(sig));
        if self.pending.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return; // its byte is still queued: this delivery coalesces with it
        }
        // SAFETY: the buffer is one valid byte; the descriptor stays open while `self`
        // lives. MSG_NOSIGNAL: never raise SIGPIPE from a signal handler.
        let sent = unsafe {
            libc::send(
                self.writer.as_raw_fd(),
                (&sig as *const u8).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent != 1 {
            // Nothing was queued: clear the bit so that the next delivery tries again.
            self.pending.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Called once the byte of `sig` was read: later deliveries send a new byte.
    fn acknowledge(&self, sig: i32) {
        if (1..=MAX_SIGNAL).contains(&sig) {
            self.pending.fetch_and(!bit(sig), Ordering::AcqRel);
        }
    }
}

impl Hook {
    /// Registers the loop's action for `sig` (already validated) and makes sure signal-hook's
    /// handler is the disposition.
    fn register(sig: i32, shared: Arc<Shared>) -> Result<Hook> {
        let mut table = dispositions();
        let slot = &mut table[sig as usize];
        let byte = sig as u8; // 1..=64
        // SAFETY: the action only calls `Shared::notify`, which is async-signal-safe.
        let registered =
            unsafe { signal_hook::low_level::register(sig, move || shared.notify(byte)) };
        let id = registered.map_err(|err| match err.raw_os_error() {
            Some(libc::EINVAL) => Error::UncatchableSignal(sig),
            _ => Error::Io {
                op: "sigaction",
                source: err,
            },
        })?;
        if let (0, Some(parked)) = (slot.loops, &slot.parked) {
            if let Err(source) = set_disposition(sig, parked) {
                signal_hook::low_level::unregister(id);
                return Err(Error::Io {
                    op: "sigaction",
                    source,
                });
            }
        }
        slot.loops += 1;
        Ok(Hook { sig, id: Some(id) })
    }

    /// Unregisters the action; the last loop to let go of the signal restores `SIG_DFL`.
    /// Idempotent.
    fn release(&mut self) -> io::Result<()> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        let mut table = dispositions();
        signal_hook::low_level::unregister(id);
        let slot = &mut table[self.sig as usize];
        slot.loops = slot.loops.saturating_sub(1);
        if slot.loops > 0 {
            return Ok(());
        }
        let replaced = set_default_disposition(self.sig)?;
        if replaced.sa_sigaction != libc::SIG_DFL && replaced.sa_sigaction != libc::SIG_IGN {
            slot.parked = Some(replaced);
        }
        Ok(())
    }
}

impl Drop for Hook {
    /// A loop dropped without `close()` still gives its signals back.
    fn drop(&mut self) {
        if let Err(err) = self.release() {
            let sig = self.sig;
            tracing::warn!(target: "loopd", "restoring SIG_DFL for signal {sig} failed: {err}");
        }
    }
}

fn set_disposition(sig: i32, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: `action` is a complete `sigaction` that this process installed before.
    if unsafe { libc::sigaction(sig, action, std::ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `SIG_DFL` and returns the disposition it replaced.
fn set_default_disposition(sig: i32) -> io::Result<libc::sigaction> {
    // SAFETY: `sigaction` is plain data, valid when zeroed; both pointers are valid.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        let mut replaced: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &default, &mut replaced) == 0 {
            Ok(replaced)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_are_checked_as_asyncio_does() {
        let cases = [
            (0, false),
            (-1, false),
            (-libc::SIGUSR1, false),
            (1000, false),
            (i32::MAX, false),
            (i32::MIN, false),
            (libc::SIGRTMAX() + 1, false),
            (32, false), // reserved by glibc for its threads
            (33, false),
            (libc::SIGHUP, true),
            (libc::SIGKILL, true), // valid, yet uncatchable
            (libc::SIGUSR1, true),
            (libc::SIGRTMIN(), true),
            (libc::SIGRTMAX(), true),
        ];
        for (sig, valid) in cases {
            assert_eq!(check_signal(sig).is_ok(), valid, "signal {sig}");
            if !valid {
                assert!(matches!(check_signal(sig), Err(Error::InvalidSignal(s)) if s == sig));
            }
        }
    }

    #[test]
    fn uncatchable_signals_are_refused() {
        let cases = [
            (libc::SIGKILL, false),
            (libc::SIGSTOP, false),
            (libc::SIGSEGV, false),
            (libc::SIGILL, false),
            (libc::SIGFPE, false),
            (libc::SIGTERM, true),
            (libc::SIGINT, true),
            (libc::SIGCHLD, true),
        ];
        for (sig, catchable) in cases {
            assert_eq!(check_catchable(sig).is_ok(), catchable, "signal {sig}");
        }
    }

    fn shared_pair() -> (Shared, UnixStream) {
        let (reader, writer) = UnixStream::pair().expect("socketpair");
        let shared = Shared {
            writer,
            pending: AtomicU64::new(0),
        };
        (shared, reader)
    }

    fn queued(reader: &UnixStream) -> Vec<u8> {
        let mut buf = [0u8; 256];
        match (&*reader).read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Vec::new(),
            Err(err) => panic!("read: {err}"),
        }
    }

    #[test]
    fn deliveries_coalesce_until_acknowledged() {
        let (shared, reader) = shared_pair();
        shared.notify(10);
        shared.notify(12);
        shared.notify(10);
        shared.notify(64);
        assert_eq!(
            queued(&reader),
            [10, 12, 64],
            "one byte per signal, in arrival order"
        );
        shared.notify(10);
        assert_eq!(
            queued(&reader),
            [] as [u8; 0],
            "not acknowledged yet: coalesced"
        );
        shared.acknowledge(10);
        shared.notify(10);
        shared.notify(12);
        assert_eq!(queued(&reader), [10]);
    }

    #[test]
    fn every_signal_queued_at_once_fits_in_the_socket() {
        let (shared, reader) = shared_pair();
        for round in 0..3 {
            for sig in 1..=MAX_SIGNAL as u8 {
                shared.notify(sig);
            }
            let bytes = queued(&reader);
            let expected: Vec<u8> = if round == 0 {
                (1..=MAX_SIGNAL as u8).collect()
            } else {
                Vec::new()
            };
            assert_eq!(bytes, expected, "round {round}");
        }
        assert_eq!(shared.pending.load(Ordering::Acquire), u64::MAX);
    }

    #[test]
    fn a_failed_send_leaves_the_bit_clear() {
        let (shared, reader) = shared_pair();
        drop(reader); // the send now fails with EPIPE, without raising SIGPIPE
        shared.notify(5);
        assert_eq!(shared.pending.load(Ordering::Acquire), 0);
    }

    #[test]
    fn acknowledging_garbage_is_ignored() {
        let (shared, _reader) = shared_pair();
        shared.pending.store(u64::MAX, Ordering::Release);
        for sig in [0, -3, 65, 255] {
            shared.acknowledge(sig);
        }
        assert_eq!(shared.pending.load(Ordering::Acquire), u64::MAX);
    }
}
