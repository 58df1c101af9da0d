//! NetService: servers, connections and their transports (asyncio's `create_server`,
//! `create_connection` and the transport methods), datagram endpoints, name resolution
//! and sendfile.
//!
//! # Invariants
//! - Ids are typed ([`ServerId`], [`TransportId`], [`EndpointId`]); `0` is never valid.
//! - [`Client::read_transport`] is lossless: a [`ByteReader`] yields a transport's bytes
//!   in order with their stream offsets, keeping a window of credit granted.
//! - Every call fails with the daemon's status ([`crate::Code`]) and its message, which
//!   names the bad value (an address in use, an unknown id, a certificate's name).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;
use tokio::sync::mpsc;

use crate::byte_stream::ByteReader;
use crate::client::Client;
use crate::convert::{required, system_time, to_wire_duration};
use crate::error::Result;
use crate::paging::{Page, PageRequest, all_pages, next_token};

macro_rules! net_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;

            /// Parses a decimal id, e.g. `42`.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }
    };
}

net_id!(
    /// A server made by [`Client::create_server`] (asyncio's `Server`).
    ServerId
);
net_id!(
    /// A stream transport: accepted by a server or opened by [`Client::open_connection`].
    TransportId
);
net_id!(
    /// A datagram endpoint (asyncio's `DatagramTransport`).
    EndpointId
);

/// A socket address: an IP address and port, or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAddress {
    /// IPv4 or IPv6.
    Inet(SocketAddr),
    /// A Unix socket; `None` for an unnamed one (a client's end).
    Unix(Option<PathBuf>),
}

impl fmt::Display for NetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetAddress::Inet(addr) => write!(f, "{addr}"),
            NetAddress::Unix(Some(path)) => write!(f, "{}", path.display()),
            NetAddress::Unix(None) => f.write_str("<unnamed>"),
        }
    }
}

impl NetAddress {
    fn from_wire(addr: pb::NetAddress) -> Option<NetAddress> {
        use pb::net_address::Kind;
        match addr.kind? {
            Kind::Inet(inet) => {
                let ip: IpAddr = inet.ip.parse().ok()?;
                Some(NetAddress::Inet(SocketAddr::new(
                    ip,
                    u16::try_from(inet.port).ok()?,
                )))
            }
            Kind::Unix(unix) => Some(NetAddress::Unix(
                Some(PathBuf::from(unix.path)).filter(|p| !p.as_os_str().is_empty()),
            )),
        }
    }
}

fn addr(addr: Option<pb::NetAddress>) -> Option<NetAddress> {
    addr.and_then(NetAddress::from_wire)
}

/// What the daemon does with a server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerProtocol {
    /// Report everything to the owner: events, and the bytes in a lossless stream.
    #[default]
    Events,
    /// Write every byte back.
    Echo,
    /// Drop every byte.
    Discard,
}

impl ServerProtocol {
    fn to_wire(self) -> pb::ServerProtocol {
        match self {
            ServerProtocol::Events => pb::ServerProtocol::Events,
            ServerProtocol::Echo => pb::ServerProtocol::Echo,
            ServerProtocol::Discard => pb::ServerProtocol::Discard,
        }
    }

    fn from_wire(value: i32) -> ServerProtocol {
        match pb::ServerProtocol::try_from(value) {
            Ok(pb::ServerProtocol::Echo) => ServerProtocol::Echo,
            Ok(pb::ServerProtocol::Discard) => ServerProtocol::Discard,
            _ => ServerProtocol::Events,
        }
    }

    /// `events`, `echo` or `discard`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerProtocol::Events => "events",
            ServerProtocol::Echo => "echo",
            ServerProtocol::Discard => "discard",
        }
    }
}

/// Where an events-protocol transport's bytes go (see the proto's `Delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Lossless stream (ReadTransport) plus events; reading pauses at a full window.
    #[default]
    Stream,
    /// Events only: never pauses, may lose bytes to a Gap.
    EventsOnly,
}

impl Delivery {
    fn to_wire(self) -> pb::Delivery {
        match self {
            Delivery::Stream => pb::Delivery::Stream,
            Delivery::EventsOnly => pb::Delivery::EventsOnly,
        }
    }

    fn from_wire(value: i32) -> Option<Delivery> {
        match pb::Delivery::try_from(value) {
            Ok(pb::Delivery::Stream) => Some(Delivery::Stream),
            Ok(pb::Delivery::EventsOnly) => Some(Delivery::EventsOnly),
            _ => None,
        }
    }
}

