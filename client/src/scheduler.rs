//! SchedulerService: `call_soon`, `call_later`, `call_at` and their handles.
//!
//! # Invariants
//! - A remote callback is an [`Action`] from a closed set; the default action emits an
//!   event with an empty tag and payload.
//! - A [`Callback`] is an action plus an optional idempotency key; anything that takes
//!   `impl Into<Callback>` also takes a bare [`Action`].
//! - Handle and timer times are loop time in seconds (asyncio's `loop.time()`).

use std::fmt;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;
use tokio_stream::{Stream, StreamExt};

use crate::client::Client;
use crate::convert::{required, system_time, to_wire_duration, to_wire_time};
use crate::error::{Error, Result};
use crate::ids::{FutureId, HandleId, ProcessId};
use crate::paging::{Page, PageRequest, pages_from};
use crate::process::Command;

/// What a handle does when the loop runs it: loopd's closed set of remote callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Emit a TimerFired (timers) or CallbackRun (call_soon) event carrying a tag and a
    /// payload chosen by the client.
    EmitEvent {
        /// Free-form label, at most 256 bytes.
        tag: String,
        /// Opaque bytes.
        payload: Vec<u8>,
    },
    /// Set the result of a future of the same loop (`future.set_result(value)`).
    ResolveFuture {
        /// The future to resolve.
        future_id: FutureId,
        /// Its result.
        value: Vec<u8>,
    },
    /// Stop the loop, as asyncio's `loop.stop()`.
    StopLoop,
    /// Write bytes to a transport of the same loop (`transport.write(data)`).
    WriteTransport {
        /// The transport.
        transport_id: crate::TransportId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Close a transport of the same loop (`transport.close()`, or `abort()`).
    CloseTransport {
        /// The transport.
        transport_id: crate::TransportId,
        /// Abort: drop the write buffer.
        abort: bool,
    },
    /// Send a signal to a process of the same loop (`transport.send_signal(sig)`).
    SignalProcess {
        /// The process.
        process_id: ProcessId,
        /// A number or a name (`"SIGTERM"`, `"term"`, `"15"`).
        signal: String,
        /// Signal the process's whole group.
        to_group: bool,
    },
    /// Start a process (a failure to start it is the handle event's error).
    SpawnProcess(Command),
}

impl Default for Action {
    /// An event with an empty tag and payload: the handle only reports that it ran.
    fn default() -> Self {
        Action::emit("", b"")
    }
}

impl Action {
    /// An [`Action::EmitEvent`] with this tag and payload.
    pub fn emit(tag: impl Into<String>, payload: impl AsRef<[u8]>) -> Action {
        Action::EmitEvent {
            tag: tag.into(),
            payload: payload.as_ref().to_vec(),
        }
    }

    /// An [`Action::ResolveFuture`] setting `future_id`'s result to `value`.
    pub fn resolve_future(future_id: FutureId, value: impl AsRef<[u8]>) -> Action {
        Action::ResolveFuture {
            future_id,
            value: value.as_ref().to_vec(),
        }
    }

    /// This action with an idempotency key (see [`Callback::request_id`]).
    pub fn with_request_id(self, request_id: impl Into<String>) -> Callback {
        Callback {
            action: self,
            request_id: Some(request_id.into()),
        }
    }

