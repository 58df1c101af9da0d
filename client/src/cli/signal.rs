//! `loopctl signal ...`: handlers for Unix signals sent to the daemon.

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::{Action, SignalHandler};
use serde_json::{Value, json};

use super::output::Table;
use super::{Ctx, LoopArg};

/// Handle Unix signals sent to the daemon: each arrival emits a signal_received event.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl signal add USR1 --tag reload
  loopctl events --follow --kind signal_received &
  kill -USR1 \"$(pidof loopd)\"")]
pub enum SignalCommand {
    /// Handle a signal (a number or a name): its arrivals become events.
    #[command(
        after_help = "Examples:\n  loopctl signal add USR1\n  loopctl signal add SIGHUP --tag reload"
    )]
    Add(AddArgs),
    /// Stop handling a signal (its default disposition comes back).
    #[command(after_help = "Examples:\n  loopctl signal rm USR1")]
    Rm(SigArgs),
    /// List the loop's signal handlers.
    #[command(after_help = "Examples:\n  loopctl signal ls")]
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The signal: a number or a name (USR1, SIGHUP, 10).
    signal: String,
    /// A tag the signal_received events carry.
    #[arg(long, default_value = "", hide_default_value = true)]
    tag: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct SigArgs {
    /// The signal: a number or a name.
    signal: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    r#loop: LoopArg,
}

impl SignalCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        match self {
            SignalCommand::Add(a) => {
                let action = Action::emit(a.tag, b"");
                let (handler, replaced) = client
                    .add_signal_handler(&a.r#loop.name, &a.signal, Some(action))
                    .await?;
                if ctx.out.json {
                    let mut value = to_json(&handler);
                    value["replaced"] = json!(replaced);
                    return Ok(ctx.out.json_line(&value)?);
                }
                let verb = if replaced { "replaced" } else { "added" };
                Ok(ctx
                    .out
                    .line(&format!("{verb} handler of {}", handler.name))?)
            }
            SignalCommand::Rm(a) => {
                let removed = client
                    .remove_signal_handler(&a.r#loop.name, &a.signal)
                    .await?;
                if ctx.out.json {
                    return Ok(ctx.out.json_line(&json!({ "removed": removed }))?);
                }
                Ok(ctx
                    .out
                    .line(if removed { "removed" } else { "no handler" })?)
            }
            SignalCommand::Ls(a) => {
                let handlers = client.list_signal_handlers(&a.r#loop.name).await?;
                let mut table = Table::new(&["SIGNAL", "NAME", "ACTION", "RUNS"]);
                for h in &handlers {
                    table.row(vec![
                        h.signal.to_string(),
                        h.name.clone(),
                        h.action.kind().to_string(),
                        h.runs.to_string(),
                    ]);
                }
                Ok(ctx.out.rows(table, handlers.iter().map(to_json))?)
            }
        }
    }
}

fn to_json(h: &SignalHandler) -> Value {
    json!({
        "signal": h.signal,
        "name": h.name,
        "action": h.action.kind().to_string(),
        "runs": h.runs,
    })
}