/// TLS material for a server: PEM bytes, or paths the daemon reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsServer {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
    /// Certificate chain file, read by the daemon.
    pub cert_path: Option<PathBuf>,
    /// Private key file, read by the daemon.
    pub key_path: Option<PathBuf>,
    /// Handshake timeout; `None`: 60 s.
    pub handshake_timeout: Option<Duration>,
}

/// TLS settings for a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClient {
    /// Expected name and SNI; `None`: the host.
    pub server_name: Option<String>,
    /// Trusted CAs, PEM.
    pub ca_pem: Vec<u8>,
    /// Trusted CAs file, read by the daemon.
    pub ca_path: Option<PathBuf>,
    /// Handshake timeout; `None`: 60 s.
    pub handshake_timeout: Option<Duration>,
}

fn path_string(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The side of the handshake [`Client::start_tls`] takes (asyncio's `server_side`), with
/// its TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartTlsSide {
    /// The client's side: checks the server's certificate; `server_name` is required.
    Client(TlsClient),
    /// The server's side (`server_side=True`).
    Server(TlsServer),
}

/// What [`Client::create_server`] binds and how it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// TCP hosts; empty (and no `unix_path`): every interface.
    pub hosts: Vec<String>,
    /// TCP port; 0: a free one.
    pub port: u16,
    /// Listen on this Unix socket path instead.
    pub unix_path: Option<PathBuf>,
    /// listen() backlog; 0: 100.
    pub backlog: u32,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// Do not start accepting until [`Client::start_serving`].
    pub no_start: bool,
    /// What connections do.
    pub protocol: ServerProtocol,
    /// Where their bytes go.
    pub delivery: Delivery,
    /// Stream window in bytes; 0: the daemon's default.
    pub stream_window: u64,
    /// Speak TLS.
    pub tls: Option<TlsServer>,
}

/// Where [`Client::open_connection`] connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// TCP host (IP literal or name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Connect to this Unix socket path instead.
    pub unix_path: Option<PathBuf>,
    /// Bind locally first (asyncio's `local_addr`).
    pub local_addr: Option<SocketAddr>,
    /// Happy Eyeballs delay (RFC 8305).
    pub happy_eyeballs_delay: Option<Duration>,
    /// Happy Eyeballs interleave.
    pub interleave: u32,
    /// Give up connecting after this long.
    pub timeout: Option<Duration>,
    /// Where the transport's bytes go.
    pub delivery: Delivery,
    /// Stream window in bytes; 0: the daemon's default.
    pub stream_window: u64,
    /// Speak TLS.
    pub tls: Option<TlsClient>,
}

/// A server, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// Its id.
    pub server_id: ServerId,
    /// Its loop.
    pub loop_name: String,
    /// Where it listens.
    pub addresses: Vec<NetAddress>,
    /// Accepting connections.
    pub serving: bool,
    /// Closed (CloseServer).
    pub closed: bool,
    /// What it does with connections.
    pub protocol: ServerProtocol,
    /// Where its connections' bytes go; `None` for echo and discard.
    pub delivery: Option<Delivery>,
    /// Speaks TLS.
    pub tls: bool,
    /// Connections still open.
    pub active_connections: u64,
    /// Connections accepted in total.
    pub connections_accepted: u64,
    /// Who created it.
    pub creator_uid: u32,
    /// When.
    pub created_at: Option<SystemTime>,
}

impl ServerInfo {
    fn from_wire(s: pb::ServerInfo) -> ServerInfo {
        ServerInfo {
            server_id: ServerId(s.server_id),
            loop_name: s.r#loop,
            addresses: s
                .addresses
                .into_iter()
                .filter_map(NetAddress::from_wire)
                .collect(),
            serving: s.serving,
            closed: s.closed,
            protocol: ServerProtocol::from_wire(s.protocol),
            delivery: Delivery::from_wire(s.delivery),
            tls: s.tls,
            active_connections: s.active_connections,
            connections_accepted: s.connections_accepted,
            creator_uid: s.creator_uid,
            created_at: system_time(s.created_at),
        }
    }
}

/// Where a transport is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// Connected.
    Open,
    /// Closing: buffered data still being sent.
    Closing,
    /// Closed.
    Closed,
}

impl fmt::Display for TransportState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportState::Open => "open",
            TransportState::Closing => "closing",
            TransportState::Closed => "closed",
        })
    }
}