    /// The action's kind, without its arguments.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::EmitEvent { .. } => ActionKind::EmitEvent,
            Action::ResolveFuture { .. } => ActionKind::ResolveFuture,
            Action::StopLoop => ActionKind::StopLoop,
            Action::WriteTransport { .. } => ActionKind::WriteTransport,
            Action::CloseTransport { .. } => ActionKind::CloseTransport,
            Action::SignalProcess { .. } => ActionKind::SignalProcess,
            Action::SpawnProcess(_) => ActionKind::SpawnProcess,
        }
    }

    pub(crate) fn into_wire(self) -> pb::Action {
        use pb::action::Kind;
        let kind = match self {
            Action::EmitEvent { tag, payload } => {
                Kind::EmitEvent(pb::EmitEventAction { tag, payload })
            }
            Action::ResolveFuture { future_id, value } => {
                Kind::ResolveFuture(pb::ResolveFutureAction {
                    future_id: future_id.0,
                    value,
                })
            }
            Action::StopLoop => Kind::StopLoop(pb::StopLoopAction {}),
            Action::WriteTransport { transport_id, data } => {
                Kind::WriteTransport(pb::WriteTransportAction {
                    transport_id: transport_id.0,
                    data,
                })
            }
            Action::CloseTransport {
                transport_id,
                abort,
            } => Kind::CloseTransport(pb::CloseTransportAction {
                transport_id: transport_id.0,
                abort,
            }),
            Action::SignalProcess {
                process_id,
                signal,
                to_group,
            } => Kind::SignalProcess(pb::SignalProcessAction {
                process_id: process_id.0,
                signal,
                to_group,
            }),
            Action::SpawnProcess(command) => Kind::SpawnProcess(pb::SpawnProcessAction {
                spec: Some(command.to_wire()),
            }),
        };
        pb::Action { kind: Some(kind) }
    }

    /// From the wire; unset means the default action, as the contract says.
    pub(crate) fn from_wire(action: Option<pb::Action>) -> Action {
        use pb::action::Kind;
        match action.and_then(|a| a.kind) {
            None => Action::default(),
            Some(Kind::EmitEvent(e)) => Action::EmitEvent {
                tag: e.tag,
                payload: e.payload,
            },
            Some(Kind::ResolveFuture(r)) => Action::ResolveFuture {
                future_id: FutureId(r.future_id),
                value: r.value,
            },
            Some(Kind::StopLoop(_)) => Action::StopLoop,
            Some(Kind::WriteTransport(w)) => Action::WriteTransport {
                transport_id: crate::TransportId(w.transport_id),
                data: w.data,
            },
            Some(Kind::CloseTransport(c)) => Action::CloseTransport {
                transport_id: crate::TransportId(c.transport_id),
                abort: c.abort,
            },
            Some(Kind::SignalProcess(a)) => Action::SignalProcess {
                process_id: ProcessId(a.process_id),
                signal: a.signal,
                to_group: a.to_group,
            },
            Some(Kind::SpawnProcess(a)) => {
                Action::SpawnProcess(Command::from_wire(a.spec.unwrap_or_default()))
            }
        }
    }
}

/// The kind of an action, without its arguments (in events and handle listings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// [`Action::EmitEvent`].
    EmitEvent,
    /// [`Action::ResolveFuture`].
    ResolveFuture,
    /// [`Action::StopLoop`].
    StopLoop,
    /// [`Action::WriteTransport`].
    WriteTransport,
    /// [`Action::CloseTransport`].
    CloseTransport,
    /// [`Action::SignalProcess`].
    SignalProcess,
    /// [`Action::SpawnProcess`].
    SpawnProcess,
    /// A kind this client does not know (sent by a newer daemon), with its wire value.
    Unknown(i32),
}

impl ActionKind {
    pub(crate) fn from_wire(value: i32) -> ActionKind {
        match pb::ActionKind::try_from(value) {
            Ok(pb::ActionKind::EmitEvent) => ActionKind::EmitEvent,
            Ok(pb::ActionKind::ResolveFuture) => ActionKind::ResolveFuture,
            Ok(pb::ActionKind::StopLoop) => ActionKind::StopLoop,
            Ok(pb::ActionKind::WriteTransport) => ActionKind::WriteTransport,
            Ok(pb::ActionKind::CloseTransport) => ActionKind::CloseTransport,
            Ok(pb::ActionKind::SignalProcess) => ActionKind::SignalProcess,
            Ok(pb::ActionKind::SpawnProcess) => ActionKind::SpawnProcess,
            _ => ActionKind::Unknown(value),
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionKind::EmitEvent => f.write_str("emit_event"),
            ActionKind::ResolveFuture => f.write_str("resolve_future"),
            ActionKind::StopLoop => f.write_str("stop_loop"),
            ActionKind::WriteTransport => f.write_str("write_transport"),
            ActionKind::CloseTransport => f.write_str("close_transport"),
            ActionKind::SignalProcess => f.write_str("signal_process"),
            ActionKind::SpawnProcess => f.write_str("spawn_process"),
            ActionKind::Unknown(value) => write!(f, "unknown({value})"),
        }
    }
}

/// An action and an optional idempotency key: what the schedule methods take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callback {
    /// What to run.
    pub action: Action,
    /// Idempotency key, at most 128 bytes: a retry with the same key, loop and caller
    /// returns the original handle with [`Scheduled::duplicate`] set.
    pub request_id: Option<String>,
}

