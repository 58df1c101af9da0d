//! Futures, tasks, `run_until_complete` and the default executor, through the public API.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use loopd::{Error, EventLoop, Executor, Future, Job, Task, TaskSpec, ThreadPool};

fn new_loop() -> EventLoop {
    EventLoop::new().expect("a new loop")
}

/// A future completed by another thread, which first waits until a task has polled it
/// (so the wake really crosses threads) and then sets the value and wakes the waker.
#[derive(Clone, Default)]
struct CrossThread(Arc<(Mutex<Slot>, Condvar)>);

/// The value, once set, and the waker of the task waiting for it.
type Slot = (Option<u32>, Option<Waker>);

impl CrossThread {
    fn complete_once_polled(&self, value: u32) {
        let (slot, polled) = &*self.0;
        let mut slot = slot.lock().unwrap();
        while slot.1.is_none() {
            slot = polled.wait(slot).unwrap();
        }
        slot.0 = Some(value);
        let waker = slot.1.take();
        drop(slot);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl std::future::Future for CrossThread {
    type Output = u32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        let (slot, polled) = &*self.0;
        let mut slot = slot.lock().unwrap();
        match slot.0 {
            Some(value) => Poll::Ready(value),
            None => {
                slot.1 = Some(cx.waker().clone());
                polled.notify_all();
                Poll::Pending
            }
        }
    }
}

#[test]
fn task_awaits_a_future_set_by_a_callback() {
    let lp = new_loop();
    let fut: Future<String> = lp.create_future().unwrap();
    let setter = fut.clone();
    lp.call_later(Duration::from_millis(1), move || {
        setter.set_result("ready".into()).unwrap()
    })
    .unwrap();
    let got = lp.run_until_complete(fut).unwrap();
    assert_eq!(got.unwrap(), "ready");
}

#[test]
fn task_awaits_another_task() {
    let lp = new_loop();
    let order = Rc::new(RefCell::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let inner = lp
        .create_task(
            async move {
                o1.borrow_mut().push("inner");
                21
            },
            Some("inner"),
        )
        .unwrap();
    let doubled = lp
        .run_until_complete(async move {
            o2.borrow_mut().push("outer");
            inner.await.map(|v| v * 2)
        })
        .unwrap();
    assert_eq!(doubled.unwrap(), 42);
    assert_eq!(
        *order.borrow(),
        ["inner", "outer"],
        "tasks start in creation order"
    );
}

#[test]
fn awaiting_a_cancelled_task_gives_cancelled() {
    let lp = new_loop();
    let victim = lp
        .create_task(std::future::pending::<u8>(), Some("victim"))
        .unwrap();
    let v = victim.clone();
    lp.call_soon(move || {
        v.cancel();
    })
    .unwrap();
    let got = lp.run_until_complete(victim).unwrap();
    assert!(matches!(got, Err(Error::Cancelled)));
}

#[test]
fn non_clone_outputs_are_taken() {
    let lp = new_loop();
    let inner = lp
        .create_task(async { std::io::Error::other("not clone") }, None)
        .unwrap();
    let got = lp
        .run_until_complete(async move { inner.take().await })
        .unwrap();
    assert_eq!(got.unwrap().to_string(), "not clone");
}

#[test]
fn wake_from_another_thread() {
    let lp = new_loop();
    let shared = CrossThread::default();
    let remote = shared.clone();
    let worker = std::thread::spawn(move || remote.complete_once_polled(7));
    let got = lp.run_until_complete(shared).unwrap();
    worker.join().unwrap();
    assert_eq!(got, 7);
}

#[test]
fn task_names_default_to_task_n_and_can_change() {
    let lp = new_loop();
    let number = |task: &Task<()>| -> u64 {
        let name = task.name();
        let n = name.strip_prefix("Task-").expect("Task-N");
        n.parse().expect("a number")
    };
    let first = lp.create_task(async {}, None).unwrap();
    let second = lp.create_task(async {}, None).unwrap();
    assert!(number(&second) > number(&first));
    let named = lp.create_task(async {}, Some("worker")).unwrap();
    assert_eq!(named.name(), "worker");
    named.set_name("renamed");
    assert_eq!(named.name(), "renamed");
    assert!(format!("{named:?}").contains("renamed"));
}

#[test]
fn task_factory_is_used_and_removable() {
    let lp = new_loop();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    lp.set_task_factory(Some(move |_: &EventLoop, mut spec: TaskSpec| {
        let (p, mut body) = (p.clone(), spec.future);
        spec.future = Box::pin(std::future::poll_fn(move |cx| {
            p.set(p.get() + 1);
            body.as_mut().poll(cx)
        }));
        spec.name = format!("made-{}", spec.name);
        spec
    }));
    assert!(lp.get_task_factory().is_some());
    let made = lp.create_task(async { 5 }, Some("a")).unwrap();
    assert_eq!(made.name(), "made-a");
    assert_eq!(lp.run_until_complete(made).unwrap().unwrap(), 5);
    let polled = polls.get();
    assert!(polled >= 2, "both tasks went through the factory: {polled}");

    lp.set_task_factory(None::<fn(&EventLoop, TaskSpec) -> TaskSpec>);
    assert!(lp.get_task_factory().is_none());
    let plain = lp.create_task(async {}, Some("b")).unwrap();
    assert_eq!(plain.name(), "b");
    lp.run_until_complete(plain).unwrap().unwrap();
    assert_eq!(polls.get(), polled, "factory no longer wraps");
}

#[test]
fn run_until_complete_returns_the_value() {
    let lp = new_loop();
    assert_eq!(lp.run_until_complete(async { 1 + 1 }).unwrap(), 2);
    assert!(!lp.is_running());
    assert_eq!(lp.run_until_complete(async { "again" }).unwrap(), "again");
}

#[test]
fn run_until_complete_stopped_early() {
    let lp = new_loop();
    let fut = lp.create_future::<u8>().unwrap();
    let stopper = lp.clone();
    lp.call_soon(move || stopper.stop()).unwrap();
    let waiting = fut.clone();
    assert!(matches!(
        lp.run_until_complete(waiting),
        Err(Error::StoppedBeforeComplete)
    ));
    // The loop is reusable and a later run does not stop because of the earlier task.
    fut.set_result(3).unwrap();
    assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 3);
}

#[test]
fn run_until_complete_panic_is_an_exception() {
    let lp = new_loop();
    let got = lp.run_until_complete(async {
        if true {
            panic!("task blew up");
        }
    });
    assert!(matches!(got, Err(Error::Exception(e)) if e.to_string() == "panicked: task blew up"));
}

#[test]
fn run_until_complete_while_running_is_refused() {
    let lp = new_loop();
    let seen = Rc::new(RefCell::new(None));
    let (s, inner_lp) = (seen.clone(), lp.clone());
    lp.run_until_complete(async move {
        *s.borrow_mut() = Some(inner_lp.run_until_complete(async {}).map(|_| ()));
    })
    .unwrap();
    assert!(matches!(*seen.borrow(), Some(Err(Error::AlreadyRunning))));

    let other = new_loop();
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    lp.run_until_complete(async move {
        *s.borrow_mut() = Some(other.run_until_complete(async {}).map(|_| ()));
    })
    .unwrap();
    assert!(matches!(
        *seen.borrow(),
        Some(Err(Error::AnotherLoopRunning))
    ));
}

#[test]
fn closed_loop_errors() {
    let lp = new_loop();
    let fut = lp.create_future::<u8>().unwrap();
    lp.close().unwrap();
    assert!(matches!(lp.create_future::<u8>(), Err(Error::Closed)));
    assert!(matches!(lp.create_task(async {}, None), Err(Error::Closed)));
    assert!(matches!(
        lp.run_until_complete(async {}),
        Err(Error::Closed)
    ));
    assert!(matches!(lp.run_in_executor(|| 1), Err(Error::Closed)));
    assert!(matches!(lp.shutdown_default_executor(), Err(Error::Closed)));
    assert!(matches!(fut.set_result(1), Err(Error::Closed)));
}

#[test]
fn run_in_executor_results_and_panics() {
    let lp = new_loop();
    let main_thread = std::thread::current().id();
    let ok = lp
        .run_in_executor(move || std::thread::current().id() != main_thread)
        .unwrap();
    let bad = lp
        .run_in_executor(|| -> u8 { panic!("blocking job failed") })
        .unwrap();
    let (ok, bad) = lp
        .run_until_complete(async move { (ok.await, bad.await) })
        .unwrap();
    assert!(ok.unwrap(), "ran on another thread");
    assert!(
        matches!(bad, Err(Error::Exception(e)) if e.to_string() == "panicked: blocking job failed")
    );
    lp.shutdown_default_executor().unwrap();
}

#[test]
fn shutdown_default_executor_then_run_in_executor_fails() {
    let lp = new_loop();
    let fut = lp.run_in_executor(|| 9).unwrap();
    lp.shutdown_default_executor().unwrap();
    // The job ran before shutdown returned; its result arrives in the next iteration.
    assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 9);
    assert!(matches!(
        lp.run_in_executor(|| 1),
        Err(Error::ExecutorShutdown)
    ));
    lp.shutdown_default_executor().unwrap();
    lp.set_default_executor(ThreadPool::new(1).unwrap());
    assert!(
        matches!(lp.run_in_executor(|| 1), Err(Error::ExecutorShutdown)),
        "as asyncio: shutdown_default_executor is final"
    );
}

/// An executor that records what happens to it, running jobs inline.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Executor for Recorder {
    fn submit(&self, job: Job) -> loopd::Result<()> {
        self.0.lock().unwrap().push("submit".into());
        job();
        Ok(())
    }
    fn shutdown(&self, wait: bool) {
        self.0.lock().unwrap().push(format!("shutdown wait={wait}"));
    }
}

#[test]
fn custom_default_executor_is_used_and_close_shuts_it_down_without_waiting() {
    let lp = new_loop();
    let recorder = Recorder::default();
    lp.set_default_executor(recorder.clone());
    let fut = lp.run_in_executor(|| "inline").unwrap();
    assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), "inline");
    lp.close().unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        ["submit", "shutdown wait=false"]
    );
}
