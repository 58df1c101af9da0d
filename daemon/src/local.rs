//! Loop-local state: the handles, futures and idempotency keys of one loop, kept on the
//! loop's thread and touched only by closures running there.
//!
//! # Invariants
//! - Only the loop thread reads or writes a [`LoopState`]; requests reach it as jobs.
//! - A batch is checked completely (idempotency keys, futures) before anything is
//!   scheduled, so a failing entry leaves nothing behind.
//! - Done handles and futures are forgotten after the retention time, or sooner when a
//!   loop holds more than `max_retained` of them; pending ones are never forgotten.
//! - Ids come from daemon-wide counters, so they are never reused, not even by a loop
//!   that replaces a closed one of the same name.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use loopd::{Handle, TimerHandle};
use loopd_proto::pb;
use pb::action::Kind as ActionKind;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

use crate::config::Limits;
use crate::loops::LoopCtx;
use crate::service::paging::Page;
use crate::status::{Error, Result};

static NEXT_HANDLE_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_FUTURE_ID: AtomicU64 = AtomicU64::new(1);

/// When a validated entry runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// Next iteration (call_soon).
    Soon,
    /// After this many seconds (finite; negative means now).
    Delay(f64),
    /// At this loop time (finite; in the past means now).
    At(f64),
    /// At this wall clock time.
    AtWall(SystemTime),
    /// A timer that never fires until cancelled (an infinite delay or time).
    Never,
}

/// A schedule request entry, validated on the front door.
#[derive(Clone, Debug)]
pub struct Entry {
    /// When it runs.
    pub when: When,
    /// What it does.
    pub action: Option<pb::Action>,
    /// The idempotency key; empty: none.
    pub request_id: String,
    /// Identifies the request, to tell a retry from a reused key.
    pub fingerprint: u64,
}

enum EngineHandle {
    Soon(Handle),
    Timer(TimerHandle),
    Never,
}

struct HandleRec {
    kind: pb::HandleKind,
    state: pb::HandleState,
    when: Option<f64>,
    fired_time: Option<f64>,
    action: Option<pb::Action>,
    creator_uid: u32,
    request_id: String,
    created_at: SystemTime,
    engine: EngineHandle,
}

struct FutureRec {
    state: pb::FutureState,
    result: Vec<u8>,
    exception: String,
    cancel_message: String,
    creator_uid: u32,
    created_at: SystemTime,
    done_at: Option<SystemTime>,
    waiters: Vec<oneshot::Sender<pb::FutureInfo>>,
}

#[derive(Clone, Copy)]
enum IdemValue {
    Handle { id: u64, when: Option<f64> },
    Future(u64),
}

type IdemKey = (u32, String);

/// Idempotency keys: bounded by count and by age.
#[derive(Default)]
struct Idempotency {
    map: HashMap<IdemKey, (u64, IdemValue)>,
    order: VecDeque<(Instant, IdemKey)>,
}

impl Idempotency {
    fn prune(&mut self, now: Instant, ttl: Duration, max: usize) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < ttl && self.order.len() <= max {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.map.remove(&key);
            }
        }
    }

    /// The earlier answer for a retry; INVALID_ARGUMENT for a key reused differently.
    fn lookup(&self, uid: u32, request_id: &str, fingerprint: u64) -> Result<Option<IdemValue>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        match self.map.get(&(uid, request_id.to_owned())) {
            None => Ok(None),
            Some((fp, value)) if *fp == fingerprint => Ok(Some(*value)),
            Some(_) => Err(Error::invalid(
                "request_id",
                format!("{request_id:?} was already used for a different request"),
            )),
        }
    }

    fn remember(&mut self, uid: u32, request_id: &str, fingerprint: u64, value: IdemValue) {
        if request_id.is_empty() {
            return;
        }
        let key = (uid, request_id.to_owned());
        self.order.push_back((Instant::now(), key.clone()));
        self.map.insert(key, (fingerprint, value));
    }
}

/// The tables of one loop.
pub struct LoopState {
    handles: BTreeMap<u64, HandleRec>,
    done_handles: VecDeque<(Instant, u64)>,
    futures: HashMap<u64, FutureRec>,
    done_futures: VecDeque<(Instant, u64)>,
    futures_pending: usize,
    never_pending: usize,
    /// Sum of the lateness of every timer fired, in nanoseconds (the engine keeps only
    /// buckets; every timer of a daemon loop is fired through `run_handle`).
    lateness_sum_ns: u64,
    /// Pending handles and futures per caller uid, for the quotas.
    held_handles: HashMap<u32, usize>,
    held_futures: HashMap<u32, usize>,
    idem: Idempotency,
    limits: Limits,
}

