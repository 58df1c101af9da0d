//! Event loop policies: asyncio's `AbstractEventLoopPolicy`, which hands out a loop per
//! context (per thread by default) and chooses the child watcher.
//!
//! asyncio's names are kept, `get_` prefixes included (`get_event_loop`,
//! `get_child_watcher`), so the asyncio reference reads straight onto this module.
//!
//! # Invariants
//! - One policy is current for the whole process ([`get_event_loop_policy`]); it is
//!   `Send + Sync`. An [`EventLoop`] is not, so [`DefaultEventLoopPolicy`] keeps each
//!   thread's loop in that thread's own storage: a loop set on one thread is never seen
//!   on another.
//! - Each policy object has its own per-thread state: replacing the policy forgets the
//!   loops the old one handed out (asyncio's `threading.local` per policy). A thread
//!   drops the loops of policies that no longer exist the next time it asks any policy.
//! - Only the main thread (the one whose thread id is the process id, whatever its name)
//!   gets a loop created on demand, and only until `set_event_loop` was called on it.
//! - No lock and no `RefCell` borrow is held while a loop or watcher is dropped.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, get_running_loop};
use crate::process::{ChildWatcher, PidfdChildWatcher, ThreadedChildWatcher};

/// asyncio's `AbstractEventLoopPolicy`: decides which loop is "current" and which child
/// watcher spawns use. Implementations must be `Send + Sync`: one policy serves every
/// thread. Set one with [`set_event_loop_policy`].
pub trait EventLoopPolicy: Send + Sync {
    /// The current loop for this context. Fails with [`Error::NoCurrentLoop`] when there
    /// is none and the policy will not create one.
    fn get_event_loop(&self) -> Result<EventLoop>;

    /// Makes `lp` the current loop for this context (`None`: no current loop).
    fn set_event_loop(&self, lp: Option<EventLoop>) -> Result<()>;

    /// A new loop, not made current. Fails with [`Error::Io`] if the OS refuses the
    /// loop's descriptors.
    fn new_event_loop(&self) -> Result<EventLoop>;

    /// The child watcher subprocesses use.
    fn get_child_watcher(&self) -> Result<Arc<dyn ChildWatcher>>;

    /// Replaces the child watcher (`None`: go back to the default).
    fn set_child_watcher(&self, watcher: Option<Arc<dyn ChildWatcher>>) -> Result<()>;
}

/// asyncio's default (Unix) policy: one current loop per thread, and a
/// [`PidfdChildWatcher`] (a [`ThreadedChildWatcher`] on kernels without pidfds).
///
/// [`get_event_loop`](EventLoopPolicy::get_event_loop) returns, in order: the loop
/// running on this thread; the loop set for this thread; on the main thread only, if
/// `set_event_loop` was never called there, a new loop that becomes current. Anywhere
/// else it fails with [`Error::NoCurrentLoop`] naming the thread.
///
/// # Examples
/// ```
/// use loopd::{DefaultEventLoopPolicy, EventLoopPolicy};
/// let policy = DefaultEventLoopPolicy::new();
/// let lp = policy.new_event_loop().unwrap();
/// policy.set_event_loop(Some(lp)).unwrap();
/// assert!(policy.get_event_loop().is_ok());
/// ```
pub struct DefaultEventLoopPolicy {
    /// This policy's identity in each thread's storage. Never cloned: its only strong
    /// count goes away with the policy, which is how threads notice stale entries.
    id: Arc<()>,
    watcher: Mutex<Option<Arc<dyn ChildWatcher>>>,
}

/// What one policy knows about one thread (asyncio's `_Local`).
struct Local {
    policy: Weak<()>,
    current: Option<EventLoop>,
    set_called: bool,
}

thread_local! {
    static LOCALS: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

impl Default for DefaultEventLoopPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DefaultEventLoopPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DefaultEventLoopPolicy")
            .finish_non_exhaustive()
    }
}