/// A stream transport, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportInfo {
    /// Its id.
    pub transport_id: TransportId,
    /// Its loop.
    pub loop_name: String,
    /// The server that accepted it; `None` for an opened connection.
    pub server_id: Option<ServerId>,
    /// Open, closing or closed.
    pub state: TransportState,
    /// The peer's address.
    pub peername: Option<NetAddress>,
    /// The local address.
    pub sockname: Option<NetAddress>,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes written to it.
    pub bytes_written: u64,
    /// Bytes waiting in its write buffer.
    pub write_buffer_size: u64,
    /// Write buffer (low, high) water marks.
    pub write_buffer_limits: (u64, u64),
    /// Reading from its socket.
    pub reading: bool,
    /// Paused by PauseReading.
    pub paused_by_client: bool,
    /// Paused by a full stream window.
    pub stream_paused: bool,
    /// Write buffer above its high water mark.
    pub writing_paused: bool,
    /// The peer's EOF was read.
    pub eof_received: bool,
    /// Bytes received and not yet read from the stream.
    pub stream_buffered: u64,
    /// Why the connection was lost, if it was lost with an error.
    pub error: Option<String>,
    /// Who opened it (or created its server).
    pub creator_uid: u32,
    /// When it was made.
    pub created_at: Option<SystemTime>,
    /// The TLS version in use (`TLSv1.3`); `None` without TLS.
    pub tls_version: Option<String>,
    /// The TLS cipher suite in use; `None` without TLS.
    pub tls_cipher: Option<String>,
}

impl TransportInfo {
    fn from_wire(t: pb::TransportInfo) -> TransportInfo {
        let state = match pb::TransportState::try_from(t.state) {
            Ok(pb::TransportState::Closing) => TransportState::Closing,
            Ok(pb::TransportState::Closed) => TransportState::Closed,
            _ => TransportState::Open,
        };
        TransportInfo {
            transport_id: TransportId(t.transport_id),
            loop_name: t.r#loop,
            server_id: Some(ServerId(t.server_id)).filter(|id| id.0 != 0),
            state,
            peername: addr(t.peername),
            sockname: addr(t.sockname),
            bytes_received: t.bytes_received,
            bytes_written: t.bytes_written,
            write_buffer_size: t.write_buffer_size,
            write_buffer_limits: (t.write_buffer_low, t.write_buffer_high),
            reading: t.reading,
            paused_by_client: t.paused_by_client,
            stream_paused: t.stream_paused,
            writing_paused: t.writing_paused,
            eof_received: t.eof_received,
            stream_buffered: t.stream_buffered,
            error: Some(t.error).filter(|e| !e.is_empty()),
            creator_uid: t.creator_uid,
            created_at: system_time(t.created_at),
            tls_version: Some(t.tls_version).filter(|v| !v.is_empty()),
            tls_cipher: Some(t.tls_cipher).filter(|c| !c.is_empty()),
        }
    }
}

/// A datagram endpoint, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInfo {
    /// Its id.
    pub endpoint_id: EndpointId,
    /// The local address.
    pub sockname: Option<NetAddress>,
    /// The connected remote, if any.
    pub peername: Option<NetAddress>,
    /// Closed.
    pub closed: bool,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
}

impl EndpointInfo {
    fn from_wire(e: pb::DatagramEndpointInfo) -> EndpointInfo {
        EndpointInfo {
            endpoint_id: EndpointId(e.endpoint_id),
            sockname: addr(e.sockname),
            peername: addr(e.peername),
            closed: e.closed,
            datagrams_received: e.datagrams_received,
            datagrams_sent: e.datagrams_sent,
        }
    }
}

/// A transport event (see [`crate::EventBody::Net`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NetEvent {
    /// A connection was made (accepted by `server_id`, or opened).
    ConnectionMade {
        /// The transport.
        transport_id: TransportId,
        /// Its server, if accepted.
        server_id: Option<ServerId>,
        /// The peer.
        peername: Option<NetAddress>,
    },
    /// Bytes arrived; `data` may be cut to the daemon's event limit (`size` is the real
    /// length); the lossless stream has all of them at `offset`.
    DataReceived {
        /// The transport.
        transport_id: TransportId,
        /// The bytes, possibly cut.
        data: Vec<u8>,
        /// Stream offset of the first byte.
        offset: u64,
        /// Real length.
        size: u64,
    },
    /// The peer's EOF.
    EofReceived {
        /// The transport.
        transport_id: TransportId,
    },
    /// The connection is closed; `error` says why if it failed.
    ConnectionLost {
        /// The transport.
        transport_id: TransportId,
        /// The error, if any.
        error: Option<String>,
    },
    /// Write buffer above the high water mark.
    PauseWriting {
        /// The transport.
        transport_id: TransportId,
    },
    /// Write buffer back at the low water mark.
    ResumeWriting {
        /// The transport.
        transport_id: TransportId,
    },
    /// Reading paused: the stream's window is full.
    ReadingPaused {
        /// The transport.
        transport_id: TransportId,
    },
    /// Reading resumed after ReadingPaused.
    ReadingResumed {
        /// The transport.
        transport_id: TransportId,
    },
    /// A datagram arrived.
    DatagramReceived {
        /// The endpoint.
        endpoint_id: EndpointId,
        /// The sender.
        addr: Option<NetAddress>,
        /// The datagram, possibly cut.
        data: Vec<u8>,
    },
    /// A datagram endpoint's socket reported an error.
    ErrorReceived {
        /// The endpoint.
        endpoint_id: EndpointId,
        /// The error.
        error: String,
    },
    /// A server stopped listening.
    ServerClosed {
        /// The server.
        server_id: ServerId,
    },
}