impl LoopState {
    /// Empty tables under `limits`.
    pub fn new(limits: Limits) -> Self {
        LoopState {
            handles: BTreeMap::new(),
            done_handles: VecDeque::new(),
            futures: HashMap::new(),
            done_futures: VecDeque::new(),
            futures_pending: 0,
            never_pending: 0,
            lateness_sum_ns: 0,
            held_handles: HashMap::new(),
            held_futures: HashMap::new(),
            idem: Idempotency::default(),
            limits,
        }
    }

    /// The limits this loop was given.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Futures not done yet.
    pub fn futures_pending(&self) -> usize {
        self.futures_pending
    }

    /// Sum of the lateness of the timers fired, in nanoseconds.
    pub fn lateness_sum_ns(&self) -> u64 {
        self.lateness_sum_ns
    }

    /// Timers that never fire (infinite), still pending: the engine does not hold them.
    pub fn never_pending(&self) -> usize {
        self.never_pending
    }

    fn prune(&mut self) {
        let now = Instant::now();
        let ttl = Duration::from_secs(self.limits.retention_secs);
        let max = self.limits.max_retained;
        while let Some((at, id)) = self.done_handles.front().copied() {
            if now.duration_since(at) < ttl && self.done_handles.len() <= max {
                break;
            }
            self.done_handles.pop_front();
            self.handles.remove(&id);
        }
        while let Some((at, id)) = self.done_futures.front().copied() {
            if now.duration_since(at) < ttl && self.done_futures.len() <= max {
                break;
            }
            self.done_futures.pop_front();
            self.futures.remove(&id);
        }
        let idem_ttl = Duration::from_secs(self.limits.idempotency_ttl_secs);
        self.idem
            .prune(now, idem_ttl, self.limits.max_idempotency_keys);
    }

    /// Records that handle `id` of `uid` ran or was cancelled.
    fn handle_done(&mut self, id: u64, uid: u32) {
        self.done_handles.push_back((Instant::now(), id));
        release(&mut self.held_handles, uid);
    }
}

/// RESOURCE_EXHAUSTED if `uid` would hold more than `limit` pending `what` with `more`.
fn check_quota(
    held: &HashMap<u32, usize>,
    uid: u32,
    more: usize,
    limit: usize,
    what: &'static str,
) -> Result<()> {
    let holds = held.get(&uid).copied().unwrap_or(0);
    if holds.saturating_add(more) > limit {
        return Err(Error::Quota {
            what,
            uid,
            holds,
            limit,
        });
    }
    Ok(())
}

fn hold(held: &mut HashMap<u32, usize>, uid: u32) {
    *held.entry(uid).or_insert(0) += 1;
}

fn release(held: &mut HashMap<u32, usize>, uid: u32) {
    if let Some(n) = held.get_mut(&uid) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            held.remove(&uid);
        }
    }
}

/// The kind of an action, for events.
pub(crate) fn action_kind(action: Option<&pb::Action>) -> pb::ActionKind {
    match action.and_then(|a| a.kind.as_ref()) {
        None | Some(ActionKind::EmitEvent(_)) => pb::ActionKind::EmitEvent,
        Some(ActionKind::ResolveFuture(_)) => pb::ActionKind::ResolveFuture,
        Some(ActionKind::StopLoop(_)) => pb::ActionKind::StopLoop,
        Some(ActionKind::WriteTransport(_)) => pb::ActionKind::WriteTransport,
        Some(ActionKind::CloseTransport(_)) => pb::ActionKind::CloseTransport,
        Some(ActionKind::SignalProcess(_)) => pb::ActionKind::SignalProcess,
        Some(ActionKind::SpawnProcess(_)) => pb::ActionKind::SpawnProcess,
    }
}

/// An EmitEventAction's tag and payload; empty for other actions.
pub(crate) fn tag_and_payload(action: Option<&pb::Action>) -> (String, Vec<u8>) {
    match action.and_then(|a| a.kind.as_ref()) {
        Some(ActionKind::EmitEvent(e)) => (e.tag.clone(), e.payload.clone()),
        _ => (String::new(), Vec::new()),
    }
}

