//! The transport's TLS paths: the handshake, reading through rustls, writing through it,
//! `close_notify`. The design and its invariants are in `crate::net::tls`; this file is
//! the transport's half of it (it needs the transport's private state).
//!
//! # Invariants
//! - No `RefCell` borrow of the session, the socket or the state is held while a protocol
//!   method runs (they may `write`, `close` or `pause_reading` from inside).
//! - [`tls_pump`](TransportInner::tls_pump) is the one place that moves bytes out: sent
//!   records first, then the next plaintext chunk, then `close_notify`; it ends a closing
//!   transport once everything is out.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::exception::ExceptionContext;
use crate::net::READ_BUFFER_SIZE;
use crate::net::tls::{Plain, Received, TlsSession};
use crate::net::transport::{ExtraInfo, Transport, TransportInner, bump};

impl TransportInner {
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.try_borrow().map_or(true, |tls| tls.is_some())
    }

    pub(super) fn tls_wants_write(&self) -> bool {
        self.tls
            .try_borrow()
            .is_ok_and(|tls| tls.as_ref().is_some_and(TlsSession::wants_write))
    }

    /// Whether `start_tls` may upgrade this transport: open, both directions still
    /// usable, not TLS already.
    pub(crate) fn check_upgradable(&self) -> Result<()> {
        let state = self.state.borrow();
        if state.closing || state.lost || state.eof_seen {
            return Err(Error::TransportClosing);
        }
        if state.eof_requested {
            return Err(Error::WriteAfterEof);
        }
        if self.is_tls() {
            return Err(Error::InvalidArgument {
                what: "transport",
                value: "it already uses tls".into(),
            });
        }
        Ok(())
    }

    /// Puts `session` between the socket and the buffers and starts its handshake: a
    /// fresh transport (from `start_tls`) or a plain one being upgraded (`loop.start_tls`),
    /// whose buffered bytes go out in clear first.
    pub(crate) fn install_tls(self: &Rc<Self>, lp: &EventLoop, mut session: TlsSession) {
        {
            let mut state = self.state.borrow_mut();
            let head = state.head;
            let clear = state.buffer.split_off(head);
            state.buffer.clear();
            state.head = 0;
            session.send_clear_first(clear);
            state.started = false;
            state.handshaking = true;
            state.reading_paused = false;
        }
        if let Some(handshake) = session.handshake.as_mut() {
            let weak = Rc::downgrade(self);
            let after = handshake.timeout;
            let timer = lp.call_later(after, move || {
                if let (Some(inner), Ok(lp)) = (weak.upgrade(), crate::get_running_loop()) {
                    inner.handshake_timed_out(&lp, after);
                }
            });
            handshake.timer = timer.ok();
        }
        *self.tls.borrow_mut() = Some(session);
        self.tls_pump(lp); // a client's ClientHello
        self.queue_read(lp);
    }

    // ---- the handshake ------------------------------------------------------------

    fn handshake_done(self: &Rc<Self>, lp: &EventLoop) {
        let handshake = self
            .tls
            .borrow_mut()
            .as_mut()
            .and_then(|s| s.handshake.take());
        let Some(handshake) = handshake else { return };
        self.state.borrow_mut().handshaking = false;
        let transport = Transport {
            inner: self.clone(),
        };
        if handshake.announce {
            self.connection_made(transport, None);
        } else {
            self.state.borrow_mut().started = true;
            self.queue_read(lp);
        }
        handshake.finish(Ok(()));
        self.tls_pump(lp); // what was written during the handshake
    }

    fn handshake_timed_out(self: &Rc<Self>, lp: &EventLoop, after: Duration) {
        let peer = match self
            .tls
            .borrow()
            .as_ref()
            .and_then(|s| s.handshake.as_ref())
        {
            Some(handshake) => handshake.peer.clone(),
            None => return,
        };
        self.handshake_failed(lp, Error::HandshakeTimeout { peer, after });
    }

    /// Ends a failed handshake: the alert (if any) goes out best-effort, the waiter or the
    /// exception handler gets `error`, and the transport closes without the protocol.
    fn handshake_failed(self: &Rc<Self>, lp: &EventLoop, error: Error) {
        let handshake = {
            let mut tls = self.tls.borrow_mut();
            let Some(session) = tls.as_mut() else { return };
            if let Some(socket) = self.socket.borrow().as_ref() {
                let _ = session.flush(socket);
            }
            session.handshake.take()
        };
        let Some(handshake) = handshake else { return };
        tracing::debug!(target: "loopd", "fd {}: {error}", self.fd);
        if handshake.waiter.is_some() {
            handshake.finish(Err(error));
        } else {
            let message = match &error {
                Error::TlsHandshake { reason, .. }
                    if reason.starts_with("invalid peer certificate") =>
                {
                    "ssl handshake failed on verifying the certificate"
                }
                _ => "ssl handshake failed",
            };
            lp.call_exception_handler(ExceptionContext::new(message).with_error(error));
            handshake.finish(Ok(()));
        }
        self.force_close_on(lp, None);
    }

    fn handshake_error(&self, reason: impl ToString) -> Option<Error> {
        let tls = self.tls.borrow();
        let handshake = tls.as_ref()?.handshake.as_ref()?;
        Some(Error::TlsHandshake {
            peer: handshake.peer.clone(),
            reason: reason.to_string(),
        })
    }

    // ---- reading ------------------------------------------------------------------

    /// Hands decrypted plaintext to the protocol, and reads more records until `EAGAIN`,
    /// EOF, a pause, or [`READ_BUFFER_SIZE`] bytes of records.
    pub(super) fn tls_read_ready(self: &Rc<Self>, lp: &EventLoop) {
        let mut buffer = lp.core.net.take_read_buffer();
        let mut budget = READ_BUFFER_SIZE;
        while self.state.borrow().wants_read() {
            if self.state.borrow().started {
                let plain = match self.tls.borrow_mut().as_mut() {
                    Some(session) => session.plaintext(&mut buffer),
                    None => break,
                };
                match plain {
                    Plain::Data(n) => {
                        bump(&lp.core.net.counters.bytes_received, n);
                        self.data_received(lp, &buffer[..n]);
                        continue;
                    }
                    Plain::Eof => {
                        self.eof_received(lp);
                        break;
                    }
                    Plain::Truncated(err) => {
                        self.fatal_error(lp, err);
                        break;
                    }
                    Plain::Empty => {}
                }
            }
            if budget == 0 {
                self.queue_read(lp);
                break;
            }
            match self.tls_receive() {
                Received::Bytes(n) => {
                    budget = budget.saturating_sub(n);
                    self.tls_progress(lp);
                }
                Received::Eof => {
                    self.tls_socket_eof(lp, &mut buffer);
                    break;
                }
                Received::Blocked => break,
                Received::Io(err) => {
                    match self.handshake_error(&err) {
                        Some(error) => self.handshake_failed(lp, error),
                        None => self.fatal_error(lp, err),
                    }
                    break;
                }
                Received::Tls(err) => {
                    match self.handshake_error(&err) {
                        Some(error) => self.handshake_failed(lp, error),
                        None => {
                            self.tls_flush_best_effort();
                            self.fatal_error(lp, io::Error::new(io::ErrorKind::InvalidData, err));
                        }
                    }
                    break;
                }
            }
        }
        lp.core.net.put_read_buffer(buffer);
    }

    fn tls_receive(&self) -> Received {
        let mut tls = self.tls.borrow_mut();
        let socket = self.socket.borrow();
        match (tls.as_mut(), socket.as_ref()) {
            (Some(session), Some(socket)) => session.receive(socket),
            _ => Received::Io(io::ErrorKind::NotConnected.into()),
        }
    }

    /// After records were processed: send what rustls answers, and finish the handshake
    /// if it just completed.
    fn tls_progress(self: &Rc<Self>, lp: &EventLoop) {
        self.tls_pump(lp);
        let completed = self
            .tls
            .borrow()
            .as_ref()
            .is_some_and(TlsSession::handshake_completed);
        if completed {
            self.handshake_done(lp);
        }
    }

    /// The socket reached EOF: during the handshake that fails it; after, the decrypted
    /// rest is handed over, then `eof_received` (after `close_notify`) or an
    /// `UnexpectedEof` error (without). Decrypts into `buffer`, the caller's read buffer
    /// (taking the loop's shared one again would allocate a fresh one).
    fn tls_socket_eof(self: &Rc<Self>, lp: &EventLoop, buffer: &mut [u8]) {
        if let Some(error) = self.handshake_error("connection closed by the peer") {
            return self.handshake_failed(lp, error);
        }
        while self.state.borrow().wants_read() {
            let plain = match self.tls.borrow_mut().as_mut() {
                Some(session) => session.plaintext(buffer),
                None => break,
            };
            match plain {
                Plain::Data(n) => {
                    bump(&lp.core.net.counters.bytes_received, n);
                    self.data_received(lp, &buffer[..n]);
                }
                Plain::Eof => {
                    self.eof_received(lp);
                    break;
                }
                Plain::Truncated(err) => {
                    self.fatal_error(lp, err);
                    break;
                }
                Plain::Empty => {
                    let err = io::Error::new(io::ErrorKind::UnexpectedEof, "eof without tls data");
                    self.fatal_error(lp, err);
                    break;
                }
            }
        }
    }

    // ---- writing ------------------------------------------------------------------

    /// `write` over TLS: the plaintext joins the buffer, then the pump moves what it can.
    pub(super) fn tls_write(self: &Rc<Self>, lp: &EventLoop, data: &[u8]) {
        self.state.borrow_mut().buffer.extend_from_slice(data);
        self.tls_pump(lp);
        self.maybe_pause_protocol(lp);
    }

    /// Sends what waits (cleartext, records), encrypts the next chunk of the buffer, and
    /// so on until the socket is full or everything is out; then `close_notify` if the
    /// transport is closing or `write_eof` was called, and the end of a closing transport.
    pub(super) fn tls_pump(self: &Rc<Self>, lp: &EventLoop) {
        let drained = loop {
            let flushed = {
                let mut tls = self.tls.borrow_mut();
                let socket = self.socket.borrow();
                let (Some(session), Some(socket)) = (tls.as_mut(), socket.as_ref()) else {
                    return;
                };
                session.flush(socket)
            };
            match flushed {
                Ok(true) => {}
                Ok(false) => break false, // a writable edge will call `write_ready`
                Err(err) => return self.fatal_error(lp, err),
            }
            if !self.tls_encrypt_next(lp) && !self.tls_close_notify_due() {
                break true;
            }
        };
        self.maybe_resume_protocol(lp);
        if drained {
            self.sendfile.on_drained(); // a `loop.sendfile` fallback waits for this
            self.tls_flushed(lp);
        }
    }

    /// Hands the next chunk of the buffer to rustls; `false` if there was nothing to do.
    fn tls_encrypt_next(&self, lp: &EventLoop) -> bool {
        let mut state = self.state.borrow_mut();
        if state.pending() == 0 || state.handshaking || state.lost {
            return false;
        }
        let taken = match self.tls.borrow_mut().as_mut() {
            Some(session) => session.encrypt(&state.buffer[state.head..]),
            None => 0,
        };
        bump(&lp.core.net.counters.bytes_sent, taken);
        state.consume(taken);
        taken > 0
    }

    /// Queues `close_notify` if the buffer is flushed and the transport is closing or
    /// `write_eof` was called; `true` if it was queued now.
    fn tls_close_notify_due(&self) -> bool {
        let due = {
            let state = self.state.borrow();
            (state.closing || state.eof_requested) && !state.handshaking && state.pending() == 0
        };
        due && self
            .tls
            .borrow_mut()
            .as_mut()
            .is_some_and(TlsSession::close_notify)
    }

    /// Everything is out: a closing transport ends; after `write_eof` the socket's
    /// writing side is shut once `close_notify` left.
    fn tls_flushed(self: &Rc<Self>, lp: &EventLoop) {
        let (closing, handshaking, flushed) = {
            let state = self.state.borrow();
            (state.closing, state.handshaking, state.pending() == 0)
        };
        if closing && (flushed || handshaking) {
            return self.schedule_connection_lost(lp, None);
        }
        let shut = match self.tls.borrow_mut().as_mut() {
            Some(session) if session.close_notify_sent() && !session.write_shut => {
                session.write_shut = true;
                true
            }
            _ => false,
        };
        if shut {
            self.shutdown_write();
        }
    }

    /// Sends what rustls queued (an alert) if the socket takes it now; errors are moot.
    fn tls_flush_best_effort(&self) {
        let mut tls = self.tls.borrow_mut();
        if let (Some(session), Some(socket)) = (tls.as_mut(), self.socket.borrow().as_ref()) {
            let _ = session.flush(socket);
        }
    }

    // ---- closing ------------------------------------------------------------------

    /// `close()` over TLS: flush, `close_notify`, then the end; aborted with a `TimedOut`
    /// error if that takes longer than `ssl_shutdown_timeout`.
    pub(super) fn tls_close(self: &Rc<Self>, lp: &EventLoop) {
        self.tls_pump(lp);
        if self.state.borrow().lost {
            return;
        }
        let weak = Rc::downgrade(self);
        let mut tls = self.tls.borrow_mut();
        let Some(session) = tls.as_mut() else { return };
        let after = session.shutdown_timeout;
        let timer = lp.call_later(after, move || {
            if let Some(inner) = weak.upgrade() {
                let message = format!("tls shutdown did not complete within {after:?}");
                inner.force_close(Some(io::Error::new(io::ErrorKind::TimedOut, message)));
            }
        });
        session.shutdown_timer = timer.ok();
    }

    /// Drops the session: its timers stop, and a handshake still waited on fails.
    pub(super) fn tls_release(&self) {
        let Ok(mut tls) = self.tls.try_borrow_mut() else {
            return;
        };
        let Some(mut session) = tls.take() else {
            return;
        };
        drop(tls);
        session.cancel_timers();
        if let Some(handshake) = session.handshake.take() {
            let error = Error::TlsHandshake {
                peer: handshake.peer.clone(),
                reason: "the transport was closed during the handshake".into(),
            };
            handshake.finish(Err(error));
        }
    }

    pub(super) fn tls_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        let tls = self.tls.borrow();
        let session = tls.as_ref().filter(|s| !s.is_handshaking())?;
        match name {
            "cipher" => session.cipher(),
            "peercert" => session.peer_certificate(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::net::transport::State;

    #[test]
    fn a_handshake_reads_before_connection_made() {
        let cases = [
            // (started, handshaking, paused, closing) -> wants_read
            ((false, false, false, false), false),
            ((false, true, false, false), true),
            ((true, false, false, false), true),
            ((false, true, true, false), false),
            ((false, true, false, true), false),
        ];
        for ((started, handshaking, reading_paused, closing), expected) in cases {
            let state = State {
                started,
                handshaking,
                reading_paused,
                closing,
                ..Default::default()
            };
            assert_eq!(
                state.wants_read(),
                expected,
                "{started} {handshaking} {reading_paused}"
            );
        }
    }
}
