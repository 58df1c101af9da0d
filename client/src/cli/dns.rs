//! `loopctl dns ...`: name resolution on a loop's executor (getaddrinfo, getnameinfo).

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use super::{Ctx, LoopArg};

/// Resolve names and addresses as the daemon sees them.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl dns resolve localhost
  loopctl dns reverse 127.0.0.1
  loopctl dns reverse 127.0.0.1:22")]
pub enum DnsCommand {
    /// Resolve HOST (getaddrinfo); prints one address per line.
    #[command(after_help = "Examples:\n  loopctl dns resolve localhost --port 80")]
    Resolve(ResolveArgs),
    /// Name ADDR (getnameinfo); prints the host and the service.
    #[command(
        after_help = "Examples:\n  loopctl dns reverse 127.0.0.1\n  loopctl dns reverse 127.0.0.1:22"
    )]
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
    /// IP, or IP:PORT ([v6]:PORT) to name the service too; a bare IP is port 0.
    #[arg(value_parser = ip_or_socket_addr)]
    addr: SocketAddr,
    #[command(flatten)]
    r#loop: LoopArg,
}

/// `IP`, `IP:PORT` or `[v6]:PORT`; a bare IP gets port 0.
fn ip_or_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
        .map_err(|_| format!("{s:?} is neither IP nor IP:PORT"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_takes_an_ip_or_an_ip_and_port() {
        let cases = [
            ("127.0.0.1", Some("127.0.0.1:0")),
            ("127.0.0.1:22", Some("127.0.0.1:22")),
            ("::1", Some("[::1]:0")),
            ("[::1]:80", Some("[::1]:80")),
            ("localhost", None),
            ("127.0.0.1:99999", None),
        ];
        for (given, want) in cases {
            let got = ip_or_socket_addr(given).ok().map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{given}");
        }
    }
}
