//! `loopctl udp ...`: datagram endpoints (asyncio's create_datagram_endpoint).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::{
    EndpointId, EndpointInfo, EventBody, NetAddress, NetEvent, SubscribeOptions, all_pages,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use super::output::{self, Table};
use super::server::absolute;
use super::{Ctx, LoopArg, PageArg};

/// Bind, send to and receive from UDP endpoints.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl udp bind --host 127.0.0.1
  loopctl udp bind --unix /tmp/dgram.sock
  loopctl udp send 4 hello --to 127.0.0.1:9999
  loopctl udp send 5 hello --to-unix /tmp/peer.sock
  loopctl udp recv 4 --count 1
  loopctl udp ls
  loopctl udp show 4")]
pub enum UdpCommand {
    /// Create an endpoint; prints its id and local address.
    #[command(
        after_help = "Examples:\n  loopctl udp bind --host 127.0.0.1 --port 9999\n  loopctl udp bind --remote 127.0.0.1:53\n  loopctl udp bind --unix /tmp/dgram.sock"
    )]
    Bind(BindArgs),
    /// Send one datagram.
    #[command(
        after_help = "Examples:\n  loopctl udp send 4 hello --to 127.0.0.1:9999\n  loopctl udp send 5 hello --to-unix /tmp/peer.sock"
    )]
    Send(SendArgs),
    /// Print datagrams as they arrive (from now on).
    #[command(
        after_help = "Examples:\n  loopctl udp recv 4\n  loopctl udp recv 4 --count 1 --json"
    )]
    Recv(RecvArgs),
    /// Close an endpoint.
    #[command(after_help = "Examples:\n  loopctl udp close 4")]
    Close(IdArgs),
    /// List endpoints (open ones, unless --all) with their addresses and counters.
    #[command(after_help = "Examples:\n  loopctl udp ls\n  loopctl udp ls --all --page-size 100")]
    Ls(LsArgs),
    /// Describe one endpoint (also a closed one the daemon still remembers).
    #[command(after_help = "Examples:\n  loopctl udp show 4\n  loopctl --json udp show 4")]
    Show(IdArgs),
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Also list closed endpoints the daemon remembers.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    page: PageArg,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    /// Local host to bind.
    #[arg(long, default_value = "")]
    host: String,
    /// Local port; 0: a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Connect to HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    remote: Option<(String, u16)>,
    /// Bind a Unix datagram socket at PATH instead (removed when the endpoint closes).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "port", "remote"])]
    unix: Option<PathBuf>,
    /// Connect a Unix datagram socket to PATH.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "port", "remote"])]
    remote_unix: Option<PathBuf>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The endpoint's id.
    id: EndpointId,
    /// The datagram (as text).
    data: String,
    /// Destination HOST:PORT (default: the connected remote).
    #[arg(long, value_name = "HOST:PORT", value_parser = host_port)]
    to: Option<(String, u16)>,
    /// Destination Unix socket PATH (Unix endpoints).
    #[arg(long, value_name = "PATH", conflicts_with = "to")]
    to_unix: Option<PathBuf>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The endpoint's id.
    id: EndpointId,
    /// Stop after this many datagrams.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The endpoint's id.
    id: EndpointId,
    #[command(flatten)]
    r#loop: LoopArg,
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port
        .parse()
        .map_err(|_| format!("{s:?} is not HOST:PORT"))?;
    Ok((host.to_owned(), port))
}

/// `udp bind` and `udp close`: one line for people, the whole endpoint with `--json`.
fn print(ctx: &mut Ctx<'_>, e: &EndpointInfo) -> Result<()> {
    if ctx.out.json {
        ctx.out.json_line(&to_json(e))?;
    } else {
        let local = output::or_dash(e.sockname.as_ref());
        ctx.out
            .line(&format!("endpoint {} on {local}", e.endpoint_id))?;
    }
    Ok(())
}

