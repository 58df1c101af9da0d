//! `loopctl time`: a loop's clock (asyncio's loop.time()) next to the wall clock.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::output;
use super::{Ctx, LoopArg};

/// Show a loop's time (asyncio's loop.time(), for `timer add --loop-time`) and the
/// wall clock read with it.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl time
  loopctl time --loop worker --json")]
pub struct TimeArgs {
    #[command(flatten)]
    r#loop: LoopArg,
}

impl TimeArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let t = ctx.connect().await?.time(&self.r#loop.name).await?;
        if ctx.out.json {
            let line = json!({"time": t.time, "wall_time": output::time_json(Some(t.wall_time))});
            return Ok(ctx.out.json_line(&line)?);
        }
        let line = format!(
            "{}  {}",
            output::loop_time(t.time),
            output::time(Some(t.wall_time))
        );
        Ok(ctx.out.line(&line)?)
    }
}
