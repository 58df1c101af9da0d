//! `loopctl server ...`: servers on a loop (asyncio's create_server, Server.close).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use loopd_client::{
    Delivery, ServerId, ServerInfo, ServerOptions, ServerProtocol, TlsServer, all_pages,
};
use serde_json::{Value, json};

use super::output::{self, Table};
use super::{Ctx, LoopArg, PageArg};

/// Create, list and close servers.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl server create --host 127.0.0.1 --port 8080
  loopctl server create --unix /tmp/echo.sock --protocol echo
  loopctl server ls
  loopctl server close 3")]
pub enum ServerCommand {
    /// Create a server; prints its id and the addresses it listens on.
    #[command(
        after_help = "Examples:\n  loopctl server create --host 127.0.0.1\n  loopctl server create --port 7000 --protocol discard\n  loopctl --json server create --host ::1 | jq .server_id"
    )]
    Create(CreateArgs),
    /// List a loop's servers.
    #[command(
        after_help = "Examples:\n  loopctl server ls\n  loopctl server ls --loop worker --json"
    )]
    Ls(LsArgs),
    /// Describe one server.
    #[command(after_help = "Examples:\n  loopctl server show 3")]
    Show(IdArgs),
    /// Stop listening (Server.close()); its connections stay open.
    #[command(after_help = "Examples:\n  loopctl server close 3")]
    Close(IdArgs),
    /// Start accepting on a server created with --no-start.
    #[command(after_help = "Examples:\n  loopctl server start 3")]
    Start(IdArgs),
}

/// What a server does with its connections.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    /// Report connections and bytes as events and in a lossless stream.
    Events,
    /// Write every byte back.
    Echo,
    /// Drop every byte.
    Discard,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A host to listen on (repeatable); none: every interface.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// The TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 0, conflicts_with = "unix")]
    port: u16,
    /// Listen on this Unix socket path instead of TCP.
    #[arg(long, value_name = "PATH", conflicts_with = "hosts")]
    unix: Option<PathBuf>,
    /// What to do with connections.
    #[arg(long, value_enum, default_value = "events")]
    protocol: ProtocolArg,
    /// Report bytes as events only (no lossless stream; reading never pauses).
    #[arg(long)]
    events_only: bool,
    /// Bytes a connection's stream keeps unread before reading pauses.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    window: u64,
    /// Do not accept until `server start`.
    #[arg(long)]
    no_start: bool,
    /// TLS certificate chain (PEM file read by the daemon).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM file read by the daemon).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    page: PageArg,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The server's id, as printed by `server create`.
    id: ServerId,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl CreateArgs {
    fn options(&self) -> Result<ServerOptions> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsServer {
                cert_path: Some(absolute(cert)?),
                key_path: Some(absolute(key)?),
                ..TlsServer::default()
            }),
            _ => None,
        };
        Ok(ServerOptions {
            hosts: self.hosts.clone(),
            port: self.port,
            unix_path: self.unix.as_deref().map(absolute).transpose()?,
            protocol: match self.protocol {
                ProtocolArg::Events => ServerProtocol::Events,
                ProtocolArg::Echo => ServerProtocol::Echo,
                ProtocolArg::Discard => ServerProtocol::Discard,
            },
            delivery: if self.events_only {
                Delivery::EventsOnly
            } else {
                Delivery::Stream
            },
            stream_window: self.window,
            no_start: self.no_start,
            tls,
            ..ServerOptions::default()
        })
    }
}

/// The daemon resolves paths from its own directory: send absolute ones.
pub fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

impl ServerCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let servers = match self {
            ServerCommand::Create(a) => {
                let server = client.create_server(&a.r#loop.name, &a.options()?).await?;
                if !ctx.out.json {
                    let addresses: Vec<String> =
                        server.addresses.iter().map(ToString::to_string).collect();
                    ctx.out.line(&format!(
                        "server {} listening on {}",
                        server.server_id,
                        addresses.join(", ")
                    ))?;
                    return Ok(());
                }
                vec![server]
            }
            ServerCommand::Ls(a) => {
                let (client, name) = (&client, a.r#loop.name.as_str());
                all_pages(a.page.page_size, move |page| {
                    client.list_servers_page(name, page)
                })
                .await?
            }
            ServerCommand::Show(a) => vec![client.get_server(&a.r#loop.name, a.id).await?],
            ServerCommand::Close(a) => vec![client.close_server(&a.r#loop.name, a.id).await?],
            ServerCommand::Start(a) => vec![client.start_serving(&a.r#loop.name, a.id).await?],
        };
        Ok(ctx.out.rows(table(&servers), servers.iter().map(to_json))?)
    }
}

fn state(s: &ServerInfo) -> &'static str {
    match (s.closed, s.serving) {
        (true, _) => "closed",
        (false, true) => "serving",
        (false, false) => "not serving",
    }
}

fn table(servers: &[ServerInfo]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "STATE",
        "PROTOCOL",
        "ADDRESSES",
        "ACTIVE",
        "ACCEPTED",
        "CREATED",
    ]);
    for s in servers {
        let addresses: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
        table.row(vec![
            s.server_id.to_string(),
            state(s).into(),
            s.protocol.as_str().into(),
            addresses.join(","),
            s.active_connections.to_string(),
            s.connections_accepted.to_string(),
            output::time(s.created_at),
        ]);
    }
    table
}

fn to_json(s: &ServerInfo) -> Value {
    let addresses: Vec<String> = s.addresses.iter().map(ToString::to_string).collect();
    json!({
        "server_id": s.server_id.0,
        "loop": s.loop_name,
        "state": state(s),
        "serving": s.serving,
        "closed": s.closed,
        "protocol": s.protocol.as_str(),
        "events_only": s.delivery == Some(Delivery::EventsOnly),
        "tls": s.tls,
        "addresses": addresses,
        "active_connections": s.active_connections,
        "connections_accepted": s.connections_accepted,
        "creator_uid": s.creator_uid,
        "created_at": output::time_json(s.created_at),
    })
}
