//! Calling a protocol that may be busy: the rule the stream transport follows, for the
//! other transports (datagram, pipes) whatever their protocol trait.
//!
//! # Invariants
//! - A call runs at once when the protocol is free and no earlier call waits; otherwise it
//!   waits, in order, in the owner's queue, drained from the ready queue. So a protocol
//!   sees its events in the order they happened, and no `RefCell` is borrowed twice.
//! - A panic in a protocol method goes to the owner's [`CallsOwner::panicked`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::event_loop::EventLoop;
use crate::exception::PanicError;

/// One waiting call: the protocol, the method's name, the call.
type Waiting<P> = (Rc<RefCell<P>>, &'static str, Box<dyn FnOnce(&mut P)>);

/// The queue of calls waiting for a busy protocol.
pub(crate) struct ProtocolCalls<P: ?Sized> {
    queue: RefCell<VecDeque<Waiting<P>>>,
    drain_scheduled: Cell<bool>,
}

impl<P: ?Sized> Default for ProtocolCalls<P> {
    fn default() -> Self {
        ProtocolCalls {
            queue: RefCell::new(VecDeque::new()),
            drain_scheduled: Cell::new(false),
        }
    }
}

impl<P: ?Sized> ProtocolCalls<P> {
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Drops the waiting calls (the loop is going away).
    pub(crate) fn clear(&self) {
        let queue = std::mem::take(&mut *self.queue.borrow_mut());
        drop(queue);
    }
}

/// A transport whose protocol calls go through [`call_on`].
pub(crate) trait CallsOwner<P: ?Sized + 'static>: 'static {
    /// The owner's queue.
    fn calls(&self) -> &ProtocolCalls<P>;

    /// A protocol method panicked: report it and close the transport.
    fn panicked(self: &Rc<Self>, lp: &EventLoop, method: &'static str, error: PanicError);
}

/// Runs `f` on `protocol` now if it is free and nothing waits, else queues it.
pub(crate) fn call_on<P, O>(
    owner: &Rc<O>,
    lp: &EventLoop,
    protocol: Rc<RefCell<P>>,
    method: &'static str,
    f: Box<dyn FnOnce(&mut P)>,
) where
    P: ?Sized + 'static,
    O: CallsOwner<P>,
{
    if owner.calls().is_idle() {
        if let Ok(mut p) = protocol.try_borrow_mut() {
            let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut *p)));
            drop(p);
            if let Err(payload) = outcome {
                owner.panicked(lp, method, PanicError::from_payload(&*payload));
            }
            return;
        }
    }
    owner
        .calls()
        .queue
        .borrow_mut()
        .push_back((protocol, method, f));
    schedule_drain(owner, lp);
}

fn schedule_drain<P: ?Sized + 'static, O: CallsOwner<P>>(owner: &Rc<O>, lp: &EventLoop) {
    if owner.calls().drain_scheduled.replace(true) {
        return;
    }
    let this = owner.clone();
    let this_lp = lp.clone();
    if lp.call_soon(move || drain(&this, &this_lp)).is_err() {
        // The loop is closed: nothing will run any more.
        owner.calls().drain_scheduled.set(false);
    }
}

/// Runs the waiting calls in order, until one finds its protocol still busy.
fn drain<P: ?Sized + 'static, O: CallsOwner<P>>(owner: &Rc<O>, lp: &EventLoop) {
    owner.calls().drain_scheduled.set(false);
    loop {
        let Some((protocol, method, f)) = owner.calls().queue.borrow_mut().pop_front() else {
            return;
        };
        let outcome = match protocol.try_borrow_mut() {
            Ok(mut p) => catch_unwind(AssertUnwindSafe(|| f(&mut *p))),
            Err(_) => {
                let entry = (protocol.clone(), method, f);
                owner.calls().queue.borrow_mut().push_front(entry);
                return schedule_drain(owner, lp);
            }
        };
        if let Err(payload) = outcome {
            owner.panicked(lp, method, PanicError::from_payload(&*payload));
        }
    }
}
