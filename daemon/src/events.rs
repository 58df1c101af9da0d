//! Each loop's event ring and the subscriber cursors that read it.
//!
//! # Invariants
//! - Seqs start at 1 and have no holes; the ring keeps the newest `capacity` events.
//! - The loop thread appends under a short mutex and never waits for readers. It wakes
//!   subscribers (`Notify::notify_waiters`) only when one has said it waits, so a burst of
//!   events costs one wake-up per waiting subscriber, not one per event.
//! - A subscriber holds only its cursor; batches are cut from the ring when the stream is
//!   polled, so a slow subscriber costs at most one batch of memory.
//! - A subscriber whose cursor fell out of the ring gets one Gap event (from, to) for
//!   the lost range and continues from the oldest event kept: never a silent jump.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use loopd_proto::pb;
use pb::event::Kind;
use tokio::sync::Notify;

use crate::status::{Error, Result};

/// Default and largest events per batch (SubscribeRequest.max_batch_events).
pub const DEFAULT_BATCH: usize = 256;
/// Largest batch a subscriber may ask for.
pub const MAX_BATCH: usize = 4096;

struct Ring {
    /// Shared, so readers copy pointers under the lock and events outside it.
    events: VecDeque<Arc<pb::Event>>,
    /// Seq of `events[0]` (or of the next event when empty).
    first_seq: u64,
    /// Seq the next appended event gets.
    next_seq: u64,
    closed: bool,
}

/// One loop's ring of recent events, shared by the loop thread (writer) and the
/// subscribers (readers).
pub struct EventRing {
    loop_name: String,
    capacity: usize,
    ring: Mutex<Ring>,
    notify: Notify,
    waiting: AtomicUsize,
    /// Open subscriber streams.
    pub subscribers: AtomicU64,
    /// Gap events sent.
    pub gaps: AtomicU64,
    /// Events lost by subscribers (sum of gap ranges).
    pub missed: AtomicU64,
    closed: AtomicBool,
}

impl EventRing {
    /// An empty ring for `loop_name` holding at most `capacity` events.
    pub fn new(loop_name: &str, capacity: usize) -> Self {
        EventRing {
            loop_name: loop_name.to_owned(),
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                first_seq: 1,
                next_seq: 1,
                closed: false,
            }),
            notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            subscribers: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // Nothing panics while the lock is held except allocation failure; the ring
        // stays consistent, so poisoning is ignored.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one event stamped with the next seq; returns that seq. After `close`,
    /// nothing is appended and 0 is returned.
    pub fn emit(&self, loop_time: f64, kind: Kind) -> u64 {
        let closing = matches!(kind, Kind::LoopClosed(_));
        let mut event = Arc::new(pb::Event {
            seq: 0,
            r#loop: self.loop_name.clone(),
            wall_time: Some(SystemTime::now().into()),
            loop_time,
            kind: Some(kind),
        });
        let (seq, evicted) = {
            let mut ring = self.lock();
            if ring.closed {
                return 0;
            }
            let seq = ring.next_seq;
            if let Some(event) = Arc::get_mut(&mut event) {
                event.seq = seq;
            }
            let evicted = if ring.events.len() == self.capacity {
                ring.first_seq += 1;
                ring.events.pop_front()
            } else {
                None
            };
            ring.events.push_back(event);
            ring.next_seq += 1;
            ring.closed = closing;
            (seq, evicted)
        };
        drop(evicted); // freed outside the lock
        self.wake();
        seq
    }

    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.waiting.store(0, Ordering::SeqCst);
            self.notify.notify_waiters();
        }
    }

    /// Ends every stream after the events already in the ring (the loop was closed, or
    /// its thread is gone).
    pub fn close(&self) {
        self.lock().closed = true;
        self.closed.store(true, Ordering::SeqCst);
        self.waiting.store(1, Ordering::SeqCst);
        self.wake();
    }

    /// Seq of the newest event; 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Events emitted since the ring was made.
    pub fn emitted(&self) -> u64 {
        self.last_seq()
    }

    /// The cursor for a new subscriber, checking `since_seq` (0: from the next event).
    pub fn start_cursor(&self, since_seq: u64) -> Result<u64> {
        let next = self.lock().next_seq;
        match since_seq {
            0 => Ok(next),
            since if since > next => Err(Error::SinceOutOfRange { since, next }),
            since => Ok(since),
        }
    }

    /// Cuts the next batch for `cursor`: a Gap first if the cursor fell out of the ring,
    /// then up to `max` events passing `filter`. Advances the cursor past everything
    /// looked at.
    fn read(&self, cursor: &mut u64, filter: &Filter, max: usize) -> Read {
        let ring = self.lock();
        let mut gap = None;
        let mut events = Vec::new();
        if *cursor < ring.first_seq {
            let (from, to) = (*cursor, ring.first_seq - 1);
            gap = Some(self.gap(from, to, &ring));
            *cursor = ring.first_seq;
        }
        let max = max.saturating_sub(usize::from(gap.is_some())).max(1);
        // The cursor is at most next_seq, so `start` is at most the ring's length;
        // `range` finds it in O(1) where `skip` would walk the ring.
        let start = usize::try_from(*cursor - ring.first_seq)
            .unwrap_or(usize::MAX)
            .min(ring.events.len());
        for event in ring.events.range(start..) {
            if events.len() >= max {
                break;
            }
            *cursor = event.seq + 1;
            if filter.passes(event) {
                events.push(Arc::clone(event));
            }
        }
        let last_seq = ring.next_seq - 1;
        let finished = *cursor >= ring.next_seq && ring.closed;
        drop(ring);
        // The copies are made outside the lock: the loop thread never waits for them.
        let events = gap
            .into_iter()
            .chain(events.iter().map(|event| pb::Event::clone(event)))
            .collect();
        Read {
            events,
            last_seq,
            finished,
        }
    }

    fn gap(&self, from_seq: u64, to_seq: u64, ring: &Ring) -> pb::Event {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.missed
            .fetch_add(to_seq - from_seq + 1, Ordering::Relaxed);
        let loop_time = ring.events.front().map_or(0.0, |e| e.loop_time);
        pb::Event {
            seq: to_seq,
            r#loop: self.loop_name.clone(),
            wall_time: Some(SystemTime::now().into()),
            loop_time,
            kind: Some(Kind::Gap(pb::Gap { from_seq, to_seq })),
        }
    }
}

