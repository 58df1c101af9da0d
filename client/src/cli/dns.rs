//! `loopctl dns ...`: name resolution on a loop's executor (getaddrinfo, getnameinfo).

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Ctx, LoopArg};

/// Resolve names and addresses as the daemon sees them.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl dns resolve localhost
  loopctl dns reverse 127.0.0.1:22")]
pub enum DnsCommand {
    /// Resolve HOST (getaddrinfo); prints one address per line.
    #[command(after_help = "Examples:\n  loopctl dns resolve localhost --port 80")]
    Resolve(ResolveArgs),
    /// Name ADDR (getnameinfo); prints the host and the service.
    #[command(after_help = "Examples:\n  loopctl dns reverse 127.0.0.1:22")]
    Reverse(ReverseArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The host name or IP literal.
    host: String,
    /// The port put into the answers.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct ReverseArgs {
    /// IP:PORT ([v6]:PORT).
    addr: SocketAddr,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl DnsCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        match self {
            DnsCommand::Resolve(a) => {
                for addr in client.resolve(&a.r#loop.name, &a.host, a.port).await? {
                    if ctx.out.json {
                        ctx.out.json_line(&json!({"address": addr.to_string()}))?;
                    } else {
                        ctx.out.line(&addr.to_string())?;
                    }
                }
            }
            DnsCommand::Reverse(a) => {
                let (host, service) = client.reverse_resolve(&a.r#loop.name, a.addr).await?;
                if ctx.out.json {
                    ctx.out
                        .json_line(&json!({"host": host, "service": service}))?;
                } else {
                    ctx.out.line(&format!("{host} {service}"))?;
                }
            }
        }
        Ok(())
    }
}
