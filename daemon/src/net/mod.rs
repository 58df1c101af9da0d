//! Loop-local networking state: the servers and transports one loop holds for its
//! clients, and the operations NetService runs on the loop thread.
//!
//! # Invariants
//! - Only the loop thread touches a [`NetState`]; every table borrow is short and never
//!   held while the engine runs a protocol (a write may call `pause_writing` at once).
//! - Ids come from daemon-wide counters: never reused, not even by another loop.
//! - A transport is in `transports` from `connection_made` on; after `connection_lost`
//!   it stays as a tombstone (state CLOSED) for the retention time, so writing to it is
//!   FAILED_PRECONDITION rather than NOT_FOUND. Closed servers stay the same way.
//! - Quotas count open servers and open transports per caller uid; accepted connections
//!   count against the server creator. An accepted connection past the quota is aborted
//!   at once, its ConnectionLost naming the quota.
//! - A DELIVERY_STREAM transport pauses reading when its stream's window is full; the
//!   stream's resume callback (on a reader's thread) sends a job back to the loop, which
//!   resumes reading unless the client paused it too.

mod datagram;
mod protocol;
mod tls;
pub mod trust;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use loopd::{Address, ConnectOptions, ExtraInfo, Hosts, Server, ServerOptions, Transport};
use loopd_proto::pb;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

pub use protocol::Behaviour;
use protocol::NetProtocol;
pub use tls::StartTlsSpec;

use crate::bytestream::{ByteStream, StreamConfig, StreamReader};
use crate::config::Limits;
use crate::loops::LoopCtx;
use crate::service::paging::Page;
use crate::status::{Error, Result};

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_TRANSPORT_ID: AtomicU64 = AtomicU64::new(1);

/// Where a transport is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportStateKind {
    /// Made, `connection_made` not run yet.
    Connecting,
    /// Connected.
    Open,
    /// `connection_lost` ran (or the loop closed).
    Closed,
}

/// How a transport's bytes are delivered; validated from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliverySpec {
    /// Events, echo or discard.
    pub behaviour: Behaviour,
    /// For Events: keep a lossless stream (`Some(window)`) or events only (`None`).
    pub stream_window: Option<usize>,
}

/// A validated CreateServer request.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// TCP hosts (empty: all interfaces) and port, or a Unix path.
    pub bind: Bind,
    /// asyncio's options.
    pub options: ServerOptions,
    /// What connections do.
    pub delivery: DeliverySpec,
}

/// Where a server listens.
#[derive(Clone, Debug)]
pub enum Bind {
    /// TCP.
    Tcp {
        /// Hosts; empty: every interface.
        hosts: Vec<String>,
        /// Port; 0: free.
        port: u16,
    },
    /// A Unix socket path.
    Unix(String),
}

/// A validated OpenConnection request.
#[derive(Clone, Debug)]
pub enum Connect {
    /// TCP to host:port, optionally from a local address.
    Tcp {
        /// Host name or IP literal.
        host: String,
        /// Port, 1..=65535.
        port: u16,
        /// asyncio's options.
        options: ConnectOptions,
    },
    /// A Unix socket path (TLS options apply).
    Unix(String, ConnectOptions),
}

/// One server the loop holds for a client.
pub struct ServerRec {
    id: u64,
    server: Server,
    addresses: Vec<Address>,
    delivery: DeliverySpec,
    tls: bool,
    creator_uid: u32,
    created_at: SystemTime,
    closed: Cell<bool>,
    active: Cell<u64>,
    accepted: Cell<u64>,
}

/// One transport the loop holds for a client.
pub struct TransportRec {
    id: u64,
    server_id: u64,
    behaviour: Behaviour,
    stream: Option<ByteStream>,
    max_event_data: usize,
    creator_uid: u32,
    created_at: SystemTime,
    transport: RefCell<Option<Transport>>,
    state: Cell<TransportStateKind>,
    bytes_received: Cell<u64>,
    bytes_written: Cell<u64>,
    paused_by_client: Cell<bool>,
    stream_paused: Cell<bool>,
    writing_paused: Cell<bool>,
    eof: Cell<bool>,
    error: RefCell<String>,
    /// StartTls was called on it.
    tls_started: Cell<bool>,
}