fn lateness(late: f64) -> prost_types::Duration {
    let late = Duration::from_secs_f64(late.max(0.0));
    prost_types::Duration {
        seconds: i64::try_from(late.as_secs()).unwrap_or(i64::MAX),
        nanos: late.subsec_nanos() as i32,
    }
}

// ---- scheduling ---------------------------------------------------------------------

impl LoopCtx {
    /// Schedules a validated batch for caller `uid`, all or nothing.
    pub fn schedule(
        self: &Rc<Self>,
        uid: u32,
        entries: Vec<Entry>,
    ) -> Result<Vec<pb::ScheduleResult>> {
        self.check_open()?;
        let mut st = self.state.borrow_mut();
        st.prune();
        let mut earlier = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let check = || -> Result<Option<IdemValue>> {
                let dup = st.idem.lookup(uid, &entry.request_id, entry.fingerprint)?;
                if dup.is_none() {
                    self.check_action_target(&st, entry.action.as_ref())?;
                }
                Ok(dup)
            };
            let dup = check().map_err(|source| Error::Entry {
                index,
                source: Box::new(source),
            })?;
            earlier.push(dup);
        }
        let new = earlier.iter().filter(|dup| dup.is_none()).count();
        let limit = st.limits.max_pending_handles_per_caller;
        check_quota(&st.held_handles, uid, new, limit, "pending handles")?;
        // Wall clock first: a wall-time timer then lands at or after its time, never before.
        let wall_now = SystemTime::now();
        let base = self.lp.time();
        let mut results = Vec::with_capacity(entries.len());
        for (entry, dup) in entries.into_iter().zip(earlier) {
            let result = match dup {
                Some(IdemValue::Handle { id, when }) => pb::ScheduleResult {
                    handle_id: id,
                    when,
                    duplicate: true,
                },
                // A key of a CreateFuture reused here: caught as a fingerprint mismatch.
                Some(IdemValue::Future(_)) => {
                    return Err(Error::Internal("idempotency key kind mismatch".into()));
                }
                None => self.schedule_one(&mut st, uid, entry, base, wall_now)?,
            };
            results.push(result);
        }
        Ok(results)
    }

    fn check_action_target(&self, st: &LoopState, action: Option<&pb::Action>) -> Result<()> {
        if let Some(ActionKind::ResolveFuture(resolve)) = action.and_then(|a| a.kind.as_ref()) {
            if !st.futures.contains_key(&resolve.future_id) {
                return Err(self.future_not_found(resolve.future_id));
            }
        }
        let transport_id = match action.and_then(|a| a.kind.as_ref()) {
            Some(ActionKind::WriteTransport(w)) => Some(w.transport_id),
            Some(ActionKind::CloseTransport(c)) => Some(c.transport_id),
            _ => None,
        };
        if let Some(id) = transport_id.filter(|id| !self.net.has_transport(*id)) {
            return Err(Error::TransportNotFound {
                loop_name: self.name.clone(),
                id,
            });
        }
        if let Some(kind) = action.and_then(|a| a.kind.as_ref()) {
            crate::process::check_action_target(self, kind)?;
        }
        Ok(())
    }

    /// NOT_FOUND if the future or process an action names is not on this loop.
    pub fn check_target(&self, action: Option<&pb::Action>) -> Result<()> {
        self.check_action_target(&self.state.borrow(), action)
    }

    fn schedule_one(
        self: &Rc<Self>,
        st: &mut LoopState,
        uid: u32,
        entry: Entry,
        base: f64,
        wall_now: SystemTime,
    ) -> Result<pb::ScheduleResult> {
        let id = NEXT_HANDLE_ID.fetch_add(1, Ordering::Relaxed);
        let ctx = self.clone();
        let (kind, engine) = match entry.when {
            When::Soon => {
                let handle = self.lp.call_soon(move || ctx.run_handle(id, false))?;
                (pb::HandleKind::Soon, EngineHandle::Soon(handle))
            }
            When::Never => (pb::HandleKind::Timer, EngineHandle::Never),
            timed => {
                let when = match timed {
                    When::Delay(secs) => base + secs.max(0.0),
                    When::At(at) => at.max(0.0),
                    When::AtWall(at) => wall_delta(at, wall_now) + base,
                    When::Soon | When::Never => base,
                };
                let timer = self
                    .lp
                    .call_at_loop_time(when.max(0.0), move || ctx.run_handle(id, true))?;
                (pb::HandleKind::Timer, EngineHandle::Timer(timer))
            }
        };
        let when = match (&engine, entry.when) {
            (EngineHandle::Soon(_), _) => None,
            // CallAt answers the request's own `when`; the engine rounds it up to whole
            // nanoseconds, so the timer still never fires before it.
            (EngineHandle::Timer(_), When::At(at)) => Some(at),
            (EngineHandle::Timer(timer), _) => Some(timer.when()),
            (EngineHandle::Never, _) => {
                st.never_pending += 1;
                Some(f64::INFINITY)
            }
        };
        st.idem.remember(
            uid,
            &entry.request_id,
            entry.fingerprint,
            IdemValue::Handle { id, when },
        );
        hold(&mut st.held_handles, uid);
        st.handles.insert(
            id,
            HandleRec {
                kind,
                state: pb::HandleState::Pending,
                when,
                fired_time: None,
                action: entry.action,
                creator_uid: uid,
                request_id: entry.request_id,
                created_at: SystemTime::now(),
                engine,
            },
        );
        Ok(pb::ScheduleResult {
            handle_id: id,
            when,
            duplicate: false,
        })
    }

    /// Runs handle `id`'s action (the engine calls this), then reports it as an event.
    fn run_handle(self: &Rc<Self>, id: u64, timer: bool) {
        let now = self.lp.time();
        let (action, when, fired_time) = {
            let mut st = self.state.borrow_mut();
            let Some(rec) = st.handles.get_mut(&id) else {
                return;
            };
            // The engine fired at or after its nanosecond deadline; converting both to f64
            // seconds may differ by an ulp, which must not read as "early".
            let fired_time = rec.when.map_or(now, |when| now.max(when));
            rec.state = pb::HandleState::Fired;
            rec.fired_time = Some(fired_time);
            let found = (rec.action.clone(), rec.when, fired_time);
            let uid = rec.creator_uid;
            st.handle_done(id, uid);
            found
        };
        let error = self
            .run_action(action.as_ref())
            .err()
            .map(|e| e.to_string());
        let kind = action_kind(action.as_ref()) as i32;
        let (tag, payload) = tag_and_payload(action.as_ref());
        let error = error.unwrap_or_default();
        let event = if timer {
            let scheduled_time = when.unwrap_or(fired_time);
            let late_ns = ((fired_time - scheduled_time).max(0.0) * 1e9) as u64;
            let mut st = self.state.borrow_mut();
            st.lateness_sum_ns = st.lateness_sum_ns.saturating_add(late_ns);
            drop(st);
            EventKind::TimerFired(pb::TimerFired {
                handle_id: id,
                action: kind,
                tag,
                payload,
                scheduled_time,
                fired_time,
                lateness: Some(lateness(fired_time - scheduled_time)),
                error,
            })
        } else {
            EventKind::CallbackRun(pb::CallbackRun {
                handle_id: id,
                action: kind,
                tag,
                payload,
                error,
            })
        };
        self.emit(event);
    }

    /// Runs an action on the loop (a handle's or a signal handler's).
    pub(crate) fn run_action(&self, action: Option<&pb::Action>) -> Result<()> {
        match action.and_then(|a| a.kind.as_ref()) {
            None | Some(ActionKind::EmitEvent(_)) => Ok(()),
            Some(ActionKind::StopLoop(_)) => {
                self.lp.stop();
                Ok(())
            }
            Some(ActionKind::ResolveFuture(r)) => self
                .finish_future(r.future_id, pb::FutureState::Result, r.value.clone(), "")
                .map(drop),
            Some(ActionKind::WriteTransport(w)) => {
                self.net_run_action(w.transport_id, Some(&w.data), false)
            }
            Some(ActionKind::CloseTransport(c)) => {
                self.net_run_action(c.transport_id, None, c.abort)
            }
            Some(ActionKind::SignalProcess(a)) => crate::process::run_signal_action(self, a),
            Some(ActionKind::SpawnProcess(a)) => crate::process::run_spawn_action(self, a),
        }
    }

    /// Cancels a handle; `true` if this call cancelled it.
    pub fn cancel_handle(&self, id: u64) -> Result<(bool, pb::HandleInfo)> {
        let mut st = self.state.borrow_mut();
        let Some(rec) = st.handles.get_mut(&id) else {
            return Err(self.handle_not_found(id));
        };
        let cancelled = rec.state == pb::HandleState::Pending;
        if cancelled {
            rec.state = pb::HandleState::Cancelled;
            match &rec.engine {
                EngineHandle::Soon(handle) => handle.cancel(),
                EngineHandle::Timer(timer) => timer.cancel(),
                EngineHandle::Never => {}
            }
            let never = matches!(rec.engine, EngineHandle::Never);
            let uid = rec.creator_uid;
            if never {
                st.never_pending = st.never_pending.saturating_sub(1);
            }
            st.handle_done(id, uid);
        }
        let info = self.handle_info(&st, id)?;
        Ok((cancelled, info))
    }

    /// Describes a handle.
    pub fn get_handle(&self, id: u64) -> Result<pb::HandleInfo> {
        self.handle_info(&self.state.borrow(), id)
    }

    fn handle_info(&self, st: &LoopState, id: u64) -> Result<pb::HandleInfo> {
        let rec = st
            .handles
            .get(&id)
            .ok_or_else(|| self.handle_not_found(id))?;
        Ok(self.handle_info_of(id, rec))
    }

    fn handle_info_of(&self, id: u64, rec: &HandleRec) -> pb::HandleInfo {
        pb::HandleInfo {
            handle_id: id,
            r#loop: self.name.clone(),
            kind: rec.kind as i32,
            state: rec.state as i32,
            when: rec.when,
            fired_time: rec.fired_time,
            action: rec.action.clone(),
            creator_uid: rec.creator_uid,
            request_id: rec.request_id.clone(),
            created_at: Some(rec.created_at.into()),
        }
    }

    /// One page of the handles matching `states` and `kind`, and the id to resume after
    /// when more follow.
    pub fn list_handles(
        &self,
        page: Page,
        states: &[i32],
        kind: i32,
    ) -> Result<(Vec<pb::HandleInfo>, Option<u64>)> {
        let st = self.state.borrow();
        let matching = st.handles.range(page.range()).filter(|(_, rec)| {
            let state_ok = states.is_empty() || states.contains(&(rec.state as i32));
            state_ok && (kind == 0 || kind == rec.kind as i32)
        });
        Ok(page.take(matching.map(|(id, rec)| (*id, self.handle_info_of(*id, rec)))))
    }

    fn handle_not_found(&self, id: u64) -> Error {
        Error::HandleNotFound {
            loop_name: self.name.clone(),
            id,
        }
    }

    fn future_not_found(&self, id: u64) -> Error {
        Error::FutureNotFound {
            loop_name: self.name.clone(),
            id,
        }
    }
}

