//! [`Server`]: listening sockets accepting connections into transports, as asyncio's
//! `Server` (from `create_server` and `create_unix_server`).
//!
//! # Invariants
//! - Sockets are bound when the server is made and listen from `start_serving` on (as
//!   asyncio: a server made with `start_serving: false` refuses connections until then).
//! - While serving, each listening socket is registered (readable, edge-triggered); an
//!   accept callback accepts until `EAGAIN`, at most `backlog` connections per call, and
//!   queues itself again when it stopped at that bound.
//! - `close()` stops listening at once and leaves accepted connections open. The waiters
//!   of `wait_closed` are woken when the server is closed *and* its last connection is
//!   lost; after that `wait_closed` returns at once.
//! - The loop owns a server from its creation until `close()`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::Socket;

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, IoDispatch};
use crate::exception::ExceptionContext;
use crate::future::Future;
use crate::handle::{RepeatingCell, Runnable, cancel_cell};
use crate::net::socket::{self, BindOptions};
use crate::net::tls::{ServerTls, TlsServerConfig};
use crate::net::{Address, Protocol, ProtocolFactory, SharedProtocol, transport};

/// Which interfaces [`EventLoop::create_server`] binds: asyncio's `host` argument, which is
/// one name, a list of names, or `None` for all interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hosts {
    /// Every interface (`0.0.0.0` and `::`); also what an empty name means.
    All,
    /// These hosts (IP literals or names), each bound on every address it resolves to.
    Names(Vec<String>),
}

impl From<&str> for Hosts {
    fn from(host: &str) -> Self {
        Hosts::Names(vec![host.to_string()])
    }
}

impl From<String> for Hosts {
    fn from(host: String) -> Self {
        Hosts::Names(vec![host])
    }
}

impl From<Option<&str>> for Hosts {
    fn from(host: Option<&str>) -> Self {
        host.map_or(Hosts::All, Hosts::from)
    }
}

