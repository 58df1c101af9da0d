//! NetService: servers, connections and their transports, run on the owning loop's
//! thread (see `crate::net`); transport bytes read losslessly through `ReadTransport`.
//!
//! # Invariants
//! - Addresses, ports, enums and windows are validated here, before the hand-off.
//! - TLS material is loaded here (PEM bytes or files the daemon reads); a TLS
//!   connection without a CA trusts the daemon's default (`crate::net::trust`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use loopd::{ConnectOptions, ServerOptions, TlsClientConfig, TlsServerConfig};
use loopd_proto::NetService;
use loopd_proto::pb;
use tonic::{Request, Response, Status, Streaming};

use super::{Api, caller_uid, non_negative};
use crate::bytestream::{ChunkStream, serve_read_rpc};
use crate::config::Limits;
use crate::net::{Behaviour, Bind, Connect, DeliverySpec, ServerSpec, StartTlsSpec};
use crate::status::{Error, Result};

/// Longest host name (DNS's limit).
const MAX_HOST: usize = 253;
/// Longest Unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

/// A host as given: an IP literal or a DNS name (letters, digits, `-`, `.`, `_`).
fn check_host(what: &'static str, host: &str) -> Result<()> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let labels_ok = host
        .split('.')
        .all(|label| !label.is_empty() && !label.starts_with('-') && label.len() <= 63);
    if host.is_empty() || host.len() > MAX_HOST || !host.chars().all(ok_char) || !labels_ok {
        return Err(Error::invalid(
            what,
            format!("{host:?} is neither an IP address nor a host name"),
        ));
    }
    Ok(())
}

fn check_port(what: &'static str, port: u32, zero_ok: bool) -> Result<u16> {
    match u16::try_from(port) {
        Ok(0) if !zero_ok => Err(Error::invalid(what, "0 (1 to 65535)")),
        Ok(port) => Ok(port),
        Err(_) => Err(Error::invalid(what, format!("{port} (at most 65535)"))),
    }
}

fn check_unix_path(path: &str) -> Result<String> {
    check_path("unix_path", path)
}

/// A Unix socket path in field `what`: it must fit `sun_path`.
fn check_path(what: &'static str, path: &str) -> Result<String> {
    if path.len() > MAX_UNIX_PATH || path.contains('\0') {
        return Err(Error::invalid(
            what,
            format!("{path:?} (at most {MAX_UNIX_PATH} bytes, no NUL)"),
        ));
    }
    Ok(path.to_owned())
}

fn delivery(protocol: i32, delivery: i32, window: u64, limits: &Limits) -> Result<DeliverySpec> {
    let behaviour = match pb::ServerProtocol::try_from(protocol) {
        Ok(pb::ServerProtocol::Unspecified | pb::ServerProtocol::Events) => Behaviour::Events,
        Ok(pb::ServerProtocol::Echo) => Behaviour::Echo,
        Ok(pb::ServerProtocol::Discard) => Behaviour::Discard,
        Err(_) => return Err(Error::invalid("protocol", protocol)),
    };
    let window = match window {
        0 => limits.stream_window_bytes,
        w if w > limits.max_stream_window_bytes as u64 => {
            return Err(Error::invalid(
                "stream_window_bytes",
                format!("{w} (at most {})", limits.max_stream_window_bytes),
            ));
        }
        w => w as usize,
    };
    let stream_window = match pb::Delivery::try_from(delivery) {
        Ok(pb::Delivery::Unspecified | pb::Delivery::Stream) => Some(window),
        Ok(pb::Delivery::EventsOnly) => None,
        Err(_) => return Err(Error::invalid("delivery", delivery)),
    };
    Ok(DeliverySpec {
        behaviour,
        stream_window: stream_window.filter(|_| behaviour == Behaviour::Events),
    })
}