impl TransportRec {
    fn count_written(&self, n: usize) {
        self.bytes_written.set(self.bytes_written.get() + n as u64);
    }

    fn is_open(&self) -> bool {
        self.state.get() == TransportStateKind::Open
    }
}

#[derive(Clone, Copy)]
enum Gone {
    Server(u64),
    Transport(u64),
    Endpoint(u64),
}

/// The servers and transports of one loop.
#[derive(Default)]
pub struct NetState {
    servers: RefCell<BTreeMap<u64, Rc<ServerRec>>>,
    transports: RefCell<BTreeMap<u64, Rc<TransportRec>>>,
    endpoints: RefCell<BTreeMap<u64, Rc<datagram::EndpointRec>>>,
    /// Closed servers and lost transports, oldest first, to forget in time.
    gone: RefCell<VecDeque<(Instant, Gone)>>,
    /// Open servers and transports per uid.
    held: RefCell<HashMap<u32, (usize, usize)>>,
}

/// The wire form of an engine address.
pub fn address(addr: &Address) -> pb::NetAddress {
    use pb::net_address::Kind;
    let kind = match addr {
        Address::Inet(sa) => Kind::Inet(pb::InetAddress {
            ip: sa.ip().to_string(),
            port: u32::from(sa.port()),
        }),
        Address::Unix(path) => Kind::Unix(pb::UnixAddress {
            path: path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        }),
    };
    pb::NetAddress { kind: Some(kind) }
}

impl NetState {
    fn held(&self, uid: u32) -> (usize, usize) {
        self.held.borrow().get(&uid).copied().unwrap_or((0, 0))
    }

    fn add_held(&self, uid: u32, servers: isize, transports: isize) {
        let mut held = self.held.borrow_mut();
        let entry = held.entry(uid).or_insert((0, 0));
        entry.0 = entry.0.saturating_add_signed(servers);
        entry.1 = entry.1.saturating_add_signed(transports);
        if *entry == (0, 0) {
            held.remove(&uid);
        }
    }

    fn check_quota(&self, uid: u32, limits: &Limits, servers: bool) -> Result<()> {
        let (held_servers, held_transports) = self.held(uid);
        let (what, holds, limit) = if servers {
            ("servers", held_servers, limits.max_servers_per_caller)
        } else {
            (
                "transports",
                held_transports,
                limits.max_transports_per_caller,
            )
        };
        if holds >= limit {
            return Err(Error::Quota {
                what,
                uid,
                holds,
                limit,
            });
        }
        Ok(())
    }

    /// Registers a transport at its `connection_made`; aborts it past its owner's quota.
    /// Also forgets what retention lets go: a server accepting connections nobody lists
    /// would otherwise keep every lost transport's record.
    fn adopt(&self, ctx: &LoopCtx, rec: Rc<TransportRec>, transport: &Transport) {
        let limits = ctx.limits();
        self.prune(&limits);
        if let Err(err) = self.check_quota(rec.creator_uid, &limits, false) {
            *rec.error.borrow_mut() = err.to_string();
            transport.abort();
        }
        self.add_held(rec.creator_uid, 0, 1);
        if let Some(server) = self.servers.borrow().get(&rec.server_id) {
            server.active.set(server.active.get() + 1);
            server.accepted.set(server.accepted.get() + 1);
        }
        if let Some(stream) = &rec.stream {
            let shared = ctx.shared.clone();
            let id = rec.id;
            stream.set_resume(move || {
                let _ = shared.send(Box::new(move |ctx| ctx.net.stream_resumed(ctx, id)));
            });
        }
        self.transports.borrow_mut().insert(rec.id, rec);
    }

    /// A transport's `connection_lost` ran: it becomes a tombstone.
    fn lost(&self, rec: &TransportRec) {
        self.add_held(rec.creator_uid, 0, -1);
        if let Some(server) = self.servers.borrow().get(&rec.server_id) {
            server.active.set(server.active.get().saturating_sub(1));
        }
        self.gone
            .borrow_mut()
            .push_back((Instant::now(), Gone::Transport(rec.id)));
    }

