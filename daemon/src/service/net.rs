//! NetService: servers, connections and their transports, run on the owning loop's
//! thread (see `crate::net`); transport bytes read losslessly through `ReadTransport`.
//!
//! # Invariants
//! - Addresses, ports, enums and windows are validated here, before the hand-off.
//! - What the engine does not have yet (TLS, Happy Eyeballs, datagram endpoints,
//!   getaddrinfo/getnameinfo, sendfile) answers UNIMPLEMENTED naming it; nothing is
//!   pretended.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use loopd::{ConnectOptions, ServerOptions};
use loopd_proto::NetService;
use loopd_proto::pb;
use tonic::{Request, Response, Status, Streaming};

use super::{Api, caller_uid, non_negative};
use crate::bytestream::{CreditedRead, serve_credited};
use crate::config::Limits;
use crate::net::{Behaviour, Bind, Connect, DeliverySpec, ServerSpec};
use crate::status::{Error, Result};

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ByteChunk, Status>> + Send>>;

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
    if path.len() > MAX_UNIX_PATH || path.contains('\0') {
        return Err(Error::invalid(
            "unix_path",
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

fn server_spec(req: &pb::CreateServerRequest, limits: &Limits) -> Result<ServerSpec> {
    if req.tls.is_some() {
        return Err(Error::Unimplemented("TLS (create_server's ssl)"));
    }
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
    let options = ServerOptions {
        backlog: if req.backlog == 0 { 100 } else { req.backlog },
        reuse_address: req.reuse_address.unwrap_or(true),
        reuse_port: req.reuse_port,
        start_serving: req.start_serving.unwrap_or(true),
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
    if req.tls.is_some() {
        return Err(Error::Unimplemented("TLS (create_connection's ssl)"));
    }
    if req.happy_eyeballs_delay.is_some() || req.interleave != 0 {
        return Err(Error::Unimplemented(
            "Happy Eyeballs (happy_eyeballs_delay, interleave)",
        ));
    }
    if !req.unix_path.is_empty() {
        if !req.host.is_empty() || req.port != 0 || !req.local_host.is_empty() {
            return Err(Error::invalid(
                "unix_path",
                format!("{:?} together with host, port or local_host", req.unix_path),
            ));
        }
        let path = check_unix_path(&req.unix_path)?;
        return Ok((Connect::Unix(path.clone()), path));
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
            ..ConnectOptions::default()
        },
    };
    Ok((target, shown))
}

fn usize_mark(what: &'static str, mark: Option<u64>) -> Result<Option<usize>> {
    mark.map(|m| usize::try_from(m).map_err(|_| Error::invalid(what, m)))
        .transpose()
}

/// The credits of a ReadTransport call after its `open`: each `credit` message's bytes.
fn credits(
    first: u64,
    rest: Streaming<pb::ReadTransportRequest>,
) -> Pin<Box<dyn Stream<Item = Result<u64, Status>> + Send>> {
    use pb::read_transport_request::Kind;
    let later = rest.map(|msg| match msg?.kind {
        Some(Kind::Credit(credit)) => Ok(credit.bytes),
        Some(Kind::Open(_)) => {
            Err(Error::invalid("ReadTransportRequest", "a second `open`").into())
        }
        None => Ok(0),
    });
    Box::pin(futures_util::stream::once(async move { Ok(first) }).chain(later))
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
        let servers = self
            .on_loop(&req.r#loop, |ctx| Ok(ctx.net_list_servers()))
            .await?;
        Ok(Response::new(pb::ListServersResponse { servers }))
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
        let transports = self
            .on_loop(&req.r#loop, move |ctx| {
                Ok(ctx.net_list_transports(server_id, closed))
            })
            .await?;
        Ok(Response::new(pb::ListTransportsResponse { transports }))
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
        let chunks = serve_credited(CreditedRead {
            reader,
            credits: credits(open.credit, messages),
            shutdown: self.daemon.shutdown.clone(),
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn create_datagram_endpoint(
        &self,
        _request: Request<pb::CreateDatagramEndpointRequest>,
    ) -> Result<Response<pb::CreateDatagramEndpointResponse>, Status> {
        Err(Error::Unimplemented("create_datagram_endpoint (UDP)").into())
    }

    async fn send_datagram(
        &self,
        _request: Request<pb::SendDatagramRequest>,
    ) -> Result<Response<pb::SendDatagramResponse>, Status> {
        Err(Error::Unimplemented("create_datagram_endpoint (UDP)").into())
    }

    async fn close_datagram_endpoint(
        &self,
        _request: Request<pb::CloseDatagramEndpointRequest>,
    ) -> Result<Response<pb::CloseDatagramEndpointResponse>, Status> {
        Err(Error::Unimplemented("create_datagram_endpoint (UDP)").into())
    }

    async fn resolve(
        &self,
        _request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        Err(Error::Unimplemented("getaddrinfo").into())
    }

    async fn reverse_resolve(
        &self,
        _request: Request<pb::ReverseResolveRequest>,
    ) -> Result<Response<pb::ReverseResolveResponse>, Status> {
        Err(Error::Unimplemented("getnameinfo").into())
    }

    async fn sendfile(
        &self,
        _request: Request<pb::SendfileRequest>,
    ) -> Result<Response<pb::SendfileResponse>, Status> {
        Err(Error::Unimplemented("sendfile").into())
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
        assert!(matches!(
            server_spec(&tls, &Limits::default()),
            Err(Error::Unimplemented(_))
        ));
    }
}