impl NetEvent {
    /// The event's kind.
    pub fn kind(&self) -> crate::EventKind {
        use crate::EventKind as K;
        match self {
            NetEvent::ConnectionMade { .. } => K::ConnectionMade,
            NetEvent::DataReceived { .. } => K::DataReceived,
            NetEvent::EofReceived { .. } => K::EofReceived,
            NetEvent::ConnectionLost { .. } => K::ConnectionLost,
            NetEvent::PauseWriting { .. } => K::PauseWriting,
            NetEvent::ResumeWriting { .. } => K::ResumeWriting,
            NetEvent::DatagramReceived { .. } => K::DatagramReceived,
            NetEvent::ErrorReceived { .. } => K::ErrorReceived,
            NetEvent::ServerClosed { .. } => K::ServerClosed,
            NetEvent::ReadingPaused { .. } => K::ReadingPaused,
            NetEvent::ReadingResumed { .. } => K::ReadingResumed,
        }
    }

    /// The net event of a wire event kind; `None` for other kinds.
    pub(crate) fn from_wire(kind: pb::event::Kind) -> Option<NetEvent> {
        use pb::event::Kind;
        let t = TransportId;
        Some(match kind {
            Kind::ConnectionMade(m) => NetEvent::ConnectionMade {
                transport_id: t(m.transport_id),
                server_id: Some(ServerId(m.server_id)).filter(|id| id.0 != 0),
                peername: addr(m.peername),
            },
            Kind::DataReceived(d) => NetEvent::DataReceived {
                transport_id: t(d.transport_id),
                data: d.data,
                offset: d.offset,
                size: d.size,
            },
            Kind::EofReceived(e) => NetEvent::EofReceived {
                transport_id: t(e.transport_id),
            },
            Kind::ConnectionLost(l) => NetEvent::ConnectionLost {
                transport_id: t(l.transport_id),
                error: Some(l.error).filter(|e| !e.is_empty()),
            },
            Kind::PauseWriting(p) => NetEvent::PauseWriting {
                transport_id: t(p.transport_id),
            },
            Kind::ResumeWriting(r) => NetEvent::ResumeWriting {
                transport_id: t(r.transport_id),
            },
            Kind::ReadingPaused(p) => NetEvent::ReadingPaused {
                transport_id: t(p.transport_id),
            },
            Kind::ReadingResumed(r) => NetEvent::ReadingResumed {
                transport_id: t(r.transport_id),
            },
            Kind::DatagramReceived(d) => NetEvent::DatagramReceived {
                endpoint_id: EndpointId(d.endpoint_id),
                addr: addr(d.addr),
                data: d.data,
            },
            Kind::ErrorReceived(e) => NetEvent::ErrorReceived {
                endpoint_id: EndpointId(e.endpoint_id),
                error: e.error,
            },
            Kind::ServerClosed(s) => NetEvent::ServerClosed {
                server_id: ServerId(s.server_id),
            },
            _ => return None,
        })
    }
}

fn tls_server_wire(tls: &TlsServer) -> Result<pb::TlsServerOptions> {
    Ok(pb::TlsServerOptions {
        cert_pem: tls.cert_pem.clone(),
        key_pem: tls.key_pem.clone(),
        cert_path: path_string(&tls.cert_path),
        key_path: path_string(&tls.key_path),
        handshake_timeout: tls.handshake_timeout.map(to_wire_duration).transpose()?,
    })
}

fn tls_client_wire(tls: &TlsClient) -> Result<pb::TlsClientOptions> {
    Ok(pb::TlsClientOptions {
        server_name: tls.server_name.clone().unwrap_or_default(),
        ca_pem: tls.ca_pem.clone(),
        ca_path: path_string(&tls.ca_path),
        handshake_timeout: tls.handshake_timeout.map(to_wire_duration).transpose()?,
    })
}