struct Read {
    events: Vec<pb::Event>,
    last_seq: u64,
    finished: bool,
}

/// Which events a subscriber wants.
#[derive(Default)]
pub struct Filter {
    kinds: HashSet<i32>,
    handles: HashSet<u64>,
    futures: HashSet<u64>,
    processes: HashSet<u64>,
    net: NetFilter,
}

/// The NetService part of a filter: servers, transports, datagram endpoints.
#[derive(Default)]
struct NetFilter {
    servers: HashSet<u64>,
    transports: HashSet<u64>,
    endpoints: HashSet<u64>,
}

impl NetFilter {
    fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.transports.is_empty() && self.endpoints.is_empty()
    }

    /// `Some(passes)` for a net event, `None` for others.
    fn passes(&self, kind: &Kind) -> Option<bool> {
        let transport = |id: &u64| Some(self.transports.contains(id));
        match kind {
            Kind::ConnectionMade(e) => Some(
                self.transports.contains(&e.transport_id) || self.servers.contains(&e.server_id),
            ),
            Kind::DataReceived(e) => transport(&e.transport_id),
            Kind::EofReceived(e) => transport(&e.transport_id),
            Kind::ConnectionLost(e) => transport(&e.transport_id),
            Kind::PauseWriting(e) => transport(&e.transport_id),
            Kind::ResumeWriting(e) => transport(&e.transport_id),
            Kind::ReadingPaused(e) => transport(&e.transport_id),
            Kind::ReadingResumed(e) => transport(&e.transport_id),
            Kind::DatagramReceived(e) => Some(self.endpoints.contains(&e.endpoint_id)),
            Kind::ErrorReceived(e) => Some(self.endpoints.contains(&e.endpoint_id)),
            Kind::ServerClosed(e) => Some(self.servers.contains(&e.server_id)),
            _ => None,
        }
    }
}

