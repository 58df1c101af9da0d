//! TLS for stream transports, with rustls (ring provider): asyncio's `ssl=` arguments of
//! `create_server`, `create_unix_server`, `create_connection`, and `start_tls`.
//!
//! # Design
//! asyncio stacks an `SSLProtocol` between the socket transport and the user's protocol,
//! and hands the user a second transport object. loopd keeps one [`Transport`] and puts the
//! TLS layer *inside* it: a [`TlsSession`] (a `rustls::Connection`) sits between the socket
//! and the transport's buffers. Reads go socket -> rustls -> the loop's read buffer ->
//! `data_received`; writes go `write` -> the transport's write buffer (plaintext) ->
//! rustls -> socket. Every other part of the transport (the registry, the ready-queue
//! cells, flow control, the order of protocol calls, `connection_lost`) is shared with plain
//! transports. `start_tls` installs a session in a plain transport in place.
//!
//! # Invariants
//! - The protocol's `connection_made` runs only once the handshake completed; until then
//!   the transport reads (handshake records) but hands nothing to the protocol. A
//!   handshake that fails or times out never reaches the protocol: no `connection_made`,
//!   no `connection_lost`; the error goes to whoever waits (`create_connection`,
//!   `start_tls`), or, for a server's connection, to the loop's exception handler.
//! - The write buffer holds plaintext, and its size (`get_write_buffer_size`, the
//!   high/low-water marks) counts plaintext bytes not yet encrypted. Plaintext goes to
//!   rustls in chunks of at most [`ENCRYPT_CHUNK`] bytes, and only when rustls has sent
//!   everything it encrypted before, so rustls never holds more than one chunk.
//! - Plaintext that rustls decrypted is handed to the protocol before more ciphertext is
//!   read, so rustls' receive buffer stays bounded; a paused transport reads nothing, and
//!   the kernel's buffers carry the backpressure to the peer, as with plain sockets.
//! - Bytes a plain transport still had buffered when `start_tls` was called are sent, in
//!   clear, before the first TLS record.
//! - `close()` flushes, sends `close_notify`, flushes that, then closes the socket;
//!   `ssl_shutdown_timeout` bounds the whole, after which the transport is aborted and
//!   `connection_lost` gets a `TimedOut` error.
//!
//! # Unlike asyncio
//! - The configuration is a rustls one ([`TlsServerConfig`], [`TlsClientConfig`]), not an
//!   `ssl.SSLContext`; `start_tls`'s side follows from the configuration ([`TlsContext`])
//!   instead of a `server_side` flag.
//! - `write_eof` sends `close_notify` (a TLS half-close, which TLS 1.3 peers honour) and
//!   then shuts the socket's writing side; asyncio raises `NotImplementedError`.
//!   `can_write_eof()` is still `false`, as asyncio.
//! - The peer's `close_notify` is the protocol's `eof_received`, whose answer is honoured
//!   as on plain sockets (asyncio ignores it and closes). A TCP EOF *without*
//!   `close_notify` may be a truncation: `connection_lost` gets an `UnexpectedEof` error
//!   and `eof_received` is not called.
//! - `close()` does not wait for the peer's `close_notify` (TLS 1.3 does not require it).
//! - `server_hostname` cannot be empty: rustls always checks the name (asyncio's
//!   `server_hostname=''` turns the check off).
//! - `get_extra_info("cipher")` gives [`ExtraInfo::Cipher`] (rustls' suite name, e.g.
//!   `TLS13_AES_256_GCM_SHA384`, where OpenSSL says `TLS_AES_256_GCM_SHA384`),
//!   `"peercert"` the DER of the peer's end-entity certificate (asyncio's
//!   `getpeercert(binary_form=True)`); there is no `"ssl_object"` or `"sslcontext"`.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use socket2::Socket;

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::handle::TimerHandle;
use crate::net::server::ServerInner;
use crate::net::transport::{self, ExtraInfo};
use crate::net::{ConnectOptions, Protocol, ServerOptions, SharedProtocol, Transport};

