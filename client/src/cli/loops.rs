//! `loopctl loop ...`: list, create, start, stop, close loops and set debug mode.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::{LoopInfo, LoopOptions};
use serde_json::{Value, json};

use super::output::{self, Table};
use super::{Ctx, args};

/// Manage the daemon's loops.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl loop ls
  loopctl loop new worker
  loopctl loop stop worker && loopctl loop close worker
  loopctl loop debug worker on --slow 50ms")]
pub enum LoopCommand {
    /// List every loop: running, stopped or closed.
    #[command(after_help = "Examples:\n  loopctl loop ls\n  loopctl loop ls --json")]
    Ls,
    /// Create a loop and start running it.
    #[command(
        after_help = "Examples:\n  loopctl loop new worker\n  loopctl loop new worker --debug --slow 20ms"
    )]
    New(NewArgs),
    /// Start a stopped loop again (asyncio's run_forever).
    #[command(after_help = "Examples:\n  loopctl loop start worker")]
    Start(NameArg),
    /// Stop a loop (asyncio's loop.stop()); its timers wait for `loop start`.
    #[command(after_help = "Examples:\n  loopctl loop stop worker")]
    Stop(NameArg),
    /// Close a stopped loop (asyncio's loop.close()); pending work is dropped.
    #[command(after_help = "Examples:\n  loopctl loop stop worker && loopctl loop close worker")]
    Close(NameArg),
    /// Turn debug mode on or off (asyncio's set_debug).
    #[command(
        after_help = "Examples:\n  loopctl loop debug default on\n  loopctl loop debug worker on --slow 10ms\n  loopctl loop debug worker off"
    )]
    Debug(DebugArgs),
}

/// A loop named on the command line.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The loop's name (`default` for the default loop).
    name: String,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The new loop's name: 1 to 63 ASCII letters, digits, `-`, `_` or `.`.
    name: String,
    /// Start in debug mode.
    #[arg(long)]
    debug: bool,
    /// Report callbacks slower than this in debug mode (default 100ms).
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    slow: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The loop's name.
    name: String,
    /// `on` or `off`.
    #[arg(value_parser = args::on_off, value_name = "on|off", action = clap::ArgAction::Set)]
    debug: bool,
    /// New threshold for slow callbacks.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    slow: Option<Duration>,
}

impl LoopCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let loops = match self {
            LoopCommand::Ls => client.list_loops().await?,
            LoopCommand::New(a) => {
                let options = LoopOptions {
                    debug: a.debug,
                    slow_callback_duration: a.slow,
                };
                vec![client.create_loop(&a.name, &options).await?]
            }
            LoopCommand::Start(a) => vec![client.start_loop(&a.name).await?],
            LoopCommand::Stop(a) => vec![client.stop_loop(&a.name).await?],
            LoopCommand::Close(a) => vec![client.close_loop(&a.name).await?],
            LoopCommand::Debug(a) => vec![client.set_debug(&a.name, a.debug, a.slow).await?],
        };
        Ok(ctx.out.rows(table(&loops), loops.iter().map(to_json))?)
    }
}

fn table(loops: &[LoopInfo]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "STATE",
        "DEBUG",
        "TIME",
        "READY",
        "TIMERS",
        "CANCELLED",
        "FUTURES",
        "SUBSCRIBERS",
        "LAST_SEQ",
    ]);
    for l in loops {
        table.row(vec![
            l.name.clone(),
            l.state.to_string(),
            if l.debug { "on".into() } else { "off".into() },
            output::loop_time(l.time),
            l.ready_callbacks.to_string(),
            l.timers_scheduled.to_string(),
            l.timers_cancelled.to_string(),
            l.futures_pending.to_string(),
            l.subscribers.to_string(),
            l.last_event_seq.to_string(),
        ]);
    }
    table
}

pub fn to_json(l: &LoopInfo) -> Value {
    json!({
        "name": l.name,
        "state": l.state.as_str(),
        "debug": l.debug,
        "slow_callback_seconds": output::secs(l.slow_callback_duration),
        "time": l.time,
        "wall_time": output::time_json(l.wall_time),
        "created_at": output::time_json(l.created_at),
        "ready_callbacks": l.ready_callbacks,
        "timers_scheduled": l.timers_scheduled,
        "timers_cancelled": l.timers_cancelled,
        "futures_pending": l.futures_pending,
        "subscribers": l.subscribers,
        "last_event_seq": l.last_event_seq,
    })
}