impl Filter {
    /// Builds the filter of a SubscribeRequest; unknown kinds are INVALID_ARGUMENT.
    pub fn new(kinds: &[i32], handles: &[u64], futures: &[u64]) -> Result<Self> {
        for kind in kinds {
            match pb::EventKind::try_from(*kind) {
                Ok(pb::EventKind::Unspecified) | Err(_) => {
                    return Err(Error::invalid("event kind", kind));
                }
                Ok(_) => {}
            }
        }
        Ok(Filter {
            kinds: kinds.iter().copied().collect(),
            handles: handles.iter().copied().collect(),
            futures: futures.iter().copied().collect(),
            net: NetFilter::default(),
            processes: HashSet::new(),
        })
    }

    /// Also filters by servers, transports and datagram endpoints (SubscribeRequest
    /// fields 10 to 12).
    pub fn with_net(mut self, servers: &[u64], transports: &[u64], endpoints: &[u64]) -> Self {
        self.net = NetFilter {
            servers: servers.iter().copied().collect(),
            transports: transports.iter().copied().collect(),
            endpoints: endpoints.iter().copied().collect(),
        };
        self
    }

    /// Also passes events about these processes (SubscribeRequest.process_ids).
    pub fn with_processes(mut self, processes: &[u64]) -> Self {
        self.processes = processes.iter().copied().collect();
        self
    }

    fn passes(&self, event: &pb::Event) -> bool {
        let Some(kind) = &event.kind else {
            return false;
        };
        if !self.kinds.is_empty() && !self.kinds.contains(&(kind_of(kind) as i32)) {
            return false;
        }
        if self.handles.is_empty()
            && self.futures.is_empty()
            && self.net.is_empty()
            && self.processes.is_empty()
        {
            return true;
        }
        if let Some(passes) = self.net.passes(kind) {
            return passes;
        }
        match kind {
            Kind::TimerFired(e) => self.handles.contains(&e.handle_id),
            Kind::CallbackRun(e) => self.handles.contains(&e.handle_id),
            Kind::FutureDone(e) => self.futures.contains(&e.future_id),
            Kind::ProcessStarted(e) => self.processes.contains(&e.process_id),
            Kind::ProcessOutput(e) => self.processes.contains(&e.process_id),
            Kind::ProcessExited(e) => self.processes.contains(&e.process_id),
            _ => true,
        }
    }
}

fn kind_of(kind: &Kind) -> pb::EventKind {
    match kind {
        Kind::TimerFired(_) => pb::EventKind::TimerFired,
        Kind::CallbackRun(_) => pb::EventKind::CallbackRun,
        Kind::FutureDone(_) => pb::EventKind::FutureDone,
        Kind::LoopStarted(_) => pb::EventKind::LoopStarted,
        Kind::LoopStopped(_) => pb::EventKind::LoopStopped,
        Kind::LoopClosed(_) => pb::EventKind::LoopClosed,
        Kind::Gap(_) => pb::EventKind::Gap,
        Kind::ConnectionMade(_) => pb::EventKind::ConnectionMade,
        Kind::DataReceived(_) => pb::EventKind::DataReceived,
        Kind::EofReceived(_) => pb::EventKind::EofReceived,
        Kind::ConnectionLost(_) => pb::EventKind::ConnectionLost,
        Kind::PauseWriting(_) => pb::EventKind::PauseWriting,
        Kind::ResumeWriting(_) => pb::EventKind::ResumeWriting,
        Kind::DatagramReceived(_) => pb::EventKind::DatagramReceived,
        Kind::ErrorReceived(_) => pb::EventKind::ErrorReceived,
        Kind::ServerClosed(_) => pb::EventKind::ServerClosed,
        Kind::ReadingPaused(_) => pb::EventKind::ReadingPaused,
        Kind::ReadingResumed(_) => pb::EventKind::ReadingResumed,
        Kind::ProcessStarted(_) => pb::EventKind::ProcessStarted,
        Kind::ProcessOutput(_) => pb::EventKind::ProcessOutput,
        Kind::ProcessExited(_) => pb::EventKind::ProcessExited,
        Kind::SignalReceived(_) => pb::EventKind::SignalReceived,
    }
}

/// One subscriber: its ring, cursor and filter. Dropping it (the stream ended or the
/// client went away) releases its subscriber slots.
pub struct Subscription {
    ring: Arc<EventRing>,
    cursor: u64,
    filter: Filter,
    max_batch: usize,
    done: bool,
    _slot: SubscriberSlot,
}

/// Counts a subscriber against the daemon's limit and its ring's gauge while alive.
pub struct SubscriberSlot {
    total: Arc<AtomicUsize>,
    ring: Arc<EventRing>,
}

