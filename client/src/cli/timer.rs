//! `loopctl timer ...`: schedule callbacks and timers, list, show and cancel handles.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use loopd_client::{
    Action, Callback, FutureId, HandleFilter, HandleId, HandleInfo, HandleKind, HandleState,
    Scheduled,
};
use serde_json::{Value, json};

use super::output::{self, Table};
use super::{Ctx, LoopArg, args};

/// Schedule timers and callbacks (call_soon, call_later, call_at) and manage their handles.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  loopctl timer add --in 1.5s --tag hello --payload world
  loopctl timer add --at 2026-11-22T22:10:00Z --loop worker
  loopctl timer ls --state pending
  loopctl timer cancel 42")]
pub enum TimerCommand {
    /// Schedule an action: next iteration, after a delay, or at a time. Prints the handle id.
    #[command(after_help = "\
The action is an event (TimerFired or CallbackRun) carrying --tag and --payload,
unless --resolve-future or --stop-loop is given.

Examples:
  loopctl timer add --soon --tag now
  loopctl timer add --in 250ms --tag ping --payload '{\"n\":1}'
  loopctl timer add --in 2m --id retry-key-1
  loopctl timer add --at 2026-11-22T23:10:00+01:00
  loopctl timer add --loop-time \"$(loopctl --json time | jq '.time + 5')\"
  loopctl timer add --in 1s --resolve-future 7 --payload done
  loopctl timer add --in 10s --stop-loop --loop worker")]
    Add(AddArgs),
    /// List a loop's handles (pending, fired and cancelled), by id.
    #[command(
        after_help = "Examples:\n  loopctl timer ls\n  loopctl timer ls --state pending --kind timer --loop worker"
    )]
    Ls(LsArgs),
    /// Describe one handle.
    #[command(after_help = "Examples:\n  loopctl timer show 42\n  loopctl timer show 42 --json")]
    Show(IdArgs),
    /// Cancel a handle (asyncio's Handle.cancel()); one that already ran is left as is.
    #[command(
        after_help = "Examples:\n  loopctl timer cancel 42\n  loopctl timer cancel 42 --loop worker"
    )]
    Cancel(IdArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("when").required(true).args(["soon", "delay", "at", "loop_time"])))]