fn wall_delta(at: SystemTime, now: SystemTime) -> f64 {
    match at.duration_since(now) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    }
}

// ---- futures --------------------------------------------------------------------------

impl LoopCtx {
    /// Creates a pending future for `uid`; a retried `request_id` returns the first one.
    pub fn create_future(&self, uid: u32, request_id: &str) -> Result<(u64, bool)> {
        const FINGERPRINT: u64 = 0x0f07_07e5;
        self.check_open()?;
        let mut st = self.state.borrow_mut();
        st.prune();
        match st.idem.lookup(uid, request_id, FINGERPRINT)? {
            Some(IdemValue::Future(id)) => return Ok((id, true)),
            Some(IdemValue::Handle { .. }) => {
                return Err(Error::invalid(
                    "request_id",
                    format!("{request_id:?} was already used for a different request"),
                ));
            }
            None => {}
        }
        let limit = st.limits.max_pending_futures_per_caller;
        check_quota(&st.held_futures, uid, 1, limit, "pending futures")?;
        hold(&mut st.held_futures, uid);
        let id = NEXT_FUTURE_ID.fetch_add(1, Ordering::Relaxed);
        st.futures.insert(
            id,
            FutureRec {
                state: pb::FutureState::Pending,
                result: Vec::new(),
                exception: String::new(),
                cancel_message: String::new(),
                creator_uid: uid,
                created_at: SystemTime::now(),
                done_at: None,
                waiters: Vec::new(),
            },
        );
        st.futures_pending += 1;
        st.idem
            .remember(uid, request_id, FINGERPRINT, IdemValue::Future(id));
        Ok((id, false))
    }

