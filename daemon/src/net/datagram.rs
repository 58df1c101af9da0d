//! Datagram endpoints the loop holds for clients (asyncio's create_datagram_endpoint):
//! every datagram is reported as a DatagramReceived event, every error as ErrorReceived.
//!
//! # Invariants
//! - An endpoint counts against its creator's transport quota until `connection_lost`.
//! - Closed endpoints stay visible (closed) until the loop's retention prunes them.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use loopd::{Address, DatagramOptions, DatagramProtocol, DatagramTransport};
use loopd_proto::pb;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

use super::{Gone, address};
use crate::loops::LoopCtx;
use crate::status::{Error, Result};

static NEXT_ENDPOINT_ID: AtomicU64 = AtomicU64::new(1);

/// One datagram endpoint.
pub struct EndpointRec {
    id: u64,
    creator_uid: u32,
    max_event_data: usize,
    transport: RefCell<Option<DatagramTransport>>,
    closed: Cell<bool>,
    received: Cell<u64>,
    sent: Cell<u64>,
}

struct EndpointProtocol {
    rec: Rc<EndpointRec>,
    ctx: Weak<LoopCtx>,
}

impl DatagramProtocol for EndpointProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        *self.rec.transport.borrow_mut() = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        self.rec.received.set(self.rec.received.get() + 1);
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let cut = data.len().min(self.rec.max_event_data);
        ctx.emit(EventKind::DatagramReceived(pb::DatagramReceived {
            endpoint_id: self.rec.id,
            addr: Some(address(&addr)),
            data: data[..cut].to_vec(),
            size: data.len() as u64,
            truncated: cut < data.len(),
        }));
    }

    fn error_received(&mut self, error: io::Error) {
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.emit(EventKind::ErrorReceived(pb::ErrorReceived {
                endpoint_id: self.rec.id,
                error: error.to_string(),
            }));
        }
    }

    fn connection_lost(&mut self, _error: Option<io::Error>) {
        if self.rec.closed.replace(true) {
            return;
        }
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.net.add_held(self.rec.creator_uid, 0, -1);
            ctx.net
                .gone
                .borrow_mut()
                .push_back((Instant::now(), Gone::Endpoint(self.rec.id)));
        }
    }
}

fn info(ctx: &LoopCtx, rec: &EndpointRec) -> pb::DatagramEndpointInfo {
    let transport = rec.transport.borrow();
    pb::DatagramEndpointInfo {
        endpoint_id: rec.id,
        r#loop: ctx.name.clone(),
        sockname: transport
            .as_ref()
            .and_then(DatagramTransport::sockname)
            .map(|a| address(&a)),
        peername: transport
            .as_ref()
            .and_then(DatagramTransport::peername)
            .map(|a| address(&a)),
        closed: rec.closed.get(),
        datagrams_received: rec.received.get(),
        datagrams_sent: rec.sent.get(),
        creator_uid: rec.creator_uid,
    }
}

impl LoopCtx {
    fn endpoint(&self, id: u64) -> Result<Rc<EndpointRec>> {
        self.net
            .endpoints
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::EndpointNotFound {
                loop_name: self.name.clone(),
                id,
            })
    }

    /// CreateDatagramEndpoint: binds and/or connects on the loop, then answers.
    pub fn net_create_endpoint(
        self: &Rc<Self>,
        uid: u32,
        options: DatagramOptions,
        answer: oneshot::Sender<Result<pb::DatagramEndpointInfo>>,
    ) {
        let limits = self.limits();
        if let Err(err) = self
            .check_open()
            .and_then(|()| self.net.check_quota(uid, &limits, false))
        {
            let _ = answer.send(Err(err));
            return;
        }
        let rec = Rc::new(EndpointRec {
            id: NEXT_ENDPOINT_ID.fetch_add(1, Ordering::Relaxed),
            creator_uid: uid,
            max_event_data: limits.max_event_data_bytes,
            transport: RefCell::new(None),
            closed: Cell::new(false),
            received: Cell::new(0),
            sent: Cell::new(0),
        });
        let protocol = EndpointProtocol {
            rec: rec.clone(),
            ctx: Rc::downgrade(self),
        };
        let ctx = self.clone();
        let made = self.lp.create_datagram_endpoint(move || protocol, options);
        self.spawn(async move {
            let result = match made.await {
                Ok((transport, _)) => {
                    ctx.net.add_held(uid, 0, 1);
                    ctx.net.endpoints.borrow_mut().insert(rec.id, rec.clone());
                    if answer.is_closed() {
                        transport.abort();
                    }
                    Ok(info(&ctx, &rec))
                }
                Err(err) => Err(Error::from(err)),
            };
            let _ = answer.send(result);
        });
    }

    /// SendDatagram: to `to`, or the connected remote.
    pub fn net_send_datagram(&self, id: u64, data: &[u8], to: Option<SocketAddr>) -> Result<()> {
        let rec = self.endpoint(id)?;
        let transport = rec.transport.borrow().clone();
        match transport {
            Some(t) if !rec.closed.get() => {
                t.sendto(data, to.map(Address::Inet))?;
                rec.sent.set(rec.sent.get() + 1);
                Ok(())
            }
            _ => Err(Error::EndpointClosed(id)),
        }
    }

    /// CloseDatagramEndpoint.
    pub fn net_close_endpoint(&self, id: u64) -> Result<pb::DatagramEndpointInfo> {
        let rec = self.endpoint(id)?;
        if let Some(transport) = rec.transport.borrow().clone() {
            transport.close();
        }
        Ok(info(self, &rec))
    }
}