/// A server's TLS configuration from PEM bytes or files (bytes win).
fn tls_server(tls: &pb::TlsServerOptions) -> Result<(TlsServerConfig, Option<Duration>)> {
    let config = if !tls.cert_pem.is_empty() || !tls.key_pem.is_empty() {
        TlsServerConfig::from_pem(&tls.cert_pem, &tls.key_pem)?
    } else if !tls.cert_path.is_empty() && !tls.key_path.is_empty() {
        TlsServerConfig::from_pem_files(&tls.cert_path, &tls.key_path)?
    } else {
        return Err(Error::invalid(
            "tls",
            "no certificate and key (set cert_pem and key_pem, or cert_path and key_path)",
        ));
    };
    let timeout = tls
        .handshake_timeout
        .as_ref()
        .map(|t| non_negative("tls.handshake_timeout", t))
        .transpose()?;
    Ok((config, timeout))
}

/// A connection's TLS configuration: the request's CA, or the daemon's default trust
/// (`[tls] ca_file`, else the system's trust store).
fn tls_client(tls: &pb::TlsClientOptions) -> Result<(TlsClientConfig, Option<Duration>)> {
    let config = if !tls.ca_pem.is_empty() {
        TlsClientConfig::with_ca_pem(&tls.ca_pem)?
    } else if !tls.ca_path.is_empty() {
        TlsClientConfig::with_ca_pem_file(&tls.ca_path)?
    } else {
        crate::net::trust::default_client_config()?
    };
    let timeout = tls
        .handshake_timeout
        .as_ref()
        .map(|t| non_negative("tls.handshake_timeout", t))
        .transpose()?;
    Ok((config, timeout))
}

fn server_spec(req: &pb::CreateServerRequest, limits: &Limits) -> Result<ServerSpec> {
    let tls = req.tls.as_ref().map(tls_server).transpose()?;
    let bind = if req.unix_path.is_empty() {
        for host in &req.hosts {
            check_host("host", host)?;
        }
        Bind::Tcp {
            hosts: req.hosts.clone(),
            port: check_port("port", req.port, true)?,
        }
    } else {
        if !req.hosts.is_empty() || req.port != 0 {
            return Err(Error::invalid(
                "unix_path",
                format!("{:?} together with hosts or port", req.unix_path),
            ));
        }
        Bind::Unix(check_unix_path(&req.unix_path)?)
    };
    let (ssl, ssl_handshake_timeout) = tls.unzip();
    let options = ServerOptions {
        backlog: if req.backlog == 0 { 100 } else { req.backlog },
        reuse_address: req.reuse_address.unwrap_or(true),
        reuse_port: req.reuse_port,
        start_serving: req.start_serving.unwrap_or(true),
        ssl,
        ssl_handshake_timeout: ssl_handshake_timeout.flatten(),
        ..ServerOptions::default()
    };
    Ok(ServerSpec {
        bind,
        options,
        delivery: delivery(req.protocol, req.delivery, req.stream_window_bytes, limits)?,
    })
}

/// The target of an OpenConnection, and how it reads in messages.
fn connect_target(req: &pb::OpenConnectionRequest) -> Result<(Connect, String)> {
    let tls = req.tls.as_ref().map(tls_client).transpose()?;
    let server_hostname = req
        .tls
        .as_ref()
        .map(|t| t.server_name.clone())
        .filter(|name| !name.is_empty());
    let (ssl, ssl_handshake_timeout) = tls.unzip();
    let happy_eyeballs_delay = req
        .happy_eyeballs_delay
        .as_ref()
        .map(|d| non_negative("happy_eyeballs_delay", d))
        .transpose()?;
    let interleave = match (req.interleave, happy_eyeballs_delay) {
        (0, _) => None,
        (n, _) => Some(n as usize),
    };
    let options = ConnectOptions {
        ssl,
        server_hostname,
        ssl_handshake_timeout: ssl_handshake_timeout.flatten(),
        happy_eyeballs_delay,
        interleave,
        ..ConnectOptions::default()
    };
    if !req.unix_path.is_empty() {
        if !req.host.is_empty() || req.port != 0 || !req.local_host.is_empty() {
            return Err(Error::invalid(
                "unix_path",
                format!("{:?} together with host, port or local_host", req.unix_path),
            ));
        }
        let path = check_unix_path(&req.unix_path)?;
        return Ok((Connect::Unix(path.clone(), options), path));
    }
    check_host("host", &req.host)?;
    let port = check_port("port", req.port, false)?;
    let local_addr = if req.local_host.is_empty() {
        None
    } else {
        let ip: IpAddr = req.local_host.parse().map_err(|_| {
            Error::invalid(
                "local_host",
                format!("{:?} is not an IP address", req.local_host),
            )
        })?;
        Some(SocketAddr::new(
            ip,
            check_port("local_port", req.local_port, true)?,
        ))
    };
    let shown = format!("{}:{port}", req.host);
    let target = Connect::Tcp {
        host: req.host.clone(),
        port,
        options: ConnectOptions {
            local_addr,
            ..options
        },
    };
    Ok((target, shown))
}

