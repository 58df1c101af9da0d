//! The default policy on the process's real main thread. This test has no libtest harness,
//! so `main` runs on the main thread, the only one where `get_event_loop()` creates a loop.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use loopd::{Error, EventLoop};

/// Whether `a` and `b` are the same loop: a callback scheduled on `a` runs when `b` runs.
/// Bounded: a different loop stops itself after 200 ms.
fn same_loop(a: &EventLoop, b: &EventLoop) -> bool {
    let ran = Rc::new(Cell::new(false));
    let (flag, stopper) = (ran.clone(), a.clone());
    a.call_soon(move || {
        flag.set(true);
        stopper.stop();
    })
    .unwrap();
    let safety_stop = b.clone();
    let safety = b
        .call_later(Duration::from_millis(200), move || safety_stop.stop())
        .unwrap();
    b.run_forever().unwrap();
    safety.cancel();
    ran.get()
}

fn main() {
    let created = loopd::get_event_loop().expect("the main thread gets a loop on demand");
    let again = loopd::get_event_loop().unwrap();
    assert!(same_loop(&created, &again), "created once, then current");

    // A thread merely *named* main is not the main thread.
    let elsewhere = std::thread::Builder::new()
        .name("main".into())
        .spawn(|| loopd::get_event_loop().map(drop))
        .unwrap()
        .join()
        .unwrap();
    assert!(matches!(elsewhere, Err(Error::NoCurrentLoop(name)) if name == "main"));

    // After set_event_loop(None), asyncio stops creating loops on the main thread too.
    loopd::set_event_loop(None).unwrap();
    assert!(matches!(
        loopd::get_event_loop(),
        Err(Error::NoCurrentLoop(_))
    ));

    // A new default policy starts over, and creates again.
    loopd::set_event_loop_policy(None);
    let fresh = loopd::get_event_loop().expect("a new default policy creates again");
    assert!(!same_loop(&created, &fresh));
    created.close().unwrap();
    fresh.close().unwrap();
    println!("policy_main_thread: ok");
}