impl From<&[&str]> for Hosts {
    fn from(hosts: &[&str]) -> Self {
        Hosts::Names(hosts.iter().map(|h| h.to_string()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for Hosts {
    fn from(hosts: [&str; N]) -> Self {
        Hosts::from(&hosts[..])
    }
}

impl From<Vec<String>> for Hosts {
    fn from(hosts: Vec<String>) -> Self {
        Hosts::Names(hosts)
    }
}

/// Options of [`EventLoop::create_server`] and [`EventLoop::create_unix_server`], with
/// asyncio's defaults.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The `listen()` backlog, and the most connections accepted per readiness event
    /// (default 100).
    pub backlog: u32,
    /// `SO_REUSEADDR` (default `true`, as asyncio on Unix). TCP only.
    pub reuse_address: bool,
    /// `SO_REUSEPORT`: several sockets may bind the same port (default `false`). TCP only.
    pub reuse_port: bool,
    /// Start accepting at once (default `true`); else call
    /// [`Server::start_serving`] or [`Server::serve_forever`].
    pub start_serving: bool,
    /// Speak TLS on every connection with this configuration (asyncio's `ssl`): a
    /// protocol's `connection_made` runs once its handshake is done; a failed handshake
    /// goes to the exception handler and the connection is dropped.
    pub ssl: Option<TlsServerConfig>,
    /// How long each TLS handshake may take (default 60 s). Only with `ssl`.
    pub ssl_handshake_timeout: Option<Duration>,
    /// How long a TLS transport's `close()` may take (default 30 s). Only with `ssl`.
    pub ssl_shutdown_timeout: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            backlog: 100,
            reuse_address: true,
            reuse_port: false,
            start_serving: true,
            ssl: None,
            ssl_handshake_timeout: None,
            ssl_shutdown_timeout: None,
        }
    }
}

/// asyncio's `Server`: listening sockets that turn connections into transports.
///
/// A cheap handle (`Rc`); clones share the server. The loop keeps the server running until
/// [`close`](Self::close) even if every handle is dropped.
#[derive(Clone)]
pub struct Server {
    inner: Rc<ServerInner>,
}

pub(crate) struct ServerInner {
    id: u64,
    core: Weak<Core>,
    factory: ProtocolFactory,
    backlog: u32,
    /// `None` once closed (asyncio's `_sockets = None`).
    listeners: RefCell<Option<Vec<Listener>>>,
    serving: Cell<bool>,
    /// Connections accepted and not yet lost.
    active: Cell<usize>,
    /// `None` once woken: later `wait_closed` calls return at once.
    waiters: RefCell<Option<Vec<Future<()>>>>,
    serve_forever: RefCell<Option<Future<()>>>,
    /// A Unix server's socket file, removed on close if it is still ours.
    unix_file: RefCell<Option<UnixFile>>,
    /// The TLS every connection speaks, if any.
    tls: Option<ServerTls>,
}

/// A socket file and its identity, so closing never removes someone else's file.
struct UnixFile {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl UnixFile {
    fn of(path: &Path) -> Option<UnixFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(UnixFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the file if it is still the one the server bound (asyncio 3.13's
    /// `cleanup_socket`).
    fn remove(self) {
        let same =
            UnixFile::of(&self.path).is_some_and(|now| (now.dev, now.ino) == (self.dev, self.ino));
        if same {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::debug!(target: "loopd", "removing {}: {err}", self.path.display());
            }
        }
    }
}

struct Listener {
    socket: Socket,
    address: Address,
    token: Option<Token>,
    accept: Rc<dyn Runnable>,
    queued: Rc<Cell<bool>>,
}

impl EventLoop {
    /// Creates a TCP server (asyncio's `loop.create_server`): binds a socket for every
    /// address of `host` (see [`Hosts`]; with port 0 each gets its own free port), and
    /// unless `options.start_serving` is off, starts accepting. Each connection gets a
    /// protocol from `factory` and a [`Transport`](crate::Transport) with TCP_NODELAY on.
    ///
    /// Fails with [`Error::AddressInUse`] or [`Error::Bind`] naming the address (sockets
    /// bound so far are closed), [`Error::Resolve`] for a name that does not resolve,
    /// [`Error::Closed`] if the loop is closed.
    ///
    /// # Examples
    /// ```
    /// use loopd::{EventLoop, Protocol, ServerOptions};
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let server = lp
    ///     .run_until_complete(lp.create_server(|| Quiet, "127.0.0.1", 0, ServerOptions::default()))
    ///     .unwrap()
    ///     .unwrap();
    /// assert!(server.is_serving());
    /// assert_eq!(server.sockets().len(), 1);
    /// server.close();
    /// ```
    pub fn create_server<P, F>(
        &self,
        factory: F,
        host: impl Into<Hosts>,
        port: u16,
        options: ServerOptions,
    ) -> impl std::future::Future<Output = Result<Server>> + 'static
    where
        P: Protocol + 'static,
        F: Fn() -> P + 'static,
    {
        let lp = self.clone();
        let hosts = host.into();
        async move {
            lp.check_open()?;
            let bind = BindOptions {
                reuse_address: options.reuse_address,
                reuse_port: options.reuse_port,
            };
            let mut sockets = Vec::new();
            for addr in resolve_hosts(&lp, &hosts, port).await? {
                sockets.extend(socket::bind_tcp(addr, &bind)?);
            }
            if sockets.is_empty() {
                return Err(Error::InvalidArgument {
                    what: "host",
                    value: format!("{hosts:?}: no address family is supported"),
                });
            }
            Server::new(&lp, sockets, erase(factory), &options)
        }
    }