impl SubscriberSlot {
    /// Takes a slot, or fails past `limit` subscribers in `total`.
    pub fn acquire(total: &Arc<AtomicUsize>, limit: usize, ring: &Arc<EventRing>) -> Result<Self> {
        let taken = total.fetch_add(1, Ordering::SeqCst);
        if taken >= limit {
            total.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::TooManySubscribers(limit));
        }
        ring.subscribers.fetch_add(1, Ordering::SeqCst);
        Ok(SubscriberSlot {
            total: total.clone(),
            ring: ring.clone(),
        })
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::SeqCst);
        self.ring.subscribers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Subscription {
    /// A subscriber starting at `cursor` (from [`EventRing::start_cursor`]).
    pub fn new(
        ring: Arc<EventRing>,
        cursor: u64,
        filter: Filter,
        max_batch: u32,
        slot: SubscriberSlot,
    ) -> Self {
        let max_batch = match max_batch as usize {
            0 => DEFAULT_BATCH,
            n => n.min(MAX_BATCH),
        };
        Subscription {
            ring,
            cursor,
            filter,
            max_batch,
            done: false,
            _slot: slot,
        }
    }

    /// Waits for the next non-empty batch; `None` once the loop's last event was sent.
    pub async fn next_batch(&mut self) -> Option<pb::EventBatch> {
        loop {
            if self.done {
                return None;
            }
            let notified = self.ring.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.ring.waiting.fetch_add(1, Ordering::SeqCst);
            let read = self
                .ring
                .read(&mut self.cursor, &self.filter, self.max_batch);
            self.done = read.finished;
            if !read.events.is_empty() {
                return Some(pb::EventBatch {
                    events: read.events,
                    last_seq: read.last_seq,
                });
            }
            if self.done {
                return None;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fired(handle_id: u64) -> Kind {
        Kind::TimerFired(pb::TimerFired {
            handle_id,
            ..Default::default()
        })
    }

    fn seqs(ring: &EventRing, cursor: &mut u64, filter: &Filter) -> Vec<(u64, bool)> {
        ring.read(cursor, filter, 100)
            .events
            .iter()
            .map(|e| (e.seq, matches!(e.kind, Some(Kind::Gap(_)))))
            .collect()
    }

    #[test]
    fn a_reader_behind_the_ring_gets_one_gap_then_the_rest() {
        let ring = EventRing::new("t", 3);
        for id in 1..=5 {
            ring.emit(0.0, fired(id));
        }
        let mut cursor = ring.start_cursor(1).unwrap();
        let got = seqs(&ring, &mut cursor, &Filter::default());
        assert_eq!(got, [(2, true), (3, false), (4, false), (5, false)]);
        assert_eq!(ring.missed.load(Ordering::Relaxed), 2);
        assert_eq!(cursor, 6);
        assert!(seqs(&ring, &mut cursor, &Filter::default()).is_empty());
    }

    #[test]
    fn since_seq_is_checked_against_the_next_seq() {
        let ring = EventRing::new("t", 8);
        ring.emit(0.0, fired(1));
        assert_eq!(ring.start_cursor(0).unwrap(), 2);
        assert_eq!(ring.start_cursor(2).unwrap(), 2);
        assert!(matches!(
            ring.start_cursor(3),
            Err(Error::SinceOutOfRange { since: 3, next: 2 })
        ));
    }

    #[test]
    fn filters_keep_loop_events_and_drop_other_resources() {
        let ring = EventRing::new("t", 8);
        ring.emit(0.0, fired(1));
        ring.emit(0.0, fired(2));
        ring.emit(0.0, Kind::LoopStopped(pb::LoopStopped {}));
        let filter = Filter::new(&[], &[2], &[]).unwrap();
        let mut cursor = 1;
        assert_eq!(seqs(&ring, &mut cursor, &filter), [(2, false), (3, false)]);
        let kinds = Filter::new(&[pb::EventKind::LoopStopped as i32], &[], &[]).unwrap();
        let mut cursor = 1;
        assert_eq!(seqs(&ring, &mut cursor, &kinds), [(3, false)]);
        assert!(Filter::new(&[0], &[], &[]).is_err());
        assert!(Filter::new(&[99], &[], &[]).is_err());
    }
}
