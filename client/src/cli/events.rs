//! `loopctl events`: print a loop's events, from its ring or as they happen.
//!
//! # Invariants
//! - Without `--follow` the command ends by itself: it reads the loop's newest seq
//!   first, subscribes without server-side filters (so every seq up to that one
//!   arrives), filters by kind here, and stops at that seq.
//! - A Gap (events lost by this reader) is always printed, whatever `--kind` says.

use anyhow::Result;
use clap::Args;
use loopd_client::{Client, Event, EventBody, EventKind, EventStream, HandleRan, SubscribeOptions};
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use super::output;
use super::{Ctx, LoopArg};

/// Print a loop's events: what is in its ring, or (--follow) as they happen.
#[derive(Debug, Args)]
#[command(after_help = "\
Kinds: timer_fired, callback_run, future_done, loop_started, loop_stopped,
loop_closed, gap. A gap (events this reader missed) is always printed.

Examples:
  loopctl events
  loopctl events --since 120 --kind timer_fired
  loopctl events --follow --kind future_done --limit 1
  loopctl events --follow --json | jq -c 'select(.kind == \"timer_fired\")'")]
pub struct EventsArgs {
    /// First seq to print. Default: the oldest event in the ring, or with --follow the
    /// next event to happen.
    #[arg(long, value_name = "SEQ")]
    since: Option<u64>,
    /// Keep printing events as they happen, until interrupted or --limit is reached.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only events of this kind (repeatable).
    #[arg(long, value_name = "KIND")]
    kind: Vec<EventKind>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    #[command(flatten)]
    r#loop: LoopArg,
}