impl Client {
    /// Creates a server (asyncio's `create_server` / `create_unix_server`). Fails with
    /// ALREADY_EXISTS for an address in use, INVALID_ARGUMENT for a malformed host,
    /// RESOURCE_EXHAUSTED past the caller's quota, INVALID_ARGUMENT for a TLS
    /// certificate or key that does not load (naming the field).
    pub async fn create_server(
        &self,
        loop_name: &str,
        options: &ServerOptions,
    ) -> Result<ServerInfo> {
        let request = pb::CreateServerRequest {
            r#loop: loop_name.to_owned(),
            hosts: options.hosts.clone(),
            port: u32::from(options.port),
            unix_path: path_string(&options.unix_path),
            backlog: options.backlog,
            reuse_address: None,
            reuse_port: options.reuse_port,
            protocol: options.protocol.to_wire() as i32,
            delivery: options.delivery.to_wire() as i32,
            tls: options.tls.as_ref().map(tls_server_wire).transpose()?,
            start_serving: Some(!options.no_start),
            stream_window_bytes: options.stream_window,
        };
        let server = self
            .net
            .clone()
            .create_server(request)
            .await?
            .into_inner()
            .server;
        Ok(ServerInfo::from_wire(required(server, "server")?))
    }

    /// Lists a loop's servers by ascending id, following every page. Fails with
    /// NOT_FOUND for an unknown loop.
    pub async fn list_servers(&self, loop_name: &str) -> Result<Vec<ServerInfo>> {
        all_pages(0, move |page| self.list_servers_page(loop_name, page)).await
    }

    /// Lists one page of a loop's servers by ascending id. Fails with NOT_FOUND for an
    /// unknown loop, INVALID_ARGUMENT for a token from another query.
    pub async fn list_servers_page(
        &self,
        loop_name: &str,
        page: PageRequest,
    ) -> Result<Page<ServerInfo>> {
        let request = pb::ListServersRequest {
            r#loop: loop_name.to_owned(),
            page_size: page.page_size,
            page_token: page.token(),
        };
        let r = self.net.clone().list_servers(request).await?.into_inner();
        Ok(Page {
            items: r.servers.into_iter().map(ServerInfo::from_wire).collect(),
            next_page_token: next_token(r.next_page_token),
        })
    }

    /// Describes a server; NOT_FOUND if unknown.
    pub async fn get_server(&self, loop_name: &str, id: ServerId) -> Result<ServerInfo> {
        let request = pb::GetServerRequest {
            r#loop: loop_name.to_owned(),
            server_id: id.0,
        };
        let server = self
            .net
            .clone()
            .get_server(request)
            .await?
            .into_inner()
            .server;
        Ok(ServerInfo::from_wire(required(server, "server")?))
    }

    /// Stops a server listening; its connections stay open (asyncio's `Server.close`).
    pub async fn close_server(&self, loop_name: &str, id: ServerId) -> Result<ServerInfo> {
        let request = pb::CloseServerRequest {
            r#loop: loop_name.to_owned(),
            server_id: id.0,
        };
        let server = self
            .net
            .clone()
            .close_server(request)
            .await?
            .into_inner()
            .server;
        Ok(ServerInfo::from_wire(required(server, "server")?))
    }

    /// Starts a server made with [`ServerOptions::no_start`].
    pub async fn start_serving(&self, loop_name: &str, id: ServerId) -> Result<ServerInfo> {
        let request = pb::StartServingRequest {
            r#loop: loop_name.to_owned(),
            server_id: id.0,
        };
        let server = self
            .net
            .clone()
            .start_serving(request)
            .await?
            .into_inner()
            .server;
        Ok(ServerInfo::from_wire(required(server, "server")?))
    }

    /// Connects (asyncio's `create_connection` / `create_unix_connection`). Fails with
    /// UNAVAILABLE when refused, INVALID_ARGUMENT for a malformed host,
    /// DEADLINE_EXCEEDED past the timeout.
    pub async fn open_connection(
        &self,
        loop_name: &str,
        options: &ConnectOptions,
    ) -> Result<TransportInfo> {
        let (local_host, local_port) = options
            .local_addr
            .map_or((String::new(), 0), |a| (a.ip().to_string(), a.port()));
        let request = pb::OpenConnectionRequest {
            r#loop: loop_name.to_owned(),
            host: options.host.clone(),
            port: u32::from(options.port),
            unix_path: path_string(&options.unix_path),
            tls: options.tls.as_ref().map(tls_client_wire).transpose()?,
            local_host,
            local_port: u32::from(local_port),
            happy_eyeballs_delay: options
                .happy_eyeballs_delay
                .map(to_wire_duration)
                .transpose()?,
            interleave: options.interleave,
            timeout: options.timeout.map(to_wire_duration).transpose()?,
            delivery: options.delivery.to_wire() as i32,
            stream_window_bytes: options.stream_window,
        };
        let transport = self
            .net
            .clone()
            .open_connection(request)
            .await?
            .into_inner();
        Ok(TransportInfo::from_wire(required(
            transport.transport,
            "transport",
        )?))
    }