impl From<Action> for Callback {
    fn from(action: Action) -> Self {
        Callback {
            action,
            request_id: None,
        }
    }
}

impl Callback {
    fn parts(self) -> (Option<pb::Action>, String) {
        (
            Some(self.action.into_wire()),
            self.request_id.unwrap_or_default(),
        )
    }
}

/// What scheduling returned: the handle and, for a timer, when it is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduled {
    /// The new handle (or the original one, if `duplicate`).
    pub handle_id: HandleId,
    /// For a timer, when it is due in loop time seconds; None for `call_soon`.
    pub when: Option<f64>,
    /// True if the request id matched an earlier request: nothing new was scheduled.
    pub duplicate: bool,
}

/// When an entry of a batch runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum When {
    /// In the next iteration (`call_soon`).
    Soon,
    /// After a delay (`call_later`).
    Delay(Duration),
    /// After a delay in seconds, which may be negative or infinite (`call_later`).
    DelaySecs(f64),
    /// At a loop time in seconds (`call_at`).
    At(f64),
    /// At a wall clock time.
    AtWallTime(SystemTime),
}

impl When {
    fn into_wire(self) -> Result<pb::schedule_entry::When> {
        use pb::schedule_entry::When as W;
        Ok(match self {
            When::Soon => W::Soon(()),
            When::Delay(d) => W::Delay(to_wire_duration(d)?),
            When::DelaySecs(s) => W::DelaySeconds(s),
            When::At(t) => W::At(t),
            When::AtWallTime(t) => W::AtWallTime(to_wire_time(t)),
        })
    }
}

/// One callback or timer of a batch ([`Client::schedule_batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it runs.
    pub when: When,
    /// What it runs.
    pub callback: Callback,
}

impl Entry {
    /// An entry running `callback` at `when`.
    pub fn new(when: When, callback: impl Into<Callback>) -> Entry {
        Entry {
            when,
            callback: callback.into(),
        }
    }

    fn into_wire(self) -> Result<pb::ScheduleEntry> {
        let (action, request_id) = self.callback.parts();
        Ok(pb::ScheduleEntry {
            when: Some(self.when.into_wire()?),
            action,
            request_id,
        })
    }
}

/// Entries for one loop: one message of [`Client::schedule`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The loop; empty means `default`.
    pub loop_name: String,
    /// The entries, scheduled in order.
    pub entries: Vec<Entry>,
}

impl Batch {
    fn into_wire(self) -> Result<pb::ScheduleBatchRequest> {
        let entries = self.entries.into_iter().map(Entry::into_wire);
        Ok(pb::ScheduleBatchRequest {
            r#loop: self.loop_name,
            entries: entries.collect::<Result<_>>()?,
        })
    }
}

/// Soon or timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// Made by `call_soon`: runs in the next iteration.
    Soon,
    /// Made by `call_later`, `call_at` or `call_at_wall_time`.
    Timer,
    /// A kind this client does not know, with its wire value.
    Unknown(i32),
}

impl HandleKind {
    fn from_wire(value: i32) -> HandleKind {
        match pb::HandleKind::try_from(value) {
            Ok(pb::HandleKind::Soon) => HandleKind::Soon,
            Ok(pb::HandleKind::Timer) => HandleKind::Timer,
            _ => HandleKind::Unknown(value),
        }
    }

    fn to_wire(self) -> i32 {
        match self {
            HandleKind::Soon => pb::HandleKind::Soon as i32,
            HandleKind::Timer => pb::HandleKind::Timer as i32,
            HandleKind::Unknown(value) => value,
        }
    }
}

impl fmt::Display for HandleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleKind::Soon => f.write_str("soon"),
            HandleKind::Timer => f.write_str("timer"),
            HandleKind::Unknown(value) => write!(f, "unknown({value})"),
        }
    }
}

/// Where a handle is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleState {
    /// Scheduled and not run yet.
    Pending,
    /// Cancelled before it ran.
    Cancelled,
    /// Its action ran.
    Fired,
    /// A state this client does not know, with its wire value.
    Unknown(i32),
}

impl HandleState {
    fn from_wire(value: i32) -> HandleState {
        match pb::HandleState::try_from(value) {
            Ok(pb::HandleState::Pending) => HandleState::Pending,
            Ok(pb::HandleState::Cancelled) => HandleState::Cancelled,
            Ok(pb::HandleState::Fired) => HandleState::Fired,
            _ => HandleState::Unknown(value),
        }
    }