/// asyncio's default `ssl_handshake_timeout`: 60 seconds.
pub const DEFAULT_SSL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// asyncio's default `ssl_shutdown_timeout`: 30 seconds.
pub const DEFAULT_SSL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most plaintext handed to rustls at once (four full TLS records).
pub(crate) const ENCRYPT_CHUNK: usize = 64 * 1024;

/// How errors name PEM given in memory.
const PEM_DATA: &str = "<pem data>";

fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS configuration (asyncio's server-side `ssl.SSLContext`): a cheap handle
/// to a shared `rustls::ServerConfig`.
#[derive(Clone)]
pub struct TlsServerConfig(Arc<ServerConfig>);

impl TlsServerConfig {
    /// Wraps a rustls configuration built by hand (client authentication, ALPN, ...).
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsServerConfig(config)
    }

    /// A configuration serving the certificate chain in `cert_pem` (end-entity first) with
    /// the private key in `key_pem` (PKCS#8, PKCS#1 or SEC1), TLS 1.2 and 1.3, no client
    /// authentication.
    ///
    /// Fails with [`Error::TlsConfig`] if either holds no usable PEM section or the key
    /// does not suit the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        Self::build(cert_pem, PEM_DATA, key_pem, PEM_DATA)
    }

    /// [`from_pem`](Self::from_pem) with the PEM read from files.
    ///
    /// Fails with [`Error::TlsConfig`] naming the file that cannot be read or parsed.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read_pem("certificate", cert)?;
        let key_pem = read_pem("private key", key)?;
        let (cert_origin, key_origin) = (cert.display().to_string(), key.display().to_string());
        Self::build(&cert_pem, &cert_origin, &key_pem, &key_origin)
    }

    fn build(cert_pem: &[u8], cert_origin: &str, key_pem: &[u8], key_origin: &str) -> Result<Self> {
        let certs = parse_certs(cert_pem, cert_origin)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|err| config_error("private key", key_origin, err))?;
        let config = ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| config_error("protocol versions", "ring provider", err))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| config_error("certificate and key", cert_origin, err))?;
        Ok(TlsServerConfig(Arc::new(config)))
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.0
    }
}

/// A client's TLS configuration (asyncio's client-side `ssl.SSLContext`): a cheap handle
/// to a shared `rustls::ClientConfig`.
#[derive(Clone)]
pub struct TlsClientConfig(Arc<ClientConfig>);

impl TlsClientConfig {
    /// Wraps a rustls configuration built by hand (client certificates, ALPN, ...).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsClientConfig(config)
    }

    /// A configuration trusting the CA certificates in `ca_pem` (and nothing else), TLS 1.2
    /// and 1.3, no client certificate.
    ///
    /// Fails with [`Error::TlsConfig`] if `ca_pem` holds no certificate, or one that is not
    /// a usable trust anchor.
    pub fn with_ca_pem(ca_pem: &[u8]) -> Result<Self> {
        Self::build(ca_pem, PEM_DATA)
    }

    /// [`with_ca_pem`](Self::with_ca_pem) with the PEM read from a file.
    ///
    /// Fails with [`Error::TlsConfig`] naming the file if it cannot be read or parsed.
    pub fn with_ca_pem_file(ca: impl AsRef<Path>) -> Result<Self> {
        let ca = ca.as_ref();
        Self::build(&read_pem("CA certificate", ca)?, &ca.display().to_string())
    }

    /// A configuration trusting the system's CA certificates, as asyncio's
    /// `ssl.create_default_context()`: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the
    /// platform's bundle (rustls-native-certs). Certificates that do not parse are
    /// skipped; the second value counts them.
    ///
    /// Fails with [`Error::TlsConfig`] if not one usable certificate is found.
    pub fn with_system_roots() -> Result<(Self, usize)> {
        let found = rustls_native_certs::load_native_certs();
        let origin = "the system's trust store";
        if found.certs.is_empty() {
            let why = found
                .errors
                .first()
                .map_or_else(|| "no certificate found".to_owned(), ToString::to_string);
            return Err(config_error("CA certificates", origin, why));
        }
        let mut roots = RootCertStore::empty();
        let (_, skipped) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(config_error("CA certificates", origin, "none is usable"));
        }
        Ok((Self::with_roots(roots)?, skipped))
    }

    fn build(ca_pem: &[u8], origin: &str) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in parse_certs(ca_pem, origin)? {
            roots
                .add(cert)
                .map_err(|err| config_error("CA certificate", origin, err))?;
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<Self> {
        let config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| config_error("protocol versions", "ring provider", err))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClientConfig(Arc::new(config)))
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.0
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsServerConfig { .. }")
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClientConfig { .. }")
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| config_error(what, &path.display().to_string(), err))
}