    /// Lists transports (of one server, or all) by ascending id, following every page.
    /// Fails with NOT_FOUND for an unknown loop.
    pub async fn list_transports(
        &self,
        loop_name: &str,
        server: Option<ServerId>,
        include_closed: bool,
    ) -> Result<Vec<TransportInfo>> {
        all_pages(0, move |page| {
            self.list_transports_page(loop_name, server, include_closed, page)
        })
        .await
    }

    /// Lists one page of transports (of one server, or all) by ascending id. Fails with
    /// NOT_FOUND for an unknown loop, INVALID_ARGUMENT for a token from another query
    /// (another server or `include_closed`).
    pub async fn list_transports_page(
        &self,
        loop_name: &str,
        server: Option<ServerId>,
        include_closed: bool,
        page: PageRequest,
    ) -> Result<Page<TransportInfo>> {
        let request = pb::ListTransportsRequest {
            r#loop: loop_name.to_owned(),
            server_id: server.map_or(0, |s| s.0),
            include_closed,
            page_size: page.page_size,
            page_token: page.token(),
        };
        let r = self
            .net
            .clone()
            .list_transports(request)
            .await?
            .into_inner();
        Ok(Page {
            items: r
                .transports
                .into_iter()
                .map(TransportInfo::from_wire)
                .collect(),
            next_page_token: next_token(r.next_page_token),
        })
    }