    fn to_wire(self) -> i32 {
        match self {
            HandleState::Pending => pb::HandleState::Pending as i32,
            HandleState::Cancelled => pb::HandleState::Cancelled as i32,
            HandleState::Fired => pb::HandleState::Fired as i32,
            HandleState::Unknown(value) => value,
        }
    }
}

impl fmt::Display for HandleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleState::Pending => f.write_str("pending"),
            HandleState::Cancelled => f.write_str("cancelled"),
            HandleState::Fired => f.write_str("fired"),
            HandleState::Unknown(value) => write!(f, "unknown({value})"),
        }
    }
}

/// One handle, as the daemon describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HandleInfo {
    /// The handle's id.
    pub handle_id: HandleId,
    /// The loop that owns it.
    pub loop_name: String,
    /// Soon or timer.
    pub kind: HandleKind,
    /// Pending, cancelled or fired.
    pub state: HandleState,
    /// For a timer, when it is due in loop time seconds (`TimerHandle.when()`).
    pub when: Option<f64>,
    /// When its action ran, in loop time seconds, once fired.
    pub fired_time: Option<f64>,
    /// What it does.
    pub action: Action,
    /// The Unix uid of the caller that scheduled it.
    pub creator_uid: u32,
    /// The idempotency key it was scheduled with.
    pub request_id: Option<String>,
    /// When it was scheduled, by the wall clock.
    pub created_at: Option<SystemTime>,
}

impl From<pb::HandleInfo> for HandleInfo {
    fn from(h: pb::HandleInfo) -> Self {
        HandleInfo {
            handle_id: HandleId(h.handle_id),
            loop_name: h.r#loop,
            kind: HandleKind::from_wire(h.kind),
            state: HandleState::from_wire(h.state),
            when: h.when,
            fired_time: h.fired_time,
            action: Action::from_wire(h.action),
            creator_uid: h.creator_uid,
            request_id: Some(h.request_id).filter(|id| !id.is_empty()),
            created_at: system_time(h.created_at),
        }
    }
}

/// Which handles [`Client::list_handles`] returns, and which page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandleFilter {
    /// Only handles in these states; empty: every state.
    pub states: Vec<HandleState>,
    /// Only handles of this kind; None: both.
    pub kind: Option<HandleKind>,
    /// Most handles per page; 0: the daemon's default (1000).
    pub page_size: u32,
    /// The previous page's [`HandlePage::next_page_token`]; None: the first page.
    pub page_token: Option<String>,
}

/// One page of handles.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlePage {
    /// The handles, by ascending id.
    pub handles: Vec<HandleInfo>,
    /// The token for the next page; None on the last page.
    pub next_page_token: Option<String>,
}

/// What cancelling did: whether this request cancelled, and the resource after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancelled<T> {
    /// True if this request cancelled it; false if it had already run, been
    /// cancelled, or (for a future) was done.
    pub cancelled: bool,
    /// The resource after the request.
    pub info: T,
}

/// The responses of [`Client::schedule`], one per batch sent, in order.
pub type ScheduleResults = Pin<Box<dyn Stream<Item = Result<Vec<Scheduled>>> + Send>>;

fn scheduled(handle_id: u64, when: Option<f64>, duplicate: bool) -> Scheduled {
    Scheduled {
        handle_id: HandleId(handle_id),
        when,
        duplicate,
    }
}

fn scheduled_results(response: pb::ScheduleBatchResponse) -> Vec<Scheduled> {
    let results = response.results.into_iter();
    results
        .map(|r| scheduled(r.handle_id, r.when, r.duplicate))
        .collect()
}

impl Client {
    /// Runs `callback` in the next iteration (asyncio's `call_soon`).
    ///
    /// Fails with NOT_FOUND (loop, or the future of a ResolveFuture action),
    /// FAILED_PRECONDITION (loop closed), RESOURCE_EXHAUSTED (quota, payload) or
    /// INVALID_ARGUMENT (tag or request id too long).
    pub async fn call_soon(
        &self,
        loop_name: &str,
        callback: impl Into<Callback>,
    ) -> Result<Scheduled> {
        let (action, request_id) = callback.into().parts();
        let request = pb::CallSoonRequest {
            r#loop: loop_name.to_owned(),
            action,
            request_id,
        };
        let r = self
            .scheduler
            .clone()
            .call_soon(request)
            .await?
            .into_inner();
        Ok(scheduled(r.handle_id, None, r.duplicate))
    }