    /// The stream's window has room again: read again unless the client paused.
    fn stream_resumed(&self, ctx: &LoopCtx, id: u64) {
        let Some(rec) = self.transports.borrow().get(&id).cloned() else {
            return;
        };
        if !rec.stream_paused.replace(false) {
            return;
        }
        rec.sync_reading();
        ctx.emit(EventKind::ReadingResumed(pb::ReadingResumed {
            transport_id: id,
        }));
    }

    /// Forgets tombstones past the retention time or the count limit.
    fn prune(&self, limits: &Limits) {
        let ttl = Duration::from_secs(limits.retention_secs);
        let now = Instant::now();
        let mut gone = self.gone.borrow_mut();
        while let Some((at, what)) = gone.front().copied() {
            if now.duration_since(at) < ttl && gone.len() <= limits.max_retained {
                break;
            }
            gone.pop_front();
            match what {
                Gone::Server(id) => drop(self.servers.borrow_mut().remove(&id)),
                Gone::Transport(id) => drop(self.transports.borrow_mut().remove(&id)),
                Gone::Endpoint(id) => drop(self.endpoints.borrow_mut().remove(&id)),
            }
        }
    }

    fn server(&self, ctx: &LoopCtx, id: u64) -> Result<Rc<ServerRec>> {
        self.servers
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::ServerNotFound {
                loop_name: ctx.name.clone(),
                id,
            })
    }

    fn transport(&self, ctx: &LoopCtx, id: u64) -> Result<Rc<TransportRec>> {
        self.transports
            .borrow()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::TransportNotFound {
                loop_name: ctx.name.clone(),
                id,
            })
    }

    /// Whether transport `id` is known on this loop (for actions).
    pub fn has_transport(&self, id: u64) -> bool {
        self.transports.borrow().contains_key(&id)
    }
}

fn server_info(ctx: &LoopCtx, rec: &ServerRec) -> pb::ServerInfo {
    pb::ServerInfo {
        server_id: rec.id,
        r#loop: ctx.name.clone(),
        addresses: rec.addresses.iter().map(address).collect(),
        serving: rec.server.is_serving(),
        closed: rec.closed.get(),
        protocol: rec.delivery.behaviour.to_pb() as i32,
        delivery: delivery_pb(&rec.delivery) as i32,
        tls: rec.tls,
        active_connections: rec.active.get(),
        connections_accepted: rec.accepted.get(),
        creator_uid: rec.creator_uid,
        created_at: Some(rec.created_at.into()),
    }
}

fn delivery_pb(spec: &DeliverySpec) -> pb::Delivery {
    match (spec.behaviour, spec.stream_window) {
        (Behaviour::Events, Some(_)) => pb::Delivery::Stream,
        (Behaviour::Events, None) => pb::Delivery::EventsOnly,
        _ => pb::Delivery::Unspecified,
    }
}

fn transport_info(ctx: &LoopCtx, rec: &TransportRec) -> pb::TransportInfo {
    let transport = rec.transport.borrow().clone();
    let state = match rec.state.get() {
        TransportStateKind::Closed => pb::TransportState::Closed,
        _ if transport.as_ref().is_some_and(Transport::is_closing) => pb::TransportState::Closing,
        _ => pb::TransportState::Open,
    };
    let (low, high) = transport
        .as_ref()
        .map_or((0, 0), Transport::get_write_buffer_limits);
    let (tls_cipher, tls_version) =
        match transport.as_ref().and_then(|t| t.get_extra_info("cipher")) {
            Some(ExtraInfo::Cipher { name, protocol, .. }) => (name, protocol),
            _ => (String::new(), String::new()),
        };
    pb::TransportInfo {
        transport_id: rec.id,
        r#loop: ctx.name.clone(),
        server_id: rec.server_id,
        state: state as i32,
        peername: transport
            .as_ref()
            .and_then(Transport::peername)
            .map(|a| address(&a)),
        sockname: transport
            .as_ref()
            .and_then(Transport::sockname)
            .map(|a| address(&a)),
        bytes_received: rec.bytes_received.get(),
        bytes_written: rec.bytes_written.get(),
        write_buffer_size: transport
            .as_ref()
            .map_or(0, |t| t.get_write_buffer_size() as u64),
        write_buffer_high: high as u64,
        write_buffer_low: low as u64,
        reading: transport.as_ref().is_some_and(Transport::is_reading),
        paused_by_client: rec.paused_by_client.get(),
        stream_paused: rec.stream_paused.get(),
        writing_paused: rec.writing_paused.get(),
        eof_received: rec.eof.get(),
        delivery: delivery_pb(&DeliverySpec {
            behaviour: rec.behaviour,
            stream_window: rec.stream.as_ref().map(|_| 0),
        }) as i32,
        stream_buffered: rec.stream.as_ref().map_or(0, ByteStream::held),
        tls_cipher,
        tls_version,
        error: rec.error.borrow().clone(),
        creator_uid: rec.creator_uid,
        created_at: Some(rec.created_at.into()),
    }
}

