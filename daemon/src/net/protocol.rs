//! The daemon's protocols: what runs on the loop thread when a transport's socket does
//! something. [`NetProtocol`] reports to the loop's events and byte stream (the EVENTS
//! protocol), or echoes, or discards.
//!
//! # Invariants
//! - A protocol holds its [`TransportRec`] and a `Weak` to its loop, never an `Rc`: the
//!   loop owns the transports, which own the protocols.
//! - No borrow of a record's cells is held while the engine is called (a write may call
//!   `pause_writing` back at once).
//! - The byte stream ends exactly once: at EOF, at `connection_lost`, or when the
//!   protocol is dropped without either (the loop closed under it).

use std::io;
use std::rc::{Rc, Weak};

use loopd::{Protocol, Transport};
use loopd_proto::pb;
use pb::event::Kind as EventKind;

use super::{TransportRec, TransportStateKind, address};
use crate::bytestream::StreamEnd;
use crate::loops::LoopCtx;

/// What a transport does with the bytes it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Report them (events, and the byte stream unless EVENTS_ONLY).
    Events,
    /// Write them back.
    Echo,
    /// Drop them.
    Discard,
}

impl Behaviour {
    /// The wire's ServerProtocol.
    pub fn to_pb(self) -> pb::ServerProtocol {
        match self {
            Behaviour::Events => pb::ServerProtocol::Events,
            Behaviour::Echo => pb::ServerProtocol::Echo,
            Behaviour::Discard => pb::ServerProtocol::Discard,
        }
    }
}

/// The protocol of every daemon transport.
pub struct NetProtocol {
    rec: Rc<TransportRec>,
    ctx: Weak<LoopCtx>,
}

impl NetProtocol {
    /// A protocol reporting on `rec` to `ctx`'s loop.
    pub fn new(rec: Rc<TransportRec>, ctx: Weak<LoopCtx>) -> Self {
        NetProtocol { rec, ctx }
    }

    fn emit(&self, kind: EventKind) {
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.emit(kind);
        }
    }

    fn transport(&self) -> Option<Transport> {
        self.rec.transport.borrow().clone()
    }

    /// The EVENTS protocol's share of `data_received`: an event, then the stream.
    fn report(&self, data: &[u8], offset: u64) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let cut = data.len().min(self.rec.max_event_data);
        ctx.emit(EventKind::DataReceived(pb::DataReceived {
            transport_id: self.rec.id,
            data: data[..cut].to_vec(),
            offset,
            size: data.len() as u64,
            truncated: cut < data.len(),
        }));
        let Some(stream) = &self.rec.stream else {
            return;
        };
        if !stream.push(data) && !self.rec.stream_paused.replace(true) {
            if let Some(transport) = self.transport() {
                transport.pause_reading();
            }
            ctx.emit(EventKind::ReadingPaused(pb::ReadingPaused {
                transport_id: self.rec.id,
                buffered: stream.held(),
            }));
        }
    }

    fn end_stream(&self, end: StreamEnd) {
        if let Some(stream) = &self.rec.stream {
            stream.finish(end);
        }
    }
}

impl Protocol for NetProtocol {
    fn connection_made(&mut self, transport: Transport) {
        *self.rec.transport.borrow_mut() = Some(transport.clone());
        self.rec.state.set(TransportStateKind::Open);
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        ctx.net.adopt(&ctx, self.rec.clone(), &transport);
        ctx.emit(EventKind::ConnectionMade(pb::ConnectionMade {
            transport_id: self.rec.id,
            server_id: self.rec.server_id,
            peername: transport.peername().map(|a| address(&a)),
            sockname: transport.sockname().map(|a| address(&a)),
        }));
    }

    fn data_received(&mut self, data: &[u8]) {
        let offset = self.rec.bytes_received.get();
        self.rec.bytes_received.set(offset + data.len() as u64);
        match self.rec.behaviour {
            Behaviour::Events => self.report(data, offset),
            Behaviour::Echo => {
                if let Some(transport) = self.transport() {
                    if transport.write(data).is_ok() {
                        self.rec.count_written(data.len());
                    }
                }
            }
            Behaviour::Discard => {}
        }
    }

    fn eof_received(&mut self) -> bool {
        self.rec.eof.set(true);
        self.end_stream(StreamEnd::Eof);
        if self.rec.behaviour == Behaviour::Events {
            self.emit(EventKind::EofReceived(pb::EofReceived {
                transport_id: self.rec.id,
            }));
        }
        false
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        let error = match error {
            Some(err) => err.to_string(),
            None => self.rec.error.borrow().clone(),
        };
        *self.rec.error.borrow_mut() = error.clone();
        self.rec.state.set(TransportStateKind::Closed);
        self.end_stream(if error.is_empty() {
            StreamEnd::Eof
        } else {
            StreamEnd::Error(error.clone())
        });
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        ctx.net.lost(&self.rec);
        ctx.emit(EventKind::ConnectionLost(pb::ConnectionLost {
            transport_id: self.rec.id,
            error,
        }));
    }

    fn pause_writing(&mut self) {
        self.rec.writing_paused.set(true);
        let Some(transport) = self.transport() else {
            return;
        };
        if self.rec.behaviour == Behaviour::Echo {
            // An echo peer that does not read must not grow our buffer forever.
            transport.pause_reading();
        }
        self.emit(EventKind::PauseWriting(pb::PauseWriting {
            transport_id: self.rec.id,
            write_buffer_size: transport.get_write_buffer_size() as u64,
        }));
    }

    fn resume_writing(&mut self) {
        self.rec.writing_paused.set(false);
        let Some(transport) = self.transport() else {
            return;
        };
        self.rec.sync_reading();
        self.emit(EventKind::ResumeWriting(pb::ResumeWriting {
            transport_id: self.rec.id,
            write_buffer_size: transport.get_write_buffer_size() as u64,
        }));
    }
}

impl Drop for NetProtocol {
    /// The loop closed (or dropped the transport) without `connection_lost`: readers must
    /// still see the stream end.
    fn drop(&mut self) {
        if self.rec.state.get() != TransportStateKind::Closed {
            self.rec.state.set(TransportStateKind::Closed);
            self.end_stream(StreamEnd::Error("the loop was closed".into()));
        }
    }
}