    /// Runs `callback` once `delay` has passed on the loop's clock (asyncio's
    /// `call_later`). Fails as [`Client::call_soon`], or with
    /// [`Error::DurationTooLarge`].
    pub async fn call_later(
        &self,
        loop_name: &str,
        delay: Duration,
        callback: impl Into<Callback>,
    ) -> Result<Scheduled> {
        let after = pb::call_later_request::After::Delay(to_wire_duration(delay)?);
        self.call_later_wire(loop_name, after, callback.into())
            .await
    }

    /// As [`Client::call_later`], with the delay in seconds: negative is due at once,
    /// positive infinity never fires until cancelled; NaN and negative infinity are
    /// INVALID_ARGUMENT.
    pub async fn call_later_secs(
        &self,
        loop_name: &str,
        delay_seconds: f64,
        callback: impl Into<Callback>,
    ) -> Result<Scheduled> {
        let after = pb::call_later_request::After::DelaySeconds(delay_seconds);
        self.call_later_wire(loop_name, after, callback.into())
            .await
    }

    async fn call_later_wire(
        &self,
        loop_name: &str,
        after: pb::call_later_request::After,
        callback: Callback,
    ) -> Result<Scheduled> {
        let (action, request_id) = callback.parts();
        let request = pb::CallLaterRequest {
            r#loop: loop_name.to_owned(),
            after: Some(after),
            action,
            request_id,
        };
        let r = self
            .scheduler
            .clone()
            .call_later(request)
            .await?
            .into_inner();
        Ok(scheduled(r.handle_id, Some(r.when), r.duplicate))
    }

    /// Runs `callback` when the loop's clock reaches `when` seconds (asyncio's
    /// `call_at`; see [`Client::time`]). Fails as [`Client::call_soon`]; a NaN or
    /// negative infinite `when` is INVALID_ARGUMENT.
    pub async fn call_at(
        &self,
        loop_name: &str,
        when: f64,
        callback: impl Into<Callback>,
    ) -> Result<Scheduled> {
        let (action, request_id) = callback.into().parts();
        let request = pb::CallAtRequest {
            r#loop: loop_name.to_owned(),
            when,
            action,
            request_id,
        };
        let r = self.scheduler.clone().call_at(request).await?.into_inner();
        Ok(scheduled(r.handle_id, Some(r.when), r.duplicate))
    }

    /// Runs `callback` when the wall clock reaches `when`; the daemon turns it into
    /// loop time once, on arrival. Fails as [`Client::call_soon`].
    pub async fn call_at_wall_time(
        &self,
        loop_name: &str,
        when: SystemTime,
        callback: impl Into<Callback>,
    ) -> Result<Scheduled> {
        let (action, request_id) = callback.into().parts();
        let request = pb::CallAtWallTimeRequest {
            r#loop: loop_name.to_owned(),
            when: Some(to_wire_time(when)),
            action,
            request_id,
        };
        let r = self
            .scheduler
            .clone()
            .call_at_wall_time(request)
            .await?
            .into_inner();
        Ok(scheduled(r.handle_id, Some(r.when), r.duplicate))
    }

    /// Schedules many entries on one loop, all or nothing, in order. Returns one
    /// [`Scheduled`] per entry. Fails as [`Client::call_soon`] with a message naming
    /// the bad entry's index, or INVALID_ARGUMENT past the daemon's batch limit.
    pub async fn schedule_batch(&self, batch: Batch) -> Result<Vec<Scheduled>> {
        let request = batch.into_wire()?;
        let response = self.scheduler.clone().schedule_batch(request).await?;
        Ok(scheduled_results(response.into_inner()))
    }

    /// The streaming form of [`Client::schedule_batch`]: each batch from `batches` is
    /// answered by one item of the returned stream, in order. A batch that fails ends
    /// the stream with its error; batches answered before it stay scheduled.
    ///
    /// A batch that cannot be encoded (a [`When::Delay`] too large for the wire) ends
    /// the request stream there.
    pub async fn schedule<S>(&self, batches: S) -> Result<ScheduleResults>
    where
        S: Stream<Item = Batch> + Send + 'static,
    {
        let requests = batches.map_while(|batch| batch.into_wire().ok());
        let responses = self
            .scheduler
            .clone()
            .schedule(requests)
            .await?
            .into_inner();
        let results = responses.map(|r| r.map(scheduled_results).map_err(Error::from));
        Ok(Box::pin(results))
    }