impl DefaultEventLoopPolicy {
    /// A policy with no loops yet; its child watcher is made on first use.
    pub fn new() -> Self {
        DefaultEventLoopPolicy {
            id: Arc::new(()),
            watcher: Mutex::new(None),
        }
    }

    /// Runs `f` on this thread's state for this policy. Entries of dropped policies are
    /// taken out first and dropped after the borrow ends.
    fn with_local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> Result<R> {
        let (result, stale) = LOCALS
            .try_with(|locals| {
                let mut locals = locals.borrow_mut();
                let stale = take_stale(&mut locals);
                (f(self.local_in(&mut locals)), stale)
            })
            .map_err(|_| Error::NoCurrentLoop(thread_name()))?;
        drop(stale);
        Ok(result)
    }

    fn local_in<'a>(&self, locals: &'a mut Vec<Local>) -> &'a mut Local {
        let me = Arc::downgrade(&self.id);
        match locals.iter().position(|local| local.policy.ptr_eq(&me)) {
            Some(index) => &mut locals[index],
            None => {
                locals.push(Local {
                    policy: me,
                    current: None,
                    set_called: false,
                });
                let last = locals.len() - 1;
                &mut locals[last]
            }
        }
    }

    /// `get_event_loop` minus the running-loop check, with the main-thread test given.
    fn current_or_create(&self, is_main: bool) -> Result<EventLoop> {
        let (current, set_called) = self.with_local(|l| (l.current.clone(), l.set_called))?;
        if let Some(lp) = current {
            return Ok(lp);
        }
        if !is_main || set_called {
            return Err(Error::NoCurrentLoop(thread_name()));
        }
        let lp = self.new_event_loop()?;
        self.set_current(Some(lp.clone()), is_main)?;
        Ok(lp)
    }

    fn set_current(&self, lp: Option<EventLoop>, is_main: bool) -> Result<()> {
        let attach = self.watcher_slot().clone().filter(|_| is_main);
        if let Some(watcher) = attach {
            // asyncio's Unix policy attaches its watcher to the main thread's loop.
            watcher.attach_loop(lp.as_ref())?;
        }
        let old = self.with_local(move |local| {
            local.set_called = true;
            std::mem::replace(&mut local.current, lp)
        })?;
        drop(old);
        Ok(())
    }

    fn watcher_slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<dyn ChildWatcher>>> {
        // The slot holds an Option of an Arc: a panic elsewhere cannot leave it torn.
        self.watcher.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Takes out the entries of policies that were dropped.
fn take_stale(locals: &mut Vec<Local>) -> Vec<Local> {
    if locals.iter().all(|local| local.policy.strong_count() > 0) {
        return Vec::new();
    }
    let (live, stale) = std::mem::take(locals)
        .into_iter()
        .partition(|local| local.policy.strong_count() > 0);
    *locals = live;
    stale
}

impl EventLoopPolicy for DefaultEventLoopPolicy {
    /// The loop running on this thread, else the one set for it, else (main thread only,
    /// before any `set_event_loop` there) a new one. Stricter than asyncio, whose policy
    /// method ignores the running loop: inside a callback this always returns the loop
    /// that runs it. Fails with [`Error::NoCurrentLoop`] naming the thread.
    fn get_event_loop(&self) -> Result<EventLoop> {
        if let Ok(lp) = get_running_loop() {
            return Ok(lp);
        }
        self.current_or_create(is_main_thread())
    }

    /// Makes `lp` this thread's loop for this policy (`None` clears it; on the main
    /// thread it also stops `get_event_loop` from creating one). Never fails here.
    fn set_event_loop(&self, lp: Option<EventLoop>) -> Result<()> {
        self.set_current(lp, is_main_thread())
    }

    /// A new [`EventLoop`]; fails with [`Error::Io`] if the OS refuses its descriptors.
    fn new_event_loop(&self) -> Result<EventLoop> {
        EventLoop::new()
    }

    /// The policy's watcher, made on first use: [`PidfdChildWatcher`] where the kernel
    /// supports pidfds, else [`ThreadedChildWatcher`] (asyncio's choice). Never fails here.
    fn get_child_watcher(&self) -> Result<Arc<dyn ChildWatcher>> {
        Ok(self
            .watcher_slot()
            .get_or_insert_with(default_child_watcher)
            .clone())
    }

    /// Closes the current watcher (as asyncio does) and installs `watcher`; with `None`
    /// the next [`get_child_watcher`](EventLoopPolicy::get_child_watcher) makes a new
    /// default one. Never fails here.
    fn set_child_watcher(&self, watcher: Option<Arc<dyn ChildWatcher>>) -> Result<()> {
        let old = std::mem::replace(&mut *self.watcher_slot(), watcher);
        if let Some(old) = old {
            old.close();
        }
        Ok(())
    }
}

/// The child watcher a default policy starts with: pidfd where the kernel has it.
pub fn default_child_watcher() -> Arc<dyn ChildWatcher> {
    if PidfdChildWatcher::is_supported() {
        Arc::new(PidfdChildWatcher::new())
    } else {
        Arc::new(ThreadedChildWatcher::new())
    }
}

/// Whether this is the process's main thread: the one whose thread id is the process id.
/// Unlike a thread's name, this cannot be faked.
fn is_main_thread() -> bool {
    // SAFETY: gettid and getpid have no preconditions and cannot fail.
    let (tid, pid) = unsafe { (libc::syscall(libc::SYS_gettid), libc::getpid()) };
    tid == libc::c_long::from(pid)
}

/// The thread's name for error messages (its id if it has none).
fn thread_name() -> String {
    let current = std::thread::current();
    match current.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", current.id()),
    }
}

