//! `loopctl future ...`: asyncio futures shared between clients.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use loopd_client::{FutureId, FutureInfo, FutureState};
use serde_json::{Value, json};

use super::output;
use super::{Ctx, LoopArg, args};

/// Create, resolve, cancel and wait for futures (asyncio's loop.create_future()).
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  id=$(loopctl future new)
  loopctl future wait \"$id\" --timeout 30s &
  loopctl future set \"$id\" done")]
pub enum FutureCommand {
    /// Create a pending future; prints its id.
    #[command(
        after_help = "Examples:\n  loopctl future new\n  loopctl future new --loop worker --id job-17"
    )]
    New(NewArgs),
    /// Describe a future.
    #[command(
        after_help = "Examples:\n  loopctl future get 7\n  loopctl future get 7 --json | jq .result"
    )]
    Get(IdArgs),
    /// Set a pending future's result (Future.set_result()).
    #[command(
        after_help = "Examples:\n  loopctl future set 7 done\n  loopctl future set 7 '{\"ok\":true}' --loop worker"
    )]
    Set(SetArgs),
    /// Set a pending future's exception (Future.set_exception()), described by a message.
    #[command(after_help = "Examples:\n  loopctl future fail 7 'disk full'")]
    Fail(FailArgs),
    /// Cancel a future (Future.cancel(msg)); a done future is left as is.
    #[command(
        after_help = "Examples:\n  loopctl future cancel 7\n  loopctl future cancel 7 --message 'shutting down'"
    )]
    Cancel(CancelArgs),
    /// Wait until a future is done and print it; with --timeout, print it pending when
    /// the time runs out (exit status 0 either way; check the state).
    #[command(
        after_help = "Examples:\n  loopctl future wait 7\n  loopctl future wait 7 --timeout 1.5s --json | jq -r .state"
    )]
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Idempotency key: a retry with the same key returns the original future.
    #[arg(long = "id", value_name = "KEY")]
    request_id: Option<String>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The future's id, as printed by `future new`.
    id: FutureId,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The future's id.
    id: FutureId,
    /// The result (any text; empty is allowed).
    value: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct FailArgs {
    /// The future's id.
    id: FutureId,
    /// What went wrong.
    message: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The future's id.
    id: FutureId,
    /// The cancellation message.
    #[arg(long, default_value = "", hide_default_value = true)]
    message: String,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The future's id.
    id: FutureId,
    /// Longest wait, e.g. 30s; default: until the future is done.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl FutureCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        let info = match self {
            FutureCommand::New(a) => {
                let created = client
                    .create_future(&a.r#loop.name, a.request_id.as_deref())
                    .await?;
                if ctx.out.json {
                    let line =
                        json!({"future_id": created.future_id.0, "duplicate": created.duplicate});
                    return Ok(ctx.out.json_line(&line)?);
                }
                return Ok(ctx.out.line(&created.future_id.to_string())?);
            }
            FutureCommand::Get(a) => {
                let info = client.get_future(&a.r#loop.name, a.id).await?;
                return show(ctx, &info);
            }
            FutureCommand::Set(a) => client.set_result(&a.r#loop.name, a.id, a.value).await?,
            FutureCommand::Fail(a) => {
                client
                    .set_exception(&a.r#loop.name, a.id, &a.message)
                    .await?
            }
            FutureCommand::Cancel(a) => {
                client
                    .cancel_future(&a.r#loop.name, a.id, &a.message)
                    .await?
                    .info
            }
            FutureCommand::Wait(a) => client.wait_future(&a.r#loop.name, a.id, a.timeout).await?,
        };
        if ctx.out.json {
            return Ok(ctx.out.json_line(&to_json(&info))?);
        }
        Ok(ctx.out.line(&summary(&info))?)
    }
}

fn show(ctx: &mut Ctx<'_>, f: &FutureInfo) -> Result<()> {
    if ctx.out.json {
        return Ok(ctx.out.json_line(&to_json(f))?);
    }
    let pairs = [
        ("id", f.future_id.to_string()),
        ("loop", f.loop_name.clone()),
        ("state", outcome(&f.state)),
        ("creator uid", f.creator_uid.to_string()),
        ("created", output::time(f.created_at)),
        ("done", output::time(f.done_at)),
    ];
    Ok(ctx.out.pairs(&pairs)?)
}

/// `7 result "done"`: id, state and outcome on one line.
fn summary(f: &FutureInfo) -> String {
    format!("{} {}", f.future_id, outcome(&f.state))
}

/// A state and its outcome: `pending`, `result "v"`, `exception "m"`, `cancelled "m"`.
pub fn outcome(state: &FutureState) -> String {
    match state {
        FutureState::Pending => "pending".into(),
        FutureState::Result(value) => format!("result \"{}\"", output::bytes(value)),
        FutureState::Exception(m) => format!("exception \"{}\"", m.escape_debug()),
        FutureState::Cancelled(m) => format!("cancelled \"{}\"", m.escape_debug()),
        FutureState::Unknown(value) => format!("unknown({value})"),
    }
}

pub fn state_json(object: &mut serde_json::Map<String, Value>, state: &FutureState) {
    object.insert("state".into(), json!(state.name()));
    match state {
        FutureState::Result(value) => output::insert_bytes(object, "result", value),
        FutureState::Exception(m) => {
            object.insert("exception_message".into(), json!(m));
        }
        FutureState::Cancelled(m) => {
            object.insert("cancel_message".into(), json!(m));
        }
        _ => {}
    }
}

fn to_json(f: &FutureInfo) -> Value {
    let mut object = output::object(json!({
        "future_id": f.future_id.0,
        "loop": f.loop_name,
        "creator_uid": f.creator_uid,
        "created_at": output::time_json(f.created_at),
        "done_at": output::time_json(f.done_at),
    }));
    state_json(&mut object, &f.state);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: FutureState) -> FutureInfo {
        FutureInfo {
            future_id: FutureId(7),
            loop_name: "default".into(),
            state,
            creator_uid: 0,
            created_at: None,
            done_at: None,
        }
    }

    #[test]
    fn summaries() {
        let cases = [
            (FutureState::Pending, "7 pending"),
            (FutureState::Result(b"done".to_vec()), "7 result \"done\""),
            (
                FutureState::Exception("disk \"full\"".into()),
                "7 exception \"disk \\\"full\\\"\"",
            ),
            (FutureState::Cancelled(String::new()), "7 cancelled \"\""),
        ];
        for (state, want) in cases {
            assert_eq!(summary(&info(state)), want);
        }
    }

    #[test]
    fn json_carries_only_the_outcome_of_its_state() {
        let got = to_json(&info(FutureState::Result(b"ok".to_vec())));
        assert_eq!(got["state"], "result");
        assert_eq!(got["result"], "ok");
        assert!(got.get("exception_message").is_none());
        let got = to_json(&info(FutureState::Pending));
        assert_eq!(got["state"], "pending");
        assert!(got.get("result").is_none());
    }
}