    /// Creates a Unix stream server at `path` (asyncio's `loop.create_unix_server`). A
    /// stale socket file at `path` is replaced, and the file is removed when the server
    /// closes if it is still the one bound (asyncio 3.13's `cleanup_socket`).
    /// `reuse_address`/`reuse_port` do not apply.
    ///
    /// Fails with [`Error::AddressInUse`] or [`Error::Bind`] naming the path (e.g. its
    /// directory does not exist), [`Error::Closed`] if the loop is closed.
    pub fn create_unix_server<P, F>(
        &self,
        factory: F,
        path: impl AsRef<Path>,
        options: ServerOptions,
    ) -> impl std::future::Future<Output = Result<Server>> + 'static
    where
        P: Protocol + 'static,
        F: Fn() -> P + 'static,
    {
        let lp = self.clone();
        let path = path.as_ref().to_path_buf();
        async move {
            lp.check_open()?;
            let socket = socket::bind_unix(&path)?;
            let server = Server::new(&lp, vec![socket], erase(factory), &options)?;
            *server.inner.unix_file.borrow_mut() = UnixFile::of(&path);
            Ok(server)
        }
    }
}

fn erase<P: Protocol + 'static>(factory: impl Fn() -> P + 'static) -> ProtocolFactory {
    Rc::new(move || Rc::new(RefCell::new(factory())) as SharedProtocol)
}

async fn resolve_hosts(
    lp: &EventLoop,
    hosts: &Hosts,
    port: u16,
) -> Result<Vec<std::net::SocketAddr>> {
    let names = match hosts {
        Hosts::All => return socket::resolve(lp, None, port).await,
        Hosts::Names(names) => names,
    };
    let mut addrs = Vec::new();
    for name in names {
        for addr in socket::resolve(lp, Some(name), port).await? {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    Ok(addrs)
}

impl Server {
    fn new(
        lp: &EventLoop,
        sockets: Vec<Socket>,
        factory: ProtocolFactory,
        options: &ServerOptions,
    ) -> Result<Server> {
        let tls = ServerTls::from_options(options)?;
        let inner = Rc::new_cyclic(|weak: &Weak<ServerInner>| {
            let listeners = sockets
                .into_iter()
                .enumerate()
                .map(|(index, socket)| Listener::new(weak.clone(), index, socket))
                .collect();
            ServerInner {
                id: lp.core.net.next_id(),
                core: Rc::downgrade(&lp.core),
                factory,
                backlog: options.backlog,
                listeners: RefCell::new(Some(listeners)),
                serving: Cell::new(false),
                active: Cell::new(0),
                waiters: RefCell::new(Some(Vec::new())),
                serve_forever: RefCell::new(None),
                unix_file: RefCell::new(None),
                tls,
            }
        });
        lp.core
            .net
            .servers
            .borrow_mut()
            .insert(inner.id, inner.clone());
        let server = Server { inner };
        if options.start_serving {
            if let Err(err) = server.start_serving() {
                server.close();
                return Err(err);
            }
        }
        Ok(server)
    }

    /// Stops listening: the sockets are closed, accepted connections stay open (asyncio's
    /// `Server.close`). A running [`serve_forever`](Self::serve_forever) ends. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether the server accepts connections.
    pub fn is_serving(&self) -> bool {
        self.inner.serving.get()
    }

    /// Starts accepting connections (a no-op if already serving).
    ///
    /// Fails with [`Error::ServerClosed`] after [`close`](Self::close), and with
    /// [`Error::Io`]/[`Error::Register`] if `listen` or the poll refuses a socket.
    pub fn start_serving(&self) -> Result<()> {
        self.inner.start_serving()
    }

    /// Starts serving and waits until the server is closed; then waits for its connections
    /// to end, as asyncio's `serve_forever`, and gives `Err(Error::Cancelled)` (asyncio
    /// raises `CancelledError`). Dropping the future (cancelling the task awaiting it)
    /// closes the server.
    ///
    /// Fails with [`Error::AlreadyServingForever`] if another `serve_forever` of this server
    /// is running, [`Error::ServerClosed`] if the server is closed.
    pub fn serve_forever(&self) -> impl std::future::Future<Output = Result<()>> + 'static {
        let inner = self.inner.clone();
        async move {
            if inner.serve_forever.borrow().is_some() {
                return Err(Error::AlreadyServingForever);
            }
            if inner.listeners.borrow().is_none() {
                return Err(Error::ServerClosed);
            }
            inner.start_serving()?;
            let lp = inner.event_loop().ok_or(Error::Closed)?;
            let forever = lp.create_future::<()>()?;
            *inner.serve_forever.borrow_mut() = Some(forever.clone());
            let mut guard = CloseOnDrop {
                inner: inner.clone(),
                armed: true,
            };
            let outcome = forever.await;
            guard.armed = false;
            inner.serve_forever.borrow_mut().take();
            inner.wait_closed().await?;
            outcome
        }
    }

    /// Waits until the server is closed and every connection it accepted is lost (asyncio
    /// 3.12.1's `wait_closed`); returns at once if that already happened.
    ///
    /// Fails with [`Error::Closed`] if the loop is closed.
    pub fn wait_closed(&self) -> impl std::future::Future<Output = Result<()>> + 'static {
        let inner = self.inner.clone();
        async move { inner.wait_closed().await }
    }

    /// The local addresses of the listening sockets (asyncio's `sockets`, which lists the
    /// socket objects); empty once closed.
    pub fn sockets(&self) -> Vec<Address> {
        match &*self.inner.listeners.borrow() {
            Some(listeners) => listeners.iter().map(|l| l.address.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// The loop this server belongs to. Fails with [`Error::Closed`] if it was dropped.
    pub fn get_loop(&self) -> Result<EventLoop> {
        self.inner.event_loop().ok_or(Error::Closed)
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("sockets", &self.sockets())
            .field("serving", &self.is_serving())
            .field("connections", &self.inner.active.get())
            .finish()
    }
}

/// Closes the server if `serve_forever` is dropped before it returns.
struct CloseOnDrop {
    inner: Rc<ServerInner>,
    armed: bool,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.inner.serve_forever.borrow_mut().take();
            self.inner.close();
        }
    }
}

impl Listener {
    fn new(server: Weak<ServerInner>, index: usize, socket: Socket) -> Listener {
        let address = socket
            .local_addr()
            .map(|a| Address::of(&a))
            .unwrap_or(Address::Unix(None));
        let queued = Rc::new(Cell::new(false));
        let flag = queued.clone();
        let accept = RepeatingCell::new_rc(move || {
            flag.set(false);
            if let Some(server) = server.upgrade() {
                server.accept_ready(index);
            }
        });
        Listener {
            socket,
            address,
            token: None,
            accept,
            queued,
        }
    }

    fn queue(&self, lp: &EventLoop) {
        if !self.queued.replace(true) {
            lp.push_ready(self.accept.clone());
        }
    }
}

impl ServerInner {
    fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }

    fn start_serving(self: &Rc<Self>) -> Result<()> {
        let lp = self.event_loop().ok_or(Error::Closed)?;
        lp.check_open()?;
        let mut listeners = self.listeners.borrow_mut();
        let Some(listeners) = listeners.as_mut() else {
            return Err(Error::ServerClosed);
        };
        if self.serving.replace(true) {
            return Ok(());
        }
        let backlog = i32::try_from(self.backlog).unwrap_or(i32::MAX);
        for (index, listener) in listeners.iter_mut().enumerate() {
            listener
                .socket
                .listen(backlog)
                .map_err(Error::io("listen"))?;
            let fd = listener.socket.as_raw_fd();
            let weak = Rc::downgrade(self);
            let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, _| {
                if let Some(server) = weak.upgrade() {
                    server.queue_accept(lp, index);
                }
            });
            let token = lp
                .register_source(&mut SourceFd(&fd), Interest::READABLE, dispatch)
                .map_err(|source| Error::Register { fd, source })?;
            listener.token = Some(token);
        }
        Ok(())
    }

