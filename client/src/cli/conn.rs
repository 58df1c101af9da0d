//! `loopctl conn ...`: connections and transports (asyncio's create_connection and the
//! transport methods); `conn read` and `conn cat` move bytes losslessly.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use loopd_client::{
    ByteReader, Client, ConnectOptions, Delivery, NetAddress, NetEvent, ServerId, StartTlsSide,
    StreamEnd, TlsClient, TlsServer, TransportId, TransportInfo, all_pages,
};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::output::{self, Table};
use super::server::absolute;
use super::{Ctx, LoopArg, PageArg, args};

/// Credit a reader keeps granted: bytes in flight from the daemon.
const READ_WINDOW: u64 = 8 << 20;
/// Largest Write `conn cat` sends at once.
const WRITE_CHUNK: usize = 256 << 10;

/// Open, inspect, write, read and close connections.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl conn open 127.0.0.1:8080
  loopctl conn write 5 'hello'
  loopctl conn read 5 > received.bin
  echo ping | loopctl conn cat 127.0.0.1:7")]
pub enum ConnCommand {
    /// Connect; prints the transport's id.
    #[command(
        after_help = "Examples:\n  loopctl conn open 127.0.0.1:8080\n  loopctl conn open --unix /tmp/echo.sock\n  loopctl conn open example.org:443 --tls --server-name example.org"
    )]
    Open(OpenArgs),
    /// List transports (open ones, unless --all).
    #[command(after_help = "Examples:\n  loopctl conn ls\n  loopctl conn ls --server 3 --all")]
    Ls(LsArgs),
    /// Describe one transport.
    #[command(after_help = "Examples:\n  loopctl conn show 5")]
    Show(IdArgs),
    /// Write DATA to a transport (transport.write()).
    #[command(after_help = "Examples:\n  loopctl conn write 5 'GET / HTTP/1.0\\r\\n\\r\\n'")]
    Write(WriteArgs),
    /// Close the writing side once flushed (transport.write_eof()).
    #[command(after_help = "Examples:\n  loopctl conn eof 5")]
    Eof(IdArgs),
    /// Close a transport (transport.close(); --abort: abort()).
    #[command(after_help = "Examples:\n  loopctl conn close 5\n  loopctl conn close 5 --abort")]
    Close(CloseArgs),
    /// Copy a transport's received bytes to stdout, losslessly, until EOF.
    #[command(
        after_help = "Examples:\n  loopctl conn read 5 > out.bin\n  loopctl conn read 5 --from 0 | sha256sum"
    )]
    Read(ReadArgs),
    /// Connect and copy stdin to the connection and the connection to stdout (netcat);
    /// exits when the connection's stream ends.
    #[command(
        after_help = "Examples:\n  echo ping | loopctl conn cat 127.0.0.1:7\n  loopctl conn cat --unix /tmp/echo.sock < file"
    )]
    Cat(OpenArgs),
    /// Upgrade an open plain transport to TLS in place (asyncio's loop.start_tls); the
    /// peer must start TLS too. Prints the transport once the handshake is done.
    #[command(
        name = "starttls",
        after_help = "Examples:\n  loopctl conn starttls 5 --server-name localhost --ca ca.pem\n  loopctl conn starttls 6 --server-side --tls-cert cert.pem --tls-key key.pem --write-first 'OK'"
    )]
    StartTls(StartTlsArgs),
}