fn parse_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| config_error("certificate", origin, err))?;
    if certs.is_empty() {
        return Err(config_error(
            "certificate",
            origin,
            "no CERTIFICATE section",
        ));
    }
    Ok(certs)
}

fn config_error(what: &'static str, origin: &str, reason: impl fmt::Display) -> Error {
    Error::TlsConfig {
        what,
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

/// The configuration [`EventLoop::start_tls`] upgrades a transport with; its variant says
/// which side of the handshake this end takes (asyncio's `server_side`).
#[derive(Clone, Debug)]
pub enum TlsContext {
    /// Take the client's side: send the ClientHello, verify the server's certificate.
    Client(TlsClientConfig),
    /// Take the server's side.
    Server(TlsServerConfig),
}

impl From<TlsClientConfig> for TlsContext {
    fn from(config: TlsClientConfig) -> Self {
        TlsContext::Client(config)
    }
}

impl From<TlsServerConfig> for TlsContext {
    fn from(config: TlsServerConfig) -> Self {
        TlsContext::Server(config)
    }
}

/// Options of [`EventLoop::start_tls`], asyncio's keyword arguments.
#[derive(Clone, Debug, Default)]
pub struct StartTlsOptions {
    /// The name the server's certificate must match; required on the client's side,
    /// meaningless on the server's.
    pub server_hostname: Option<String>,
    /// How long the handshake may take (default [`DEFAULT_SSL_HANDSHAKE_TIMEOUT`]).
    pub ssl_handshake_timeout: Option<Duration>,
    /// How long `close()` may take to flush and send `close_notify` (default
    /// [`DEFAULT_SSL_SHUTDOWN_TIMEOUT`]).
    pub ssl_shutdown_timeout: Option<Duration>,
}

impl EventLoop {
    /// Upgrades the plain `transport` to TLS in place and resolves, once the handshake is
    /// done, to the transport to use from then on (asyncio's `loop.start_tls`; here it is
    /// the same transport). Later events go to `protocol`, whose `connection_made` is not
    /// called. Bytes already written are sent in clear before the handshake; bytes written
    /// during the handshake are encrypted after it. Reading is resumed for the handshake.
    /// The upgrade starts when this is called, not when the future is first polled, so it
    /// can be called from `data_received`.
    ///
    /// Fails with [`Error::TransportClosing`] if the transport is closing or the peer's
    /// EOF was read, [`Error::WriteAfterEof`] after `write_eof`,
    /// [`Error::InvalidArgument`] if it already uses TLS, if a client lacks
    /// `server_hostname` or gives an invalid one, or for a zero timeout;
    /// [`Error::TlsHandshake`] or [`Error::HandshakeTimeout`] if the handshake fails (the
    /// transport is then closed, without calling `protocol`).
    pub fn start_tls(
        &self,
        transport: &Transport,
        protocol: Rc<RefCell<dyn Protocol>>,
        ssl: impl Into<TlsContext>,
        options: StartTlsOptions,
    ) -> impl std::future::Future<Output = Result<Transport>> + 'static {
        let started = self.upgrade(transport, protocol, ssl.into(), options);
        let transport = transport.clone();
        async move {
            let waiter = started?;
            let mut guard = AbortOnDrop(Some(transport.clone()));
            let outcome = waiter.take().await;
            guard.0 = None;
            outcome??;
            Ok(transport)
        }
    }

    /// Whether [`EventLoop::start_tls`] would start with these arguments: the checks it
    /// makes before it touches the transport, with nothing changed. Fails as `start_tls`
    /// fails before its handshake. For a caller that writes clear bytes just before the
    /// upgrade and must not send them if the upgrade is refused.
    pub fn check_start_tls(
        &self,
        transport: &Transport,
        ssl: &TlsContext,
        options: &StartTlsOptions,
    ) -> Result<()> {
        self.prepare_upgrade(transport, ssl, options).map(drop)
    }

    /// The checks of an upgrade, and the TLS connection with its two timeouts.
    fn prepare_upgrade(
        &self,
        transport: &Transport,
        ssl: &TlsContext,
        options: &StartTlsOptions,
    ) -> Result<(rustls::Connection, Option<Duration>, Option<Duration>)> {
        self.check_open()?;
        transport.inner.check_upgradable()?;
        let handshake_timeout = positive("ssl_handshake_timeout", options.ssl_handshake_timeout)?;
        let shutdown_timeout = positive("ssl_shutdown_timeout", options.ssl_shutdown_timeout)?;
        let conn = match ssl {
            TlsContext::Client(config) => {
                let (name, shown) = server_name(options.server_hostname.as_deref(), None)?;
                client_connection(config, name, &shown)?
            }
            TlsContext::Server(config) => server_connection(config)?,
        };
        Ok((conn, handshake_timeout, shutdown_timeout))
    }

    fn upgrade(
        &self,
        transport: &Transport,
        protocol: Rc<RefCell<dyn Protocol>>,
        ssl: TlsContext,
        options: StartTlsOptions,
    ) -> Result<Future<Result<()>>> {
        let (conn, handshake_timeout, shutdown_timeout) =
            self.prepare_upgrade(transport, &ssl, &options)?;
        let peer = transport
            .peername()
            .map_or_else(|| "peer".to_string(), |p| p.to_string());
        let waiter = self.create_future::<Result<()>>()?;
        let session = TlsSession::new(
            conn,
            Handshake::new(peer, handshake_timeout, Some(waiter.clone()), false),
            shutdown_timeout,
        );
        transport.set_protocol(protocol);
        transport.inner.install_tls(self, session);
        Ok(waiter)
    }
}

/// Aborts a transport whose handshake nobody waits for any more (the awaiting task was
/// cancelled), as asyncio closes it.
struct AbortOnDrop(Option<Transport>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(transport) = self.0.take() {
            transport.abort();
        }
    }
}