/// A new transport record (not yet adopted: that happens at `connection_made`).
fn new_transport(
    server_id: u64,
    delivery: DeliverySpec,
    uid: u32,
    limits: &Limits,
) -> Rc<TransportRec> {
    let stream = delivery.stream_window.map(|window| {
        ByteStream::new(StreamConfig {
            window,
            retain: 0,
            pause_without_reader: true,
        })
    });
    Rc::new(TransportRec {
        id: NEXT_TRANSPORT_ID.fetch_add(1, Ordering::Relaxed),
        server_id,
        behaviour: delivery.behaviour,
        stream,
        max_event_data: limits.max_event_data_bytes,
        creator_uid: uid,
        created_at: SystemTime::now(),
        transport: RefCell::new(None),
        state: Cell::new(TransportStateKind::Connecting),
        bytes_received: Cell::new(0),
        bytes_written: Cell::new(0),
        paused_by_client: Cell::new(false),
        stream_paused: Cell::new(false),
        writing_paused: Cell::new(false),
        eof: Cell::new(false),
        error: RefCell::new(String::new()),
        tls_started: Cell::new(false),
    })
}

// ---- servers ---------------------------------------------------------------------------

impl LoopCtx {
    /// The daemon's limits, as this loop was given them.
    pub fn limits(&self) -> Limits {
        self.state.borrow().limits().clone()
    }