#[derive(Debug, Args)]
pub struct StartTlsArgs {
    /// The transport's id.
    id: TransportId,
    /// Take the server's side of the handshake (with --tls-cert and --tls-key).
    #[arg(long, requires_all = ["tls_cert", "tls_key"], conflicts_with_all = ["server_name", "ca"])]
    server_side: bool,
    /// Server side: the certificate chain (PEM file read by the daemon).
    #[arg(long, value_name = "FILE", requires = "server_side")]
    tls_cert: Option<PathBuf>,
    /// Server side: the private key (PEM file read by the daemon).
    #[arg(long, value_name = "FILE", requires = "server_side")]
    tls_key: Option<PathBuf>,
    /// Client side: the name the server's certificate must carry (and the SNI sent).
    #[arg(long, value_name = "NAME", required_unless_present = "server_side")]
    server_name: Option<String>,
    /// Client side: trusted CA certificates (PEM file read by the daemon). Default: the
    /// daemon's `[tls] ca_file`, else the system's trust store.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Write TEXT in clear in the step that starts TLS (a STARTTLS go-ahead, such as
    /// "OK"), so the peer's answer cannot race the upgrade.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "",
        hide_default_value = true
    )]
    write_first: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl StartTlsArgs {
    fn side(&self) -> Result<StartTlsSide> {
        if self.server_side {
            return Ok(StartTlsSide::Server(TlsServer {
                cert_path: self.tls_cert.as_deref().map(absolute).transpose()?,
                key_path: self.tls_key.as_deref().map(absolute).transpose()?,
                ..TlsServer::default()
            }));
        }
        Ok(StartTlsSide::Client(TlsClient {
            server_name: self.server_name.clone(),
            ca_path: self.ca.as_deref().map(absolute).transpose()?,
            ..TlsClient::default()
        }))
    }
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// HOST:PORT ([::1]:PORT for IPv6).
    #[arg(required_unless_present = "unix", value_parser = host_port)]
    address: Option<(String, u16)>,
    /// Connect to this Unix socket path instead.
    #[arg(long, value_name = "PATH", conflicts_with = "address")]
    unix: Option<PathBuf>,
    /// Speak TLS.
    #[arg(long)]
    tls: bool,
    /// The TLS server name (default: the host).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// Trusted CA certificates (PEM file read by the daemon). Default: the daemon's
    /// `[tls] ca_file`, else the system's trust store.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    timeout: Option<Duration>,
    /// Report bytes as events only (no lossless stream).
    #[arg(long)]
    events_only: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only the connections of this server.
    #[arg(long, value_name = "ID")]
    server: Option<ServerId>,
    /// Also list closed transports the daemon remembers.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    page: PageArg,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The transport's id.
    id: TransportId,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The transport's id.
    id: TransportId,
    /// The bytes to write (as text).
    data: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The transport's id.
    id: TransportId,
    /// Drop the write buffer and close at once.
    #[arg(long)]
    abort: bool,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The transport's id.
    id: TransportId,
    /// Start at this stream offset (default: the oldest byte held).
    #[arg(long, value_name = "OFFSET")]
    from: Option<u64>,
    #[command(flatten)]
    r#loop: LoopArg,
}

/// `HOST:PORT`, with `[v6]:PORT` for IPv6 literals.
fn host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

impl OpenArgs {
    fn options(&self) -> Result<ConnectOptions> {
        let (host, port) = self.address.clone().unwrap_or_default();
        let tls = if self.tls {
            Some(TlsClient {
                server_name: self.server_name.clone(),
                ca_path: self.ca.as_deref().map(absolute).transpose()?,
                ..TlsClient::default()
            })
        } else {
            None
        };
        Ok(ConnectOptions {
            host,
            port,
            unix_path: self.unix.as_deref().map(absolute).transpose()?,
            timeout: self.timeout,
            delivery: if self.events_only {
                Delivery::EventsOnly
            } else {
                Delivery::Stream
            },
            tls,
            ..ConnectOptions::default()
        })
    }
}