/// `Some(timeout)` checked positive, or the default.
fn positive(what: &'static str, timeout: Option<Duration>) -> Result<Option<Duration>> {
    match timeout {
        Some(zero) if zero.is_zero() => Err(Error::InvalidArgument {
            what,
            value: format!("{zero:?}: should be a positive duration"),
        }),
        other => Ok(other),
    }
}

/// `server_hostname`, else the host connected to, as a rustls name and as shown in errors.
fn server_name(
    server_hostname: Option<&str>,
    host: Option<&str>,
) -> Result<(ServerName<'static>, String)> {
    let invalid = |value: String| Error::InvalidArgument {
        what: "server_hostname",
        value,
    };
    let Some(name) = server_hostname.or(host) else {
        return Err(invalid(
            "missing: it is required with ssl when there is no host (e.g. a unix socket)".into(),
        ));
    };
    if name.is_empty() {
        return Err(invalid(
            "empty: rustls always checks the server's name".into(),
        ));
    }
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let parsed = ServerName::try_from(bare.to_string())
        .map_err(|_| invalid(format!("{name:?}: not a DNS name or an IP address")))?;
    Ok((parsed, bare.to_string()))
}

fn client_connection(
    config: &TlsClientConfig,
    name: ServerName<'static>,
    shown: &str,
) -> Result<rustls::Connection> {
    let conn = ClientConnection::new(config.0.clone(), name)
        .map_err(|err| config_error("client configuration", shown, err))?;
    Ok(conn.into())
}

fn server_connection(config: &TlsServerConfig) -> Result<rustls::Connection> {
    let conn = ServerConnection::new(config.0.clone())
        .map_err(|err| config_error("server configuration", "server", err))?;
    Ok(conn.into())
}

