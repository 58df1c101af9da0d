//! Hello World with `call_soon`: asyncio's "Event Loop" page, "Hello World with call_soon()".
//!
//! Schedules one callback that prints "Hello World" and stops the loop.
//!
//! ```text
//! cargo run --example hello_world
//! ```

use loopd::EventLoop;

fn hello_world(lp: &EventLoop) {
    println!("Hello World");
    lp.stop();
}

fn main() -> loopd::Result<()> {
    let lp = EventLoop::new()?;
    let inner = lp.clone();
    // Schedule a call to hello_world().
    lp.call_soon(move || hello_world(&inner))?;
    // Blocking call interrupted by lp.stop().
    let ran = lp.run_forever();
    lp.close()?;
    ran
}
