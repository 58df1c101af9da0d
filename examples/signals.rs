//! asyncio's "Set signal handlers for SIGINT and SIGTERM" example, on loopd.
//!
//! Registers handlers for SIGINT and SIGTERM that print which signal arrived and stop the
//! loop, then waits (an hour at most, as the original). Press Ctrl+C, or run
//! `kill -TERM <pid>` with the pid it prints; it exits with status 0.
//!
//! The two lines are printed only once the handlers are in place, so whoever reads them
//! may signal the process at once.

use std::time::Duration;

use loopd::EventLoop;

fn main() -> Result<(), loopd::Error> {
    let lp = EventLoop::new()?;
    for (sig, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let stopper = lp.clone();
        lp.add_signal_handler(sig, move || {
            println!("got signal {name}: exit");
            stopper.stop();
        })?;
    }
    let stopper = lp.clone();
    lp.call_later(Duration::from_secs(3600), move || stopper.stop())?;

    println!("Event loop running, press Ctrl+C to interrupt.");
    println!(
        "pid {}: send SIGINT or SIGTERM to exit.",
        std::process::id()
    );
    lp.run_forever()?;
    lp.close()
}