    /// CreateServer: binds on the loop (a task, as binding may resolve names) and
    /// answers through `answer` once the server exists.
    pub fn net_create_server(
        self: &Rc<Self>,
        uid: u32,
        spec: ServerSpec,
        answer: oneshot::Sender<Result<pb::ServerInfo>>,
    ) {
        let limits = self.limits();
        if let Err(err) = self
            .check_open()
            .and_then(|()| self.net.check_quota(uid, &limits, true))
        {
            let _ = answer.send(Err(err));
            return;
        }
        self.net.prune(&limits);
        let server_id = NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed);
        let weak = Rc::downgrade(self);
        let delivery = spec.delivery;
        let tls = spec.options.ssl.is_some();
        let factory = move || {
            let rec = new_transport(server_id, delivery, uid, &limits);
            NetProtocol::new(rec, weak.clone())
        };
        let ctx = self.clone();
        let bound = async move {
            let created = match spec.bind {
                Bind::Tcp { hosts, port } => {
                    let hosts = if hosts.is_empty() {
                        Hosts::All
                    } else {
                        Hosts::Names(hosts)
                    };
                    ctx.lp
                        .create_server(factory, hosts, port, spec.options)
                        .await
                }
                Bind::Unix(path) => ctx.lp.create_unix_server(factory, path, spec.options).await,
            };
            let result = created.map_err(Error::from).map(|server| {
                ctx.net_adopt_server(server_id, server, (uid, tls), delivery, &answer)
            });
            let _ = answer.send(result);
        };
        self.spawn(bound);
    }

    fn net_adopt_server(
        &self,
        id: u64,
        server: Server,
        (uid, tls): (u32, bool),
        delivery: DeliverySpec,
        answer: &oneshot::Sender<Result<pb::ServerInfo>>,
    ) -> pb::ServerInfo {
        let rec = Rc::new(ServerRec {
            id,
            addresses: server.sockets(),
            server,
            delivery,
            tls,
            creator_uid: uid,
            created_at: SystemTime::now(),
            closed: Cell::new(false),
            active: Cell::new(0),
            accepted: Cell::new(0),
        });
        if answer.is_closed() {
            // The caller gave up (deadline, cancel): nobody will ever hear of this server.
            rec.server.close();
            rec.closed.set(true);
        } else {
            self.net.add_held(uid, 1, 0);
        }
        let info = server_info(self, &rec);
        self.net.servers.borrow_mut().insert(id, rec);
        info
    }

    /// Runs `fut` as a task on the loop; a loop that cannot take it drops it, which
    /// drops the answer channel, so the caller hears the loop is gone.
    pub(crate) fn spawn(&self, fut: impl std::future::Future<Output = ()> + 'static) {
        if let Err(err) = self.lp.create_task(fut, None) {
            tracing::debug!(loop_name = %self.name, "cannot start a net task: {err}");
        }
    }

    /// GetServer.
    pub fn net_get_server(&self, id: u64) -> Result<pb::ServerInfo> {
        let rec = self.net.server(self, id)?;
        Ok(server_info(self, &rec))
    }

    /// ListServers: one page of servers, and the id to resume after when more follow.
    pub fn net_list_servers(&self, page: Page) -> (Vec<pb::ServerInfo>, Option<u64>) {
        self.net.prune(&self.limits());
        let recs: Vec<_> = {
            let servers = self.net.servers.borrow();
            let range = servers.range(page.range()).take(page.fetch());
            range.map(|(id, rec)| (*id, rec.clone())).collect()
        };
        page.take(recs.iter().map(|(id, rec)| (*id, server_info(self, rec))))
    }

    /// CloseServer: stops listening; connections stay open (asyncio's Server.close).
    pub fn net_close_server(&self, id: u64) -> Result<pb::ServerInfo> {
        let rec = self.net.server(self, id)?;
        if !rec.closed.replace(true) {
            rec.server.close();
            self.net.add_held(rec.creator_uid, -1, 0);
            self.net
                .gone
                .borrow_mut()
                .push_back((Instant::now(), Gone::Server(id)));
            self.emit(EventKind::ServerClosed(pb::ServerClosed { server_id: id }));
        }
        Ok(server_info(self, &rec))
    }

    /// StartServing.
    pub fn net_start_serving(&self, id: u64) -> Result<pb::ServerInfo> {
        let rec = self.net.server(self, id)?;
        rec.server.start_serving()?;
        Ok(server_info(self, &rec))
    }
}

// ---- connections and transports --------------------------------------------------------

impl LoopCtx {
    /// OpenConnection: connects on the loop and answers once `connection_made` ran. A
    /// caller that gave up meanwhile gets its transport aborted, not leaked.
    pub fn net_open_connection(
        self: &Rc<Self>,
        uid: u32,
        target: Connect,
        delivery: DeliverySpec,
        answer: oneshot::Sender<Result<pb::TransportInfo>>,
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
        let rec = new_transport(0, delivery, uid, &limits);
        let protocol_rec = rec.clone();
        let weak = Rc::downgrade(self);
        let factory = move || NetProtocol::new(protocol_rec, weak);
        let ctx = self.clone();
        let connected = async move {
            let made = match target {
                Connect::Tcp {
                    host,
                    port,
                    options,
                } => ctx
                    .lp
                    .create_connection(factory, &host, port, options)
                    .await
                    .map(|(t, _)| t),
                Connect::Unix(path, options) => ctx
                    .lp
                    .create_unix_connection_with(factory, path, options)
                    .await
                    .map(|(t, _)| t),
            };
            let result = match made {
                Ok(transport) => {
                    if answer.is_closed() {
                        transport.abort();
                    }
                    Ok(transport_info(&ctx, &rec))
                }
                Err(err) => Err(Error::from(err)),
            };
            let _ = answer.send(result);
        };
        self.spawn(connected);
    }

    /// GetTransport.
    pub fn net_get_transport(&self, id: u64) -> Result<pb::TransportInfo> {
        let rec = self.net.transport(self, id)?;
        Ok(transport_info(self, &rec))
    }