    /// Makes a pending future done with `state`; FAILED_PRECONDITION if already done.
    /// `value` is the result, `message` the exception or cancel message.
    pub fn finish_future(
        &self,
        id: u64,
        state: pb::FutureState,
        value: Vec<u8>,
        message: &str,
    ) -> Result<pb::FutureInfo> {
        let (info, waiters) = {
            let mut st = self.state.borrow_mut();
            let rec = st
                .futures
                .get_mut(&id)
                .ok_or_else(|| self.future_not_found(id))?;
            if rec.state != pb::FutureState::Pending {
                return Err(Error::FutureAlreadyDone(id));
            }
            rec.state = state;
            match state {
                pb::FutureState::Result => rec.result = value,
                pb::FutureState::Exception => rec.exception = message.to_owned(),
                _ => rec.cancel_message = message.to_owned(),
            }
            rec.done_at = Some(SystemTime::now());
            let waiters = std::mem::take(&mut rec.waiters);
            let uid = rec.creator_uid;
            release(&mut st.held_futures, uid);
            st.futures_pending = st.futures_pending.saturating_sub(1);
            st.done_futures.push_back((Instant::now(), id));
            (self.future_info(&st, id)?, waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(info.clone());
        }
        self.emit(EventKind::FutureDone(pb::FutureDone {
            future_id: id,
            state: info.state,
            result: info.result.clone(),
            exception_message: info.exception_message.clone(),
            cancel_message: info.cancel_message.clone(),
        }));
        Ok(info)
    }

    /// Cancels a future; `false` (and no change) if it was already done.
    pub fn cancel_future(&self, id: u64, message: &str) -> Result<(bool, pb::FutureInfo)> {
        match self.finish_future(id, pb::FutureState::Cancelled, Vec::new(), message) {
            Ok(info) => Ok((true, info)),
            Err(Error::FutureAlreadyDone(_)) => Ok((false, self.get_future(id)?)),
            Err(err) => Err(err),
        }
    }

    /// Describes a future.
    pub fn get_future(&self, id: u64) -> Result<pb::FutureInfo> {
        self.future_info(&self.state.borrow(), id)
    }

    /// The future's description if done; else registers `waiter` for when it is.
    pub fn wait_future(
        &self,
        id: u64,
        waiter: oneshot::Sender<pb::FutureInfo>,
    ) -> Result<Option<pb::FutureInfo>> {
        let mut st = self.state.borrow_mut();
        let info = self.future_info(&st, id)?;
        if info.state != pb::FutureState::Pending as i32 {
            return Ok(Some(info));
        }
        if let Some(rec) = st.futures.get_mut(&id) {
            rec.waiters.retain(|w| !w.is_closed());
            rec.waiters.push(waiter);
        }
        Ok(None)
    }

    fn future_info(&self, st: &LoopState, id: u64) -> Result<pb::FutureInfo> {
        let rec = st
            .futures
            .get(&id)
            .ok_or_else(|| self.future_not_found(id))?;
        Ok(pb::FutureInfo {
            future_id: id,
            r#loop: self.name.clone(),
            state: rec.state as i32,
            result: rec.result.clone(),
            exception_message: rec.exception.clone(),
            cancel_message: rec.cancel_message.clone(),
            creator_uid: rec.creator_uid,
            created_at: Some(rec.created_at.into()),
            done_at: rec.done_at.map(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_tells_retries_from_reused_keys_and_forgets_old_keys() {
        let mut idem = Idempotency::default();
        idem.remember(1, "k", 7, IdemValue::Future(9));
        assert!(matches!(
            idem.lookup(1, "k", 7),
            Ok(Some(IdemValue::Future(9)))
        ));
        assert!(matches!(idem.lookup(2, "k", 7), Ok(None)), "other caller");
        assert!(matches!(idem.lookup(1, "k", 8), Err(Error::Invalid { .. })));
        assert!(matches!(idem.lookup(1, "", 7), Ok(None)), "no key");
        idem.prune(Instant::now(), Duration::from_secs(600), 0);
        assert!(matches!(idem.lookup(1, "k", 7), Ok(None)), "over the cap");
    }

    #[test]
    fn wall_delta_is_signed() {
        let now = SystemTime::now();
        assert_eq!(wall_delta(now + Duration::from_secs(2), now), 2.0);
        assert_eq!(wall_delta(now - Duration::from_secs(3), now), -3.0);
    }
}