fn only_with_ssl(what: &'static str, given: bool) -> Result<()> {
    if given {
        return Err(Error::InvalidArgument {
            what,
            value: "only meaningful with ssl".into(),
        });
    }
    Ok(())
}

// ---- starting TLS transports --------------------------------------------------------

/// The TLS side of a `create_connection`: checked before connecting, started after.
pub(crate) struct ClientTls {
    config: TlsClientConfig,
    name: ServerName<'static>,
    shown: String,
    handshake_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
}

impl ClientTls {
    /// The TLS settings of `options` for a connection to `host` (`None` for a Unix
    /// socket), checked as asyncio's `create_connection` does; `None` without `ssl`.
    pub(crate) fn from_options(
        options: &ConnectOptions,
        host: Option<&str>,
    ) -> Result<Option<Self>> {
        let Some(config) = options.ssl.clone() else {
            only_with_ssl("server_hostname", options.server_hostname.is_some())?;
            only_with_ssl(
                "ssl_handshake_timeout",
                options.ssl_handshake_timeout.is_some(),
            )?;
            only_with_ssl(
                "ssl_shutdown_timeout",
                options.ssl_shutdown_timeout.is_some(),
            )?;
            return Ok(None);
        };
        let (name, shown) = server_name(options.server_hostname.as_deref(), host)?;
        Ok(Some(ClientTls {
            config,
            name,
            shown,
            handshake_timeout: positive("ssl_handshake_timeout", options.ssl_handshake_timeout)?,
            shutdown_timeout: positive("ssl_shutdown_timeout", options.ssl_shutdown_timeout)?,
        }))
    }

    /// Starts a transport on the connected `socket` and waits for its handshake; the
    /// protocol's `connection_made` has run when this returns `Ok`.
    pub(crate) async fn start(
        self,
        lp: &EventLoop,
        socket: Socket,
        protocol: SharedProtocol,
    ) -> Result<Transport> {
        let peer = match socket.peer_addr().ok().and_then(|a| a.as_socket()) {
            Some(addr) => format!("{} ({addr})", self.shown),
            None => self.shown.clone(),
        };
        let conn = client_connection(&self.config, self.name, &self.shown)?;
        let waiter = lp.create_future::<Result<()>>()?;
        let handshake = Handshake::new(peer, self.handshake_timeout, Some(waiter.clone()), true);
        let session = TlsSession::new(conn, handshake, self.shutdown_timeout);
        let transport = transport::start_tls(lp, socket, protocol, None, session)?;
        let mut guard = AbortOnDrop(Some(transport.clone()));
        let outcome = waiter.take().await;
        guard.0 = None;
        outcome??;
        Ok(transport)
    }
}

/// The TLS side of a server: every accepted connection gets a session from it.
pub(crate) struct ServerTls {
    config: TlsServerConfig,
    handshake_timeout: Option<Duration>,
    shutdown_timeout: Option<Duration>,
}

impl ServerTls {
    /// The TLS settings of `options`, checked as asyncio's `create_server` does; `None`
    /// without `ssl`.
    pub(crate) fn from_options(options: &ServerOptions) -> Result<Option<Self>> {
        let Some(config) = options.ssl.clone() else {
            only_with_ssl(
                "ssl_handshake_timeout",
                options.ssl_handshake_timeout.is_some(),
            )?;
            only_with_ssl(
                "ssl_shutdown_timeout",
                options.ssl_shutdown_timeout.is_some(),
            )?;
            return Ok(None);
        };
        Ok(Some(ServerTls {
            config,
            handshake_timeout: positive("ssl_handshake_timeout", options.ssl_handshake_timeout)?,
            shutdown_timeout: positive("ssl_shutdown_timeout", options.ssl_shutdown_timeout)?,
        }))
    }