    /// ListTransports: one page of the transports of one server (or all), open ones
    /// unless `include_closed`; and the id to resume after when more follow.
    pub fn net_list_transports(
        &self,
        page: Page,
        server_id: u64,
        include_closed: bool,
    ) -> (Vec<pb::TransportInfo>, Option<u64>) {
        self.net.prune(&self.limits());
        let recs: Vec<_> = {
            let transports = self.net.transports.borrow();
            let matching = transports
                .range(page.range())
                .filter(|(_, rec)| server_id == 0 || rec.server_id == server_id)
                .filter(|(_, rec)| include_closed || rec.state.get() != TransportStateKind::Closed);
            let matching = matching.take(page.fetch());
            matching.map(|(id, rec)| (*id, rec.clone())).collect()
        };
        page.take(
            recs.iter()
                .map(|(id, rec)| (*id, transport_info(self, rec))),
        )
    }

    /// The engine transport of an open record; FAILED_PRECONDITION once closed.
    fn open_transport(&self, id: u64) -> Result<(Rc<TransportRec>, Transport)> {
        let rec = self.net.transport(self, id)?;
        let transport = rec.transport.borrow().clone();
        match transport {
            Some(t) if rec.is_open() => Ok((rec, t)),
            _ => Err(Error::TransportClosed(id)),
        }
    }

    /// Write: FAILED_PRECONDITION for a closing or closed transport, or after WriteEof.
    pub fn net_write(&self, id: u64, data: &[u8]) -> Result<u64> {
        let (rec, transport) = self.open_transport(id)?;
        transport
            .write(data)
            .map_err(|err| Error::TransportWrite { id, source: err })?;
        rec.count_written(data.len());
        Ok(transport.get_write_buffer_size() as u64)
    }

    /// WriteEof.
    pub fn net_write_eof(&self, id: u64) -> Result<pb::TransportInfo> {
        if let Ok((_, transport)) = self.open_transport(id) {
            transport.write_eof();
        }
        self.net_get_transport(id)
    }

    /// CloseTransport (or AbortTransport with `abort`).
    pub fn net_close_transport(&self, id: u64, abort: bool) -> Result<pb::TransportInfo> {
        if let Ok((_, transport)) = self.open_transport(id) {
            if abort {
                transport.abort();
            } else {
                transport.close();
            }
        }
        self.net_get_transport(id)
    }

    /// PauseReading / ResumeReading at the client's request.
    pub fn net_set_reading(&self, id: u64, reading: bool) -> Result<pb::TransportInfo> {
        if let Ok((rec, _)) = self.open_transport(id) {
            rec.paused_by_client.set(!reading);
            rec.sync_reading();
        }
        self.net_get_transport(id)
    }

    /// SetWriteBufferLimits.
    pub fn net_set_write_buffer_limits(
        &self,
        id: u64,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<pb::TransportInfo> {
        if let Ok((_, transport)) = self.open_transport(id) {
            transport.set_write_buffer_limits(high, low)?;
        }
        self.net_get_transport(id)
    }

    /// Opens a lossless reader on a transport's byte stream.
    pub fn net_open_reader(&self, id: u64, from: Option<u64>) -> Result<StreamReader> {
        let rec = self.net.transport(self, id)?;
        let stream = rec.stream.as_ref().ok_or(Error::NoByteStream(id))?;
        Ok(stream.open(from)?)
    }

    /// Runs a WriteTransportAction or CloseTransportAction.
    pub fn net_run_action(&self, id: u64, write: Option<&[u8]>, abort: bool) -> Result<()> {
        match write {
            Some(data) => self.net_write(id, data).map(drop),
            None => self.net_close_transport(id, abort).map(drop),
        }
    }
}

// ---- name resolution and sendfile ------------------------------------------------------

impl LoopCtx {
    /// Resolve: getaddrinfo on the loop's executor; addresses without duplicates.
    pub fn net_resolve(
        &self,
        host: String,
        port: u16,
        family: loopd::Family,
        answer: oneshot::Sender<Result<Vec<pb::NetAddress>>>,
    ) {
        let hints = loopd::AddrInfoHints {
            family,
            socktype: loopd::SockType::Stream,
            ..Default::default()
        };
        let lookup = self.lp.getaddrinfo(Some(&host), Some(port), hints);
        self.spawn(async move {
            let result = lookup.await.map_err(Error::from).map(|infos| {
                let mut seen = Vec::new();
                for info in infos {
                    if !seen.contains(&info.addr) {
                        seen.push(info.addr);
                    }
                }
                seen.into_iter()
                    .map(|a| address(&Address::Inet(a)))
                    .collect()
            });
            let _ = answer.send(result);
        });
    }