/// A StartTls request's side and options, loaded with the same code as CreateServer's and
/// OpenConnection's TLS material; errors in the material name the request's field.
fn start_tls_spec(req: &pb::StartTlsRequest) -> Result<StartTlsSpec> {
    use pb::start_tls_request::Side;
    match &req.side {
        Some(Side::Client(tls)) => {
            let ca_field = if tls.ca_pem.is_empty() && !tls.ca_path.is_empty() {
                "client.ca_path"
            } else {
                "client.ca_pem"
            };
            let (config, timeout) = tls_client(tls).map_err(|e| in_field(e, ca_field, ca_field))?;
            if tls.server_name.is_empty() {
                return Err(Error::invalid(
                    "client.server_name",
                    "empty: it is required, as a transport has no host to default to",
                ));
            }
            Ok(StartTlsSpec {
                context: config.into(),
                options: loopd::StartTlsOptions {
                    server_hostname: Some(tls.server_name.clone()),
                    ssl_handshake_timeout: timeout,
                    ..Default::default()
                },
                write_first: req.write_first.clone(),
            })
        }
        Some(Side::Server(tls)) => {
            let from_bytes = !tls.cert_pem.is_empty() || !tls.key_pem.is_empty();
            let (cert, key) = if from_bytes {
                ("server.cert_pem", "server.key_pem")
            } else {
                ("server.cert_path", "server.key_path")
            };
            let (config, timeout) = tls_server(tls).map_err(|e| in_field(e, cert, key))?;
            Ok(StartTlsSpec {
                context: config.into(),
                options: loopd::StartTlsOptions {
                    ssl_handshake_timeout: timeout,
                    ..Default::default()
                },
                write_first: req.write_first.clone(),
            })
        }
        None => Err(Error::invalid("side", "neither client nor server is set")),
    }
}

/// Names the request field that bad TLS material came from: the key's field for a key
/// that cannot be loaded, the certificate's (or CA's) for anything else.
fn in_field(err: Error, cert_field: &'static str, key_field: &'static str) -> Error {
    match err {
        Error::Engine(loopd::Error::TlsConfig { what, .. }) => {
            let field = if what == "private key" {
                key_field
            } else {
                cert_field
            };
            Error::invalid(field, err)
        }
        Error::Invalid { what: "tls", value } => Error::Invalid {
            what: cert_field.split('.').next().unwrap_or(cert_field),
            value,
        },
        other => other,
    }
}

/// A CreateDatagramEndpoint's addresses: at least one of local and remote, IP or Unix.
fn datagram_options(req: &pb::CreateDatagramEndpointRequest) -> Result<loopd::DatagramOptions> {
    if !req.local_path.is_empty() || !req.remote_path.is_empty() {
        return unix_datagram_options(req);
    }
    let addr = |what, host: &str, port| -> Result<Option<loopd::DatagramAddr>> {
        if host.is_empty() && port == 0 {
            return Ok(None);
        }
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        check_host(what, host)?;
        Ok(Some(loopd::DatagramAddr::Inet {
            host: host.to_owned(),
            port: check_port("port", port, true)?,
        }))
    };
    let local_addr = addr("local_host", &req.local_host, req.local_port)?;
    let remote_addr = addr("remote_host", &req.remote_host, req.remote_port)?;
    if local_addr.is_none() && remote_addr.is_none() {
        return Err(Error::invalid(
            "local_host",
            "neither a local nor a remote address",
        ));
    }
    Ok(loopd::DatagramOptions {
        local_addr,
        remote_addr,
        reuse_port: req.reuse_port,
        allow_broadcast: req.allow_broadcast,
        ..Default::default()
    })
}