impl ConnCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let transports = match self {
            ConnCommand::Open(a) => {
                let t = client
                    .open_connection(&a.r#loop.name, &a.options()?)
                    .await?;
                if !ctx.out.json {
                    return Ok(ctx.out.line(&t.transport_id.to_string())?);
                }
                vec![t]
            }
            ConnCommand::Ls(a) => {
                let (client, name) = (&client, a.r#loop.name.as_str());
                all_pages(a.page.page_size, move |page| {
                    client.list_transports_page(name, a.server, a.all, page)
                })
                .await?
            }
            ConnCommand::Show(a) => vec![client.get_transport(&a.r#loop.name, a.id).await?],
            ConnCommand::Write(a) => {
                let buffered = client.write(&a.r#loop.name, a.id, a.data).await?;
                if ctx.out.json {
                    ctx.out.json_line(
                        &json!({"transport_id": a.id.0, "write_buffer_size": buffered}),
                    )?;
                }
                return Ok(());
            }
            ConnCommand::Eof(a) => vec![client.write_eof(&a.r#loop.name, a.id).await?],
            ConnCommand::Close(a) if a.abort => {
                vec![client.abort_transport(&a.r#loop.name, a.id).await?]
            }
            ConnCommand::Close(a) => vec![client.close_transport(&a.r#loop.name, a.id).await?],
            ConnCommand::Read(a) => return read(ctx, &client, &a.r#loop.name, a.id, a.from).await,
            ConnCommand::Cat(a) => return cat(ctx, &client, &a).await,
            ConnCommand::StartTls(a) => {
                let side = a.side()?;
                let first = a.write_first.into_bytes();
                vec![client.start_tls(&a.r#loop.name, a.id, &side, first).await?]
            }
        };
        Ok(ctx
            .out
            .rows(table(&transports), transports.iter().map(to_json))?)
    }
}

/// Copies the transport's stream to stdout until it ends; an error end is an error.
async fn read(
    ctx: &mut Ctx<'_>,
    client: &Client,
    loop_name: &str,
    id: TransportId,
    from: Option<u64>,
) -> Result<()> {
    let reader = client
        .read_transport(loop_name, id, from, READ_WINDOW)
        .await?;
    copy_to_stdout(ctx, reader, &format!("transport {id} was lost")).await
}

/// Copies a lossless stream to stdout until it ends; an end with an error is an error,
/// `context` first (after what was copied is flushed).
pub async fn copy_to_stdout(
    ctx: &mut Ctx<'_>,
    mut reader: ByteReader,
    context: &str,
) -> Result<()> {
    while let Some(chunk) = reader.next().await? {
        ctx.out.raw(&chunk.data)?;
        match chunk.end {
            None => {}
            Some(StreamEnd::Eof) => break,
            Some(StreamEnd::Error(error)) => {
                ctx.out.flush()?;
                bail!("{context}: {error}");
            }
        }
    }
    Ok(ctx.out.flush()?)
}

/// netcat: stdin to the connection (then write_eof), the connection to stdout.
async fn cat(ctx: &mut Ctx<'_>, client: &Client, a: &OpenArgs) -> Result<()> {
    let loop_name = a.r#loop.name.clone();
    let t = client.open_connection(&loop_name, &a.options()?).await?;
    let id = t.transport_id;
    let writer = {
        let client = client.clone();
        let loop_name = loop_name.clone();
        tokio::spawn(async move { copy_stdin(&client, &loop_name, id).await })
    };
    let read = read(ctx, client, &loop_name, id, Some(0)).await;
    writer.abort();
    read
}

async fn copy_stdin(client: &Client, loop_name: &str, id: TransportId) -> Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; WRITE_CHUNK];
    loop {
        let n = stdin.read(&mut buf).await.context("reading stdin")?;
        if n == 0 {
            client.write_eof(loop_name, id).await?;
            return Ok(());
        }
        client.write(loop_name, id, buf[..n].to_vec()).await?;
    }
}

fn table(transports: &[TransportInfo]) -> Table {
    let mut table = Table::new(&[
        "ID", "STATE", "SERVER", "PEER", "LOCAL", "IN", "OUT", "BUFFERED", "READING",
    ]);
    for t in transports {
        table.row(vec![
            t.transport_id.to_string(),
            t.state.to_string(),
            output::or_dash(t.server_id.as_ref()),
            output::or_dash(t.peername.as_ref()),
            output::or_dash(t.sockname.as_ref()),
            t.bytes_received.to_string(),
            t.bytes_written.to_string(),
            t.stream_buffered.to_string(),
            reading(t).into(),
        ]);
    }
    table
}

fn reading(t: &TransportInfo) -> &'static str {
    match (t.reading, t.paused_by_client, t.stream_paused) {
        (true, ..) => "yes",
        (false, true, _) => "paused",
        (false, false, true) => "window full",
        (false, false, false) => "no",
    }
}

fn to_json(t: &TransportInfo) -> Value {
    let addr = |a: &Option<loopd_client::NetAddress>| a.as_ref().map(ToString::to_string);
    json!({
        "transport_id": t.transport_id.0,
        "loop": t.loop_name,
        "server_id": t.server_id.map(|s| s.0),
        "state": t.state.to_string(),
        "peername": addr(&t.peername),
        "sockname": addr(&t.sockname),
        "bytes_received": t.bytes_received,
        "bytes_written": t.bytes_written,
        "write_buffer_size": t.write_buffer_size,
        "write_buffer_low": t.write_buffer_limits.0,
        "write_buffer_high": t.write_buffer_limits.1,
        "reading": t.reading,
        "paused_by_client": t.paused_by_client,
        "stream_paused": t.stream_paused,
        "writing_paused": t.writing_paused,
        "eof_received": t.eof_received,
        "stream_buffered": t.stream_buffered,
        "error": t.error,
        "tls_version": t.tls_version,
        "tls_cipher": t.tls_cipher,
        "creator_uid": t.creator_uid,
        "created_at": output::time_json(t.created_at),
    })
}

/// The details of a net event, for `loopctl events`.
pub fn event_text(event: &NetEvent) -> String {
    match event {
        NetEvent::ConnectionMade {
            transport_id,
            server_id,
            peername,
        } => {
            let server = server_id.map_or_else(String::new, |s| format!(" server={s}"));
            format!(
                "transport={transport_id}{server} peer={}",
                output::or_dash(peername.as_ref())
            )
        }
        NetEvent::DataReceived {
            transport_id,
            data,
            offset,
            size,
        } => format!(
            "transport={transport_id} offset={offset} size={size} data=\"{}\"",
            output::bytes(data)
        ),
        NetEvent::ConnectionLost {
            transport_id,
            error,
        } => match error {
            Some(error) => format!(
                "transport={transport_id} error=\"{}\"",
                error.escape_debug()
            ),
            None => format!("transport={transport_id}"),
        },
        NetEvent::EofReceived { transport_id }
        | NetEvent::PauseWriting { transport_id }
        | NetEvent::ResumeWriting { transport_id }
        | NetEvent::ReadingPaused { transport_id }
        | NetEvent::ReadingResumed { transport_id } => format!("transport={transport_id}"),
        NetEvent::DatagramReceived {
            endpoint_id,
            addr: from,
            data,
        } => format!(
            "endpoint={endpoint_id} from={} data=\"{}\"",
            output::or_dash(from.as_ref()),
            output::bytes(data)
        ),
        NetEvent::ErrorReceived { endpoint_id, error } => {
            format!("endpoint={endpoint_id} error=\"{}\"", error.escape_debug())
        }
        NetEvent::ServerClosed { server_id } => format!("server={server_id}"),
        _ => String::new(),
    }
}

/// The fields of a net event, for `loopctl --json events`.
pub fn event_json(object: &mut serde_json::Map<String, Value>, event: &NetEvent) {
    let addr = |a: &Option<NetAddress>| a.as_ref().map(ToString::to_string);
    let mut put = |k: &str, v: Value| {
        object.insert(k.into(), v);
    };
    match event {
        NetEvent::ConnectionMade {
            transport_id,
            server_id,
            peername,
        } => {
            put("transport_id", json!(transport_id.0));
            put("server_id", json!(server_id.map(|s| s.0)));
            put("peername", json!(addr(peername)));
        }
        NetEvent::DataReceived {
            transport_id,
            data,
            offset,
            size,
        } => {
            put("transport_id", json!(transport_id.0));
            put("offset", json!(offset));
            put("size", json!(size));
            output::insert_bytes(object, "data", data);
        }
        NetEvent::ConnectionLost {
            transport_id,
            error,
        } => {
            put("transport_id", json!(transport_id.0));
            put("error", json!(error));
        }
        NetEvent::EofReceived { transport_id }
        | NetEvent::PauseWriting { transport_id }
        | NetEvent::ResumeWriting { transport_id }
        | NetEvent::ReadingPaused { transport_id }
        | NetEvent::ReadingResumed { transport_id } => put("transport_id", json!(transport_id.0)),
        NetEvent::DatagramReceived {
            endpoint_id,
            addr: from,
            data,
        } => {
            put("endpoint_id", json!(endpoint_id.0));
            put("from", json!(addr(from)));
            output::insert_bytes(object, "data", data);
        }
        NetEvent::ErrorReceived { endpoint_id, error } => {
            put("endpoint_id", json!(endpoint_id.0));
            put("error", json!(error));
        }
        NetEvent::ServerClosed { server_id } => put("server_id", json!(server_id.0)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_names_v4_and_v6() {
        assert_eq!(host_port("h:1"), Ok(("h".into(), 1)));
        assert_eq!(host_port("127.0.0.1:80"), Ok(("127.0.0.1".into(), 80)));
        assert_eq!(host_port("[::1]:9"), Ok(("::1".into(), 9)));
        for bad in ["h", ":80", "h:x", "h:70000"] {
            assert!(host_port(bad).unwrap_err().contains(bad), "{bad}");
        }
    }
}