    /// ReverseResolve: getnameinfo; without `numeric`, an address with no name fails.
    pub fn net_reverse_resolve(
        &self,
        addr: std::net::SocketAddr,
        numeric: bool,
        answer: oneshot::Sender<Result<(String, String)>>,
    ) {
        let flags = if numeric { 0 } else { libc::NI_NAMEREQD };
        let lookup = self.lp.getnameinfo(addr, flags);
        self.spawn(async move {
            let _ = answer.send(lookup.await.map_err(Error::from));
        });
    }

    /// Sendfile: the daemon opens `path` and the engine sends it over the transport.
    pub fn net_sendfile(
        &self,
        id: u64,
        path: String,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
        answer: oneshot::Sender<Result<u64>>,
    ) {
        let opened = self.open_transport(id).and_then(|(rec, transport)| {
            let file = std::fs::File::open(&path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            // Opening a directory succeeds; reading it would fail on the executor.
            if file.metadata().is_ok_and(|meta| meta.is_dir()) {
                return Err(Error::invalid("path", format!("{path:?} is a directory")));
            }
            Ok((rec, transport, file))
        });
        let (rec, transport, file) = match opened {
            Ok(found) => found,
            Err(err) => {
                let _ = answer.send(Err(err));
                return;
            }
        };
        let sending = self.lp.sendfile(&transport, &file, offset, count, fallback);
        self.spawn(async move {
            let result = sending.await.map_err(Error::from);
            if let Ok(sent) = &result {
                rec.count_written(*sent as usize);
            }
            let _ = answer.send(result);
        });
    }
}

impl TransportRec {
    /// Whether anything holds the transport's reading back: the client's PauseReading, a
    /// full stream window, or (echo) its own full write buffer.
    fn reading_held(&self) -> bool {
        self.paused_by_client.get()
            || self.stream_paused.get()
            || (self.behaviour == Behaviour::Echo && self.writing_paused.get())
    }

    /// Pauses or resumes the transport's reading to match [`Self::reading_held`]: the one
    /// place that decides, whichever of the three reasons just changed.
    pub(crate) fn sync_reading(&self) {
        let Some(transport) = self.transport.borrow().clone() else {
            return;
        };
        if self.reading_held() {
            transport.pause_reading();
        } else {
            transport.resume_reading();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    #[test]
    fn addresses_convert_to_the_wire() {
        use pb::net_address::Kind;
        let cases = [
            (
                Address::Inet("127.0.0.1:80".parse::<SocketAddr>().unwrap()),
                Kind::Inet(pb::InetAddress {
                    ip: "127.0.0.1".into(),
                    port: 80,
                }),
            ),
            (
                Address::Inet("[::1]:9".parse::<SocketAddr>().unwrap()),
                Kind::Inet(pb::InetAddress {
                    ip: "::1".into(),
                    port: 9,
                }),
            ),
            (
                Address::Unix(Some(PathBuf::from("/tmp/s"))),
                Kind::Unix(pb::UnixAddress {
                    path: "/tmp/s".into(),
                }),
            ),
            (
                Address::Unix(None),
                Kind::Unix(pb::UnixAddress {
                    path: String::new(),
                }),
            ),
        ];
        for (addr, kind) in cases {
            assert_eq!(address(&addr).kind, Some(kind), "{addr}");
        }
    }

    #[test]
    fn quotas_count_per_caller() {
        let net = NetState::default();
        let limits = Limits {
            max_servers_per_caller: 1,
            max_transports_per_caller: 2,
            ..Limits::default()
        };
        assert!(net.check_quota(7, &limits, true).is_ok());
        net.add_held(7, 1, 2);
        assert!(matches!(
            net.check_quota(7, &limits, true),
            Err(Error::Quota {
                what: "servers",
                holds: 1,
                ..
            })
        ));
        assert!(net.check_quota(7, &limits, false).is_err());
        assert!(net.check_quota(8, &limits, false).is_ok(), "other caller");
        net.add_held(7, -1, -2);
        assert!(net.held.borrow().is_empty(), "released entries go away");
    }
}