// ---- the process-wide policy and asyncio's module-level functions ----------------------

static POLICY: RwLock<Option<Arc<dyn EventLoopPolicy>>> = RwLock::new(None);

/// The current policy, a [`DefaultEventLoopPolicy`] unless one was set.
pub fn get_event_loop_policy() -> Arc<dyn EventLoopPolicy> {
    let current = POLICY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(policy) = current {
        return policy;
    }
    POLICY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(|| Arc::new(DefaultEventLoopPolicy::new()))
        .clone()
}

/// Sets the process-wide policy; `None` restores a new [`DefaultEventLoopPolicy`] (made
/// on next use), which knows none of the loops the old policy handed out.
pub fn set_event_loop_policy(policy: Option<Arc<dyn EventLoopPolicy>>) {
    let old = std::mem::replace(
        &mut *POLICY.write().unwrap_or_else(PoisonError::into_inner),
        policy,
    );
    drop(old); // after the lock: a policy's drop may ask for the policy
}

/// asyncio's `get_event_loop()`: the loop running on this thread, else the current
/// policy's [`get_event_loop`](EventLoopPolicy::get_event_loop) (and its errors).
pub fn get_event_loop() -> Result<EventLoop> {
    match get_running_loop() {
        Ok(lp) => Ok(lp),
        Err(_) => get_event_loop_policy().get_event_loop(),
    }
}

/// asyncio's `set_event_loop(loop)`: the current policy's
/// [`set_event_loop`](EventLoopPolicy::set_event_loop).
pub fn set_event_loop(lp: Option<EventLoop>) -> Result<()> {
    get_event_loop_policy().set_event_loop(lp)
}

/// asyncio's `new_event_loop()`: the current policy's
/// [`new_event_loop`](EventLoopPolicy::new_event_loop).
pub fn new_event_loop() -> Result<EventLoop> {
    get_event_loop_policy().new_event_loop()
}

/// asyncio's `get_child_watcher()`: the current policy's.
pub fn get_child_watcher() -> Result<Arc<dyn ChildWatcher>> {
    get_event_loop_policy().get_child_watcher()
}