fn table(endpoints: &[EndpointInfo]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "LOCAL",
        "PEER",
        "DGRAMS IN",
        "BYTES IN",
        "DGRAMS OUT",
        "BYTES OUT",
        "ERROR",
    ]);
    for e in endpoints {
        table.row(vec![
            e.endpoint_id.to_string(),
            e.state.to_string(),
            output::or_dash(e.sockname.as_ref()),
            output::or_dash(e.peername.as_ref()),
            e.datagrams_received.to_string(),
            e.bytes_received.to_string(),
            e.datagrams_sent.to_string(),
            e.bytes_sent.to_string(),
            e.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

fn to_json(e: &EndpointInfo) -> Value {
    let addr = |a: &Option<NetAddress>| a.as_ref().map(ToString::to_string);
    json!({
        "endpoint_id": e.endpoint_id.0,
        "loop": e.loop_name,
        "state": e.state.to_string(),
        "sockname": addr(&e.sockname),
        "peername": addr(&e.peername),
        "closed": e.closed,
        "datagrams_received": e.datagrams_received,
        "bytes_received": e.bytes_received,
        "datagrams_sent": e.datagrams_sent,
        "bytes_sent": e.bytes_sent,
        "write_buffer_size": e.write_buffer_size,
        "last_error": e.last_error,
        "creator_uid": e.creator_uid,
        "created_at": output::time_json(e.created_at),
    })
}

impl UdpCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        match self {
            UdpCommand::Bind(a) if a.unix.is_some() || a.remote_unix.is_some() => {
                let local = a.unix.as_deref().map(absolute).transpose()?;
                let remote = a.remote_unix.as_deref().map(absolute).transpose()?;
                let e = client
                    .create_unix_datagram_endpoint(
                        &a.r#loop.name,
                        local.as_deref(),
                        remote.as_deref(),
                    )
                    .await?;
                print(ctx, &e)
            }
            UdpCommand::Bind(a) => {
                let local =
                    (!a.host.is_empty() || a.port != 0).then_some((a.host.as_str(), a.port));
                let remote = a.remote.as_ref().map(|(h, p)| (h.as_str(), *p));
                let e = client
                    .create_datagram_endpoint(&a.r#loop.name, local, remote)
                    .await?;
                print(ctx, &e)
            }
            UdpCommand::Send(a) if a.to_unix.is_some() => {
                let path = a.to_unix.as_deref().map(absolute).transpose()?;
                let path = path.unwrap_or_default();
                Ok(client
                    .send_datagram_to_path(&a.r#loop.name, a.id, a.data.into_bytes(), &path)
                    .await?)
            }
            UdpCommand::Send(a) => {
                let to = a.to.as_ref().map(|(h, p)| (h.as_str(), *p));
                Ok(client
                    .send_datagram(&a.r#loop.name, a.id, a.data.into_bytes(), to)
                    .await?)
            }
            UdpCommand::Close(a) => {
                let e = client.close_datagram_endpoint(&a.r#loop.name, a.id).await?;
                print(ctx, &e)
            }
            UdpCommand::Ls(a) => {
                let (client, name) = (&client, a.r#loop.name.as_str());
                let endpoints = all_pages(a.page.page_size, move |page| {
                    client.list_datagram_endpoints_page(name, a.all, page)
                })
                .await?;
                Ok(ctx
                    .out
                    .rows(table(&endpoints), endpoints.iter().map(to_json))?)
            }
            UdpCommand::Show(a) => {
                let e = client.get_datagram_endpoint(&a.r#loop.name, a.id).await?;
                let one = std::slice::from_ref(&e);
                Ok(ctx.out.rows(table(one), one.iter().map(to_json))?)
            }
            UdpCommand::Recv(a) => {
                let options = SubscribeOptions {
                    endpoint_ids: vec![a.id],
                    ..SubscribeOptions::default()
                };
                let mut events = client.subscribe(&a.r#loop.name, &options).await?;
                let mut seen = 0;
                while a.count.is_none_or(|n| seen < n) {
                    let Some(event) = events.next().await else {
                        break;
                    };
                    if let EventBody::Net(NetEvent::DatagramReceived { addr, data, .. }) =
                        event?.body
                    {
                        seen += 1;
                        let from = output::or_dash(addr.as_ref());
                        if ctx.out.json {
                            let mut o = output::object(json!({"from": from}));
                            output::insert_bytes(&mut o, "data", &data);
                            ctx.out.json_line(&o.into())?;
                        } else {
                            ctx.out.line(&format!("{from}  {}", output::bytes(&data)))?;
                        }
                        ctx.out.flush()?;
                    }
                }
                Ok(())
            }
        }
    }
}