impl EventsArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let client = ctx.connect().await?;
        if self.follow {
            self.follow(ctx, &client).await
        } else {
            self.print_ring(ctx, &client).await
        }
    }

    async fn follow(&self, ctx: &mut Ctx<'_>, client: &Client) -> Result<()> {
        let options = SubscribeOptions {
            since_seq: self.since.unwrap_or(0),
            kinds: self.kind.clone(),
            ..SubscribeOptions::default()
        };
        let mut events = client.subscribe(&self.r#loop.name, &options).await?;
        self.print_until(ctx, &mut events, u64::MAX).await
    }

    async fn print_ring(&self, ctx: &mut Ctx<'_>, client: &Client) -> Result<()> {
        let last = client.get_loop(&self.r#loop.name).await?.last_event_seq;
        let since = match self.since {
            Some(since) => since.max(1),
            None => oldest_in_ring(client, last).await?,
        };
        if last == 0 || since > last {
            return Ok(());
        }
        let options = SubscribeOptions {
            since_seq: since,
            ..SubscribeOptions::default()
        };
        let mut events = client.subscribe(&self.r#loop.name, &options).await?;
        self.print_until(ctx, &mut events, last).await
    }

    /// Prints the events that pass `--kind` until `--limit`, the end of the stream, or
    /// an event at or after seq `last`.
    async fn print_until(
        &self,
        ctx: &mut Ctx<'_>,
        events: &mut EventStream,
        last: u64,
    ) -> Result<()> {
        let mut printed = 0;
        while printed < self.limit.unwrap_or(u64::MAX) {
            let Some(event) = events.next().await else {
                break;
            };
            let event = event?;
            if passes(&self.kind, &event) {
                print(ctx, &event)?;
                printed += 1;
            }
            if event.seq >= last {
                break;
            }
        }
        Ok(())
    }
}

/// The seq of the oldest event a full ring still holds.
async fn oldest_in_ring(client: &Client, last: u64) -> Result<u64> {
    let capacity = client.info().await?.limits.event_ring_capacity;
    Ok(last.saturating_sub(capacity).saturating_add(1))
}

fn passes(kinds: &[EventKind], event: &Event) -> bool {
    match event.kind() {
        Some(EventKind::Gap) => true,
        Some(kind) => kinds.is_empty() || kinds.contains(&kind),
        None => kinds.is_empty(),
    }
}

fn print(ctx: &mut Ctx<'_>, event: &Event) -> Result<()> {
    if ctx.out.json {
        ctx.out.json_line(&to_json(event))?;
    } else {
        ctx.out.line(&line(event))?;
    }
    Ok(ctx.out.flush()?)
}

fn kind_name(event: &Event) -> &'static str {
    event.kind().map_or("unknown", EventKind::as_str)
}

/// `12  2026-11-22T22:10:00.250Z  timer_fired  handle=5 tag="hi" payload="x" late=350us`
fn line(event: &Event) -> String {
    let head = format!(
        "{}  {}  {}",
        event.seq,
        output::time(event.wall_time),
        kind_name(event)
    );
    match details(&event.body) {
        details if details.is_empty() => head,
        details => format!("{head}  {details}"),
    }
}

fn details(body: &EventBody) -> String {
    match body {
        EventBody::TimerFired(ran, timing) => {
            format!(
                "{} late={}",
                ran_text(ran),
                output::duration(timing.lateness)
            )
        }
        EventBody::CallbackRun(ran) => ran_text(ran),
        EventBody::FutureDone { future_id, state } => {
            format!("future={future_id} {}", super::future::outcome(state))
        }
        EventBody::Gap { from_seq, to_seq } => format!("missed={from_seq}..{to_seq}"),
        EventBody::Net(net) => super::conn::event_text(net),
        _ => String::new(),
    }
}

fn ran_text(ran: &HandleRan) -> String {
    let mut text = format!("handle={}", ran.handle_id);
    match ran.action {
        loopd_client::ActionKind::EmitEvent => text.push_str(&format!(
            " tag=\"{}\" payload=\"{}\"",
            ran.tag.escape_debug(),
            output::bytes(&ran.payload)
        )),
        other => text.push_str(&format!(" action={other}")),
    }
    if let Some(error) = &ran.error {
        text.push_str(&format!(" error=\"{}\"", error.escape_debug()));
    }
    text
}

fn ran_json(object: &mut serde_json::Map<String, Value>, ran: &HandleRan) {
    object.insert("handle_id".into(), json!(ran.handle_id.0));
    object.insert("action".into(), json!(ran.action.to_string()));
    object.insert("tag".into(), json!(ran.tag));
    output::insert_bytes(object, "payload", &ran.payload);
    object.insert("error".into(), json!(ran.error));
}

fn to_json(event: &Event) -> Value {
    let mut object = output::object(json!({
        "seq": event.seq,
        "loop": event.loop_name,
        "wall_time": output::time_json(event.wall_time),
        "loop_time": event.loop_time,
        "kind": kind_name(event),
    }));
    match &event.body {
        EventBody::TimerFired(ran, timing) => {
            ran_json(&mut object, ran);
            object.insert("scheduled_time".into(), json!(timing.scheduled_time));
            object.insert("fired_time".into(), json!(timing.fired_time));
            object.insert("lateness_seconds".into(), output::secs(timing.lateness));
        }
        EventBody::CallbackRun(ran) => ran_json(&mut object, ran),
        EventBody::FutureDone { future_id, state } => {
            object.insert("future_id".into(), json!(future_id.0));
            super::future::state_json(&mut object, state);
            // The event's own kind stays `future_done`; the outcome is `future_state`.
            if let Some(state) = object.remove("state") {
                object.insert("future_state".into(), state);
            }
        }
        EventBody::Gap { from_seq, to_seq } => {
            object.insert("from_seq".into(), json!(from_seq));
            object.insert("to_seq".into(), json!(to_seq));
        }
        EventBody::Net(net) => super::conn::event_json(&mut object, net),
        _ => {}
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use loopd_client::{ActionKind, FutureId, FutureState, HandleId, TimerTiming};

    use super::*;

    fn event(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            loop_name: "default".into(),
            wall_time: None,
            loop_time: 2.5,
            body,
        }
    }

    fn fired(tag: &str) -> EventBody {
        let ran = HandleRan {
            handle_id: HandleId(5),
            action: ActionKind::EmitEvent,
            tag: tag.into(),
            payload: b"x".to_vec(),
            error: None,
        };
        let timing = TimerTiming {
            scheduled_time: 1.0,
            fired_time: 1.00035,
            lateness: Duration::from_micros(350),
        };
        EventBody::TimerFired(ran, timing)
    }

    #[test]
    fn lines_for_people() {
        let cases = [
            (
                event(12, fired("hi")),
                r#"12  -  timer_fired  handle=5 tag="hi" payload="x" late=350us"#,
            ),
            (event(13, EventBody::LoopStopped), "13  -  loop_stopped"),
            (
                event(
                    20,
                    EventBody::Gap {
                        from_seq: 14,
                        to_seq: 20,
                    },
                ),
                "20  -  gap  missed=14..20",
            ),
            (
                event(
                    21,
                    EventBody::FutureDone {
                        future_id: FutureId(7),
                        state: FutureState::Result(b"ok".to_vec()),
                    },
                ),
                r#"21  -  future_done  future=7 result "ok""#,
            ),
        ];
        for (event, want) in cases {
            assert_eq!(line(&event), want);
        }
    }

    #[test]
    fn json_events() {
        let got = to_json(&event(12, fired("hi")));
        assert_eq!(got["kind"], "timer_fired");
        assert_eq!(got["handle_id"], 5);
        assert_eq!(got["payload"], "x");
        assert_eq!(got["lateness_seconds"], 0.00035);
        let done = EventBody::FutureDone {
            future_id: FutureId(7),
            state: FutureState::Cancelled("bye".into()),
        };
        let got = to_json(&event(3, done));
        assert_eq!(got["kind"], "future_done");
        assert_eq!(got["future_state"], "cancelled");
        assert_eq!(got["cancel_message"], "bye");
    }

    #[test]
    fn kind_filter_always_passes_gaps() {
        let gap = event(
            9,
            EventBody::Gap {
                from_seq: 1,
                to_seq: 9,
            },
        );
        let stopped = event(10, EventBody::LoopStopped);
        let only_timers = [EventKind::TimerFired];
        assert!(passes(&only_timers, &gap));
        assert!(!passes(&only_timers, &stopped));
        assert!(passes(&only_timers, &event(11, fired(""))));
        assert!(passes(&[], &stopped));
        assert!(!passes(&only_timers, &event(12, EventBody::Unknown)));
    }
}
