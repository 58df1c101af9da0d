//! `loopctl sendfile ID PATH`: send a file the daemon reads over a transport
//! (asyncio's loop.sendfile).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use loopd_client::TransportId;
use serde_json::json;

use super::server::absolute;
use super::{Ctx, LoopArg};

/// Send a file over a transport; prints the bytes sent.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl sendfile 5 /srv/www/index.html
  loopctl sendfile 5 big.iso --offset 1048576 --count 4096")]
pub struct SendfileArgs {
    /// The transport's id.
    id: TransportId,
    /// The file (the daemon opens it, with its own permissions).
    path: PathBuf,
    /// Start at this byte of the file.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Send at most this many bytes (default: to the end).
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl SendfileArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let path = absolute(&self.path)?;
        let sent = client
            .sendfile(&self.r#loop.name, self.id, &path, self.offset, self.count)
            .await?;
        if ctx.out.json {
            ctx.out
                .json_line(&json!({"transport_id": self.id.0, "bytes_sent": sent}))?;
        } else {
            ctx.out.line(&sent.to_string())?;
        }
        Ok(())
    }
}
