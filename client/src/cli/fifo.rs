//! `loopctl fifo read|write PATH`: a named pipe on the daemon's side, opened by the
//! daemon (with its permissions) on a loop, from or to loopctl's stdin and stdout.
//!
//! # Invariants
//! - `read` copies every byte the FIFO's writers send, losslessly, until they have all
//!   closed their ends; `write` copies stdin, then closes the FIFO once flushed.
//! - The FIFO is closed in the daemon when loopctl is done with it, also after an error
//!   (CloseFifo), so nothing stays open behind a finished command.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::Client;

use super::conn::copy_to_stdout;
use super::run::stdin_chunks;
use super::server::absolute;
use super::{Ctx, LoopArg};

/// Read from or write to a named pipe (FIFO) through the daemon.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  mkfifo /tmp/feed && loopctl fifo read /tmp/feed > copy.txt   (then: cat file > /tmp/feed)
  echo hello | loopctl fifo write /tmp/feed                      (a reader must have it open)")]
pub enum FifoCommand {
    /// Print what the FIFO's writers send until they have all closed it.
    #[command(after_help = "Examples:\n  loopctl fifo read /tmp/feed > copy.txt")]
    Read(FifoArgs),
    /// Send stdin to the FIFO, then close it (a reader must have it open already).
    #[command(after_help = "Examples:\n  echo hello | loopctl fifo write /tmp/feed")]
    Write(FifoArgs),
}

/// The FIFO and its loop.
#[derive(Debug, Args)]
pub struct FifoArgs {
    /// The FIFO's path (made with mkfifo; the daemon opens it).
    path: PathBuf,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl FifoCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let (args, write) = match self {
            FifoCommand::Read(args) => (args, false),
            FifoCommand::Write(args) => (args, true),
        };
        let loop_name = args.r#loop.name.as_str();
        let path = absolute(&args.path)?;
        let id = client
            .open_fifo(loop_name, path.as_os_str().as_encoded_bytes(), write, 0)
            .await?;
        let copied = if write {
            write_stdin(&client, loop_name, id).await
        } else {
            read_to_stdout(ctx, &client, loop_name, id).await
        };
        let closed = client.close_fifo(loop_name, id).await;
        copied?;
        Ok(closed?)
    }
}

/// Copies the FIFO's stream to stdout until its writers are gone.
async fn read_to_stdout(
    ctx: &mut Ctx<'_>,
    client: &Client,
    loop_name: &str,
    id: u64,
) -> Result<()> {
    let reader = client.read_fifo(loop_name, id, 0).await?;
    copy_to_stdout(ctx, reader, &format!("reading FIFO {id}")).await
}

/// Copies stdin to the FIFO, then asks for the close.
async fn write_stdin(client: &Client, loop_name: &str, id: u64) -> Result<()> {
    let mut chunks = stdin_chunks();
    while let Some(data) = chunks.recv().await {
        let mut queued = client.write_fifo(loop_name, id, data?, false).await?;
        // The daemon queues what the reader has not taken yet: keep that bounded.
        while queued > MAX_QUEUED {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            queued = client.write_fifo(loop_name, id, Vec::new(), false).await?;
        }
    }
    client.write_fifo(loop_name, id, Vec::new(), true).await?;
    Ok(())
}

/// Bytes `write` lets the daemon hold for a slow reader before it waits.
const MAX_QUEUED: u64 = 4 << 20;
