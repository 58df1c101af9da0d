//! Datagram endpoints the loop holds for clients (asyncio's create_datagram_endpoint):
//! every datagram is reported as a DatagramReceived event, every error as ErrorReceived.
//!
//! # Invariants
//! - An endpoint counts against its creator's transport quota until `connection_lost`.
//! - Closed endpoints stay visible (state CLOSED) until the loop's retention prunes them,
//!   as lost transports do: GetDatagramEndpoint and ListDatagramEndpoints (with
//!   `include_closed`) still show them, with their last counters and error.
//! - Counters count what the endpoint was handed (SendDatagram) and what it received;
//!   `last_error` is the latest `error_received` or `connection_lost` error.
//! - A Unix endpoint's socket file, bound by the daemon at `local_path`, is removed when
//!   the endpoint closes (or its loop does), unless another file took the path since.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use loopd::{Address, DatagramAddr, DatagramOptions, DatagramProtocol, DatagramTransport};
use loopd_proto::pb;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

use super::{Gone, address};
use crate::loops::LoopCtx;
use crate::service::paging::Page;
use crate::status::{Error, Result};

static NEXT_ENDPOINT_ID: AtomicU64 = AtomicU64::new(1);

/// One datagram endpoint.
pub struct EndpointRec {
    id: u64,
    creator_uid: u32,
    created_at: SystemTime,
    max_event_data: usize,
    transport: RefCell<Option<DatagramTransport>>,
    closed: Cell<bool>,
    received: Cell<u64>,
    sent: Cell<u64>,
    bytes_received: Cell<u64>,
    bytes_sent: Cell<u64>,
    last_error: RefCell<String>,
}

impl EndpointRec {
    fn new(id: u64, creator_uid: u32, max_event_data: usize) -> Rc<EndpointRec> {
        Rc::new(EndpointRec {
            id,
            creator_uid,
            created_at: SystemTime::now(),
            max_event_data,
            transport: RefCell::new(None),
            closed: Cell::new(false),
            received: Cell::new(0),
            sent: Cell::new(0),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            last_error: RefCell::new(String::new()),
        })
    }

    /// OPEN, CLOSING (closed with datagrams still buffered) or CLOSED (socket closed).
    fn state(&self) -> pb::TransportState {
        let closing = self
            .transport
            .borrow()
            .as_ref()
            .is_some_and(DatagramTransport::is_closing);
        match (self.closed.get(), closing) {
            (true, _) => pb::TransportState::Closed,
            (false, true) => pb::TransportState::Closing,
            (false, false) => pb::TransportState::Open,
        }
    }
}

struct EndpointProtocol {
    rec: Rc<EndpointRec>,
    ctx: Weak<LoopCtx>,
    socket_file: Option<SocketFile>,
}

/// A socket file the daemon bound, known by its device and inode so that a file someone
/// else put at the path later is left alone.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The file now at `path` (just bound); `None` if it cannot be seen.
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the file if it is still the one bound.
    fn remove(self) {
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == (self.dev, self.ino));
        if same {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::debug!("removing socket file {}: {err}", self.path.display());
            }
        }
    }
}

impl Drop for EndpointProtocol {
    /// The loop closed under the endpoint (no `connection_lost`): the file still goes.
    fn drop(&mut self) {
        if let Some(file) = self.socket_file.take() {
            file.remove();
        }
    }
}

impl DatagramProtocol for EndpointProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        *self.rec.transport.borrow_mut() = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        self.rec.received.set(self.rec.received.get() + 1);
        let size = data.len() as u64;
        self.rec
            .bytes_received
            .set(self.rec.bytes_received.get() + size);
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
        *self.rec.last_error.borrow_mut() = error.to_string();
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.emit(EventKind::ErrorReceived(pb::ErrorReceived {
                endpoint_id: self.rec.id,
                error: error.to_string(),
            }));
        }
    }

    fn connection_lost(&mut self, error: Option<io::Error>) {
        if let Some(error) = error {
            *self.rec.last_error.borrow_mut() = error.to_string();
        }
        if let Some(file) = self.socket_file.take() {
            file.remove();
        }
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
        state: rec.state() as i32,
        bytes_received: rec.bytes_received.get(),
        bytes_sent: rec.bytes_sent.get(),
        last_error: rec.last_error.borrow().clone(),
        write_buffer_size: transport
            .as_ref()
            .map_or(0, |t| t.get_write_buffer_size() as u64),
        created_at: Some(rec.created_at.into()),
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
        self.net.prune(&limits);
        let id = NEXT_ENDPOINT_ID.fetch_add(1, Ordering::Relaxed);
        let rec = EndpointRec::new(id, uid, limits.max_event_data_bytes);
        let mut protocol = EndpointProtocol {
            rec: rec.clone(),
            ctx: Rc::downgrade(self),
            socket_file: None,
        };
        let local_path = match &options.local_addr {
            Some(DatagramAddr::Unix(path)) => Some(path.clone()),
            _ => None,
        };
        let ctx = self.clone();
        // The factory runs once the socket is bound: the file is there to be known.
        let factory = move || {
            protocol.socket_file = local_path.as_deref().and_then(SocketFile::of);
            protocol
        };
        let made = self.lp.create_datagram_endpoint(factory, options);
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

    /// SendDatagram: to `to` (an IP address and port, or a Unix path), or the connected
    /// remote.
    pub fn net_send_datagram(&self, id: u64, data: &[u8], to: Option<Address>) -> Result<()> {
        let rec = self.endpoint(id)?;
        let transport = rec.transport.borrow().clone();
        match transport {
            Some(t) if !rec.closed.get() => {
                t.sendto(data, to)?;
                rec.sent.set(rec.sent.get() + 1);
                rec.bytes_sent.set(rec.bytes_sent.get() + data.len() as u64);
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
    /// GetDatagramEndpoint: open, closing, or closed and still retained.
    pub fn net_get_endpoint(&self, id: u64) -> Result<pb::DatagramEndpointInfo> {
        self.net.prune(&self.limits());
        let rec = self.endpoint(id)?;
        Ok(info(self, &rec))
    }

    /// ListDatagramEndpoints: one page of the loop's endpoints, by ascending id, open
    /// and closing ones unless `include_closed`; and the id to resume after when more
    /// follow.
    pub fn net_list_endpoints(
        &self,
        page: Page,
        include_closed: bool,
    ) -> (Vec<pb::DatagramEndpointInfo>, Option<u64>) {
        self.net.prune(&self.limits());
        let recs: Vec<_> = {
            let endpoints = self.net.endpoints.borrow();
            let matching = endpoints
                .range(page.range())
                .filter(|(_, rec)| include_closed || !rec.closed.get())
                .take(page.fetch());
            matching.map(|(id, rec)| (*id, rec.clone())).collect()
        };
        page.take(recs.iter().map(|(id, rec)| (*id, info(self, rec))))
    }
}
