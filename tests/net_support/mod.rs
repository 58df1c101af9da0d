//! Helpers shared by the networking tests (transports, TLS, datagram, dns, Happy Eyeballs,
//! sendfile, sock, pipes): a bounded `run`, `sleep` and `until`, and an FNV-1a hash for
//! streams too big to keep. Every wait is bounded by [`SAFETY`].
#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use loopd::EventLoop;

/// Longest any test waits for anything; the exchanges take milliseconds.
pub const SAFETY: Duration = Duration::from_secs(10);

/// Runs `fut` to completion on `lp`, failing the test if the safety timer fires first.
pub fn run<T: 'static>(lp: &EventLoop, fut: impl std::future::Future<Output = T> + 'static) -> T {
    let stopper = lp.clone();
    let timer = lp.call_later(SAFETY, move || stopper.stop()).unwrap();
    let out = lp.run_until_complete(fut);
    timer.cancel();
    out.expect("finished before the safety timer")
}

/// asyncio's `sleep`: a future done after `delay`.
pub async fn sleep(lp: &EventLoop, delay: Duration) {
    let fut = lp.create_future::<()>().unwrap();
    let done = fut.clone();
    lp.call_later(delay, move || {
        let _ = done.set_result(());
    })
    .unwrap();
    fut.await.unwrap();
}

/// Sleeps a millisecond at a time until `cond` holds (the safety timer bounds it).
pub async fn until(lp: &EventLoop, cond: impl Fn() -> bool) {
    while !cond() {
        sleep(lp, Duration::from_millis(1)).await;
    }
}

/// Runs the loop until `cond` holds (bounded by the safety timer).
pub fn run_until(lp: &EventLoop, cond: impl Fn() -> bool + 'static) {
    let inner = lp.clone();
    run(lp, async move { until(&inner, cond).await });
}

/// Runs the loop for `delay` (e.g. to let a `close()` flush and finish).
pub fn run_for(lp: &EventLoop, delay: Duration) {
    let inner = lp.clone();
    run(lp, async move { sleep(&inner, delay).await });
}

/// FNV-1a's offset basis: the hash of no bytes.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `data`, continuing from `hash`.
pub fn fnv(mut hash: u64, data: &[u8]) -> u64 {
    for &byte in data {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