    /// Starts a transport on an accepted `socket`; its handshake failing goes to the
    /// exception handler.
    pub(crate) fn start(
        &self,
        lp: &EventLoop,
        socket: Socket,
        protocol: SharedProtocol,
        server: Weak<ServerInner>,
    ) -> Result<Transport> {
        let peer = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or_else(
                || "unix socket peer".to_string(),
                |a: SocketAddr| a.to_string(),
            );
        let conn = server_connection(&self.config)?;
        let handshake = Handshake::new(peer, self.handshake_timeout, None, true);
        let session = TlsSession::new(conn, handshake, self.shutdown_timeout);
        transport::start_tls(lp, socket, protocol, Some(server), session)
    }
}

// ---- the session inside a transport -------------------------------------------------

/// A handshake in progress.
pub(crate) struct Handshake {
    /// Shown in errors: the peer's address (and the server's name, on a client).
    pub(crate) peer: String,
    pub(crate) timeout: Duration,
    /// Told the outcome; `None` for a server's connections, whose failures go to the
    /// exception handler.
    pub(crate) waiter: Option<Future<Result<()>>>,
    /// Call the protocol's `connection_made` when done (not after `start_tls`).
    pub(crate) announce: bool,
    pub(crate) timer: Option<TimerHandle>,
}

impl Handshake {
    fn new(
        peer: String,
        timeout: Option<Duration>,
        waiter: Option<Future<Result<()>>>,
        announce: bool,
    ) -> Self {
        Handshake {
            peer,
            timeout: timeout.unwrap_or(DEFAULT_SSL_HANDSHAKE_TIMEOUT),
            waiter,
            announce,
            timer: None,
        }
    }

    /// Tells the waiter (if any) how the handshake ended, and stops the timer.
    pub(crate) fn finish(self, outcome: Result<()>) {
        if let Some(timer) = &self.timer {
            timer.cancel();
        }
        if let Some(waiter) = self.waiter {
            if !waiter.done() {
                let _ = waiter.set_result(outcome);
            }
        }
    }
}

/// What reading ciphertext from the socket gave.
pub(crate) enum Received {
    /// This many bytes were read and processed.
    Bytes(usize),
    /// The socket reached EOF (or the peer's `close_notify` was already processed).
    Eof,
    /// Nothing to read now.
    Blocked,
    /// The socket failed.
    Io(io::Error),
    /// The records were bad (or the handshake failed).
    Tls(rustls::Error),
}

/// What reading decrypted plaintext gave.
pub(crate) enum Plain {
    /// This many bytes were copied out.
    Data(usize),
    /// The peer sent `close_notify` and everything before it was read.
    Eof,
    /// The socket reached EOF without `close_notify`.
    Truncated(io::Error),
    /// Nothing decrypted is waiting.
    Empty,
}

/// Ciphertext read from the socket and not yet given to rustls. rustls reads at most 4 KiB
/// per `read_tls`; reading the socket through this buffer makes one `recv` per
/// [`INCOMING_SIZE`] bytes instead (asyncio's SSL protocol keeps a 256 KiB buffer).
#[derive(Default)]
struct Incoming {
    /// Allocated (and zeroed) once, on the first read.
    buffer: Vec<u8>,
    head: usize,
    end: usize,
}

/// Ciphertext read from the socket per `recv`.
const INCOMING_SIZE: usize = 64 * 1024;

impl Incoming {
    fn is_empty(&self) -> bool {
        self.head == self.end
    }

    fn unread(&self) -> &[u8] {
        &self.buffer[self.head..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.end);
    }

    /// Reads what the socket has (up to [`INCOMING_SIZE`]) into the emptied buffer.
    fn fill(&mut self, socket: &Socket) -> io::Result<usize> {
        self.buffer.resize(INCOMING_SIZE, 0);
        let n = loop {
            match SocketIo(socket).read(&mut self.buffer) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        (self.head, self.end) = (0, n);
        Ok(n)
    }
}

/// The TLS state of one transport: the rustls connection and what the transport needs to
/// drive it.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    incoming: Incoming,
    /// Cleartext a plain transport still had buffered at `start_tls`, sent first.
    clear: Vec<u8>,
    /// `Some` until the handshake is done.
    pub(crate) handshake: Option<Handshake>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) shutdown_timer: Option<TimerHandle>,
    close_notify_sent: bool,
    /// The socket's writing side was shut down after `close_notify` (`write_eof`).
    pub(crate) write_shut: bool,
}