    /// Describes a transport; NOT_FOUND if unknown.
    pub async fn get_transport(&self, loop_name: &str, id: TransportId) -> Result<TransportInfo> {
        let request = pb::GetTransportRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
        };
        let t = self.net.clone().get_transport(request).await?.into_inner();
        Ok(TransportInfo::from_wire(required(
            t.transport,
            "transport",
        )?))
    }

    /// Writes bytes (asyncio's `transport.write`); answers the write buffer's size.
    /// FAILED_PRECONDITION for a closing or closed transport.
    pub async fn write(
        &self,
        loop_name: &str,
        id: TransportId,
        data: impl Into<Vec<u8>>,
    ) -> Result<u64> {
        let request = pb::WriteRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
            data: data.into(),
        };
        Ok(self
            .net
            .clone()
            .write(request)
            .await?
            .into_inner()
            .write_buffer_size)
    }

    /// Half-closes (asyncio's `write_eof`).
    pub async fn write_eof(&self, loop_name: &str, id: TransportId) -> Result<TransportInfo> {
        let request = pb::WriteEofRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
        };
        let t = self.net.clone().write_eof(request).await?.into_inner();
        Ok(TransportInfo::from_wire(required(
            t.transport,
            "transport",
        )?))
    }

    /// Closes a transport after flushing (asyncio's `close`).
    pub async fn close_transport(&self, loop_name: &str, id: TransportId) -> Result<TransportInfo> {
        let request = pb::CloseTransportRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
        };
        let t = self
            .net
            .clone()
            .close_transport(request)
            .await?
            .into_inner();
        Ok(TransportInfo::from_wire(required(
            t.transport,
            "transport",
        )?))
    }

    /// Closes a transport at once (asyncio's `abort`).
    pub async fn abort_transport(&self, loop_name: &str, id: TransportId) -> Result<TransportInfo> {
        let request = pb::AbortTransportRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
        };
        let t = self
            .net
            .clone()
            .abort_transport(request)
            .await?
            .into_inner();
        Ok(TransportInfo::from_wire(required(
            t.transport,
            "transport",
        )?))
    }

    /// Pauses (`false`) or resumes (`true`) reading (asyncio's `pause_reading` /
    /// `resume_reading`).
    pub async fn set_reading(
        &self,
        loop_name: &str,
        id: TransportId,
        reading: bool,
    ) -> Result<TransportInfo> {
        let mut net = self.net.clone();
        let t = if reading {
            let request = pb::ResumeReadingRequest {
                r#loop: loop_name.to_owned(),
                transport_id: id.0,
            };
            net.resume_reading(request).await?.into_inner().transport
        } else {
            let request = pb::PauseReadingRequest {
                r#loop: loop_name.to_owned(),
                transport_id: id.0,
            };
            net.pause_reading(request).await?.into_inner().transport
        };
        Ok(TransportInfo::from_wire(required(t, "transport")?))
    }

    /// Sets the write buffer's water marks (asyncio's `set_write_buffer_limits`).
    pub async fn set_write_buffer_limits(
        &self,
        loop_name: &str,
        id: TransportId,
        high: Option<u64>,
        low: Option<u64>,
    ) -> Result<TransportInfo> {
        let request = pb::SetWriteBufferLimitsRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
            high,
            low,
        };
        let t = self
            .net
            .clone()
            .set_write_buffer_limits(request)
            .await?
            .into_inner();
        Ok(TransportInfo::from_wire(required(
            t.transport,
            "transport",
        )?))
    }

    /// Opens a lossless reader on a transport, from `from_offset` (`None`: the oldest
    /// byte held), keeping `window` bytes of credit granted (see [`ByteReader`]).
    /// FAILED_PRECONDITION for a transport without a byte stream, NOT_FOUND for an
    /// unknown one, OUT_OF_RANGE for an offset no longer (or never) held.
    pub async fn read_transport(
        &self,
        loop_name: &str,
        id: TransportId,
        from_offset: Option<u64>,
        window: u64,
    ) -> Result<ByteReader> {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = pb::ReadTransportRequest {
            kind: Some(pb::read_transport_request::Kind::Open(
                pb::ReadTransportOpen {
                    r#loop: loop_name.to_owned(),
                    transport_id: id.0,
                    from_offset,
                    credit: 0,
                },
            )),
        };
        let _ = tx.send(open);
        let requests = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let chunks = self
            .net
            .clone()
            .read_transport(requests)
            .await?
            .into_inner();
        Ok(ByteReader::new(chunks, window, move |bytes| {
            let credit = pb::ReadTransportRequest {
                kind: Some(pb::read_transport_request::Kind::Credit(pb::StreamCredit {
                    bytes,
                })),
            };
            tx.send(credit).is_ok()
        }))
    }

    /// Creates a UDP endpoint bound to `local` and/or connected to `remote` (host, port);
    /// see [`Client::create_unix_datagram_endpoint`] for Unix datagram sockets.
    pub async fn create_datagram_endpoint(
        &self,
        loop_name: &str,
        local: Option<(&str, u16)>,
        remote: Option<(&str, u16)>,
    ) -> Result<EndpointInfo> {
        let (local_host, local_port) = local.unwrap_or(("", 0));
        let (remote_host, remote_port) = remote.unwrap_or(("", 0));
        let request = pb::CreateDatagramEndpointRequest {
            r#loop: loop_name.to_owned(),
            local_host: local_host.to_owned(),
            local_port: u32::from(local_port),
            remote_host: remote_host.to_owned(),
            remote_port: u32::from(remote_port),
            reuse_port: false,
            allow_broadcast: false,
            local_path: String::new(),
            remote_path: String::new(),
        };
        self.create_endpoint(request).await
    }

    /// Creates a Unix datagram endpoint bound to the socket path `local` and/or connected
    /// to `remote` (asyncio's `create_datagram_endpoint` with `family=AF_UNIX`). The daemon
    /// replaces a stale socket file at `local` and removes its file when the endpoint
    /// closes. Without `local` the socket is unnamed: peers cannot answer it. Paths are
    /// the daemon's: give absolute ones.
    pub async fn create_unix_datagram_endpoint(
        &self,
        loop_name: &str,
        local: Option<&std::path::Path>,
        remote: Option<&std::path::Path>,
    ) -> Result<EndpointInfo> {
        let path = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string());
        let request = pb::CreateDatagramEndpointRequest {
            r#loop: loop_name.to_owned(),
            local_path: path(local).unwrap_or_default(),
            remote_path: path(remote).unwrap_or_default(),
            ..Default::default()
        };
        self.create_endpoint(request).await
    }

    async fn create_endpoint(
        &self,
        request: pb::CreateDatagramEndpointRequest,
    ) -> Result<EndpointInfo> {
        let e = self
            .net
            .clone()
            .create_datagram_endpoint(request)
            .await?
            .into_inner();
        Ok(EndpointInfo::from_wire(required(e.endpoint, "endpoint")?))
    }

    /// Sends a datagram (to `to`, or the connected remote).
    pub async fn send_datagram(
        &self,
        loop_name: &str,
        id: EndpointId,
        data: impl Into<Vec<u8>>,
        to: Option<(&str, u16)>,
    ) -> Result<()> {
        let (host, port) = to.unwrap_or(("", 0));
        let request = pb::SendDatagramRequest {
            r#loop: loop_name.to_owned(),
            endpoint_id: id.0,
            data: data.into(),
            host: host.to_owned(),
            port: u32::from(port),
            path: String::new(),
        };
        self.net.clone().send_datagram(request).await?;
        Ok(())
    }

    /// Sends a datagram from a Unix datagram endpoint to the socket at `path`.
    pub async fn send_datagram_to_path(
        &self,
        loop_name: &str,
        id: EndpointId,
        data: impl Into<Vec<u8>>,
        path: &std::path::Path,
    ) -> Result<()> {
        let request = pb::SendDatagramRequest {
            r#loop: loop_name.to_owned(),
            endpoint_id: id.0,
            data: data.into(),
            path: path.display().to_string(),
            ..Default::default()
        };
        self.net.clone().send_datagram(request).await?;
        Ok(())
    }

    /// Closes a datagram endpoint.
    pub async fn close_datagram_endpoint(
        &self,
        loop_name: &str,
        id: EndpointId,
    ) -> Result<EndpointInfo> {
        let request = pb::CloseDatagramEndpointRequest {
            r#loop: loop_name.to_owned(),
            endpoint_id: id.0,
        };
        let e = self
            .net
            .clone()
            .close_datagram_endpoint(request)
            .await?
            .into_inner();
        Ok(EndpointInfo::from_wire(required(e.endpoint, "endpoint")?))
    }

    /// Resolves a host (asyncio's `getaddrinfo`).
    pub async fn resolve(&self, loop_name: &str, host: &str, port: u16) -> Result<Vec<NetAddress>> {
        let request = pb::ResolveRequest {
            r#loop: loop_name.to_owned(),
            host: host.to_owned(),
            port: u32::from(port),
            family: pb::AddressFamily::Unspecified as i32,
        };
        let found = self.net.clone().resolve(request).await?.into_inner();
        Ok(found
            .addresses
            .into_iter()
            .filter_map(NetAddress::from_wire)
            .collect())
    }

    /// Names an address (asyncio's `getnameinfo`): (host, service).
    pub async fn reverse_resolve(
        &self,
        loop_name: &str,
        addr: SocketAddr,
    ) -> Result<(String, String)> {
        let request = pb::ReverseResolveRequest {
            r#loop: loop_name.to_owned(),
            ip: addr.ip().to_string(),
            port: u32::from(addr.port()),
            numeric_host: false,
        };
        let named = self
            .net
            .clone()
            .reverse_resolve(request)
            .await?
            .into_inner();
        Ok((named.host, named.service))
    }

    /// Sends a file the daemon can read over a transport (asyncio's `loop.sendfile`);
    /// answers the bytes sent.
    pub async fn sendfile(
        &self,
        loop_name: &str,
        id: TransportId,
        path: &std::path::Path,
        offset: u64,
        count: Option<u64>,
    ) -> Result<u64> {
        let request = pb::SendfileRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
            path: path.display().to_string(),
            offset,
            count,
            fallback: None,
        };
        Ok(self
            .net
            .clone()
            .sendfile(request)
            .await?
            .into_inner()
            .bytes_sent)
    }

    /// Upgrades an open plain transport to TLS in place (asyncio's `loop.start_tls`) and
    /// answers, once the handshake is done, with the transport (same id, now with its TLS
    /// version and cipher). The peer must start TLS too. Fails with INVALID_ARGUMENT for
    /// unusable TLS material or a client side without `server_name`, NOT_FOUND for an
    /// unknown transport, FAILED_PRECONDITION for a closing transport or one that already
    /// speaks TLS, UNAVAILABLE when the handshake fails (the transport is then closed),
    /// DEADLINE_EXCEEDED past the handshake timeout.
    ///
    /// `write_first` (may be empty) is written in clear in the same loop step that starts
    /// TLS: a STARTTLS protocol's go-ahead, which the peer can then answer with TLS
    /// records without racing the upgrade.
    pub async fn start_tls(
        &self,
        loop_name: &str,
        id: TransportId,
        side: &StartTlsSide,
        write_first: impl Into<Vec<u8>>,
    ) -> Result<TransportInfo> {
        use pb::start_tls_request::Side;
        let side = match side {
            StartTlsSide::Client(tls) => Side::Client(tls_client_wire(tls)?),
            StartTlsSide::Server(tls) => Side::Server(tls_server_wire(tls)?),
        };
        let request = pb::StartTlsRequest {
            r#loop: loop_name.to_owned(),
            transport_id: id.0,
            side: Some(side),
            write_first: write_first.into(),
        };
        let upgraded = self.net.clone().start_tls(request).await?.into_inner();
        Ok(TransportInfo::from_wire(required(
            upgraded.transport,
            "transport",
        )?))
    }
}