/// A Unix datagram endpoint's paths; no host or port may come with them.
fn unix_datagram_options(
    req: &pb::CreateDatagramEndpointRequest,
) -> Result<loopd::DatagramOptions> {
    let (what, path) = if req.local_path.is_empty() {
        ("remote_path", &req.remote_path)
    } else {
        ("local_path", &req.local_path)
    };
    let inet = !req.local_host.is_empty() || req.local_port != 0;
    if inet || !req.remote_host.is_empty() || req.remote_port != 0 {
        return Err(Error::invalid(
            what,
            format!("{path:?} together with a host or port"),
        ));
    }
    let addr = |what, path: &str| -> Result<Option<loopd::DatagramAddr>> {
        if path.is_empty() {
            return Ok(None);
        }
        Ok(Some(loopd::DatagramAddr::Unix(
            check_path(what, path)?.into(),
        )))
    };
    Ok(loopd::DatagramOptions {
        local_addr: addr("local_path", &req.local_path)?,
        remote_addr: addr("remote_path", &req.remote_path)?,
        reuse_port: req.reuse_port,
        allow_broadcast: req.allow_broadcast,
        ..Default::default()
    })
}

/// A SendDatagram's destination: an IP address and port, a Unix path, or none.
fn datagram_destination(req: &pb::SendDatagramRequest) -> Result<Option<loopd::Address>> {
    match (req.host.is_empty(), req.path.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Err(Error::invalid(
            "path",
            format!("{:?} together with host {:?}", req.path, req.host),
        )),
        (true, false) => {
            let path = check_path("path", &req.path)?;
            Ok(Some(loopd::Address::Unix(Some(path.into()))))
        }
        (false, true) => {
            let ip: IpAddr = req.host.parse().map_err(|_| {
                Error::invalid("host", format!("{:?} is not an IP address", req.host))
            })?;
            let port = check_port("port", req.port, false)?;
            Ok(Some(loopd::Address::Inet(SocketAddr::new(ip, port))))
        }
    }
}

fn usize_mark(what: &'static str, mark: Option<u64>) -> Result<Option<usize>> {
    mark.map(|m| usize::try_from(m).map_err(|_| Error::invalid(what, m)))
        .transpose()
}

/// The credits of a ReadTransport call after its `open`: each `credit` message's bytes.
/// The credit a ReadTransport message after the first grants.
fn later_credit(message: pb::ReadTransportRequest) -> Result<u64, Status> {
    use pb::read_transport_request::Kind;
    match message.kind {
        Some(Kind::Credit(credit)) => Ok(credit.bytes),
        Some(Kind::Open(_)) => {
            Err(Error::invalid("ReadTransportRequest", "a second `open`").into())
        }
        None => Ok(0),
    }
}

impl Api {
    /// Runs `f` on the loop's thread with the transport's loop context.
    async fn on_loop<T: Send + 'static>(
        &self,
        loop_name: &str,
        f: impl FnOnce(&std::rc::Rc<crate::loops::LoopCtx>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.daemon.registry.get(loop_name)?.call(f).await
    }
}

#[tonic::async_trait]
impl NetService for Api {
    type ReadTransportStream = ChunkStream;