    /// Cancels a handle (asyncio's `Handle.cancel()`). Cancelling one that already ran
    /// or was cancelled changes nothing ([`Cancelled::cancelled`] is false). Fails with
    /// NOT_FOUND for an unknown loop or handle.
    pub async fn cancel_handle(
        &self,
        loop_name: &str,
        handle_id: HandleId,
    ) -> Result<Cancelled<HandleInfo>> {
        let request = pb::CancelHandleRequest {
            r#loop: loop_name.to_owned(),
            handle_id: handle_id.0,
        };
        let r = self
            .scheduler
            .clone()
            .cancel_handle(request)
            .await?
            .into_inner();
        Ok(Cancelled {
            cancelled: r.cancelled,
            info: required(r.handle, "handle")?.into(),
        })
    }

    /// Describes one handle. Fails with NOT_FOUND for an unknown (or forgotten) handle.
    pub async fn get_handle(&self, loop_name: &str, handle_id: HandleId) -> Result<HandleInfo> {
        let request = pb::GetHandleRequest {
            r#loop: loop_name.to_owned(),
            handle_id: handle_id.0,
        };
        let r = self
            .scheduler
            .clone()
            .get_handle(request)
            .await?
            .into_inner();
        Ok(required(r.handle, "handle")?.into())
    }

    /// Lists one page of a loop's handles by ascending id. Fails with NOT_FOUND for an
    /// unknown loop, INVALID_ARGUMENT for a bad page token.
    pub async fn list_handles(&self, loop_name: &str, filter: &HandleFilter) -> Result<HandlePage> {
        let request = pb::ListHandlesRequest {
            r#loop: loop_name.to_owned(),
            states: filter.states.iter().map(|s| s.to_wire()).collect(),
            kind: filter
                .kind
                .map_or(pb::HandleKind::Unspecified as i32, HandleKind::to_wire),
            page_size: filter.page_size,
            page_token: filter.page_token.clone().unwrap_or_default(),
        };
        let r = self
            .scheduler
            .clone()
            .list_handles(request)
            .await?
            .into_inner();
        Ok(HandlePage {
            handles: r.handles.into_iter().map(HandleInfo::from).collect(),
            next_page_token: Some(r.next_page_token).filter(|t| !t.is_empty()),
        })
    }

    /// Lists every handle of a loop matching `filter`, following the pages.
    /// Fails as [`Client::list_handles`].
    pub async fn list_all_handles(
        &self,
        loop_name: &str,
        filter: &HandleFilter,
    ) -> Result<Vec<HandleInfo>> {
        let first = PageRequest {
            page_size: filter.page_size,
            page_token: filter.page_token.clone(),
        };
        pages_from(first, |page| {
            let filter = HandleFilter {
                page_size: page.page_size,
                page_token: page.page_token,
                ..filter.clone()
            };
            async move {
                let page = self.list_handles(loop_name, &filter).await?;
                Ok(Page {
                    items: page.handles,
                    next_page_token: page.next_page_token,
                })
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_the_wire() {
        let cases = [
            Action::default(),
            Action::emit("tag", b"\x00\xff"),
            Action::resolve_future(FutureId(9), b"v"),
            Action::StopLoop,
        ];
        for action in cases {
            assert_eq!(Action::from_wire(Some(action.clone().into_wire())), action);
        }
    }

    #[test]
    fn unset_action_is_the_default_emit() {
        assert_eq!(Action::from_wire(None), Action::emit("", b""));
        assert_eq!(
            Action::from_wire(Some(pb::Action { kind: None })),
            Action::default()
        );
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        assert_eq!(HandleState::from_wire(99), HandleState::Unknown(99));
        assert_eq!(HandleKind::from_wire(0), HandleKind::Unknown(0));
        assert_eq!(ActionKind::from_wire(2), ActionKind::ResolveFuture);
        assert_eq!(HandleState::Unknown(99).to_string(), "unknown(99)");
    }

    #[test]
    fn empty_strings_are_none() {
        let info = HandleInfo::from(pb::HandleInfo {
            handle_id: 3,
            ..Default::default()
        });
        assert_eq!(info.request_id, None);
        assert_eq!(info.handle_id, HandleId(3));
    }
}
