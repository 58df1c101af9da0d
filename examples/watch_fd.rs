//! Watch a file descriptor for read events: asyncio's "Event Loop" page, "Watch a file
//! descriptor for read events".
//!
//! Makes a pair of connected sockets, watches one end with `add_reader`, and sends "abc"
//! from the other with `call_soon`. The reader prints what it received, stops watching and
//! stops the loop.
//!
//! ```text
//! cargo run --example watch_fd
//! ```

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use loopd::EventLoop;

fn reader(rsock: &UnixStream, lp: &EventLoop) {
    let mut data = [0; 100];
    match (&*rsock).read(&mut data) {
        Ok(n) => println!("Received: {}", String::from_utf8_lossy(&data[..n])),
        Err(err) => eprintln!("watch_fd: recv failed: {err}"),
    }
    // We are done: unregister the file descriptor.
    if let Err(err) = lp.remove_reader(rsock.as_raw_fd()) {
        eprintln!("watch_fd: {err}");
    }
    // Stop the event loop.
    lp.stop();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Create a pair of connected file descriptors.
    let (rsock, wsock) = UnixStream::pair()?;
    let (rsock, wsock) = (Rc::new(rsock), Rc::new(wsock));
    let lp = EventLoop::new()?;

    // Register the file descriptor for read event.
    let (sock, inner) = (rsock.clone(), lp.clone());
    lp.add_reader(rsock.as_raw_fd(), move || reader(&sock, &inner))?;

    // Simulate the reception of data from the network.
    let sock = wsock.clone();
    lp.call_soon(move || {
        if let Err(err) = (&*sock).write_all(b"abc") {
            eprintln!("watch_fd: send failed: {err}");
        }
    })?;

    // Run the event loop.
    let ran = lp.run_forever();
    // We are done. Close sockets and the event loop.
    drop((rsock, wsock));
    lp.close()?;
    Ok(ran?)
}