    async fn create_server(
        &self,
        request: Request<pb::CreateServerRequest>,
    ) -> Result<Response<pb::CreateServerResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let spec = server_spec(&req, self.limits())?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let server = shared
            .call_later(move |ctx, answer| ctx.net_create_server(uid, spec, answer))
            .await?;
        Ok(Response::new(pb::CreateServerResponse {
            server: Some(server),
        }))
    }

    async fn list_servers(
        &self,
        request: Request<pb::ListServersRequest>,
    ) -> Result<Response<pb::ListServersResponse>, Status> {
        let req = request.into_inner();
        let page = self.page(
            "ListServers",
            &req.r#loop,
            (),
            req.page_size,
            &req.page_token,
        )?;
        let (servers, next) = self
            .on_loop(&req.r#loop, move |ctx| Ok(ctx.net_list_servers(page)))
            .await?;
        Ok(Response::new(pb::ListServersResponse {
            servers,
            next_page_token: page.next_token(next),
        }))
    }

    async fn get_server(
        &self,
        request: Request<pb::GetServerRequest>,
    ) -> Result<Response<pb::GetServerResponse>, Status> {
        let req = request.into_inner();
        let id = req.server_id;
        let server = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_get_server(id))
            .await?;
        Ok(Response::new(pb::GetServerResponse {
            server: Some(server),
        }))
    }

    async fn close_server(
        &self,
        request: Request<pb::CloseServerRequest>,
    ) -> Result<Response<pb::CloseServerResponse>, Status> {
        let req = request.into_inner();
        let id = req.server_id;
        let server = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_close_server(id))
            .await?;
        Ok(Response::new(pb::CloseServerResponse {
            server: Some(server),
        }))
    }

    async fn start_serving(
        &self,
        request: Request<pb::StartServingRequest>,
    ) -> Result<Response<pb::StartServingResponse>, Status> {
        let req = request.into_inner();
        let id = req.server_id;
        let server = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_start_serving(id))
            .await?;
        Ok(Response::new(pb::StartServingResponse {
            server: Some(server),
        }))
    }

    async fn open_connection(
        &self,
        request: Request<pb::OpenConnectionRequest>,
    ) -> Result<Response<pb::OpenConnectionResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let (target, shown) = connect_target(&req)?;
        let delivery = delivery(
            pb::ServerProtocol::Events as i32,
            req.delivery,
            req.stream_window_bytes,
            self.limits(),
        )?;
        let timeout = req
            .timeout
            .as_ref()
            .map(|t| non_negative("timeout", t))
            .transpose()?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let connect = shared.call_later(move |ctx, answer| {
            ctx.net_open_connection(uid, target, delivery, answer);
        });
        let transport = match timeout {
            None => connect.await?,
            Some(limit) => tokio::time::timeout(limit, connect)
                .await
                .map_err(|_| Error::ConnectTimeout(shown, limit))??,
        };
        Ok(Response::new(pb::OpenConnectionResponse {
            transport: Some(transport),
        }))
    }

    async fn list_transports(
        &self,
        request: Request<pb::ListTransportsRequest>,
    ) -> Result<Response<pb::ListTransportsResponse>, Status> {
        let req = request.into_inner();
        let (server_id, closed) = (req.server_id, req.include_closed);
        let (size, token) = (req.page_size, &req.page_token);
        let page = self.page(
            "ListTransports",
            &req.r#loop,
            (server_id, closed),
            size,
            token,
        )?;
        let (transports, next) = self
            .on_loop(&req.r#loop, move |ctx| {
                Ok(ctx.net_list_transports(page, server_id, closed))
            })
            .await?;
        Ok(Response::new(pb::ListTransportsResponse {
            transports,
            next_page_token: page.next_token(next),
        }))
    }

    async fn get_transport(
        &self,
        request: Request<pb::GetTransportRequest>,
    ) -> Result<Response<pb::GetTransportResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_get_transport(id))
            .await?;
        Ok(Response::new(pb::GetTransportResponse {
            transport: Some(transport),
        }))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.into_inner();
        let (id, data) = (req.transport_id, req.data);
        let write_buffer_size = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_write(id, &data))
            .await?;
        Ok(Response::new(pb::WriteResponse { write_buffer_size }))
    }

    async fn write_eof(
        &self,
        request: Request<pb::WriteEofRequest>,
    ) -> Result<Response<pb::WriteEofResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_write_eof(id))
            .await?;
        Ok(Response::new(pb::WriteEofResponse {
            transport: Some(transport),
        }))
    }

    async fn close_transport(
        &self,
        request: Request<pb::CloseTransportRequest>,
    ) -> Result<Response<pb::CloseTransportResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_close_transport(id, false))
            .await?;
        Ok(Response::new(pb::CloseTransportResponse {
            transport: Some(transport),
        }))
    }

    async fn abort_transport(
        &self,
        request: Request<pb::AbortTransportRequest>,
    ) -> Result<Response<pb::AbortTransportResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_close_transport(id, true))
            .await?;
        Ok(Response::new(pb::AbortTransportResponse {
            transport: Some(transport),
        }))
    }

    async fn pause_reading(
        &self,
        request: Request<pb::PauseReadingRequest>,
    ) -> Result<Response<pb::PauseReadingResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_set_reading(id, false))
            .await?;
        Ok(Response::new(pb::PauseReadingResponse {
            transport: Some(transport),
        }))
    }

    async fn resume_reading(
        &self,
        request: Request<pb::ResumeReadingRequest>,
    ) -> Result<Response<pb::ResumeReadingResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_set_reading(id, true))
            .await?;
        Ok(Response::new(pb::ResumeReadingResponse {
            transport: Some(transport),
        }))
    }

    async fn set_write_buffer_limits(
        &self,
        request: Request<pb::SetWriteBufferLimitsRequest>,
    ) -> Result<Response<pb::SetWriteBufferLimitsResponse>, Status> {
        let req = request.into_inner();
        let id = req.transport_id;
        let high = usize_mark("high", req.high)?;
        let low = usize_mark("low", req.low)?;
        let transport = self
            .on_loop(&req.r#loop, move |ctx| {
                ctx.net_set_write_buffer_limits(id, high, low)
            })
            .await?;
        Ok(Response::new(pb::SetWriteBufferLimitsResponse {
            transport: Some(transport),
        }))
    }

    async fn read_transport(
        &self,
        request: Request<Streaming<pb::ReadTransportRequest>>,
    ) -> Result<Response<Self::ReadTransportStream>, Status> {
        use pb::read_transport_request::Kind;
        let mut messages = request.into_inner();
        let open = match messages.message().await? {
            Some(pb::ReadTransportRequest {
                kind: Some(Kind::Open(open)),
            }) => open,
            _ => {
                return Err(Error::invalid(
                    "ReadTransportRequest",
                    "the first message must be `open`",
                )
                .into());
            }
        };
        let (id, from) = (open.transport_id, open.from_offset);
        let reader = self
            .on_loop(&open.r#loop, move |ctx| ctx.net_open_reader(id, from))
            .await?;
        Ok(Response::new(serve_read_rpc(
            reader,
            open.credit,
            messages,
            later_credit,
            self.daemon.shutdown.clone(),
        )))
    }

    async fn create_datagram_endpoint(
        &self,
        request: Request<pb::CreateDatagramEndpointRequest>,
    ) -> Result<Response<pb::CreateDatagramEndpointResponse>, Status> {
        let uid = caller_uid(&request);
        let req = request.into_inner();
        let options = datagram_options(&req)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let endpoint = shared
            .call_later(move |ctx, answer| ctx.net_create_endpoint(uid, options, answer))
            .await?;
        Ok(Response::new(pb::CreateDatagramEndpointResponse {
            endpoint: Some(endpoint),
        }))
    }

    async fn send_datagram(
        &self,
        request: Request<pb::SendDatagramRequest>,
    ) -> Result<Response<pb::SendDatagramResponse>, Status> {
        let req = request.into_inner();
        let to = datagram_destination(&req)?;
        let (id, data) = (req.endpoint_id, req.data);
        self.on_loop(&req.r#loop, move |ctx| ctx.net_send_datagram(id, &data, to))
            .await?;
        Ok(Response::new(pb::SendDatagramResponse {}))
    }

    async fn close_datagram_endpoint(
        &self,
        request: Request<pb::CloseDatagramEndpointRequest>,
    ) -> Result<Response<pb::CloseDatagramEndpointResponse>, Status> {
        let req = request.into_inner();
        let id = req.endpoint_id;
        let endpoint = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_close_endpoint(id))
            .await?;
        Ok(Response::new(pb::CloseDatagramEndpointResponse {
            endpoint: Some(endpoint),
        }))
    }

    async fn get_datagram_endpoint(
        &self,
        request: Request<pb::GetDatagramEndpointRequest>,
    ) -> Result<Response<pb::GetDatagramEndpointResponse>, Status> {
        let req = request.into_inner();
        let id = req.endpoint_id;
        let endpoint = self
            .on_loop(&req.r#loop, move |ctx| ctx.net_get_endpoint(id))
            .await?;
        Ok(Response::new(pb::GetDatagramEndpointResponse {
            endpoint: Some(endpoint),
        }))
    }

    async fn list_datagram_endpoints(
        &self,
        request: Request<pb::ListDatagramEndpointsRequest>,
    ) -> Result<Response<pb::ListDatagramEndpointsResponse>, Status> {
        let req = request.into_inner();
        let closed = req.include_closed;
        let (size, token) = (req.page_size, &req.page_token);
        let page = self.page("ListDatagramEndpoints", &req.r#loop, closed, size, token)?;
        let (endpoints, next) = self
            .on_loop(&req.r#loop, move |ctx| {
                Ok(ctx.net_list_endpoints(page, closed))
            })
            .await?;
        Ok(Response::new(pb::ListDatagramEndpointsResponse {
            endpoints,
            next_page_token: page.next_token(next),
        }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let req = request.into_inner();
        check_host("host", &req.host)?;
        let port = check_port("port", req.port, true)?;
        let family = match pb::AddressFamily::try_from(req.family) {
            Ok(pb::AddressFamily::Unspecified) => loopd::Family::Unspec,
            Ok(pb::AddressFamily::Inet) => loopd::Family::Inet,
            Ok(pb::AddressFamily::Inet6) => loopd::Family::Inet6,
            Err(_) => return Err(Error::invalid("family", req.family).into()),
        };
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let host = req.host;
        let addrs = shared
            .call_later(move |ctx, answer| ctx.net_resolve(host, port, family, answer))
            .await?;
        Ok(Response::new(pb::ResolveResponse { addresses: addrs }))
    }

    async fn reverse_resolve(
        &self,
        request: Request<pb::ReverseResolveRequest>,
    ) -> Result<Response<pb::ReverseResolveResponse>, Status> {
        let req = request.into_inner();
        let ip: IpAddr = req
            .ip
            .parse()
            .map_err(|_| Error::invalid("ip", format!("{:?} is not an IP address", req.ip)))?;
        let addr = SocketAddr::new(ip, check_port("port", req.port, true)?);
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let numeric = req.numeric_host;
        let (host, service) = shared
            .call_later(move |ctx, answer| ctx.net_reverse_resolve(addr, numeric, answer))
            .await?;
        Ok(Response::new(pb::ReverseResolveResponse { host, service }))
    }

    async fn sendfile(
        &self,
        request: Request<pb::SendfileRequest>,
    ) -> Result<Response<pb::SendfileResponse>, Status> {
        let req = request.into_inner();
        if req.path.is_empty() {
            return Err(Error::invalid("path", "empty").into());
        }
        if i64::try_from(req.offset).is_err() {
            let why = format!("{} (a file offset is at most {})", req.offset, i64::MAX);
            return Err(Error::invalid("offset", why).into());
        }
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let (id, path, offset, count) = (req.transport_id, req.path, req.offset, req.count);
        let fallback = req.fallback.unwrap_or(true);
        let bytes_sent = shared
            .call_later(move |ctx, answer| {
                ctx.net_sendfile(id, path, offset, count, fallback, answer);
            })
            .await?;
        Ok(Response::new(pb::SendfileResponse { bytes_sent }))
    }

    async fn start_tls(
        &self,
        request: Request<pb::StartTlsRequest>,
    ) -> Result<Response<pb::StartTlsResponse>, Status> {
        let req = request.into_inner();
        let spec = start_tls_spec(&req)?;
        let shared = self.daemon.registry.get(&req.r#loop)?;
        let id = req.transport_id;
        let transport = shared
            .call_later(move |ctx, answer| ctx.net_start_tls(id, spec, answer))
            .await?;
        Ok(Response::new(pb::StartTlsResponse {
            transport: Some(transport),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_or_names() {
        for good in ["127.0.0.1", "::1", "localhost", "a-b.example.org", "x_y"] {
            assert!(check_host("host", good).is_ok(), "{good}");
        }
        for bad in ["", "not a host!", "a..b", "-a", "é.org", &"a".repeat(254)] {
            let err = check_host("host", bad).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{bad}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn ports_and_windows_are_bounded() {
        assert_eq!(check_port("port", 0, true).unwrap(), 0);
        assert!(check_port("port", 0, false).is_err());
        assert!(
            check_port("port", 70000, true)
                .unwrap_err()
                .to_string()
                .contains("70000")
        );
        let limits = Limits::default();
        let spec = delivery(0, 0, 0, &limits).unwrap();
        assert_eq!(spec.stream_window, Some(limits.stream_window_bytes));
        let echo = delivery(pb::ServerProtocol::Echo as i32, 0, 0, &limits).unwrap();
        assert_eq!(echo.stream_window, None, "echo keeps no stream");
        let events_only = delivery(0, pb::Delivery::EventsOnly as i32, 0, &limits).unwrap();
        assert_eq!(events_only.stream_window, None);
        assert!(delivery(9, 0, 0, &limits).is_err());
        assert!(delivery(0, 0, u64::MAX, &limits).is_err());
    }

    #[test]
    fn datagram_paths_and_hosts_exclude_each_other() {
        let dest = |host: &str, port, path: &str| {
            datagram_destination(&pb::SendDatagramRequest {
                host: host.into(),
                port,
                path: path.into(),
                ..Default::default()
            })
        };
        assert!(matches!(dest("", 0, ""), Ok(None)));
        assert!(matches!(
            dest("", 0, "/tmp/p.sock"),
            Ok(Some(loopd::Address::Unix(Some(_))))
        ));
        assert!(matches!(
            dest("::1", 9, ""),
            Ok(Some(loopd::Address::Inet(_)))
        ));
        let cases = [
            (dest("127.0.0.1", 9, "/tmp/p.sock"), "path"),
            (dest("", 0, &"x".repeat(200)), "path"),
            (dest("nope", 9, ""), "host"),
        ];
        for (result, field) in cases {
            assert!(
                matches!(&result, Err(Error::Invalid { what, .. }) if *what == field),
                "{result:?}"
            );
        }
        let req = pb::CreateDatagramEndpointRequest {
            remote_path: "/tmp/r.sock".into(),
            remote_host: "127.0.0.1".into(),
            ..Default::default()
        };
        let err = datagram_options(&req).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    what: "remote_path",
                    ..
                }
            ),
            "{err}"
        );
        let req = pb::CreateDatagramEndpointRequest {
            local_path: "/tmp/l.sock".into(),
            ..Default::default()
        };
        let options = datagram_options(&req).unwrap();
        assert!(matches!(
            options.local_addr,
            Some(loopd::DatagramAddr::Unix(_))
        ));
        assert!(options.remote_addr.is_none());
    }

    #[test]
    fn unix_and_tcp_addresses_exclude_each_other() {
        let req = pb::CreateServerRequest {
            unix_path: "/tmp/x.sock".into(),
            port: 80,
            ..Default::default()
        };
        let err = server_spec(&req, &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("/tmp/x.sock"), "{err}");
        let tls = pb::CreateServerRequest {
            tls: Some(pb::TlsServerOptions::default()),
            ..Default::default()
        };
        let err = server_spec(&tls, &Limits::default()).unwrap_err();
        assert!(matches!(err, Error::Invalid { what: "tls", .. }), "{err}");
    }
}