pub struct AddArgs {
    /// Run in the next iteration (call_soon).
    #[arg(long)]
    soon: bool,
    /// Run after this delay on the loop's clock (call_later), e.g. 1.5s, 250ms, 2m.
    #[arg(long = "in", value_name = "DURATION", value_parser = args::duration)]
    delay: Option<Duration>,
    /// Run when the wall clock reaches this RFC 3339 time.
    #[arg(long, value_name = "RFC3339", value_parser = args::rfc3339)]
    at: Option<SystemTime>,
    /// Run when the loop's clock reaches this many seconds (call_at; see `loopctl time`).
    #[arg(long, value_name = "SECONDS", value_parser = args::loop_time, allow_negative_numbers = true)]
    loop_time: Option<f64>,
    /// Tag carried by the event.
    #[arg(long, default_value = "", hide_default_value = true)]
    tag: String,
    /// Payload carried by the event, or the result set by --resolve-future.
    #[arg(long, default_value = "", hide_default_value = true)]
    payload: String,
    /// Instead of an event, set this future's result to --payload.
    #[arg(long, value_name = "FUTURE_ID", conflicts_with_all = ["tag", "stop_loop"])]
    resolve_future: Option<FutureId>,
    /// Instead of an event, stop the loop (asyncio's loop.stop()).
    #[arg(long, conflicts_with_all = ["tag", "payload"])]
    stop_loop: bool,
    /// Idempotency key: a retry with the same key returns the original handle.
    #[arg(long = "id", value_name = "KEY")]
    request_id: Option<String>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateArg {
    Pending,
    Cancelled,
    Fired,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Soon,
    Timer,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only handles in this state (repeatable).
    #[arg(long, value_enum)]
    state: Vec<StateArg>,
    /// Only handles of this kind.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    #[command(flatten)]
    r#loop: LoopArg,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The handle's id, as printed by `timer add`.
    id: HandleId,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl TimerCommand {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        match self {
            TimerCommand::Add(a) => add(ctx, a).await,
            TimerCommand::Ls(a) => ls(ctx, a).await,
            TimerCommand::Show(a) => {
                let handle = ctx
                    .connect()
                    .await?
                    .get_handle(&a.r#loop.name, a.id)
                    .await?;
                show(ctx, &handle)
            }
            TimerCommand::Cancel(a) => cancel(ctx, a).await,
        }
    }
}

impl AddArgs {
    fn callback(&self) -> Callback {
        let action = match (self.resolve_future, self.stop_loop) {
            (Some(future), _) => Action::resolve_future(future, &self.payload),
            (None, true) => Action::StopLoop,
            (None, false) => Action::emit(&self.tag, &self.payload),
        };
        Callback {
            action,
            request_id: self.request_id.clone(),
        }
    }
}

async fn add(ctx: &mut Ctx<'_>, a: AddArgs) -> Result<()> {
    let client = ctx.connect().await?;
    let (name, callback) = (&a.r#loop.name, a.callback());
    let scheduled = if let Some(delay) = a.delay {
        client.call_later(name, delay, callback).await?
    } else if let Some(at) = a.at {
        client.call_at_wall_time(name, at, callback).await?
    } else if let Some(when) = a.loop_time {
        client.call_at(name, when, callback).await?
    } else {
        client.call_soon(name, callback).await?
    };
    if ctx.out.json {
        return Ok(ctx.out.json_line(&scheduled_json(name, &scheduled))?);
    }
    Ok(ctx.out.line(&scheduled.handle_id.to_string())?)
}

fn scheduled_json(loop_name: &str, s: &Scheduled) -> Value {
    let name = if loop_name.is_empty() {
        "default"
    } else {
        loop_name
    };
    json!({"handle_id": s.handle_id.0, "loop": name, "when": s.when, "duplicate": s.duplicate})
}

async fn ls(ctx: &mut Ctx<'_>, a: LsArgs) -> Result<()> {
    let filter = HandleFilter {
        states: a.state.iter().map(|s| s.to_state()).collect(),
        kind: a.kind.map(KindArg::to_kind),
        ..HandleFilter::default()
    };
    let handles = ctx
        .connect()
        .await?
        .list_all_handles(&a.r#loop.name, &filter)
        .await?;
    Ok(ctx.out.rows(table(&handles), handles.iter().map(to_json))?)
}

async fn cancel(ctx: &mut Ctx<'_>, a: IdArgs) -> Result<()> {
    let done = ctx
        .connect()
        .await?
        .cancel_handle(&a.r#loop.name, a.id)
        .await?;
    if ctx.out.json {
        let line = json!({"cancelled": done.cancelled, "handle": to_json(&done.info)});
        return Ok(ctx.out.json_line(&line)?);
    }
    let line = match done.cancelled {
        true => format!("cancelled {}", a.id),
        false => format!("{} was not pending: {}", a.id, done.info.state),
    };
    Ok(ctx.out.line(&line)?)
}

fn show(ctx: &mut Ctx<'_>, h: &HandleInfo) -> Result<()> {
    if ctx.out.json {
        return Ok(ctx.out.json_line(&to_json(h))?);
    }
    let pairs = [
        ("id", h.handle_id.to_string()),
        ("loop", h.loop_name.clone()),
        ("kind", h.kind.to_string()),
        ("state", h.state.to_string()),
        ("when", output::opt_loop_time(h.when)),
        ("fired", output::opt_loop_time(h.fired_time)),
        ("action", action_text(&h.action)),
        ("creator uid", h.creator_uid.to_string()),
        (
            "request id",
            h.request_id.clone().unwrap_or_else(|| "-".into()),
        ),
        ("created", output::time(h.created_at)),
    ];
    Ok(ctx.out.pairs(&pairs)?)
}

impl StateArg {
    fn to_state(self) -> HandleState {
        match self {
            StateArg::Pending => HandleState::Pending,
            StateArg::Cancelled => HandleState::Cancelled,
            StateArg::Fired => HandleState::Fired,
        }
    }
}

impl KindArg {
    fn to_kind(self) -> HandleKind {
        match self {
            KindArg::Soon => HandleKind::Soon,
            KindArg::Timer => HandleKind::Timer,
        }
    }
}

/// An action for people: `emit tag="t" payload="p"`, `resolve_future 7 value="v"`, `stop_loop`.
pub fn action_text(action: &Action) -> String {
    match action {
        Action::EmitEvent { tag, payload } => {
            format!(
                "emit tag=\"{}\" payload=\"{}\"",
                tag.escape_debug(),
                output::bytes(payload)
            )
        }
        Action::ResolveFuture { future_id, value } => {
            format!(
                "resolve_future {future_id} value=\"{}\"",
                output::bytes(value)
            )
        }
        Action::StopLoop => "stop_loop".into(),
        _ => "unknown".into(),
    }
}

fn action_json(action: &Action) -> Value {
    let mut object = output::object(json!({"kind": action.kind().to_string()}));
    match action {
        Action::EmitEvent { tag, payload } => {
            object.insert("tag".into(), json!(tag));
            output::insert_bytes(&mut object, "payload", payload);
        }
        Action::ResolveFuture { future_id, value } => {
            object.insert("future_id".into(), json!(future_id.0));
            output::insert_bytes(&mut object, "value", value);
        }
        _ => {}
    }
    Value::Object(object)
}

fn table(handles: &[HandleInfo]) -> Table {
    let mut table = Table::new(&["ID", "KIND", "STATE", "WHEN", "FIRED", "ACTION"]);
    for h in handles {
        table.row(vec![
            h.handle_id.to_string(),
            h.kind.to_string(),
            h.state.to_string(),
            output::opt_loop_time(h.when),
            output::opt_loop_time(h.fired_time),
            action_text(&h.action),
        ]);
    }
    table
}

fn to_json(h: &HandleInfo) -> Value {
    json!({
        "handle_id": h.handle_id.0,
        "loop": h.loop_name,
        "kind": h.kind.to_string(),
        "state": h.state.to_string(),
        "when": h.when,
        "fired_time": h.fired_time,
        "action": action_json(&h.action),
        "creator_uid": h.creator_uid,
        "request_id": h.request_id,
        "created_at": output::time_json(h.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_for_people() {
        let cases = [
            (Action::default(), r#"emit tag="" payload="""#),
            (
                Action::emit("a\"b", b"\xff"),
                r#"emit tag="a\"b" payload="0xff""#,
            ),
            (
                Action::resolve_future(FutureId(7), b"ok"),
                r#"resolve_future 7 value="ok""#,
            ),
            (Action::StopLoop, "stop_loop"),
        ];
        for (action, want) in cases {
            assert_eq!(action_text(&action), want);
        }
    }

    #[test]
    fn actions_as_json() {
        let cases = [
            (
                Action::emit("t", b"p"),
                json!({"kind": "emit_event", "tag": "t", "payload": "p"}),
            ),
            (
                Action::resolve_future(FutureId(3), b"\x00\xff"),
                json!({"kind": "resolve_future", "future_id": 3, "value_hex": "00ff"}),
            ),
            (Action::StopLoop, json!({"kind": "stop_loop"})),
        ];
        for (action, want) in cases {
            assert_eq!(action_json(&action), want);
        }
    }

    #[test]
    fn scheduled_names_the_default_loop() {
        let s = Scheduled {
            handle_id: HandleId(5),
            when: Some(1.5),
            duplicate: false,
        };
        assert_eq!(
            scheduled_json("", &s),
            json!({"handle_id": 5, "loop": "default", "when": 1.5, "duplicate": false})
        );
    }
}