    fn queue_accept(&self, lp: &EventLoop, index: usize) {
        if let Some(listener) = self.listeners.borrow().as_ref().and_then(|l| l.get(index)) {
            listener.queue(lp);
        }
    }

    /// Accepts up to `backlog` connections (asyncio's `_accept_connection`).
    fn accept_ready(self: &Rc<Self>, index: usize) {
        let Some(lp) = self.event_loop() else { return };
        for _ in 0..self.backlog.max(1) {
            let accepted = match self.listeners.borrow().as_ref().and_then(|l| l.get(index)) {
                Some(listener) => listener.socket.accept(),
                None => return, // closed meanwhile
            };
            match accepted {
                Ok((socket, _)) => {
                    let accepted = &lp.core.net.counters.accepted;
                    accepted.set(accepted.get() + 1);
                    self.start_connection(&lp, socket)
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(err) => return self.accept_failed(&lp, index, err),
            }
        }
        self.queue_accept(&lp, index); // more may be waiting: no new edge will say so
    }

    fn start_connection(self: &Rc<Self>, lp: &EventLoop, socket: Socket) {
        if let Err(err) = socket.set_nonblocking(true) {
            tracing::debug!(target: "loopd", "accepted socket: {err}");
            return;
        }
        let protocol = (self.factory)();
        let server = Some(Rc::downgrade(self));
        let started = match &self.tls {
            Some(tls) => tls.start(lp, socket, protocol, Rc::downgrade(self)),
            None => transport::start(lp, socket, protocol, server, None),
        };
        if let Err(err) = started {
            lp.call_exception_handler(
                ExceptionContext::new("error on transport creation for incoming connection")
                    .with_error(err),
            );
        }
    }

    /// Out of fds or memory: report it and try again in a second, as asyncio does.
    fn accept_failed(self: &Rc<Self>, lp: &EventLoop, index: usize, err: io::Error) {
        lp.call_exception_handler(
            ExceptionContext::new("socket.accept() out of system resource").with_error(err),
        );
        let weak = Rc::downgrade(self);
        let retry = lp.call_later(Duration::from_secs(1), move || {
            if let (Some(server), Ok(lp)) = (weak.upgrade(), crate::get_running_loop()) {
                server.queue_accept(&lp, index);
            }
        });
        if retry.is_err() {
            // The loop is closed.
        }
    }

    pub(crate) fn attach(&self) {
        self.active.set(self.active.get() + 1);
    }

    pub(crate) fn detach(&self) {
        let active = self.active.get().saturating_sub(1);
        self.active.set(active);
        if active == 0 && self.listeners.borrow().is_none() {
            self.wakeup();
        }
    }

    fn close(&self) {
        let Some(listeners) = self.listeners.borrow_mut().take() else {
            return;
        };
        self.serving.set(false);
        let lp = self.event_loop();
        for listener in &listeners {
            listener.stop(lp.as_ref());
        }
        let forever = self.serve_forever.borrow_mut().take();
        if let Some(forever) = forever {
            forever.cancel();
        }
        if self.active.get() == 0 {
            self.wakeup();
        }
        let entry = lp.and_then(|lp| lp.core.net.servers.borrow_mut().remove(&self.id));
        drop((listeners, entry));
        if let Some(file) = self.unix_file.borrow_mut().take() {
            file.remove();
        }
    }

    /// Stops listening without touching futures (the loop is closing).
    pub(crate) fn release(&self) {
        let listeners = self.listeners.borrow_mut().take();
        self.serving.set(false);
        let lp = self.event_loop();
        for listener in listeners.iter().flatten() {
            listener.stop(lp.as_ref());
        }
        drop(listeners);
        if let Some(file) = self.unix_file.borrow_mut().take() {
            file.remove();
        }
    }

    fn wakeup(&self) {
        let waiters = self.waiters.borrow_mut().take();
        for waiter in waiters.into_iter().flatten() {
            if !waiter.done() {
                let _ = waiter.set_result(());
            }
        }
    }

    async fn wait_closed(&self) -> Result<()> {
        let waiter = {
            let mut waiters = self.waiters.borrow_mut();
            let Some(waiters) = waiters.as_mut() else {
                return Ok(());
            };
            let lp = self.event_loop().ok_or(Error::Closed)?;
            let waiter = lp.create_future::<()>()?;
            waiters.push(waiter.clone());
            waiter
        };
        waiter.await
    }
}

impl Listener {
    fn stop(&self, lp: Option<&EventLoop>) {
        cancel_cell(&self.accept);
        if let (Some(lp), Some(token)) = (lp, self.token) {
            let fd = self.socket.as_raw_fd();
            if let Err(err) = lp.deregister_source(&mut SourceFd(&fd), token) {
                tracing::debug!(target: "loopd", "deregistering listener fd {fd}: {err}");
            }
        }
    }
}