/// asyncio's `set_child_watcher(watcher)`: the current policy's.
pub fn set_child_watcher(watcher: Option<Arc<dyn ChildWatcher>>) -> Result<()> {
    get_event_loop_policy().set_child_watcher(watcher)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    use super::*;

    fn same(a: &EventLoop, b: &EventLoop) -> bool {
        Rc::ptr_eq(&a.core, &b.core)
    }

    /// Runs `f` on a fresh thread with the given name and returns its result.
    fn on_thread<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
        let thread = thread::Builder::new().name(name.into()).spawn(f);
        thread.expect("spawn").join().expect("no panic")
    }

    #[test]
    fn a_loop_set_on_one_thread_is_not_seen_on_another() {
        let policy = Arc::new(DefaultEventLoopPolicy::new());
        let lp = policy.new_event_loop().unwrap();
        policy.set_event_loop(Some(lp.clone())).unwrap();

        let other = policy.clone();
        let seen = on_thread("worker", move || {
            let before = other.get_event_loop().map(drop).map_err(|e| e.to_string());
            other
                .set_event_loop(Some(EventLoop::new().unwrap()))
                .unwrap();
            let after = other.get_event_loop().is_ok();
            (before, after)
        });
        assert_eq!(
            seen,
            (
                Err("there is no current event loop in thread \"worker\"".into()),
                true
            )
        );
        assert!(
            same(&policy.get_event_loop().unwrap(), &lp),
            "ours unchanged"
        );
    }

    #[test]
    fn without_a_loop_only_the_main_thread_gets_one_until_set_is_called() {
        // (main thread?, set_event_loop(None) first?, a loop is created?)
        let cases = [
            (true, false, true),
            (true, true, false),
            (false, false, false),
            (false, true, false),
        ];
        for (is_main, set_none_first, created) in cases {
            let policy = DefaultEventLoopPolicy::new();
            if set_none_first {
                policy.set_current(None, is_main).unwrap();
            }
            let got = policy.current_or_create(is_main);
            assert_eq!(got.is_ok(), created, "{is_main} {set_none_first}");
            match got {
                Ok(first) => {
                    let again = policy.current_or_create(is_main).unwrap();
                    assert!(same(&first, &again), "created once, then current");
                }
                Err(err) => assert!(matches!(err, Error::NoCurrentLoop(_)), "{err}"),
            }
        }
    }

    #[test]
    fn the_main_thread_is_told_by_its_id_not_its_name() {
        assert!(!on_thread("main", is_main_thread));
        let policy = Arc::new(DefaultEventLoopPolicy::new());
        let err = on_thread("main", move || policy.get_event_loop().map(drop));
        assert!(matches!(err, Err(Error::NoCurrentLoop(name)) if name == "main"));
    }

    #[test]
    fn the_running_loop_wins_over_the_one_set() {
        let policy = Rc::new(DefaultEventLoopPolicy::new());
        let (set, running) = (EventLoop::new().unwrap(), EventLoop::new().unwrap());
        policy.set_event_loop(Some(set.clone())).unwrap();
        let seen = Rc::new(RefCell::new(None));
        let (p, s, lp) = (policy.clone(), seen.clone(), running.clone());
        running
            .call_soon(move || {
                *s.borrow_mut() = p.get_event_loop().ok();
                lp.stop();
            })
            .unwrap();
        running.run_forever().unwrap();
        let seen = seen.borrow_mut().take().expect("callback ran");
        assert!(same(&seen, &running));
        assert!(same(&policy.get_event_loop().unwrap(), &set));
    }

    #[test]
    fn new_event_loop_gives_distinct_loops_and_sets_none() {
        let policy = DefaultEventLoopPolicy::new();
        let (a, b) = (
            policy.new_event_loop().unwrap(),
            policy.new_event_loop().unwrap(),
        );
        assert!(!same(&a, &b));
        assert!(matches!(
            policy.current_or_create(false),
            Err(Error::NoCurrentLoop(_))
        ));
    }

    #[test]
    fn each_policy_has_its_own_loops_and_forgets_them_when_dropped() {
        let (first, second) = (DefaultEventLoopPolicy::new(), DefaultEventLoopPolicy::new());
        let lp = EventLoop::new().unwrap();
        first.set_event_loop(Some(lp.clone())).unwrap();
        assert!(second.current_or_create(false).is_err());
        assert_eq!(Rc::strong_count(&lp.core), 2, "ours and first's");
        drop(first);
        second.set_event_loop(None).unwrap(); // any use prunes the dead policy's entry
        assert_eq!(Rc::strong_count(&lp.core), 1, "first's entry was dropped");
    }

    #[test]
    fn the_child_watcher_is_made_once_and_replacing_it_closes_the_old_one() {
        let policy = DefaultEventLoopPolicy::new();
        let first = policy.get_child_watcher().unwrap();
        assert!(Arc::ptr_eq(&first, &policy.get_child_watcher().unwrap()));
        assert!(first.is_active());

        let threaded: Arc<dyn ChildWatcher> = Arc::new(ThreadedChildWatcher::new());
        policy.set_child_watcher(Some(threaded.clone())).unwrap();
        assert!(!first.is_active(), "asyncio closes the replaced watcher");
        assert!(Arc::ptr_eq(&threaded, &policy.get_child_watcher().unwrap()));

        policy.set_child_watcher(None).unwrap();
        assert!(!threaded.is_active());
        let fresh = policy.get_child_watcher().unwrap();
        assert!(fresh.is_active() && !Arc::ptr_eq(&fresh, &first));
    }

    /// Counts the calls that reach it, then does what the default policy does.
    #[derive(Default)]
    struct Counting {
        inner: DefaultEventLoopPolicy,
        calls: AtomicUsize,
    }

    impl EventLoopPolicy for Counting {
        fn get_event_loop(&self) -> Result<EventLoop> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.get_event_loop()
        }
        fn set_event_loop(&self, lp: Option<EventLoop>) -> Result<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.set_event_loop(lp)
        }
        fn new_event_loop(&self) -> Result<EventLoop> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.new_event_loop()
        }
        fn get_child_watcher(&self) -> Result<Arc<dyn ChildWatcher>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.get_child_watcher()
        }
        fn set_child_watcher(&self, watcher: Option<Arc<dyn ChildWatcher>>) -> Result<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.set_child_watcher(watcher)
        }
    }

    /// The only test that touches the process-wide policy (tests run in parallel).
    #[test]
    fn module_functions_delegate_to_the_process_wide_policy() {
        on_thread("policy-test", || {
            let counting = Arc::new(Counting::default());
            set_event_loop_policy(Some(counting.clone()));
            let dyn_counting: Arc<dyn EventLoopPolicy> = counting.clone();
            assert!(Arc::ptr_eq(&get_event_loop_policy(), &dyn_counting));

            let lp = new_event_loop().unwrap();
            set_event_loop(Some(lp.clone())).unwrap();
            assert!(same(&get_event_loop().unwrap(), &lp));
            get_child_watcher().unwrap();
            set_child_watcher(None).unwrap();
            assert_eq!(counting.calls.load(Ordering::Relaxed), 5);

            // Inside a running loop, get_event_loop() does not even ask the policy.
            let (other, stopper) = (EventLoop::new().unwrap(), Rc::new(RefCell::new(None)));
            let (o, s) = (other.clone(), stopper.clone());
            other
                .call_soon(move || {
                    *s.borrow_mut() = get_event_loop().ok();
                    o.stop();
                })
                .unwrap();
            other.run_forever().unwrap();
            assert!(same(stopper.borrow().as_ref().unwrap(), &other));
            assert_eq!(counting.calls.load(Ordering::Relaxed), 5);

            set_event_loop_policy(None);
            let restored = get_event_loop_policy();
            assert!(!Arc::ptr_eq(&restored, &dyn_counting));
            assert!(
                Arc::ptr_eq(&restored, &get_event_loop_policy()),
                "made once"
            );
            assert!(
                matches!(get_event_loop(), Err(Error::NoCurrentLoop(_))),
                "a new default policy does not know the old loop"
            );
        });
    }
}