impl TlsSession {
    fn new(conn: rustls::Connection, handshake: Handshake, shutdown: Option<Duration>) -> Self {
        TlsSession {
            conn,
            incoming: Incoming::default(),
            clear: Vec::new(),
            handshake: Some(handshake),
            shutdown_timeout: shutdown.unwrap_or(DEFAULT_SSL_SHUTDOWN_TIMEOUT),
            shutdown_timer: None,
            close_notify_sent: false,
            write_shut: false,
        }
    }

    /// Queues `clear` to go out, in clear, before any TLS record.
    pub(crate) fn send_clear_first(&mut self, clear: Vec<u8>) {
        self.clear = clear;
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.handshake.is_some()
    }

    /// The handshake is in progress for us but rustls finished it.
    pub(crate) fn handshake_completed(&self) -> bool {
        self.handshake.is_some() && !self.conn.is_handshaking()
    }

    /// Whether bytes (cleartext or TLS records) wait to be sent.
    pub(crate) fn wants_write(&self) -> bool {
        !self.clear.is_empty() || self.conn.wants_write()
    }

    /// Feeds rustls the next records, read from `socket` in large reads, and processes
    /// them.
    pub(crate) fn receive(&mut self, socket: &Socket) -> Received {
        if self.incoming.is_empty() {
            match self.incoming.fill(socket) {
                Ok(0) => {
                    let _ = self.conn.read_tls(&mut io::empty()); // rustls learns of the EOF
                    return Received::Eof;
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Received::Blocked,
                Err(err) => return Received::Io(err),
            }
        }
        match self.conn.read_tls(&mut self.incoming.unread()) {
            Ok(0) => Received::Eof, // after `close_notify` rustls reads nothing more
            Ok(n) => {
                self.incoming.consume(n);
                match self.conn.process_new_packets() {
                    Ok(_) => Received::Bytes(n),
                    Err(err) => Received::Tls(err),
                }
            }
            Err(err) => Received::Io(err),
        }
    }

    /// Copies decrypted plaintext into `buffer`.
    pub(crate) fn plaintext(&mut self, buffer: &mut [u8]) -> Plain {
        match self.conn.reader().read(buffer) {
            Ok(0) => Plain::Eof,
            Ok(n) => Plain::Data(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Plain::Empty,
            Err(err) => Plain::Truncated(err),
        }
    }

    /// Encrypts a prefix of `data` (at most [`ENCRYPT_CHUNK`] bytes) if rustls has sent
    /// all it encrypted before; returns how many bytes it took.
    pub(crate) fn encrypt(&mut self, data: &[u8]) -> usize {
        if self.wants_write() || self.handshake.is_some() {
            return 0;
        }
        let chunk = &data[..data.len().min(ENCRYPT_CHUNK)];
        self.conn.writer().write(chunk).unwrap_or(0)
    }

    /// Sends `close_notify` once; `true` if it was queued now.
    pub(crate) fn close_notify(&mut self) -> bool {
        if std::mem::replace(&mut self.close_notify_sent, true) {
            return false;
        }
        self.conn.send_close_notify();
        true
    }

    pub(crate) fn close_notify_sent(&self) -> bool {
        self.close_notify_sent
    }

    /// Sends queued cleartext, then TLS records, until done (`Ok(true)`) or the socket
    /// is full (`Ok(false)`); returns the bytes sent too.
    pub(crate) fn flush(&mut self, socket: &Socket) -> io::Result<bool> {
        while !self.clear.is_empty() {
            match SocketIo(socket).write(&self.clear) {
                Ok(n) => drop(self.clear.drain(..n)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut SocketIo(socket)) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Stops the handshake and shutdown timers (the transport is going away).
    pub(crate) fn cancel_timers(&mut self) {
        if let Some(timer) = self.shutdown_timer.take() {
            timer.cancel();
        }
        if let Some(timer) = self.handshake.as_mut().and_then(|h| h.timer.take()) {
            timer.cancel();
        }
    }

    /// `get_extra_info("cipher")`: the negotiated suite, once the handshake is done.
    pub(crate) fn cipher(&self) -> Option<ExtraInfo> {
        let suite = self.conn.negotiated_cipher_suite()?;
        let name = format!("{:?}", suite.suite());
        let protocol = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            other => format!("{other:?}"),
        };
        Some(ExtraInfo::Cipher {
            secret_bits: secret_bits(&name),
            name,
            protocol,
        })
    }

    /// `get_extra_info("peercert")`: the peer's end-entity certificate, DER-encoded.
    pub(crate) fn peer_certificate(&self) -> Option<ExtraInfo> {
        let chain = self.conn.peer_certificates()?;
        chain.first().map(|cert| ExtraInfo::PeerCert(cert.to_vec()))
    }
}

/// The key size of a suite, from its name (what OpenSSL's `cipher()` gives third).
fn secret_bits(suite: &str) -> u16 {
    if suite.contains("AES_128") {
        128
    } else if suite.contains("AES_256") || suite.contains("CHACHA20") {
        256
    } else {
        0
    }
}

/// A socket as rustls reads and writes it: sends never raise `SIGPIPE`.
struct SocketIo<'a>(&'a Socket);

impl Read for SocketIo<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        (&mut &*self.0).read(buffer)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.send_with_flags(data, libc::MSG_NOSIGNAL)
    }

    fn write_vectored(&mut self, data: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send_vectored_with_flags(data, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_asyncio_rules() {
        // (server_hostname, host) -> name used, or the error's message
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Result<&'static str, &'static str>,
        );
        let cases: [Case; 6] = [
            (None, Some("localhost"), Ok("localhost")),
            (Some("example.test"), Some("127.0.0.1"), Ok("example.test")),
            (None, Some("[::1]"), Ok("::1")),
            (
                None,
                None,
                Err(
                    "invalid server_hostname: missing: it is required with ssl when there \
                     is no host (e.g. a unix socket)",
                ),
            ),
            (
                Some(""),
                Some("localhost"),
                Err("invalid server_hostname: empty: rustls always checks the server's name"),
            ),
            (
                Some("bad name!"),
                None,
                Err("invalid server_hostname: \"bad name!\": not a DNS name or an IP address"),
            ),
        ];
        for (hostname, host, expected) in cases {
            let got = server_name(hostname, host)
                .map(|(_, shown)| shown)
                .map_err(|err| err.to_string());
            assert_eq!(
                got.as_deref().map_err(String::as_str),
                expected,
                "{hostname:?}, {host:?}"
            );
        }
    }

    #[test]
    fn timeouts_must_be_positive_and_need_ssl() {
        assert!(positive("t", Some(Duration::ZERO)).is_err());
        assert_eq!(positive("t", None).unwrap(), None);
        let options = ConnectOptions {
            ssl_handshake_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let err = ClientTls::from_options(&options, Some("h")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid ssl_handshake_timeout: only meaningful with ssl"
        );
        let options = ServerOptions {
            ssl_shutdown_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let err = ServerTls::from_options(&options).err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid ssl_shutdown_timeout: only meaningful with ssl"
        );
    }

    #[test]
    fn secret_bits_come_from_the_suite_name() {
        let cases = [
            ("TLS13_AES_128_GCM_SHA256", 128),
            ("TLS13_AES_256_GCM_SHA384", 256),
            ("TLS13_CHACHA20_POLY1305_SHA256", 256),
            ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 128),
            ("SOMETHING_ELSE", 0),
        ];
        for (name, bits) in cases {
            assert_eq!(secret_bits(name), bits, "{name}");
        }
    }

    #[test]
    fn bad_pem_is_a_config_error_naming_its_origin() {
        let err = TlsClientConfig::with_ca_pem(b"not pem").err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot load tls certificate from <pem data>: no CERTIFICATE section"
        );
        let err = TlsServerConfig::from_pem_files("/no/such/cert.pem", "/no/such/key.pem")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot load tls certificate from /no/such/cert.pem: "),
            "{err}"
        );
    }
}
